//! Asking the source whether the cached copy is still current, and acting on the answer:
//! 304 → serve the cache; 206 → resume the partial copy; 200 → fetch a new version (or the
//! same one again when the source has no Range support); anything else → a clear error.

use std::sync::Arc;

use axum::http::StatusCode;
use odonata_proto::messages::{Header, TaskState};
use odonata_proto::{TaskId, TaskKey};
use odonata_source::{Conditions, Fetched, SourceError, SourceResponse};
use odonata_storage::TaskData;

use crate::cache::{now_ms, version_id, CacheRecord, Failure};
use crate::service::{Supernode, Task};

/// Byte offset of the first piece not held: where a partial copy resumes.
pub(crate) fn first_missing_offset(d: &TaskData) -> u64 {
    let held = d.held();
    let first = (0u32..)
        .zip(held.iter())
        .take_while(|(i, n)| i == *n)
        .count() as u32;
    d.layout().offset(first)
}

/// A validator usable in If-Range (RFC 9110 13.1.5: a strong ETag, else the date).
pub(crate) fn range_validator(rec: &CacheRecord) -> Option<String> {
    rec.etag
        .clone()
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| rec.last_modified.clone())
}

/// The request that revalidates (complete copy) or resumes (partial copy) what we hold.
fn conditions(rec: Option<&CacheRecord>, data: Option<&TaskData>) -> Conditions {
    let (Some(r), Some(d)) = (rec, data) else {
        return Conditions::default();
    };
    if !r.has_validators() {
        return Conditions::default();
    }
    if d.is_complete() {
        return Conditions {
            if_none_match: r.etag.clone(),
            if_modified_since: r.last_modified.clone(),
            ..Conditions::default()
        };
    }
    // If-Range makes the source send the rest only if the content is unchanged, and the
    // whole new content otherwise, in one request.
    match range_validator(r) {
        Some(v) => Conditions {
            from: Some(first_missing_offset(d)),
            if_range: Some(v),
            ..Conditions::default()
        },
        None => Conditions::default(),
    }
}

/// Whether an answer carries the same content as the record (by strong validators).
pub(crate) fn same_content(r: &CacheRecord, resp: &SourceResponse) -> bool {
    if let (Some(a), Some(b)) = (&r.etag, &resp.etag) {
        return a == b && !a.starts_with("W/");
    }
    matches!((&r.last_modified, &resp.last_modified), (Some(a), Some(b)) if a == b)
}

