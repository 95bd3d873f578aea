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
use tokio_util::sync::CancellationToken;

/// What the origin has served.
#[derive(Default, Debug)]
pub struct OriginStats {
    /// Body bytes sent.
    pub bytes: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
}

/// Counters as JSON (`GET /_stats`).
#[derive(Serialize, serde::Deserialize, Debug, Clone, Copy)]
pub struct StatsJson {
    /// Body bytes sent.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
}

#[derive(Clone)]
struct OriginState {
    files: Arc<Mutex<HashMap<String, Bytes>>>,
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
    files: Arc<Mutex<HashMap<String, Bytes>>>,
    stop: CancellationToken,
}

impl Origin {
    /// Serves `files` (name → content) on `listener`, each response at most `rate` B/s.
    pub async fn start(listener: TcpListener, files: HashMap<String, Bytes>, rate: u64) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        let stats = Arc::new(OriginStats::default());
        let files = Arc::new(Mutex::new(files));
        let state = OriginState {
            files: files.clone(),
            stats: stats.clone(),
            rate,
        };
        let app = Router::new()
            .route("/_stats", get(stats_handler))
            .route("/{*path}", get(serve).head(serve))
            .with_state(state);
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Self {
            addr,
            stats,
            files,
            stop,
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

    /// Replaces or adds a file.
    pub fn put(&self, name: &str, content: Bytes) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), content);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
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
    if let Some(code) = path
        .strip_prefix("status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, "fault injected by the test origin\n").into_response();
    }
    let file = st
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&path)
        .cloned();
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let len = file.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let (status, body) = match range {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            file.slice(a as usize..=b as usize),
        ),
        None => (StatusCode::OK, file),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{len:x}\""));
    if let Some((a, b)) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap_or_default();
    }
    let stats = st.stats.clone();
    let rate = st.rate;
    // Count bytes as they are handed to the connection, so an aborted transfer counts what went.
    let chunk = 64 * 1024;
    let stream = futures_stream(body, chunk, rate, stats);
    resp.body(Body::from_stream(stream)).unwrap_or_default()
}

fn futures_stream(
    body: Bytes,
    chunk: usize,
    rate: u64,
    stats: Arc<OriginStats>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let start = tokio::time::Instant::now();
    futures_util::stream::unfold((body, 0u64), move |(mut rest, sent)| {
        let stats = stats.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            if rate > 0 {
                let due = start + std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            let c = rest.split_to(rest.len().min(chunk));
            stats.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
            let n = c.len() as u64;
            Some((Ok(c), (rest, sent + n)))
        }
    })
}
