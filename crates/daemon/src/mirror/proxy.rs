//! Plain HTTP proxy mode on the mirror's port (`HTTP_PROXY=http://127.0.0.1:65001`):
//! GETs whose URL matches a rule go through the swarm, everything else is forwarded as
//! it is, and HTTPS `CONNECT` is tunnelled untouched.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use odonata_proto::{TaskId, TaskKey};
use regex::Regex;
use tokio::net::TcpStream;
use url::Url;

use super::blob::{respond, Source};
use super::body::{self, Body};
use super::upstream::{client, to_client, to_upstream, Upstream};
use super::{route, Mirror, MirrorError};

/// Largest request body forwarded in proxy mode (uploads are not what this proxy is for).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// Which URLs go through the swarm.
pub struct Rules {
    p2p: Vec<Regex>,
    connect: bool,
    http: reqwest::Client,
}

impl Rules {
    /// Compiles the rules.
    pub(crate) fn new(patterns: &[String], connect: bool) -> Result<Self, MirrorError> {
        let p2p = patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| MirrorError::Config(format!("proxy rule '{p}': {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            p2p,
            connect,
            http: client(None)?,
        })
    }

    fn through_p2p(&self, url: &str) -> bool {
        self.p2p.iter().any(|r| r.is_match(url))
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Answers a proxy request (absolute URL or CONNECT).
pub(crate) async fn handle<B>(m: &Mirror, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.method() == Method::CONNECT {
        return connect(m, req);
    }
    match forward(m, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "proxy request failed");
            text(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

fn connect<B>(m: &Mirror, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
{
    if !m.0.proxy.connect {
        return text(StatusCode::FORBIDDEN, "CONNECT is turned off on this proxy");
    }
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if req.uri().port_u16().is_none() {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let mut up = match TcpStream::connect(&target).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%target, error = %e, "CONNECT target unreachable");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    });
    Response::new(body::empty())
}

async fn forward<B>(m: &Mirror, req: Request<B>) -> Result<Response<Body>, MirrorError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let url = Url::parse(&req.uri().to_string())
        .map_err(|e| MirrorError::Upstream(format!("bad proxy target: {e}")))?;
    if url.scheme() != "http" {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are proxied; use CONNECT for https",
        ));
    }
    let rules = &m.0.proxy;
    let method = req.method().clone();
    let headers = to_upstream(req.headers());
    if (method == Method::GET || method == Method::HEAD) && rules.through_p2p(url.as_str()) {
        return through_swarm(m, url, method, req.headers().clone(), headers).await;
    }
    let (parts, b) = req.into_parts();
    let bytes: Bytes = match Limited::new(b, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Ok(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body refused: {e}"),
            ))
        }
    };
    let resp = rules
        .http
        .request(parts.method.clone(), url.clone())
        .headers(headers)
        .body(bytes)
        .send()
        .await
        .map_err(|e| MirrorError::Unreachable(format!("{url}: {}", super::auth::root_cause(&e))))?;
    let status = resp.status();
    let h = to_client(resp.headers());
    let b = if parts.method == Method::HEAD {
        body::empty()
    } else {
        body::from_upstream(resp)
    };
    let mut r = Response::new(b);
    *r.status_mut() = status;
    *r.headers_mut() = h;
    Ok(r)
}

/// A GET chosen by the rules: the origin's HEAD decides, then the bytes come through the
/// swarm (keyed by the blob digest for registry blob URLs, else by the URL).
async fn through_swarm(
    m: &Mirror,
    url: Url,
    method: Method,
    client_headers: http::HeaderMap,
    headers: http::HeaderMap,
) -> Result<Response<Body>, MirrorError> {
    let up = Arc::new(Upstream {
        name: url.host_str().unwrap_or_default().to_owned(),
        base: url.clone(),
        http: m.0.proxy.http.clone(),
        credentials: None,
    });
    let mut head_headers = headers.clone();
    head_headers.remove(header::RANGE);
    let head = up
        .http
        .head(url.clone())
        .headers(head_headers.clone())
        .send()
        .await
        .map_err(|e| MirrorError::Unreachable(format!("{url}: {}", super::auth::root_cause(&e))))?;
    let len = head
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = len.filter(|_| head.status() == StatusCode::OK) else {
        // Errors, redirects and unknown lengths are the origin's to answer.
        return super::passthrough::raw(&up, method, url, headers).await;
    };
    let digest = url
        .path()
        .rsplit_once("/blobs/")
        .map(|(_, d)| d.to_owned())
        .filter(|d| route::sha256_hex(d).is_some());
    let (identity, task) = match &digest {
        Some(d) => {
            let i = format!("oci-blob:{d}");
            let t = TaskId::for_identity(&i).map_err(|e| MirrorError::Upstream(e.to_string()))?;
            (Some(i), t)
        }
        None => (
            None,
            TaskKey::new(url.as_str(), &[])
                .map_err(|e| MirrorError::Upstream(e.to_string()))?
                .id(),
        ),
    };
    let src = Source {
        want: digest.as_deref().and_then(route::sha256_hex),
        up,
        url,
        headers: head_headers,
        len,
        identity,
        task,
    };
    Ok(respond(m, src, &method, &client_headers))
}