/// One source request, retried on 5xx and network errors as configured.
pub(crate) async fn fetch_with_retries(
    node: &Supernode,
    key: &TaskKey,
    headers: &[Header],
    cond: &Conditions,
) -> Result<Fetched, SourceError> {
    let cfg = node.cdn();
    let mut wait = cfg.retry_backoff;
    let mut attempt = 0;
    loop {
        match node.source().fetch(&key.url, headers, cond).await {
            Ok(f) => return Ok(f),
            Err(e) if e.is_retryable() && attempt < cfg.source_retries => {
                attempt += 1;
                node.metrics().cdn.source_retries.inc();
                tracing::warn!(url = %key.url, error = %e, attempt, "source failed, retrying");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Revalidates or fetches `key` and returns the task version peers should join, plus the
/// record to keep when it changed.
pub(crate) async fn revalidate(
    node: Supernode,
    key: TaskKey,
    headers: Vec<Header>,
    record: Option<CacheRecord>,
) -> (Result<Arc<Task>, Failure>, Option<CacheRecord>) {
    let url_id = key.id();
    let store = node.store();
    let data = record.as_ref().and_then(|r| store.get(&r.version));
    let mut cond = conditions(record.as_ref(), data.as_deref());
    // At most two rounds: a range of changed content is asked for again in full.
    for _ in 0..2 {
        let fetched = match fetch_with_retries(&node, &key, &headers, &cond).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(url = %key.url, error = %e, "source request failed");
                return (Err(Failure::source(&e)), None);
            }
        };
        let resp = match fetched {
            Fetched::NotModified { .. } => {
                return (not_modified(&node, &key, &headers, record, data), None)
            }
            Fetched::Content(resp) => *resp,
        };
        let same = match (&record, &data) {
            (Some(r), Some(_)) => same_content(r, &resp),
            _ => false,
        };
        if resp.partial && !same {
            tracing::warn!(url = %key.url, "source sent a range of changed content; asking for all of it");
            cond = Conditions::default();
            continue;
        }
        return new_or_resumed(&node, &key, &url_id, headers, record, resp, same);
    }
    let f = Failure::source(&SourceError::BadAnswer {
        url: key.url.to_string(),
        detail: "ranges of changed content twice".into(),
    });
    (Err(f), None)
}

/// 304: the cached copy is current; serve it.
fn not_modified(
    node: &Supernode,
    key: &TaskKey,
    headers: &[Header],
    record: Option<CacheRecord>,
    data: Option<Arc<TaskData>>,
) -> Result<Arc<Task>, Failure> {
    let (Some(rec), Some(data)) = (record, data) else {
        return Err(Failure::internal(format!(
            "source {} answered 304 to a request we did not make conditional",
            key.url
        )));
    };
    node.metrics().cdn.not_modified.inc();
    data.touch();
    let task = node.version_task(&rec.version, key, headers, false);
    {
        let mut inner = task.lock();
        if inner.layout.is_none() || !matches!(inner.state, TaskState::Done) {
            for n in data.held() {
                if let Some((len, digest)) = data.piece(n) {
                    inner.sched.add_piece(node.seed_id(), n, len, digest);
                }
            }
            inner.layout = Some(data.layout());
            inner.state = TaskState::Done;
            inner.seeding = false;
        }
    }
    task.changed.notify_waiters();
    Ok(task)
}

/// 200 or 206: make room, record the validators, and start the seed on the body.
fn new_or_resumed(
    node: &Supernode,
    key: &TaskKey,
    url_id: &TaskId,
    headers: Vec<Header>,
    record: Option<CacheRecord>,
    resp: SourceResponse,
    same: bool,
) -> (Result<Arc<Task>, Failure>, Option<CacheRecord>) {
    let store = node.store();
    let generation = match (&record, same) {
        (Some(r), true) => r.generation,
        (Some(r), false) => r.generation + 1,
        (None, _) => 1,
    };
    let version = version_id(url_id, generation);
    if !same {
        // Whatever is stored under this id is not this content: never mix it in.
        store.remove(&version);
    }
    if let (Some(q), Some(len)) = (node.cdn().quota, resp.content_length) {
        let in_use = |id: &TaskId| node.in_use(id);
        match store.make_room(&version, len, &q, &in_use) {
            Ok(evicted) => node.metrics().cdn.evictions.add(evicted.len() as u64),
            Err(e) => {
                node.metrics().cdn.refused.inc();
                let f = Failure {
                    code: StatusCode::INSUFFICIENT_STORAGE,
                    message: format!("supernode cannot cache {}: {e}", key.url),
                    source_status: None,
                };
                return (Err(f), None);
            }
        }
    }
    let rec = CacheRecord {
        url: key.canonical.clone(),
        version: version.clone(),
        generation,
        etag: resp.etag.clone(),
        last_modified: resp.last_modified.clone(),
        fetched_at_ms: now_ms(),
        resumable: headers.is_empty() && key.url.as_str() == key.canonical,
    };
    if let Err(e) = node.cache().save_record(url_id, &rec) {
        tracing::warn!(url = %key.url, error = %e, "could not save the cache record");
    }
    if resp.partial {
        node.metrics().cdn.resumed.inc();
        tracing::info!(url = %key.url, from = resp.offset, "resuming the cached copy");
    } else if !same {
        node.metrics().cdn.changed.inc();
    }
    let task = node.version_task(&version, key, &headers, !same);
    {
        let mut inner = task.lock();
        inner.seeding = true;
        inner.state = TaskState::Running;
    }
    node.metrics().seeds_started.inc();
    tokio::spawn(crate::seed::run(
        node.clone(),
        task.clone(),
        resp,
        rec.clone(),
    ));
    (Ok(task), Some(rec))
}
