//! The CDN seed: reads the source once, cuts pieces as bytes arrive, publishes each piece
//! the moment it is written and digested.

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::BytesMut;
use odonata_proto::messages::TaskState;
use odonata_proto::{piece_size_for, PeerId, PieceDigest, PieceLayout};
use odonata_source::{Conditions, Fetched, SourceError, SourceResponse};
use odonata_storage::{TaskData, TaskMeta};
use tracing::Instrument;

use crate::cache::{CacheRecord, Failure};
use crate::service::{Supernode, Task};
use crate::validate::{fetch_with_retries, range_validator, same_content};

/// Seeds `task` from the source's answer `resp` and records the outcome in its state.
pub(crate) async fn run(node: Supernode, task: Arc<Task>, resp: SourceResponse, rec: CacheRecord) {
    let span = tracing::info_span!("seed", task = %task.id);
    let outcome = seed_task(&node, &task, resp, &rec).instrument(span).await;
    let failure = {
        let mut inner = task.lock();
        inner.seeding = false;
        match outcome {
            Ok(()) => {
                inner.state = TaskState::Done;
                None
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "seed failed");
                inner.state = TaskState::Failed {
                    source_status: e.status(),
                    message: e.to_string(),
                };
                Some(e)
            }
        }
    };
    if let Some(e) = failure {
        if e.is_no_space() {
            // The copy cannot be finished; give its space back to the tasks that can.
            node.store().remove(&task.id);
        }
        node.cache().seed_failed(
            &task.url_id,
            crate::cache::headers_hash(&task.headers),
            Failure {
                code: StatusCode::BAD_GATEWAY,
                message: e.to_string(),
                source_status: e.status(),
            },
        );
    }
    task.changed.notify_waiters();
}

