//! A token server for a real registry's `auth: token:` section: HTTP Basic credentials in,
//! ES256 JWTs out (signed with a P-256 key whose certificate goes in the registry's
//! `rootcertbundle` and in each token's `x5c`), and a count of the requests it got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Lifetime of the tokens handed out.
const LIFETIME: Duration = Duration::from_secs(300);

/// Why a token server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing a file, binding or running `openssl` failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The key or certificate is not what ring or PEM parsing accepts.
    #[error("signing key: {0}")]
    Key(String),
}

/// Paths of a signing key and its self-signed certificate (both PEM).
#[derive(Clone, Debug)]
pub struct SigningCert {
    /// PKCS#8 P-256 private key.
    pub key: PathBuf,
    /// Self-signed certificate of that key: the registry's `rootcertbundle`.
    pub cert: PathBuf,
}

/// Makes a P-256 key and a self-signed certificate for it under `dir` with `openssl`.
pub fn signing_cert(dir: &Path) -> Result<SigningCert, TokenError> {
    let key = dir.join("token-key.pem");
    let cert = dir.join("token-cert.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=odonata-test-token-signer",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !out.status.success() {
        return Err(TokenError::Io(std::io::Error::other(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))));
    }
    Ok(SigningCert { key, cert })
}

/// Who may get tokens and what the tokens say.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// The one user allowed in.
    pub user: String,
    /// That user's password.
    pub password: String,
    /// The registry's `service` (the tokens' audience).
    pub service: String,
    /// The registry's `issuer`.
    pub issuer: String,
}

struct St {
    cfg: TokenConfig,
    key: EcdsaKeyPair,
    x5c: String,
    rng: SystemRandom,
    requests: AtomicU64,
}

/// A running token server on 127.0.0.1.
pub struct TokenServer {
    /// Where it listens.
    pub addr: SocketAddr,
    https: bool,
    st: Arc<St>,
    _stop: crate::background::Background,
}

fn key_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Key(e.to_string())
}

impl TokenServer {
    /// Starts serving `GET /token` over plain HTTP, signing with `signer`.
    pub async fn start(cfg: TokenConfig, signer: &SigningCert) -> Result<Self, TokenError> {
        Self::launch(cfg, signer, None).await
    }

    /// Starts serving `GET /token` over HTTPS with this PEM certificate chain and key.
    pub async fn start_tls(
        cfg: TokenConfig,
        signer: &SigningCert,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, TokenError> {
        Self::launch(cfg, signer, Some(crate::tls::acceptor(cert, key)?)).await
    }

    async fn launch(
        cfg: TokenConfig,
        signer: &SigningCert,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self, TokenError> {
        let der = match PrivateKeyDer::from_pem_file(&signer.key).map_err(key_err)? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => return Err(TokenError::Key("the key is not PKCS#8".into())),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(key_err)?;
        let cert = CertificateDer::from_pem_file(&signer.cert).map_err(key_err)?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let st = Arc::new(St {
            cfg,
            key,
            x5c,
            rng,
            requests: AtomicU64::new(0),
        });
        // Any other method (containerd tries an OAuth POST first) gets 405, and is counted.
        let app = Router::new()
            .route("/token", get(token).fallback(refuse))
            .with_state(st.clone());
        let https = tls.is_some();
        let _stop = crate::background::serve(listener, app, tls);
        Ok(Self {
            addr,
            https,
            st,
            _stop,
        })
    }

    /// The `realm` to put in the registry's configuration.
    pub fn realm(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/token", self.addr)
    }

    /// Requests received on `/token` so far (any method, any outcome).
    pub fn requests(&self) -> u64 {
        self.st.requests.load(Ordering::Relaxed)
    }
}

async fn refuse(State(st): State<Arc<St>>) -> StatusCode {
    st.requests.fetch_add(1, Ordering::Relaxed);
    StatusCode::METHOD_NOT_ALLOWED
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Whether `h` carries the one user's right Basic credentials.
fn authenticated(st: &St, h: &HeaderMap) -> bool {
    let Some(enc) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(enc.trim()) else {
        return false;
    };
    raw == format!("{}:{}", st.cfg.user, st.cfg.password).as_bytes()
}

/// `repository:NAME:a,b` as a claim granting those actions (only repository scopes).
fn access(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind != "repository" || name.is_empty() {
        return None;
    }
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|a| matches!(*a, "pull" | "push"))
        .collect();
    Some(serde_json::json!({"type": "repository", "name": name, "actions": actions}))
}

async fn token(State(st): State<Arc<St>>, RawQuery(q): RawQuery, h: HeaderMap) -> Response {
    st.requests.fetch_add(1, Ordering::Relaxed);
    if !authenticated(&st, &h) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"odonata-token\"")],
            r#"{"details":"wrong or missing credentials"}"#,
        )
            .into_response();
    }
    let query = q.unwrap_or_default();
    let scopes: Vec<String> = url_pairs(&query)
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let granted: Vec<serde_json::Value> = scopes.iter().filter_map(|s| access(s)).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [st.x5c]});
    let claims = serde_json::json!({
        "iss": st.cfg.issuer,
        "sub": st.cfg.user,
        "aud": st.cfg.service,
        "exp": now + LIFETIME.as_secs(),
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{:016x}", rand::random::<u64>()),
        "access": granted,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = match st.key.sign(&st.rng, signing_input.as_bytes()) {
        Ok(s) => s,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": LIFETIME.as_secs(),
        "issued_at": rfc3339(now),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Decoded `k=v` pairs of a query string, repeats kept.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    match reqwest::Url::parse(&format!("http://x/?{query}")) {
        Ok(u) => u.query_pairs().into_owned().collect(),
        Err(_) => Vec::new(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scopes() {
        let a = access("repository:private/app:pull,push").unwrap();
        assert_eq!(a["name"], "private/app");
        assert_eq!(a["actions"], serde_json::json!(["pull", "push"]));
        assert!(access("registry:catalog:*").is_none());
        assert!(access("nonsense").is_none());
    }
}
