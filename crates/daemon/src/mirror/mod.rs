//! dfdaemon as an OCI registry mirror (`--proxy-listen`): the pull side of the distribution
//! API in front of one or more upstream registries, with blobs through the swarm keyed by
//! their digest. The same port also works as a plain HTTP proxy (see [`proxy`]).
//!
//! Manifests, tags and `/v2/` pass through with the exact bytes and headers; blobs are
//! checked with the upstream (HEAD with the client's credentials), then streamed from the
//! piece store while the swarm fills it and verified against the digest before the last
//! byte leaves. When the swarm cannot deliver the upstream is read directly; when the
//! mirror cannot serve at all it answers 404/5xx so the runtime tries its next host.

mod auth;
mod blob;
mod body;
pub mod config;
mod passthrough;
pub mod proxy;
mod range;
mod route;
mod server;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

pub use config::{MirrorConfig, MirrorFile};
pub use server::serve;

use crate::engine::Engine;
use body::Body;
use route::Route;

/// Why the mirror could not serve a request (each maps to an answer the runtime
/// understands: 404 or 5xx make it try its next host).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The mirror's settings are unusable.
    #[error("mirror config: {0}")]
    Config(String),
    /// No `?ns=` and no default upstream.
    #[error("no upstream registry configured (use --registry URL or ?ns=HOST)")]
    NoUpstream,
    /// `?ns=` names a registry that is not allowed.
    #[error("registry '{0}' is not configured on this mirror")]
    UnknownRegistry(String),
    /// The upstream could not be reached.
    #[error("cannot reach upstream {0}")]
    Unreachable(String),
    /// The upstream answered something unusable.
    #[error("upstream: {0}")]
    Upstream(String),
}

impl MirrorError {
    fn response(&self) -> Response<Body> {
        match self {
            MirrorError::NoUpstream | MirrorError::UnknownRegistry(_) => {
                oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", &self.to_string())
            }
            MirrorError::Unreachable(_) | MirrorError::Upstream(_) => {
                oci_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &self.to_string())
            }
            MirrorError::Config(_) => oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                &self.to_string(),
            ),
        }
    }
}

/// An error answer in the distribution spec's JSON shape.
pub(crate) fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let b = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut r = Response::new(body::full(b.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    r
}

/// What the mirror has done, for metrics and tests.
#[derive(Default, Debug)]
pub struct MirrorStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Blob bytes read from the piece store (brought by the swarm).
    pub blob_bytes_p2p: AtomicU64,
    /// Blob bytes read straight from an upstream (fallback).
    pub blob_bytes_direct: AtomicU64,
    /// Blob responses aborted because the content did not match its digest.
    pub digest_mismatches: AtomicU64,
    /// Blob bodies being produced right now.
    pub open_streams: AtomicU64,
}

struct Inner {
    cfg: MirrorConfig,
    engine: Engine,
    upstreams: upstream::Upstreams,
    auth: auth::Auth,
    tags: passthrough::TagCache,
    proxy: proxy::Rules,
    stats: MirrorStats,
    /// Tasks whose swarm copy failed the digest check lately: served from the upstream
    /// directly for a while, so a seed that cached bad bytes cannot fail every pull.
    poisoned:
        std::sync::Mutex<std::collections::HashMap<odonata_proto::TaskId, std::time::Instant>>,
}

/// The mirror; cheap to clone.
#[derive(Clone)]
pub struct Mirror(Arc<Inner>);

impl Mirror {
    /// A mirror over `engine` with upstream clients built from `cfg`.
    pub fn new(cfg: MirrorConfig, engine: Engine) -> Result<Self, MirrorError> {
        let upstreams = upstream::Upstreams::new(&cfg)?;
        let proxy = proxy::Rules::new(&cfg.proxy_rules, cfg.connect)?;
        Ok(Self(Arc::new(Inner {
            upstreams,
            auth: auth::Auth::default(),
            tags: passthrough::TagCache::default(),
            proxy,
            stats: MirrorStats::default(),
            poisoned: Default::default(),
            engine,
            cfg,
        })))
    }

    /// Counters.
    pub fn stats(&self) -> &MirrorStats {
        &self.0.stats
    }