/// Publishes held pieces to the scheduler.
fn publish(task: &Task, data: &TaskData, seed: &PeerId, nums: &[u32]) {
    let mut inner = task.lock();
    for &n in nums {
        if let Some((len, digest)) = data.piece(n) {
            inner.sched.add_piece(seed, n, len, digest);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SeedError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the supernode's disk is full while caching {url}: {source}")]
    NoSpace {
        url: String,
        source: odonata_storage::StorageError,
    },
    #[error("storing the source's content failed: {0}")]
    Store(#[from] odonata_storage::StorageError),
    #[error("source {url} sent {got} bytes but announced {want}")]
    Length { url: String, got: u64, want: u64 },
    #[error("source {url} changed while it was being read (piece {num} differs); try again")]
    Changed { url: String, num: u32 },
}

impl SeedError {
    fn status(&self) -> Option<u16> {
        match self {
            SeedError::Source(e) => e.status(),
            _ => None,
        }
    }

    fn is_no_space(&self) -> bool {
        matches!(self, SeedError::NoSpace { .. })
    }

    /// Names the full disk as such, since that is what an operator must act on.
    fn from_store(url: &url::Url, e: odonata_storage::StorageError) -> Self {
        if e.is_no_space() {
            SeedError::NoSpace {
                url: url.to_string(),
                source: e,
            }
        } else {
            SeedError::Store(e)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, odonata_storage::StorageError> + Send + 'static,
) -> Result<T, SeedError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(SeedError::Store(odonata_storage::StorageError::Io {
            op: "join",
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}

async fn seed_task(
    node: &Supernode,
    task: &Task,
    mut resp: SourceResponse,
    rec: &CacheRecord,
) -> Result<(), SeedError> {
    let url = &task.key.url;
    let store = node.store();
    let seed = node.seed_id().clone();
    let total = resp.content_length;
    let layout = PieceLayout {
        piece_size: node
            .cdn()
            .piece_size
            .unwrap_or_else(|| piece_size_for(total)),
        content_length: total,
    };
    let meta = TaskMeta {
        task_id: task.id.clone(),
        url: task.key.canonical.clone(),
        layout,
    };
    let data = {
        let store = store.clone();
        blocking(move || store.prepare(meta))
            .await
            .map_err(|e| match e {
                SeedError::Store(e) => SeedError::from_store(url, e),
                e => e,
            })?
    };
    let layout = data.layout();
    if resp.offset % u64::from(layout.piece_size) != 0 {
        return Err(SeedError::Source(SourceError::BadAnswer {
            url: url.to_string(),
            detail: format!(
                "resumed at byte {} which is not a piece boundary",
                resp.offset
            ),
        }));
    }
    publish(task, &data, &seed, &data.held());
    task.lock().layout = Some(layout);
    task.changed.notify_waiters();
    tracing::info!(
        ?total,
        piece_size = layout.piece_size,
        start = resp.offset,
        "seeding"
    );

    let piece_size = layout.piece_size as usize;
    let mut num = u32::try_from(resp.offset / u64::from(layout.piece_size)).unwrap_or(u32::MAX);
    let mut buf = BytesMut::with_capacity(piece_size);
    let mut received = resp.offset;
    let mut retries_left = node.cdn().source_retries;
    loop {
        let chunk = match resp.chunk().await {
            Ok(c) => c,
            Err(e) if e.is_retryable() && retries_left > 0 && rec.has_validators() => {
                // The body broke off: ask for the rest from the piece being cut, but only
                // if the content is still the same (If-Range), so pieces never mix versions.
                retries_left -= 1;
                node.metrics().cdn.source_retries.inc();
                tracing::warn!(error = %e, at = received, "source body failed, resuming");
                let from = layout.offset(num);
                let cond = Conditions {
                    from: Some(from),
                    if_range: range_validator(rec),
                    ..Conditions::default()
                };
                match fetch_with_retries(node, &task.key, &task.headers, &cond).await? {
                    Fetched::Content(r)
                        if same_content(rec, &r) && r.partial && r.offset == from =>
                    {
                        received = from;
                        resp = *r;
                    }
                    Fetched::Content(r) if same_content(rec, &r) && !r.partial => {
                        // No Range support: read it all again; pieces held stay held.
                        received = 0;
                        num = 0;
                        resp = *r;
                        buf.clear();
                        continue;
                    }
                    _ => {
                        return Err(SeedError::Changed {
                            url: url.to_string(),
                            num,
                        })
                    }
                }
                buf.clear();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let end = chunk.is_none();
        if let Some(mut chunk) = chunk {
            node.metrics().source_bytes.add(chunk.len() as u64);
            received += chunk.len() as u64;
            if let Some(t) = total.filter(|t| received > *t) {
                return Err(SeedError::Length {
                    url: url.to_string(),
                    got: received,
                    want: t,
                });
            }
            while !chunk.is_empty() {
                let take = chunk.len().min(piece_size - buf.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == piece_size {
                    cut(task, &data, &seed, num, buf.split().freeze()).await?;
                    num += 1;
                }
            }
        }
        if end {
            break;
        }
    }
    if let Some(t) = total.filter(|t| received != *t) {
        return Err(SeedError::Length {
            url: url.to_string(),
            got: received,
            want: t,
        });
    }
    if total.is_none() {
        let d = data.clone();
        blocking(move || d.set_content_length(received)).await?;
        task.lock().layout = Some(data.layout());
    }
    if !buf.is_empty() {
        cut(task, &data, &seed, num, buf.split().freeze()).await?;
    }
    Ok(())
}

/// Digests and stores one piece, then tells the scheduler.
async fn cut(
    task: &Task,
    data: &Arc<TaskData>,
    seed: &PeerId,
    num: u32,
    bytes: bytes::Bytes,
) -> Result<(), SeedError> {
    let d = data.clone();
    let held = blocking(move || {
        let digest = PieceDigest::of(&bytes);
        if let Some(held) = d.piece(num) {
            // Already held from an earlier run of the same version: it must match.
            return Ok(
                (held.0 == bytes.len() as u32 && held.1 == digest).then_some((held.0, digest))
            );
        }
        d.write_piece(num, &bytes, digest)?;
        Ok(Some((bytes.len() as u32, digest)))
    })
    .await
    .map_err(|e| match e {
        SeedError::Store(e) => SeedError::from_store(&task.key.url, e),
        e => e,
    })?;
    let Some((len, digest)) = held else {
        return Err(SeedError::Changed {
            url: task.key.url.to_string(),
            num,
        });
    };
    task.lock().sched.add_piece(seed, num, len, digest);
    task.changed.notify_waiters();
    Ok(())
}
