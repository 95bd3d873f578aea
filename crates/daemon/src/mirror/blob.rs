//! Blobs: access checked with the upstream, bytes through the swarm keyed by the digest,
//! streamed to the client as pieces land, the whole digest verified before the last byte
//! goes out, and the upstream read directly when the swarm cannot deliver.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use odonata_proto::messages::Header;
use odonata_proto::{Digest, TaskId};
use odonata_storage::TaskData;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use url::Url;

use super::body::{self, Body};
use super::range::{parse_range, RangeAsk};
use super::route::sha256_hex;
use super::upstream::{to_client, to_upstream, Upstream};
use super::{oci_error, Mirror, MirrorError};
use crate::api::DownloadRequest;

/// With no new piece for this long while the swarm still runs, read the upstream instead.
const STALL: Duration = Duration::from_secs(120);
/// How long a blob whose swarm copy failed its digest is read from the upstream directly.
const POISON: Duration = Duration::from_secs(600);

/// Serves `GET`/`HEAD /v2/REPO/blobs/DIGEST`.
pub(crate) async fn serve(
    m: &Mirror,
    up: Arc<Upstream>,
    repo: &str,
    digest: &str,
    method: Method,
    client_headers: &HeaderMap,
) -> Result<Response<Body>, MirrorError> {
    let url = up.url(&format!("/v2/{repo}/blobs/{digest}"), None);
    let mut h = to_upstream(client_headers);
    for n in [header::RANGE, header::IF_RANGE, header::ACCEPT_ENCODING] {
        h.remove(n);
    }
    // Every request asks the upstream first, with the client's own credentials: a client
    // without rights never gets a layer someone else brought into the cache, and a blob
    // the upstream does not have is a 404 here too.
    let sent = m.0.auth.send(&up, repo, Method::HEAD, &url, h).await?;
    let status = sent.resp.status();
    if !status.is_success() {
        let mut headers = to_client(sent.resp.headers());
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        let code = match status.as_u16() {
            401 => "UNAUTHORIZED",
            403 => "DENIED",
            404 => "BLOB_UNKNOWN",
            _ => "UNKNOWN",
        };
        let mut r = oci_error(
            status,
            code,
            &format!("upstream {} answered {status}", up.name),
        );
        if method == Method::HEAD {
            *r.body_mut() = body::empty();
        }
        for (k, v) in &headers {
            if !r.headers().contains_key(k) {
                r.headers_mut().append(k.clone(), v.clone());
            }
        }
        return Ok(r);
    }
    let len = sent
        .resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let want = sha256_hex(digest);
    let Some(len) = len else {
        // Without a length there is no piece layout; hand the upstream's answer through.
        let mut hh = sent.headers.clone();
        if let Some(r) = client_headers.get(header::RANGE) {
            hh.insert(header::RANGE, r.clone());
        }
        return super::passthrough::raw(&up, method, url, hh).await;
    };
    let task = TaskId::for_identity(&format!("oci-blob:{digest}"))
        .map_err(|e| MirrorError::Upstream(e.to_string()))?;
    let src = Source {
        up,
        url,
        headers: sent.headers,
        len,
        want,
        identity: Some(format!("oci-blob:{digest}")),
        task,
    };
    let mut r = respond(m, src, &method, client_headers);
    if let Ok(v) = HeaderValue::from_str(digest) {
        r.headers_mut().insert("docker-content-digest", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// Content of known length to serve through the swarm, the upstream as fallback.
pub(crate) struct Source {
    /// The upstream holding it.
    pub(crate) up: Arc<Upstream>,
    /// Its URL there.
    pub(crate) url: Url,
    /// Headers that got the upstream's HEAD through (with the Authorization used).
    pub(crate) headers: HeaderMap,
    /// Its length.
    pub(crate) len: u64,
    /// Its sha256, when known: checked before the last byte goes out.
    pub(crate) want: Option<[u8; 32]>,
    /// Explicit swarm identity (None: the URL).
    pub(crate) identity: Option<String>,
    /// The task id that identity (or URL) maps to.
    pub(crate) task: TaskId,
}

/// Answers a GET/HEAD for `src` (200, 206 or 416 per the client's `Range`), streaming the
/// body from a producer task.
pub(crate) fn respond(
    m: &Mirror,
    src: Source,
    method: &Method,
    client_headers: &HeaderMap,
) -> Response<Body> {
    let len = src.len;
    let range = parse_range(
        client_headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        len,
    );
    let mut r = Response::new(body::empty());
    let hs = r.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (first, last) = match range {
        RangeAsk::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return r;
        }
        RangeAsk::Part(a, b) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (a, b + 1)
        }
        RangeAsk::Whole => (0, len),
    };
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(last - first));
    if method == Method::HEAD {
        return r;
    }
    let (tx, rx) = mpsc::channel(2);
    let job = Job { m: m.clone(), src };
    m.0.stats.open_streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let stats = job.m.clone();
        let sink = Sink {
            tx,
            hasher: Sha256::new(),
            pos: 0,
            len,
            first,
            last,
            pending: None,
        };
        job.produce(sink).await;
        stats.0.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    });
    *r.body_mut() = body::from_channel(rx);
    r
}

