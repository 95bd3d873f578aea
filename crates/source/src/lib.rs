//! Back-to-source clients: how the seed (and a peer falling back) reads the origin.
//!
//! HTTP and HTTPS (rustls, no OpenSSL). Bytes arrive exactly as sent: no transparent
//! decompression, redirects followed, a stall on the body is an error rather than a hang.

#![warn(missing_docs, unreachable_pub)]

use std::time::Duration;

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
            SourceError::BadHeader(_) => false,
        }
    }
}

/// The innermost cause of an error chain, which is what a user can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let msg = cur.to_string();
    if msg.is_empty() {
        e.to_string()
    } else {
        msg
    }
}

/// Options of the HTTP source.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed between two body chunks before the transfer counts as stalled.
    pub idle_timeout: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// An HTTP(S) source client; cheap to clone.
#[derive(Clone)]
pub struct HttpSource {
    client: reqwest::Client,
    cfg: SourceConfig,
}

/// Metadata and body of a successful answer.
pub struct SourceResponse {
    url: String,
    resp: reqwest::Response,
    idle: Duration,
    /// Total length of the content (not of this answer), when known.
    pub content_length: Option<u64>,
    /// Whether the source honoured a Range request (206).
    pub partial: bool,
    /// `ETag`, if sent.
    pub etag: Option<String>,
    /// `Last-Modified`, if sent.
    pub last_modified: Option<String>,
}

impl SourceResponse {
    /// The next chunk of the body; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        match tokio::time::timeout(self.idle, self.resp.chunk()).await {
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
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| SourceError::Connect {
                url: String::new(),
                detail: root_cause(&e),
            })?;
        Ok(Self { client, cfg })
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
        let mut map = Self::header_map(headers)?;
        if let Some(from) = from.filter(|f| *f > 0) {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-")) {
                map.insert(reqwest::header::RANGE, v);
            }
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
        if !status.is_success() {
            return Err(SourceError::Status {
                url: url.to_string(),
                status,
            });
        }
        let partial = status == http::StatusCode::PARTIAL_CONTENT;
        let h = resp.headers();
        let text = |n: http::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag = text(http::header::ETAG);
        let last_modified = text(http::header::LAST_MODIFIED);
        let content_length = if partial {
            // Content-Range: bytes START-END/TOTAL
            text(http::header::CONTENT_RANGE)
                .and_then(|v| v.rsplit('/').next().and_then(|t| t.parse().ok()))
        } else {
            resp.content_length()
        };
        Ok(SourceResponse {
            url: url.to_string(),
            resp,
            idle: self.cfg.idle_timeout,
            content_length,
            partial,
            etag,
            last_modified,
        })
    }
}
