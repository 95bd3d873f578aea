//! Fetching one piece from one parent, verified.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use odonata_proto::messages::FailReason;
use odonata_proto::{PieceDigest, TaskId};

use crate::{acquire, Limiter};

/// Why a piece could not be had from a parent.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection refused, reset or broken.
    #[error("parent {addr} unreachable: {detail}")]
    Unreachable {
        /// The parent.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The parent does not hold the piece.
    #[error("parent {addr} does not hold piece {num}")]
    NotFound {
        /// The parent.
        addr: String,
        /// The piece.
        num: u32,
    },
    /// The bytes do not match the seed's digest (or length).
    #[error("parent {addr} sent corrupt piece {num}: {detail}")]
    Corrupt {
        /// The parent.
        addr: String,
        /// The piece.
        num: u32,
        /// What did not match.
        detail: String,
    },
    /// No data for too long.
    #[error("parent {addr} stalled on piece {num}")]
    Timeout {
        /// The parent.
        addr: String,
        /// The piece.
        num: u32,
    },
    /// Any other answer.
    #[error("parent {addr} failed piece {num}: {detail}")]
    Other {
        /// The parent.
        addr: String,
        /// The piece.
        num: u32,
        /// What happened.
        detail: String,
    },
}

impl FetchError {
    /// The reason to report to the supernode.
    pub fn reason(&self) -> FailReason {
        match self {
            FetchError::Unreachable { .. } => FailReason::Unreachable,
            FetchError::NotFound { .. } => FailReason::NotFound,
            FetchError::Corrupt { .. } => FailReason::Corrupt,
            FetchError::Timeout { .. } => FailReason::Timeout,
            FetchError::Other { .. } => FailReason::Other,
        }
    }
}

/// A pooled client for piece transfers; cheap to clone.
#[derive(Clone)]
pub struct PieceClient {
    http: reqwest::Client,
    idle: Duration,
}

impl PieceClient {
    /// A client whose transfers fail after `idle` without data.
    pub fn new(idle: Duration) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self { http, idle }
    }

    /// Fetches piece `num` of `task` from `addr`, checks length and sha256, and returns it.
    pub async fn fetch(
        &self,
        addr: &str,
        task: &TaskId,
        num: u32,
        len: u32,
        digest: PieceDigest,
        limits: &[Limiter],
    ) -> Result<Bytes, FetchError> {
        let url = format!("http://{addr}/pieces/{task}/{num}");
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            addr: addr.to_owned(),
            detail: e.without_url().to_string(),
        };
        let send = self.http.get(&url).send();
        let mut resp = match tokio::time::timeout(self.idle, send).await {
            Ok(r) => r.map_err(unreachable)?,
            Err(_) => {
                return Err(FetchError::Timeout {
                    addr: addr.to_owned(),
                    num,
                })
            }
        };
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(FetchError::NotFound {
                    addr: addr.to_owned(),
                    num,
                })
            }
            s => {
                return Err(FetchError::Other {
                    addr: addr.to_owned(),
                    num,
                    detail: format!("status {s}"),
                })
            }
        }
        let corrupt = |detail: String| FetchError::Corrupt {
            addr: addr.to_owned(),
            num,
            detail,
        };
        let mut buf = BytesMut::with_capacity(len as usize);
        loop {
            let chunk = match tokio::time::timeout(self.idle, resp.chunk()).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(unreachable(e)),
                Err(_) => {
                    return Err(FetchError::Timeout {
                        addr: addr.to_owned(),
                        num,
                    })
                }
            };
            if buf.len() + chunk.len() > len as usize {
                return Err(corrupt(format!("more than {len} bytes")));
            }
            acquire(limits, chunk.len()).await;
            buf.extend_from_slice(&chunk);
        }
        if buf.len() != len as usize {
            return Err(corrupt(format!("{} bytes, expected {len}", buf.len())));
        }
        let buf = buf.freeze();
        let check = buf.clone();
        let ok = tokio::task::spawn_blocking(move || PieceDigest::of(&check) == digest)
            .await
            .unwrap_or(false);
        if !ok {
            return Err(corrupt("sha256 mismatch".into()));
        }
        Ok(buf)
    }
}
