//! Back-to-source clients: how the seed (and a peer falling back) reads the origin.
//!
//! HTTP and HTTPS (rustls, no OpenSSL). Bytes arrive exactly as sent: no transparent
//! decompression, redirects followed, a stall on the body is an error rather than a hang.

#![warn(missing_docs, unreachable_pub)]

mod file;

use std::path::PathBuf;
use std::time::Duration;

pub use file::FileSource;

use bytes::Bytes;
use odonata_proto::messages::Header;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

/// Why the source could not give us the bytes.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source answered with an error status.
    #[error("source {url} answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// Status code and reason, e.g. `404 Not Found`.
        status: http::StatusCode,
    },
    /// Could not connect or the connection broke before an answer.
    #[error("cannot reach source {url}: {detail}")]
    Connect {
        /// The URL asked.
        url: String,
        /// The innermost cause.
        detail: String,
    },
    /// The body stopped arriving or broke off.
    #[error("reading source {url} failed: {detail}")]
    Body {
        /// The URL asked.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A header the user gave cannot be sent.
    #[error("header '{0}' cannot be sent to the source")]
    BadHeader(String),
    /// The source's answer does not make sense (e.g. a range we did not ask for).
    #[error("source {url} answered badly: {detail}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The client could not be set up (e.g. an unreadable CA bundle).
    #[error("source client setup: {0}")]
    Setup(String),
    /// The URL names something this client may not read (e.g. a file outside the roots).
    #[error("source {url} is not allowed: {detail}")]
    NotAllowed {
        /// The URL asked.
        url: String,
        /// Why.
        detail: String,
    },
}

impl SourceError {
    /// The source's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            SourceError::Status { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// Whether trying again (or elsewhere) may help: network trouble and 5xx, not 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Status { status, .. } => status.is_server_error(),
            SourceError::Connect { .. } | SourceError::Body { .. } => true,
            SourceError::BadHeader(_)
            | SourceError::BadAnswer { .. }
            | SourceError::Setup(_)
            | SourceError::NotAllowed { .. } => false,
        }
    }
}

use odonata_proto::error::root_cause;

/// Options of the HTTP source.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed between two body chunks before the transfer counts as stalled.
    pub idle_timeout: Duration,
    /// PEM file of extra CA certificates trusted for HTTPS sources (besides the built-in
    /// web roots).
    pub ca_bundle: Option<PathBuf>,
    /// Directories `file://` URLs may read from; empty: file sources are off.
    pub file_roots: Vec<PathBuf>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ca_bundle: None,
            file_roots: Vec::new(),
        }
    }
}

/// Range and validators of a (possibly conditional) request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Ask for the content from this byte on (`Range: bytes=N-`).
    pub from: Option<u64>,
    /// `If-None-Match`: a stored ETag.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`: a stored Last-Modified.
    pub if_modified_since: Option<String>,
    /// `If-Range`: only honour the range if the content still has this validator.
    pub if_range: Option<String>,
}

/// Answer to a conditional request.
pub enum Fetched {
    /// 304: the cached copy is still the source's content.
    NotModified {
        /// `ETag` of the 304, if sent.
        etag: Option<String>,
        /// `Last-Modified` of the 304, if sent.
        last_modified: Option<String>,
    },
    /// 200 or 206 with a body.
    Content(Box<SourceResponse>),
}

/// A place content comes from, asked with a range and validators. HTTP(S) and `file://`
/// implement it; an object store (S3-compatible) can join behind the same calls.
pub trait Source: Send + Sync {
    /// Reads `url` with `cond`; a 304-style answer when the validators still match.
    fn fetch<'a>(
        &'a self,
        url: &'a Url,
        headers: &'a [Header],
        cond: &'a Conditions,
    ) -> futures_util::future::BoxFuture<'a, Result<Fetched, SourceError>>;
}

/// The source client of the seed and of fallbacks: HTTP(S) (rustls) and `file://` (only
/// under configured roots), chosen by the URL's scheme; cheap to clone.
#[derive(Clone)]
pub struct HttpSource {
    client: reqwest::Client,
    cfg: SourceConfig,
    file: FileSource,
}

impl Source for HttpSource {
    fn fetch<'a>(
        &'a self,
        url: &'a Url,
        headers: &'a [Header],
        cond: &'a Conditions,
    ) -> futures_util::future::BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(HttpSource::fetch(self, url, headers, cond))
    }
}

/// Where a response's body comes from.
enum Body {
    Http(reqwest::Response),
    File(tokio::fs::File),
}

/// Metadata and body of a successful answer.
pub struct SourceResponse {
    url: String,
    body: Body,
    idle: Duration,
    /// Total length of the content (not of this answer), when known.
    pub content_length: Option<u64>,
    /// Whether the source honoured a Range request (206).
    pub partial: bool,
    /// Offset of this answer's first byte in the content (0 unless partial).
    pub offset: u64,
    /// `ETag`, if sent.
    pub etag: Option<String>,
    /// `Last-Modified`, if sent.
    pub last_modified: Option<String>,
}