/// Why a producer stopped feeding the client.
#[derive(Debug)]
enum Stop {
    /// The client went away.
    Gone,
    /// The response was aborted (the reason is logged).
    Aborted,
}

/// Where bytes go: hashed in order from the start of the blob, the part inside the asked
/// range sent on, the last part held back until the digest is known to match.
struct Sink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    hasher: Sha256,
    /// Bytes of the blob hashed so far.
    pos: u64,
    len: u64,
    /// Range sent to the client: `first..last`.
    first: u64,
    last: u64,
    pending: Option<Bytes>,
}

impl Sink {
    async fn feed(&mut self, chunk: Bytes) -> Result<(), Stop> {
        let start = self.pos;
        let end = start + chunk.len() as u64;
        if end > self.len {
            return Err(self
                .abort(&format!(
                    "blob is longer than the {} bytes announced",
                    self.len
                ))
                .await);
        }
        self.hasher.update(&chunk);
        self.pos = end;
        let lo = start.max(self.first);
        let hi = end.min(self.last);
        if lo < hi {
            let part = chunk.slice((lo - start) as usize..(hi - start) as usize);
            if let Some(prev) = self.pending.replace(part) {
                self.tx.send(Ok(prev)).await.map_err(|_| Stop::Gone)?;
            }
        }
        Ok(())
    }

    async fn abort(&mut self, why: &str) -> Stop {
        tracing::warn!(reason = why, "aborting blob response");
        let _ = self
            .tx
            .send(Err(std::io::Error::other(why.to_owned())))
            .await;
        Stop::Aborted
    }

    /// Releases the held-back bytes only if the blob is whole and matches `want`.
    async fn finish(mut self, want: Option<[u8; 32]>) -> Result<(), Stop> {
        if self.pos != self.len {
            return Err(self
                .abort(&format!("blob ended at {} of {} bytes", self.pos, self.len))
                .await);
        }
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if let Some(w) = want {
            if got != w {
                return Err(self
                    .abort(&format!(
                        "blob content hashes to sha256:{}, not the digest asked",
                        hex::encode(got)
                    ))
                    .await);
            }
        }
        if let Some(p) = self.pending.take() {
            self.tx.send(Ok(p)).await.map_err(|_| Stop::Gone)?;
        }
        Ok(())
    }
}

/// One response being produced.
struct Job {
    m: Mirror,
    src: Source,
}

impl Job {
    async fn produce(self, mut sink: Sink) {
        let mut swarm_tried = false;
        match self.through_swarm(&mut sink).await {
            Ok(()) => swarm_tried = true,
            Err(SwarmStop::Stop) => return,
            Err(SwarmStop::Fallback(why)) => {
                tracing::info!(url = %self.src.url, reason = %why, at = sink.pos, "reading from the upstream directly");
            }
        }
        if sink.pos < self.src.len && self.direct(&mut sink).await.is_err() {
            return;
        }
        if let Err(Stop::Aborted) = sink.finish(self.src.want).await {
            self.m
                .0
                .stats
                .digest_mismatches
                .fetch_add(1, Ordering::Relaxed);
            // Never serve that copy again; the next pulls read the upstream directly.
            if swarm_tried {
                self.m.0.engine.store().remove(&self.src.task);
                let mut p = self.m.0.poisoned.lock().unwrap_or_else(|e| e.into_inner());
                p.retain(|_, at| at.elapsed() < POISON);
                p.insert(self.src.task.clone(), Instant::now());
            }
        }
    }

