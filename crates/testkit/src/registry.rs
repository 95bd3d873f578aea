//! An in-memory OCI registry for mirror tests: manifests, tags and blobs with Range,
//! Basic or token auth, 307 redirects to a storage path, corrupted blobs on demand, and
//! counters of every blob byte, token request and request line it saw.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use tokio::net::TcpListener;

use crate::sha256_hex;

/// How the registry wants clients to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull.
    Open,
    /// HTTP Basic with these credentials.
    Basic(String, String),
    /// Bearer tokens from `/token`, issued to these credentials.
    Token(String, String),
}

/// One request as the registry saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Each `Accept` line as sent.
    pub accept: Vec<String>,
}

/// What a fake image holds.
#[derive(Clone, Debug)]
pub struct FakeImage {
    /// Manifest digest.
    pub manifest: String,
    /// Config digest.
    pub config: String,
    /// Layer digests.
    pub layers: Vec<String>,
    /// Manifest bytes.
    pub manifest_bytes: Bytes,
}

#[derive(Default)]
struct St {
    addr: Mutex<String>,
    auth: Mutex<Option<RegistryAuth>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    manifests: Mutex<HashMap<(String, String), (String, Bytes)>>,
    tokens: Mutex<HashSet<String>>,
    corrupt: Mutex<HashSet<String>>,
    redirect: AtomicBool,
    blob_bytes: AtomicU64,
    blob_gets: Mutex<HashMap<String, u64>>,
    token_requests: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running fake registry on 127.0.0.1.
pub struct FakeRegistry {
    /// Where it listens.
    pub addr: SocketAddr,
    st: Arc<St>,
    _stop: crate::background::Background,
}

impl FakeRegistry {
    /// Starts one with the given auth.
    pub async fn start(auth: RegistryAuth) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let st = Arc::new(St::default());
        *lock(&st.addr) = addr.to_string();
        *lock(&st.auth) = Some(auth);
        let app = Router::new().fallback(handle).with_state(st.clone());
        let _stop = crate::background::serve(listener, app, None);
        Ok(Self { addr, st, _stop })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores a blob; returns its digest.
    pub fn put_blob(&self, data: Bytes) -> String {
        let d = format!("sha256:{}", sha256_hex(&data));
        lock(&self.st.blobs).insert(d.clone(), data);
        d
    }

    /// Stores a manifest under `tag` and its digest; returns the digest.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: Bytes) -> String {
        let d = format!("sha256:{}", sha256_hex(&body));
        let mut m = lock(&self.st.manifests);
        m.insert((repo.into(), tag.into()), (media_type.into(), body.clone()));
        m.insert((repo.into(), d.clone()), (media_type.into(), body));
        d
    }

    /// Stores an OCI image (config plus `layers`) as `repo:tag`.
    pub fn put_image(&self, repo: &str, tag: &str, layers: &[Bytes]) -> FakeImage {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"note":"{repo}:{tag}"}}"#
        ));
        let config_digest = self.put_blob(config.clone());
        let layer_digests: Vec<String> = layers.iter().map(|l| self.put_blob(l.clone())).collect();
        let layer_json: Vec<String> = layer_digests
            .iter()
            .zip(layers)
            .map(|(d, l)| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#,
                    l.len()
                )
            })
            .collect();
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_json.join(",")
        ));
        let md = self.put_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.clone(),
        );
        FakeImage {
            manifest: md,
            config: config_digest,
            layers: layer_digests,
            manifest_bytes: manifest,
        }
    }

    /// Serves `digest` with one byte flipped from now on.
    pub fn corrupt(&self, digest: &str) {
        lock(&self.st.corrupt).insert(digest.into());
    }

    /// Serves `digest` intact again.
    pub fn repair(&self, digest: &str) {
        lock(&self.st.corrupt).remove(digest);
    }

    /// Sends blob requests to `/storage/DIGEST` with a 307 from now on.
    pub fn set_redirect(&self, on: bool) {
        self.st.redirect.store(on, Ordering::Relaxed);
    }

    /// Blob body bytes sent so far.
    pub fn blob_bytes(&self) -> u64 {
        self.st.blob_bytes.load(Ordering::Relaxed)
    }

    /// Blob GETs answered with a body, per digest.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        lock(&self.st.blob_gets).get(digest).copied().unwrap_or(0)
    }

    /// Token requests answered.
    pub fn token_requests(&self) -> u64 {
        self.st.token_requests.load(Ordering::Relaxed)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.st.seen).clone()
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn deny(st: &St, scope_repo: &str) -> Response {
    let auth = lock(&st.auth).clone();
    let challenge = match auth {
        Some(RegistryAuth::Token(..)) => format!(
            r#"Bearer realm="http://{}/token",service="fake-registry",scope="repository:{scope_repo}:pull""#,
            lock(&st.addr)
        ),
        _ => r#"Basic realm="fake-registry""#.to_owned(),
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

fn allowed(st: &St, h: &HeaderMap) -> bool {
    let got = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match lock(&st.auth).clone() {
        None | Some(RegistryAuth::Open) => true,
        Some(RegistryAuth::Basic(u, p)) => got == Some(basic(&u, &p).as_str()),
        Some(RegistryAuth::Token(..)) => got
            .and_then(|g| g.strip_prefix("Bearer "))
            .is_some_and(|t| lock(&st.tokens).contains(t)),
    }
}

fn not_found(code: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"errors":[{{"code":"{code}","message":"not here"}}]}}"#),
    )
        .into_response()
}

