//! A real HTTP origin for tests and the demo: serves files from memory with Range support,
//! counts every body byte it sends, and can be slowed down or told to fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use tokio::net::TcpListener;

/// What the origin has served.
#[derive(Default, Debug)]
pub struct OriginStats {
    /// Body bytes sent.
    pub bytes: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Requests carrying If-None-Match or If-Modified-Since.
    pub conditional: AtomicU64,
    /// 304 answers.
    pub not_modified: AtomicU64,
    /// 200 answers with a body (whole content).
    pub full: AtomicU64,
    /// 206 answers (a range of the content).
    pub ranged: AtomicU64,
    /// Requests per path (without the leading slash), any status.
    pub per_path: Mutex<HashMap<String, u64>>,
}

/// Counters as JSON (`GET /_stats`).
#[derive(Serialize, serde::Deserialize, Debug, Clone, Copy)]
pub struct StatsJson {
    /// Body bytes sent.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
}

/// A fault the origin injects into a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Break the connection after this many body bytes.
    KillAfter(u64),
    /// Stop sending (keep the connection open) after this many body bytes, for 10 minutes.
    StallAfter(u64),
}

/// How the origin serves one file; `Origin::put` gives a file the defaults.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// `ETag` sent and matched against If-None-Match / If-Range; None sends none.
    pub etag: Option<String>,
    /// `Last-Modified` sent and matched (exactly) against If-Modified-Since / If-Range.
    pub last_modified: Option<String>,
    /// Honour Range requests (else always 200 with the whole file, no Accept-Ranges).
    pub ranges: bool,
    /// Send the body chunked, without Content-Length.
    pub chunked: bool,
    /// Fault injected into the next `fault_count` bodies.
    pub fault: Option<Fault>,
    /// How many more bodies get the fault.
    pub fault_count: u32,
    /// Answer every request for the file with this status instead (e.g. 500, 403).
    pub status: Option<u16>,
    /// Answer 403 unless the request has this header (name, value), e.g. Authorization.
    pub require_header: Option<(String, String)>,
}

impl FileOptions {
    /// Strong ETag and a Last-Modified that change with every version of the file.
    fn versioned(content: &Bytes, version: u64) -> Self {
        Self {
            etag: Some(format!(
                "\"{}-{version}\"",
                &crate::sha256_hex(content)[..16]
            )),
            last_modified: Some(format!(
                "Sat, 01 Jan 2000 {:02}:{:02}:{:02} GMT",
                (version / 3600) % 24,
                (version / 60) % 60,
                version % 60
            )),
            ranges: true,
            chunked: false,
            fault: None,
            fault_count: 0,
            status: None,
            require_header: None,
        }
    }
}

struct File {
    content: Bytes,
    opts: FileOptions,
}

#[derive(Default)]
struct Files {
    map: HashMap<String, File>,
    version: u64,
}

impl Files {
    fn put(&mut self, name: &str, content: Bytes) {
        self.version += 1;
        let opts = match self.map.get(name) {
            // Keep the test's serving mode; only the validators move with the content.
            Some(old) => FileOptions {
                etag: old
                    .opts
                    .etag
                    .as_ref()
                    .and(FileOptions::versioned(&content, self.version).etag),
                last_modified: old
                    .opts
                    .last_modified
                    .as_ref()
                    .and(FileOptions::versioned(&content, self.version).last_modified),
                ..old.opts.clone()
            },
            None => FileOptions::versioned(&content, self.version),
        };
        self.map.insert(name.to_owned(), File { content, opts });
    }
}

type SharedFiles = Arc<Mutex<Files>>;

#[derive(Clone)]
struct OriginState {
    files: SharedFiles,
    stats: Arc<OriginStats>,
    /// Bytes per second per response, 0 for unlimited.
    rate: u64,
}

/// A running origin.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<OriginStats>,
    files: SharedFiles,
    _stop: crate::background::Background,
}