impl SourceResponse {
    /// The next chunk of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        let resp = match &mut self.body {
            Body::Http(r) => r,
            Body::File(f) => {
                return file::read_chunk(f).await.map_err(|e| SourceError::Body {
                    url: self.url.clone(),
                    detail: e.to_string(),
                })
            }
        };
        match tokio::time::timeout(self.idle, resp.chunk()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(SourceError::Body {
                url: self.url.clone(),
                detail: root_cause(&e),
            }),
            Err(_) => Err(SourceError::Body {
                url: self.url.clone(),
                detail: format!("no data for {}s", self.idle.as_secs()),
            }),
        }
    }
}

impl HttpSource {
    /// Builds a client.
    pub fn new(cfg: SourceConfig) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(10));
        if let Some(path) = &cfg.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                SourceError::Setup(format!("reading CA bundle {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SourceError::Setup(format!("CA bundle {}: {}", path.display(), root_cause(&e)))
            })?;
            if certs.is_empty() {
                return Err(SourceError::Setup(format!(
                    "CA bundle {} holds no PEM certificate",
                    path.display()
                )));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| SourceError::Connect {
            url: String::new(),
            detail: root_cause(&e),
        })?;
        let file = FileSource::new(cfg.file_roots.clone());
        Ok(Self { client, cfg, file })
    }

    /// Turns the user's headers into a header map, refusing what cannot be sent.
    pub fn header_map(headers: &[Header]) -> Result<HeaderMap, SourceError> {
        let mut map = HeaderMap::new();
        for h in headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| SourceError::BadHeader(h.name.clone()))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| SourceError::BadHeader(h.name.clone()))?;
            map.append(name, value);
        }
        Ok(map)
    }

    /// GETs `url` (from byte `from` on, when given) with the user's headers.
    pub async fn get(
        &self,
        url: &Url,
        headers: &[Header],
        from: Option<u64>,
    ) -> Result<SourceResponse, SourceError> {
        let cond = Conditions {
            from,
            ..Conditions::default()
        };
        match self.fetch(url, headers, &cond).await? {
            Fetched::Content(r) => Ok(*r),
            Fetched::NotModified { .. } => Err(SourceError::BadAnswer {
                url: url.to_string(),
                detail: "304 Not Modified to a request with no validator".into(),
            }),
        }
    }

    /// GETs `url` with the user's headers plus the range and validators in `cond`.
    pub async fn fetch(
        &self,
        url: &Url,
        headers: &[Header],
        cond: &Conditions,
    ) -> Result<Fetched, SourceError> {
        if url.scheme() == "file" {
            return self.file.open(url, cond).await;
        }
        let mut map = Self::header_map(headers)?;
        let from = cond.from.filter(|f| *f > 0);
        if let Some(from) = from {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-")) {
                map.insert(reqwest::header::RANGE, v);
            }
            if let Some(v) = cond
                .if_range
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                map.insert(reqwest::header::IF_RANGE, v);
            }
        }
        let validator =
            |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        if let Some(v) = validator(&cond.if_none_match) {
            map.insert(reqwest::header::IF_NONE_MATCH, v);
        }
        if let Some(v) = validator(&cond.if_modified_since) {
            map.insert(reqwest::header::IF_MODIFIED_SINCE, v);
        }
        let resp = self
            .client
            .get(url.clone())
            .headers(map)
            .send()
            .await
            .map_err(|e| SourceError::Connect {
                url: url.to_string(),
                detail: root_cause(&e),
            })?;
        let status = resp.status();
        let h = resp.headers();
        let text = |n: http::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag = text(http::header::ETAG);
        let last_modified = text(http::header::LAST_MODIFIED);
        let conditional = cond.if_none_match.is_some() || cond.if_modified_since.is_some();
        if status == http::StatusCode::NOT_MODIFIED && conditional {
            return Ok(Fetched::NotModified {
                etag,
                last_modified,
            });
        }
        if !status.is_success() {
            return Err(SourceError::Status {
                url: url.to_string(),
                status,
            });
        }
        let partial = status == http::StatusCode::PARTIAL_CONTENT;
        let (offset, content_length) = if partial {
            let range = text(http::header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range);
            let Some((start, total)) = range else {
                return Err(SourceError::BadAnswer {
                    url: url.to_string(),
                    detail: "206 without a usable Content-Range".into(),
                });
            };
            // A Range the user put in the headers is theirs to check; ours must match.
            if from.is_some_and(|f| f != start) {
                return Err(SourceError::BadAnswer {
                    url: url.to_string(),
                    detail: format!("206 from byte {start}, but we asked from {from:?}"),
                });
            }
            (start, total)
        } else {
            (0, resp.content_length())
        };
        Ok(Fetched::Content(Box::new(SourceResponse {
            url: url.to_string(),
            body: Body::Http(resp),
            idle: self.cfg.idle_timeout,
            content_length,
            partial,
            offset,
            etag,
            last_modified,
        })))
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, None)));
        assert_eq!(parse_content_range("bytes x-19/100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn missing_ca_bundle_is_a_clear_error() {
        let cfg = SourceConfig {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..SourceConfig::default()
        };
        let e = HttpSource::new(cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
