//! The CDN seed: reads the source once, cuts pieces as bytes arrive, publishes each piece
//! the moment it is written and digested.

use std::sync::Arc;

use bytes::BytesMut;
use odonata_proto::messages::TaskState;
use odonata_proto::{piece_size_for, PeerId, PieceDigest, PieceLayout};
use odonata_source::{HttpSource, SourceError};
use odonata_storage::{Store, TaskData, TaskMeta};
use tracing::Instrument;

use crate::metrics::Counter;
use crate::service::Task;

/// Seeds `task` and records the outcome in its state.
pub(crate) async fn run(
    task: Arc<Task>,
    store: Arc<Store>,
    source: HttpSource,
    seed: PeerId,
    source_bytes: Counter,
) {
    let span = tracing::info_span!("seed", task = %task.id);
    let outcome = seed_task(&task, &store, &source, &seed, &source_bytes)
        .instrument(span)
        .await;
    {
        let mut inner = task.lock();
        inner.seeding = false;
        inner.state = match outcome {
            Ok(()) => TaskState::Done,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "seed failed");
                TaskState::Failed {
                    source_status: e.status(),
                    message: e.to_string(),
                }
            }
        };
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
    #[error("storing the source's content failed: {0}")]
    Store(#[from] odonata_storage::StorageError),
    #[error("source {url} sent {got} bytes but announced {want}")]
    Length { url: String, got: u64, want: u64 },
}

impl SeedError {
    fn status(&self) -> Option<u16> {
        match self {
            SeedError::Source(e) => e.status(),
            _ => None,
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
    task: &Task,
    store: &Arc<Store>,
    source: &HttpSource,
    seed: &PeerId,
    source_bytes: &Counter,
) -> Result<(), SeedError> {
    let url = &task.key.url;
    // A complete copy on disk (kept across restarts) is served as it is; cache
    // revalidation with the source is the passive-CDN issue's work.
    let cached = store.get(&task.id);
    if let Some(data) = cached.as_ref().filter(|d| d.is_complete()) {
        publish(task, data, seed, &data.held());
        task.lock().layout = Some(data.layout());
        return Ok(());
    }
    // Resume a partial copy from its first missing piece.
    let first_missing = cached.as_ref().map_or(0, |d| {
        let held = d.held();
        (0u32..)
            .zip(held.iter())
            .take_while(|(i, n)| i == *n)
            .count() as u32
    });
    let resume_from = cached
        .as_ref()
        .map_or(0, |d| d.layout().offset(first_missing));
    let mut resp = source.get(url, &task.headers, Some(resume_from)).await?;
    let total = resp.content_length;
    let layout = match cached.as_ref() {
        Some(d) if resp.partial && d.layout().content_length == total => d.layout(),
        _ => PieceLayout {
            piece_size: piece_size_for(total),
            content_length: total,
        },
    };
    let start = if resp.partial { resume_from } else { 0 };
    let meta = TaskMeta {
        task_id: task.id.clone(),
        url: task.key.canonical.clone(),
        layout,
    };
    let data = {
        let store = store.clone();
        blocking(move || store.prepare(meta)).await?
    };
    publish(task, &data, seed, &data.held());
    task.lock().layout = Some(layout);
    task.changed.notify_waiters();
    tracing::info!(?total, piece_size = layout.piece_size, start, "seeding");

    let piece_size = layout.piece_size as usize;
    let mut num = u32::try_from(start / u64::from(layout.piece_size)).unwrap_or(u32::MAX);
    let mut buf = BytesMut::with_capacity(piece_size);
    let mut received = start;
    loop {
        let chunk = resp.chunk().await?;
        let end = chunk.is_none();
        if let Some(mut chunk) = chunk {
            source_bytes.add(chunk.len() as u64);
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
                    cut(task, &data, seed, num, buf.split().freeze()).await?;
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
        cut(task, &data, seed, num, buf.split().freeze()).await?;
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
    let (len, digest) = blocking(move || {
        let digest = PieceDigest::of(&bytes);
        if let Some(held) = d.piece(num) {
            // Already held from an earlier run; keep it if it is still the same content.
            if held.1 == digest {
                return Ok((held.0, digest));
            }
        }
        d.write_piece(num, &bytes, digest)?;
        Ok((bytes.len() as u32, digest))
    })
    .await?;
    task.lock().sched.add_piece(seed, num, len, digest);
    task.changed.notify_waiters();
    Ok(())
}