impl Origin {
    /// Serves `files` (name → content) on `listener`, each response at most `rate` B/s.
    pub async fn start(listener: TcpListener, files: HashMap<String, Bytes>, rate: u64) -> Self {
        Self::start_with(listener, files, rate, None).await
    }

    /// Like [`Origin::start`], but HTTPS with the PEM certificate chain and key given.
    pub async fn start_tls(
        listener: TcpListener,
        files: HashMap<String, Bytes>,
        rate: u64,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> std::io::Result<Self> {
        let acceptor = crate::tls::acceptor(cert, key)?;
        Ok(Self::start_with(listener, files, rate, Some(acceptor)).await)
    }

    async fn start_with(
        listener: TcpListener,
        files: HashMap<String, Bytes>,
        rate: u64,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        let stats = Arc::new(OriginStats::default());
        let mut all = Files::default();
        for (name, content) in files {
            all.put(&name, content);
        }
        let files = Arc::new(Mutex::new(all));
        let state = OriginState {
            files: files.clone(),
            stats: stats.clone(),
            rate,
        };
        let app = Router::new()
            .route("/_stats", get(stats_handler))
            .route("/{*path}", get(serve).head(serve))
            .with_state(state);
        let _stop = crate::background::serve(listener, app, tls);
        Self {
            addr,
            stats,
            files,
            _stop,
        }
    }

    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn local(files: HashMap<String, Bytes>, rate: u64) -> std::io::Result<Self> {
        Ok(Self::start(TcpListener::bind("127.0.0.1:0").await?, files, rate).await)
    }

    /// URL of a file.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Body bytes sent so far.
    pub fn bytes_served(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// Conditional requests (If-None-Match / If-Modified-Since) so far.
    pub fn conditional_requests(&self) -> u64 {
        self.stats.conditional.load(Ordering::Relaxed)
    }

    /// 304 answers so far.
    pub fn not_modified(&self) -> u64 {
        self.stats.not_modified.load(Ordering::Relaxed)
    }

    /// 200 answers with the whole body so far.
    pub fn full_gets(&self) -> u64 {
        self.stats.full.load(Ordering::Relaxed)
    }

    /// 206 answers so far.
    pub fn ranged_gets(&self) -> u64 {
        self.stats.ranged.load(Ordering::Relaxed)
    }

    /// Requests for one path (e.g. `status/500` or `big.bin`) so far.
    pub fn requests_for(&self, path: &str) -> u64 {
        let m = self
            .stats
            .per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(path).copied().unwrap_or(0)
    }

    /// Replaces or adds a file; a replaced file gets new validators (same serving mode).
    pub fn put(&self, name: &str, content: Bytes) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(name, content);
    }

    /// Changes how a file is served (validators, ranges, chunking, faults).
    pub fn configure(&self, name: &str, f: impl FnOnce(&mut FileOptions)) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = files.map.get_mut(name) {
            f(&mut file.opts);
        }
    }

    /// The validators a file is served with now (ETag, Last-Modified).
    pub fn validators(&self, name: &str) -> (Option<String>, Option<String>) {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.map.get(name).map_or((None, None), |f| {
            (f.opts.etag.clone(), f.opts.last_modified.clone())
        })
    }
}

async fn stats_handler(State(st): State<OriginState>) -> Json<StatsJson> {
    Json(StatsJson {
        bytes: st.stats.bytes.load(Ordering::Relaxed),
        requests: st.stats.requests.load(Ordering::Relaxed),
    })
}

/// Parses `bytes=START-[END]` against a length.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

