//! Fetching one piece from one parent, verified.

use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use odonata_proto::messages::FailReason;
use odonata_proto::{PieceDigest, TaskId};
use odonata_storage::TaskData;
use sha2::{Digest as _, Sha256};

use crate::{acquire, Limiter};

/// Bytes gathered before one hash-and-write batch.
const FLUSH: usize = 512 * 1024;

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
    /// Our own disk refused the bytes (not the parent's fault).
    #[error("storing piece {num} failed: {detail}")]
    Local {
        /// The piece.
        num: u32,
        /// What happened.
        detail: String,
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
            FetchError::Other { .. } | FetchError::Local { .. } => FailReason::Other,
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

    /// Fetches piece `num` of `task` from `addr` straight into `data` (no piece-sized
    /// buffer), checks length and sha256 as bytes arrive, and marks the piece held only when
    /// both match. Returns the piece length.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_into(
        &self,
        addr: &str,
        task: &TaskId,
        num: u32,
        len: u32,
        digest: PieceDigest,
        limits: &[Limiter],
        data: &Arc<TaskData>,
    ) -> Result<u32, FetchError> {
        let url = format!("http://{addr}/pieces/{task}/{num}");
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            addr: addr.to_owned(),
            detail: odonata_proto::error::root_cause(&e.without_url()),
        };
        let timeout = || FetchError::Timeout {
            addr: addr.to_owned(),
            num,
        };
        let send = self.http.get(&url).send();
        let mut resp = tokio::time::timeout(self.idle, send)
            .await
            .map_err(|_| timeout())?
            .map_err(unreachable)?;
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
        let local = |e: String| FetchError::Local { num, detail: e };
        let mut hasher = Some(Sha256::new());
        let mut buf = BytesMut::with_capacity(FLUSH);
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.idle, resp.chunk())
                .await
                .map_err(|_| timeout())?
                .map_err(unreachable)?;
            let end = chunk.is_none();
            if let Some(c) = chunk {
                if written + (buf.len() + c.len()) as u64 > u64::from(len) {
                    return Err(corrupt(format!("more than {len} bytes")));
                }
                acquire(limits, c.len()).await;
                buf.extend_from_slice(&c);
            }
            if buf.len() >= FLUSH || (end && !buf.is_empty()) {
                // Hash and write off the async threads, in batches to keep hops few.
                let batch = buf.split().freeze();
                let mut h = hasher.take().unwrap_or_default();
                let d = data.clone();
                let at = written;
                let r = tokio::task::spawn_blocking(move || {
                    h.update(&batch);
                    d.write_unverified(num, at, &batch)
                        .map(|()| (h, batch.len()))
                })
                .await
                .map_err(|e| local(e.to_string()))?
                .map_err(|e| local(e.to_string()))?;
                hasher = Some(r.0);
                written += r.1 as u64;
            }
            if end {
                break;
            }
        }
        if written != u64::from(len) {
            return Err(corrupt(format!("{written} bytes, expected {len}")));
        }
        let got = PieceDigest(hasher.unwrap_or_default().finalize().into());
        if got != digest {
            return Err(corrupt("sha256 mismatch".into()));
        }
        let d = data.clone();
        tokio::task::spawn_blocking(move || d.commit_piece(num, len, digest))
            .await
            .map_err(|e| local(e.to_string()))?
            .map_err(|e| local(e.to_string()))?;
        Ok(len)
    }
}
