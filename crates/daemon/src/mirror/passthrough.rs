//! Manifests, tags and the version check: passed to the upstream and back with the exact
//! bytes and headers, plus a short cache for tag lookups.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::body::{self, Body};
use super::upstream::{to_client, to_upstream, Upstream};
use super::{Mirror, MirrorError};

/// Largest manifest kept in the tag cache (manifests are small; an index rarely tops 100K).
const MAX_CACHED: usize = 4 << 20;

struct Entry {
    at: Instant,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Recent tag answers by (method, upstream, URL, Accept lines, credentials).
#[derive(Default)]
pub(crate) struct TagCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl TagCache {
    fn key(method: &Method, up: &Upstream, url: &Url, h: &HeaderMap) -> String {
        let mut k = Sha256::new();
        k.update(method.as_str());
        k.update(b"\n");
        k.update(&up.name);
        k.update(b"\n");
        k.update(url.as_str());
        for name in [header::ACCEPT, header::AUTHORIZATION] {
            for v in h.get_all(&name) {
                k.update(b"\n");
                k.update(v.as_bytes());
            }
            k.update(b"\0");
        }
        hex::encode(k.finalize())
    }

    fn get(&self, key: &str, ttl: Duration) -> Option<Response<Body>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(key).filter(|e| e.at.elapsed() < ttl)?;
        Some(respond(
            e.status,
            e.headers.clone(),
            body::full(e.body.clone()),
        ))
    }

    fn put(&self, key: String, e: Entry, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= 1024 {
            entries.retain(|_, e| e.at.elapsed() < ttl);
        }
        if entries.len() < 1024 {
            entries.insert(key, e);
        }
    }
}

/// Forwards one request and returns the upstream's answer as it is.
pub(crate) async fn forward(
    m: &Mirror,
    up: &Upstream,
    repo: &str,
    method: Method,
    url: Url,
    client_headers: &HeaderMap,
    tag_lookup: bool,
) -> Result<Response<Body>, MirrorError> {
    let ttl = m.0.cfg.tag_cache;
    let cache_key =
        (tag_lookup && !ttl.is_zero()).then(|| TagCache::key(&method, up, &url, client_headers));
    if let Some(k) = &cache_key {
        if let Some(r) = m.0.tags.get(k, ttl) {
            return Ok(r);
        }
    }
    let sent =
        m.0.auth
            .send(up, repo, method.clone(), &url, to_upstream(client_headers))
            .await?;
    let resp = sent.resp;
    let status = resp.status();
    let headers = to_client(resp.headers());
    let small = resp
        .content_length()
        .is_some_and(|l| l as usize <= MAX_CACHED);
    if let (Some(k), true, true) = (cache_key, status == StatusCode::OK, small) {
        let bytes = if method == Method::HEAD {
            Bytes::new()
        } else {
            resp.bytes()
                .await
                .map_err(|e| MirrorError::Unreachable(format!("{}: {e}", up.name)))?
        };
        m.0.tags.put(
            k,
            Entry {
                at: Instant::now(),
                status,
                headers: headers.clone(),
                body: bytes.clone(),
            },
            ttl,
        );
        return Ok(respond(status, headers, body::full(bytes)));
    }
    Ok(respond(status, headers, upstream_body(&method, resp)))
}

/// A response with this status, headers and body.
fn respond(status: StatusCode, headers: HeaderMap, b: Body) -> Response<Body> {
    let mut r = Response::new(b);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// The upstream's body as the client's (none for HEAD).
fn upstream_body(method: &Method, resp: reqwest::Response) -> Body {
    if method == Method::HEAD {
        body::empty()
    } else {
        body::from_upstream(resp)
    }
}

/// Sends a request as it is (no token exchange, no cache) and returns the answer as it is.
pub(crate) async fn raw(
    up: &Upstream,
    method: Method,
    url: Url,
    headers: HeaderMap,
) -> Result<Response<Body>, MirrorError> {
    let resp = up
        .http
        .request(method.clone(), url)
        .headers(headers)
        .send()
        .await
        .map_err(|e| {
            MirrorError::Unreachable(format!("{}: {}", up.name, super::auth::root_cause(&e)))
        })?;
    let status = resp.status();
    let headers = to_client(resp.headers());
    Ok(respond(status, headers, upstream_body(&method, resp)))
}