    /// Streams the blob's pieces from the store while the swarm fills it.
    async fn through_swarm(&self, sink: &mut Sink) -> Result<(), SwarmStop> {
        let src = &self.src;
        let id = src.task.clone();
        let poisoned = self
            .m
            .0
            .poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|at| at.elapsed() < POISON);
        if poisoned {
            return Err(SwarmStop::Fallback(
                "the swarm's copy failed the digest check lately".into(),
            ));
        }
        let engine = self.m.0.engine.clone();
        let store = engine.store().clone();
        let held = store
            .get(&id)
            .filter(|d| d.is_complete() && d.layout().content_length == Some(src.len));
        let mut swarm = if held.is_none() {
            let headers = src
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    vec![Header {
                        name: "Authorization".into(),
                        value: v.to_owned(),
                    }]
                })
                .unwrap_or_default();
            let req = DownloadRequest {
                url: src.url.to_string(),
                headers,
                digest: src.want.map(Digest::Sha256),
                ..DownloadRequest::default()
            };
            let identity = src.identity.clone();
            Some(tokio::spawn(async move {
                engine.swarm(&req, identity.as_deref()).await
            }))
        } else {
            None
        };
        let mut num = 0u32;
        let mut progress = Instant::now();
        loop {
            if sink.pos >= src.len {
                return Ok(());
            }
            let data: Option<Arc<TaskData>> = store.get(&id);
            if let Some(d) = data {
                let layout = d.layout();
                if layout.content_length.is_some_and(|l| l != src.len) {
                    return Err(SwarmStop::Fallback(format!(
                        "swarm copy is {:?} bytes, upstream says {}",
                        layout.content_length, src.len
                    )));
                }
                if d.piece(num).is_some() && layout.offset(num) == sink.pos {
                    let bytes = tokio::task::spawn_blocking(move || d.read_piece(num))
                        .await
                        .map_err(|e| SwarmStop::Fallback(e.to_string()))?
                        .map_err(|e| SwarmStop::Fallback(e.to_string()))?;
                    if let Some(b) = bytes {
                        let n = b.len() as u64;
                        sink.feed(Bytes::from(b))
                            .await
                            .map_err(|_| SwarmStop::Stop)?;
                        self.m
                            .0
                            .stats
                            .blob_bytes_p2p
                            .fetch_add(n, Ordering::Relaxed);
                        num += 1;
                        progress = Instant::now();
                        continue;
                    }
                }
            }
            if let Some(h) = swarm.as_mut() {
                if h.is_finished() {
                    let has_next = store.get(&id).is_some_and(|d| d.piece(num).is_some());
                    if has_next {
                        continue;
                    }
                    let why = match swarm.take() {
                        Some(h) => match h.await {
                            Ok(Ok(_)) => "swarm finished without the piece".to_owned(),
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                        },
                        None => String::new(),
                    };
                    return Err(SwarmStop::Fallback(why));
                }
            } else if store.get(&id).is_none_or(|d| d.piece(num).is_none()) {
                return Err(SwarmStop::Fallback("cached copy lost a piece".into()));
            }
            if progress.elapsed() > STALL {
                return Err(SwarmStop::Fallback(format!(
                    "no piece for {}s",
                    STALL.as_secs()
                )));
            }
            tokio::select! {
                _ = sink.tx.closed() => return Err(SwarmStop::Stop),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// Reads the rest of the blob (from `sink.pos`) straight from the upstream.
    async fn direct(&self, sink: &mut Sink) -> Result<(), Stop> {
        let src = &self.src;
        let mut h = src.headers.clone();
        if sink.pos > 0 {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={}-", sink.pos)) {
                h.insert(header::RANGE, v);
            }
        }
        let resp = match src.up.http.get(src.url.clone()).headers(h).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(sink
                    .abort(&format!(
                        "upstream {}: {}",
                        src.up.name,
                        super::auth::root_cause(&e)
                    ))
                    .await)
            }
        };
        let mut skip = match resp.status() {
            StatusCode::PARTIAL_CONTENT => 0,
            StatusCode::OK => sink.pos,
            s => {
                return Err(sink
                    .abort(&format!(
                        "upstream {} answered {s} for the blob",
                        src.up.name
                    ))
                    .await)
            }
        };
        let mut resp = resp;
        loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c,
                _ = sink.tx.closed() => return Err(Stop::Gone),
            };
            match chunk {
                Ok(Some(mut c)) => {
                    if skip > 0 {
                        let s = skip.min(c.len() as u64);
                        skip -= s;
                        c = c.slice(s as usize..);
                        if c.is_empty() {
                            continue;
                        }
                    }
                    let n = c.len() as u64;
                    sink.feed(c).await?;
                    self.m
                        .0
                        .stats
                        .blob_bytes_direct
                        .fetch_add(n, Ordering::Relaxed);
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(sink
                        .abort(&format!(
                            "upstream {} broke off: {}",
                            src.up.name,
                            super::auth::root_cause(&e)
                        ))
                        .await)
                }
            }
        }
    }
}

enum SwarmStop {
    Stop,
    Fallback(String),
}