async fn handle(State(st): State<Arc<St>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let h = req.headers().clone();
    lock(&st.seen).push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        accept: h
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect(),
    });
    if path == "/token" {
        return token(&st, &h);
    }
    if let Some(d) = path.strip_prefix("/storage/") {
        return blob(&st, &method, &h, d);
    }
    if path == "/v2/" {
        if !allowed(&st, &h) {
            return deny(&st, "");
        }
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response();
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found("UNSUPPORTED");
    };
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        if !allowed(&st, &h) {
            return deny(&st, repo);
        }
        let mut tags: Vec<String> = lock(&st.manifests)
            .keys()
            .filter(|(r, t)| r == repo && !t.starts_with("sha256:"))
            .map(|(_, t)| t.clone())
            .collect();
        tags.sort();
        let body = serde_json::json!({"name": repo, "tags": tags}).to_string();
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let (repo, reference) = (&rest[..i], &rest[i + 11..]);
        if !allowed(&st, &h) {
            return deny(&st, repo);
        }
        let Some((mt, body)) = lock(&st.manifests)
            .get(&(repo.into(), reference.into()))
            .cloned()
        else {
            return not_found("MANIFEST_UNKNOWN");
        };
        // Like distribution: an OCI manifest is only given to clients that accept it.
        let accepts: Vec<String> = h
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
            .collect();
        if !accepts.iter().any(|a| a == &mt || a == "*/*") {
            return not_found("MANIFEST_UNKNOWN");
        }
        let digest = format!("sha256:{}", sha256_hex(&body));
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, mt)
            .header("Docker-Content-Digest", digest)
            .header(header::CONTENT_LENGTH, body.len());
        let b = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        };
        return resp.body(b).unwrap_or_default();
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let (repo, digest) = (&rest[..i], &rest[i + 7..]);
        if !allowed(&st, &h) {
            return deny(&st, repo);
        }
        if st.redirect.load(Ordering::Relaxed) && lock(&st.blobs).contains_key(digest) {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, format!("/storage/{digest}"))
                .body(Body::empty())
                .unwrap_or_default();
        }
        return blob(&st, &method, &h, digest);
    }
    not_found("UNSUPPORTED")
}

fn token(st: &St, h: &HeaderMap) -> Response {
    st.token_requests.fetch_add(1, Ordering::Relaxed);
    let Some(RegistryAuth::Token(u, p)) = lock(&st.auth).clone() else {
        return not_found("UNSUPPORTED");
    };
    let got = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if got != Some(basic(&u, &p).as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let t = format!("tok-{:016x}", rand::random::<u64>());
    lock(&st.tokens).insert(t.clone());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"token": t, "expires_in": 300}).to_string(),
    )
        .into_response()
}

fn blob(st: &St, method: &Method, h: &HeaderMap, digest: &str) -> Response {
    let Some(mut data) = lock(&st.blobs).get(digest).cloned() else {
        return not_found("BLOB_UNKNOWN");
    };
    if lock(&st.corrupt).contains(digest) && !data.is_empty() {
        let mut v = data.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        data = Bytes::from(v);
    }
    let len = data.len() as u64;
    let range = h
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let a: u64 = a.parse().ok()?;
            let b: u64 = if b.is_empty() {
                len.checked_sub(1)?
            } else {
                b.parse().ok()?
            };
            (a <= b && b < len).then_some((a, b))
        });
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", digest)
        .header(header::ACCEPT_RANGES, "bytes");
    let body = match range {
        Some((a, b)) => {
            resp = resp
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
            data.slice(a as usize..=b as usize)
        }
        None => data,
    };
    resp = resp.header(header::CONTENT_LENGTH, body.len());
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap_or_default();
    }
    st.blob_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    *lock(&st.blob_gets).entry(digest.to_owned()).or_default() += 1;
    resp.body(Body::from(body)).unwrap_or_default()
}
