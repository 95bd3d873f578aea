//! Upstream authentication: Basic passthrough, and the Bearer token exchange done for the
//! client with its own (or configured) credentials, with a per-scope token cache where
//! concurrent pulls share one token request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::upstream::Upstream;
use super::MirrorError;

/// Longest a token request may take, answer included.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `bearer` or `basic`, lower case.
    pub(crate) scheme: String,
    /// Parameters (`realm`, `service`, `scope`), names lower case.
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Scheme k="v", k2=v2` (quoted values may hold commas and escaped quotes).
pub(crate) fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, mut rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key, value));
        rest = next;
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Who is asking, as far as upstream rights go.
#[derive(Clone)]
enum Creds {
    /// No credentials: anonymous tokens only.
    Anonymous,
    /// A Basic `Authorization` value (the client's own, or built from configuration).
    Basic(HeaderValue),
}

impl Creds {
    fn fingerprint(&self) -> String {
        match self {
            Creds::Anonymous => "anonymous".into(),
            Creds::Basic(v) => hex::encode(Sha256::digest(v.as_bytes())),
        }
    }
}

#[derive(Clone)]
struct Token {
    value: HeaderValue,
    expires: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Token cache and challenge memory, shared by every request of a mirror.
#[derive(Default)]
pub(crate) struct Auth {
    /// Per (realm, service, scope, credentials): one slot; its lock is the single flight.
    tokens: Mutex<HashMap<String, Slot>>,
    /// The last challenge seen per upstream and repository, so later requests carry a
    /// token at once instead of collecting a 401 first.
    challenges: Mutex<HashMap<(String, String), Challenge>>,
    /// Token requests sent (for metrics and tests).
    pub(crate) token_requests: AtomicU64,
}

/// An upstream answer and the headers that got it (with the Authorization actually used).
pub(crate) struct Sent {
    pub(crate) resp: reqwest::Response,
    pub(crate) headers: HeaderMap,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_bearer(v: &HeaderValue) -> bool {
    v.as_bytes()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
}

impl Auth {
    /// Sends a request to the upstream on behalf of a client of `repo`, doing the token
    /// exchange when the upstream asks for one. A client that brings its own Bearer token
    /// (it did the exchange itself) is passed through untouched.
    pub(crate) async fn send(
        &self,
        up: &Upstream,
        repo: &str,
        method: Method,
        url: &Url,
        mut headers: HeaderMap,
    ) -> Result<Sent, MirrorError> {
        let client_auth = headers.get(header::AUTHORIZATION).cloned();
        if client_auth.as_ref().is_some_and(is_bearer) {
            return send_once(up, &method, url, headers).await;
        }
        let creds = match client_auth {
            Some(v) => Creds::Basic(v),
            None => match &up.credentials {
                Some((u, p)) => {
                    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                    HeaderValue::from_str(&format!("Basic {enc}"))
                        .map(Creds::Basic)
                        .unwrap_or(Creds::Anonymous)
                }
                None => Creds::Anonymous,
            },
        };
        let memo_key = (up.name.clone(), repo.to_owned());
        let known = lock(&self.challenges).get(&memo_key).cloned();
        let mut used_cached = None;
        match (&known, &creds) {
            (Some(ch), _) if ch.scheme == "bearer" => {
                if let Some(slot) = self.cached_slot(ch, repo, &creds) {
                    if let Some(t) = slot
                        .lock()
                        .await
                        .clone()
                        .filter(|t| t.expires > Instant::now())
                    {
                        headers.insert(header::AUTHORIZATION, t.value.clone());
                        used_cached = Some(t.value);
                    }
                }
            }
            (_, Creds::Basic(v)) => {
                headers.insert(header::AUTHORIZATION, v.clone());
            }
            _ => {}
        }
        let first = send_once(up, &method, url, headers.clone()).await?;
        if first.resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let Some(ch) = first
            .resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().and_then(parse_challenge))
            .find(|c| c.scheme == "bearer" || c.scheme == "basic")
        else {
            return Ok(first);
        };
        lock(&self.challenges).insert(memo_key, ch.clone());
        let value = match ch.scheme.as_str() {
            "bearer" => {
                match self
                    .token(up, &ch, repo, &creds, used_cached.as_ref())
                    .await
                {
                    Ok(v) => v,
                    // Wrong credentials or a token server saying no: the client sees the
                    // upstream's own 401 and challenge.
                    Err(e) => {
                        tracing::info!(upstream = %up.name, error = %e, "token exchange refused");
                        return Ok(first);
                    }
                }
            }
            _ => match &creds {
                Creds::Basic(v) if headers.get(header::AUTHORIZATION) != Some(v) => v.clone(),
                _ => return Ok(first),
            },
        };
        headers.insert(header::AUTHORIZATION, value);
        send_once(up, &method, url, headers).await
    }

    fn scope_key(ch: &Challenge, repo: &str, creds: &Creds) -> Option<(String, Url, String)> {
        let realm = Url::parse(ch.param("realm")?).ok()?;
        if !matches!(realm.scheme(), "http" | "https") {
            return None;
        }
        let scope = ch
            .param("scope")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("repository:{repo}:pull"));
        let service = ch.param("service").unwrap_or_default();
        let key = format!("{realm}\n{service}\n{scope}\n{}", creds.fingerprint());
        Some((key, realm, scope))
    }

    fn cached_slot(&self, ch: &Challenge, repo: &str, creds: &Creds) -> Option<Slot> {
        let (key, _, _) = Self::scope_key(ch, repo, creds)?;
        lock(&self.tokens).get(&key).cloned()
    }

    /// A token for the challenge's scope: the cached one, or one fetched now by exactly one
    /// of the requests wanting it. `stale` is a token the upstream just refused. The
    /// request goes out with the upstream's client: a token server on the registry's host
    /// usually has a certificate from the same private CA (`ca_file`).
    async fn token(
        &self,
        up: &Upstream,
        ch: &Challenge,
        repo: &str,
        creds: &Creds,
        stale: Option<&HeaderValue>,
    ) -> Result<HeaderValue, MirrorError> {
        let (key, mut realm, scope) = Self::scope_key(ch, repo, creds).ok_or_else(|| {
            MirrorError::Upstream("token challenge without a usable realm".into())
        })?;
        let slot = {
            let mut tokens = lock(&self.tokens);
            if tokens.len() > 4096 {
                tokens.retain(|_, s| Arc::strong_count(s) > 1);
            }
            tokens.entry(key).or_default().clone()
        };
        let mut held = slot.lock().await;
        if let Some(t) = held.as_ref() {
            if t.expires > Instant::now() && Some(&t.value) != stale {
                return Ok(t.value.clone());
            }
        }
        {
            let mut q = realm.query_pairs_mut();
            if let Some(s) = ch.param("service") {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &scope);
        }
        let mut req = up.http.get(realm.clone()).timeout(TOKEN_TIMEOUT);
        if let Creds::Basic(v) = creds {
            req = req.header(header::AUTHORIZATION, v.clone());
        }
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| {
            MirrorError::Upstream(format!("token server {realm}: {}", root_cause(&e)))
        })?;
        if !resp.status().is_success() {
            return Err(MirrorError::Upstream(format!(
                "token server {} answered {}",
                realm.host_str().unwrap_or_default(),
                resp.status()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let a: Answer = resp
            .json()
            .await
            .map_err(|e| MirrorError::Upstream(format!("token server answer: {e}")))?;
        let token = a
            .token
            .or(a.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| MirrorError::Upstream("token server answered without a token".into()))?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| MirrorError::Upstream("token server sent an unusable token".into()))?;
        // The spec's default lifetime is 60 s; refresh a little before the end.
        let life = Duration::from_secs(a.expires_in.unwrap_or(60).clamp(1, 24 * 3600));
        *held = Some(Token {
            value: value.clone(),
            expires: Instant::now() + life.mul_f64(0.9),
        });
        Ok(value)
    }
}

async fn send_once(
    up: &Upstream,
    method: &Method,
    url: &Url,
    headers: HeaderMap,
) -> Result<Sent, MirrorError> {
    let resp = up
        .http
        .request(method.clone(), url.clone())
        .headers(headers.clone())
        .send()
        .await
        .map_err(|e| MirrorError::Unreachable(format!("{}: {}", up.name, root_cause(&e))))?;
    Ok(Sent { resp, headers })
}

pub(crate) use odonata_proto::error::root_cause;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        let c = parse_challenge(r#"Bearer realm=x, error="a\"b""#).unwrap();
        assert_eq!(c.param("realm"), Some("x"));
        assert_eq!(c.param("error"), Some("a\"b"));
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    proptest::proptest! {
        #[test]
        fn challenge_parser_never_panics(s in r#"[A-Za-z]{0,8} [a-z=",\\ ]{0,60}"#, raw in ".{0,80}") {
            let _ = parse_challenge(&s);
            let _ = parse_challenge(&raw);
        }
    }
}