async fn serve(
    State(st): State<OriginState>,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    *st.stats
        .per_path
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    if let Some(code) = path
        .strip_prefix("status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, "fault injected by the test origin\n").into_response();
    }
    if let Some(target) = path.strip_prefix("redirect/") {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("/{target}"))
            .body(Body::empty())
            .unwrap_or_default();
    }
    let hdr = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let if_none_match = hdr(header::IF_NONE_MATCH);
    let if_modified_since = hdr(header::IF_MODIFIED_SINCE);
    if if_none_match.is_some() || if_modified_since.is_some() {
        st.stats.conditional.fetch_add(1, Ordering::Relaxed);
    }
    let (file, opts) = {
        let mut files = st.files.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = files.map.get_mut(&path) else {
            return (StatusCode::NOT_FOUND, "no such file\n").into_response();
        };
        let opts = f.opts.clone();
        if f.opts.fault_count > 0 && method == Method::GET {
            f.opts.fault_count -= 1;
        }
        (f.content.clone(), opts)
    };
    if let Some(code) = opts.status {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, "fault injected by the test origin\n").into_response();
    }
    if let Some((name, value)) = &opts.require_header {
        let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if got != Some(value.as_str()) {
            return (StatusCode::FORBIDDEN, "missing credentials\n").into_response();
        }
    }
    // RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since.
    let unchanged = match (if_none_match, if_modified_since) {
        (Some(inm), _) => opts
            .etag
            .as_deref()
            .is_some_and(|e| inm.split(',').any(|t| t.trim() == e || t.trim() == "*")),
        (None, Some(ims)) => opts.last_modified.as_deref() == Some(ims),
        (None, None) => false,
    };
    let mut resp = Response::builder();
    if let Some(e) = &opts.etag {
        resp = resp.header(header::ETAG, e);
    }
    if let Some(l) = &opts.last_modified {
        resp = resp.header(header::LAST_MODIFIED, l);
    }
    if unchanged {
        st.stats.not_modified.fetch_add(1, Ordering::Relaxed);
        return resp
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let len = file.len() as u64;
    let if_range_ok = match hdr(header::IF_RANGE) {
        None => true,
        Some(v) => opts.etag.as_deref() == Some(v) || opts.last_modified.as_deref() == Some(v),
    };
    let range = hdr(header::RANGE)
        .filter(|_| opts.ranges && if_range_ok)
        .and_then(|v| parse_range(v, len));
    let (status, body) = match range {
        Some((a, b)) => {
            st.stats.ranged.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::PARTIAL_CONTENT,
                file.slice(a as usize..=b as usize),
            )
        }
        None => {
            st.stats.full.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, file)
        }
    };
    resp = resp.status(status);
    if !opts.chunked {
        resp = resp.header(header::CONTENT_LENGTH, body.len());
    }
    if opts.ranges {
        resp = resp.header(header::ACCEPT_RANGES, "bytes");
    }
    if let Some((a, b)) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap_or_default();
    }
    let fault = opts.fault.filter(|_| opts.fault_count > 0);
    let stats = st.stats.clone();
    let rate = st.rate;
    // Count bytes as they are handed to the connection, so an aborted transfer counts what went.
    let chunk = 64 * 1024;
    let stream = futures_stream(body, chunk, rate, stats, fault);
    resp.body(Body::from_stream(stream)).unwrap_or_default()
}

fn futures_stream(
    body: Bytes,
    chunk: usize,
    rate: u64,
    stats: Arc<OriginStats>,
    fault: Option<Fault>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let start = tokio::time::Instant::now();
    futures_util::stream::unfold((body, 0u64), move |(mut rest, sent)| {
        let stats = stats.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            let limit = match fault {
                Some(Fault::KillAfter(n)) | Some(Fault::StallAfter(n)) => n,
                None => u64::MAX,
            };
            if sent >= limit {
                if let Some(Fault::StallAfter(_)) = fault {
                    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                }
                let e = std::io::Error::other("fault injected by the test origin");
                return Some((Err(e), (Bytes::new(), sent)));
            }
            if rate > 0 {
                let due = start + std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            let room = usize::try_from(limit - sent).unwrap_or(usize::MAX);
            let c = rest.split_to(rest.len().min(chunk).min(room));
            stats.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
            let n = c.len() as u64;
            Some((Ok(c), (rest, sent + n)))
        }
    })
}