    /// Token requests sent to upstream token servers so far.
    pub fn token_requests(&self) -> u64 {
        self.0.auth.token_requests.load(Ordering::Relaxed)
    }

    /// The engine behind the mirror.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    fn metrics(&self) -> Response<Body> {
        let s = &self.0.stats;
        let out = odonata_transfer::runtime::render_metrics(&[
            (
                "odonata_mirror_requests_total",
                "Requests answered.",
                "counter",
                s.requests.load(Ordering::Relaxed),
            ),
            (
                "odonata_mirror_blob_bytes_p2p_total",
                "Blob bytes served from the swarm's pieces.",
                "counter",
                s.blob_bytes_p2p.load(Ordering::Relaxed),
            ),
            (
                "odonata_mirror_blob_bytes_direct_total",
                "Blob bytes read straight from upstreams.",
                "counter",
                s.blob_bytes_direct.load(Ordering::Relaxed),
            ),
            (
                "odonata_mirror_digest_mismatches_total",
                "Blob responses aborted on a digest mismatch.",
                "counter",
                s.digest_mismatches.load(Ordering::Relaxed),
            ),
            (
                "odonata_mirror_token_requests_total",
                "Token requests sent to upstream token servers.",
                "counter",
                self.token_requests(),
            ),
            (
                "odonata_mirror_open_streams",
                "Blob bodies being produced.",
                "gauge",
                s.open_streams.load(Ordering::Relaxed),
            ),
            (
                "odonata_mirror_running_tasks",
                "Swarm tasks running in the engine.",
                "gauge",
                self.0.engine.running_tasks() as u64,
            ),
        ]);
        let mut r = Response::new(body::full(out));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// Answers one request (registry API, or proxy when the target is absolute).
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.0.stats.requests.fetch_add(1, Ordering::Relaxed);
        if req.method() == Method::CONNECT || req.uri().scheme().is_some() {
            return proxy::handle(self, req).await;
        }
        let (parts, _body) = req.into_parts();
        match self.registry(&parts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(path = %parts.uri.path(), error = %e, "mirror request failed");
                e.response()
            }
        }
    }

    async fn registry(&self, parts: &http::request::Parts) -> Result<Response<Body>, MirrorError> {
        let path = parts.uri.path();
        if path == "/healthz" {
            return Ok(Response::new(body::full("ok")));
        }
        if path == "/metrics" {
            return Ok(self.metrics());
        }
        let route = match route::parse(path) {
            Ok(r) => r,
            Err(e @ route::RouteError::Unknown(_)) => {
                return Ok(oci_error(
                    StatusCode::NOT_FOUND,
                    "UNSUPPORTED",
                    &e.to_string(),
                ))
            }
            Err(e @ route::RouteError::Name(_)) => {
                return Ok(oci_error(
                    StatusCode::BAD_REQUEST,
                    "NAME_INVALID",
                    &e.to_string(),
                ))
            }
            Err(e) => {
                return Ok(oci_error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    &e.to_string(),
                ))
            }
        };
        let method = parts.method.clone();
        if method != Method::GET && method != Method::HEAD {
            let mut r = oci_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this mirror serves pulls only (GET and HEAD)",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        let query = parts.uri.query();
        let ns = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ns")
                .map(|(_, v)| v.into_owned())
        });
        let up = self.0.upstreams.pick(ns.as_deref())?;
        let h = &parts.headers;
        match route {
            Route::Ping => {
                let url = up.url("/v2/", None);
                passthrough::raw(&up, method, url, upstream::to_upstream(h)).await
            }
            Route::Manifest { repo, reference } => {
                let url = up.url(&format!("/v2/{repo}/manifests/{reference}"), query);
                let tag = !route::valid_digest(&reference);
                passthrough::forward(self, &up, &repo, method, url, h, tag).await
            }
            Route::Tags { repo } => {
                let url = up.url(&format!("/v2/{repo}/tags/list"), query);
                passthrough::forward(self, &up, &repo, method, url, h, false).await
            }
            Route::Blob { repo, digest } => blob::serve(self, up, &repo, &digest, method, h).await,
        }
    }
}
