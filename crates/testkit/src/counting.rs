//! A reverse proxy in front of a real registry that counts the blob bytes it relays, so
//! tests can tell how often the registry served each layer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tokio::net::TcpListener;

#[derive(Default)]
struct Counts {
    blob_bytes: AtomicU64,
    blob_gets: Mutex<HashMap<String, u64>>,
}

#[derive(Clone)]
struct St {
    target: SocketAddr,
    http: reqwest::Client,
    counts: Arc<Counts>,
}

/// A running counting proxy on 127.0.0.1.
pub struct CountingProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    _stop: crate::background::Background,
}

impl CountingProxy {
    /// Relays every request to `target` (plain HTTP).
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let app = Router::new().fallback(relay).with_state(St {
            target,
            http,
            counts: counts.clone(),
        });
        let _stop = crate::background::serve(listener, app, None);
        Ok(Self {
            addr,
            counts,
            _stop,
        })
    }

    /// Blob body bytes relayed so far.
    pub fn blob_bytes(&self) -> u64 {
        self.counts.blob_bytes.load(Ordering::Relaxed)
    }

    /// Blob GETs with a body relayed, per digest.
    pub fn blob_gets(&self) -> HashMap<String, u64> {
        self.counts
            .blob_gets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn relay(State(st): State<St>, req: Request) -> Response {
    let method = req.method().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut headers: HeaderMap = req.headers().clone();
    headers.remove(axum::http::header::HOST);
    let body = match axum::body::to_bytes(req.into_body(), 256 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let resp = match st
        .http
        .request(method.clone(), format!("http://{}{pq}", st.target))
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (k, v) in resp.headers() {
        if k != axum::http::header::TRANSFER_ENCODING && k != axum::http::header::CONNECTION {
            out = out.header(k, v);
        }
    }
    let blob = pq
        .split('?')
        .next()
        .and_then(|p| p.rsplit_once("/blobs/"))
        .map(|(_, d)| d.to_owned())
        .filter(|d| d.starts_with("sha256:"));
    if let (Some(d), true, true) = (blob, method == Method::GET, status.is_success()) {
        *st.counts
            .blob_gets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(d)
            .or_default() += 1;
    }
    let counts = st.counts.clone();
    let counting = method == Method::GET && pq.contains("/blobs/");
    let stream = resp.bytes_stream().map(move |c| {
        if let Ok(b) = &c {
            if counting {
                counts
                    .blob_bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        }
        c.map_err(std::io::Error::other)
    });
    out.body(Body::from_stream(stream)).unwrap_or_default()
}
