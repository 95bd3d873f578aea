//! The passive-CDN cache in front of the seed: per URL, which task version new peers join,
//! when that copy must be revalidated with the source, one source request at a time
//! (single-flight), and failures remembered for a while (negative caching).
//!
//! Each URL has a record on disk (`HOME/cache/<url task id>.json`) with the current
//! version's task id and the validators the source sent, written before the first byte of
//! the body, so that after a crash a partial copy is resumed against the right validators.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use odonata_proto::config::ConfigError;
use odonata_proto::messages::{Header, TaskState};
use odonata_proto::units::{parse_duration, parse_rate};
use odonata_proto::{TaskId, TaskKey};
use odonata_storage::Quota;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::service::{Supernode, Task};

/// The `cdn:` section of supernode.yml (every key optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CdnFile {
    revalidate_after: Option<String>,
    no_validator_ttl: Option<String>,
    negative_ttl: Option<String>,
    source_retries: Option<u32>,
    retry_backoff: Option<String>,
    source_idle_timeout: Option<String>,
    ca_bundle: Option<PathBuf>,
    quota: Option<String>,
    idle_after: Option<String>,
    piece_size: Option<String>,
    #[serde(default)]
    file_roots: Vec<PathBuf>,
    high_watermark: Option<u8>,
    low_watermark: Option<u8>,
}

/// Resolved cache settings.
#[derive(Clone, Debug)]
pub struct CdnConfig {
    /// A copy validated this recently is served without asking the source again, so a
    /// burst of registrations costs one conditional request.
    pub revalidate_after: Duration,
    /// How long a copy whose source sent neither ETag nor Last-Modified is served before it
    /// is fetched again.
    pub no_validator_ttl: Duration,
    /// How long a source failure is answered from memory.
    pub negative_ttl: Duration,
    /// Extra attempts after a retryable source failure (5xx, network).
    pub source_retries: u32,
    /// Wait before the first retry (doubling after).
    pub retry_backoff: Duration,
    /// A source body silent this long counts as stalled.
    pub source_idle_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for HTTPS sources.
    pub ca_bundle: Option<PathBuf>,
    /// Disk quota with watermarks, if any.
    pub quota: Option<Quota>,
    /// A task no peer has asked work for in this long (and not being seeded) may be evicted.
    pub idle_after: Duration,
    /// Fixed piece size for new tasks instead of the size-based rule (for measurements).
    pub piece_size: Option<u32>,
    /// Directories `file://` URLs may be seeded from (none: file sources off).
    pub file_roots: Vec<PathBuf>,
}

impl Default for CdnConfig {
    fn default() -> Self {
        Self {
            revalidate_after: Duration::from_secs(1),
            no_validator_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            source_retries: 2,
            retry_backoff: Duration::from_millis(200),
            source_idle_timeout: Duration::from_secs(30),
            ca_bundle: None,
            quota: None,
            idle_after: Duration::from_secs(30),
            piece_size: None,
            file_roots: Vec::new(),
        }
    }
}

impl CdnConfig {
    /// Applies the file's values over the defaults and validates them.
    pub fn resolve(f: &CdnFile) -> Result<Self, ConfigError> {
        let d = Self::default();
        let dur = |v: &Option<String>, key: &str, def: Duration| -> Result<Duration, ConfigError> {
            match v {
                Some(s) => {
                    parse_duration(s).map_err(|e| ConfigError::Invalid(format!("cdn.{key}: {e}")))
                }
                None => Ok(def),
            }
        };
        let quota = match &f.quota {
            None => None,
            Some(q) => {
                let limit = parse_rate(q)
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "cdn.quota: invalid size '{q}': use a number with K, M or G, e.g. 512M"
                        ))
                    })?
                    .unwrap_or(0);
                let q = Quota::with_watermarks(
                    limit,
                    f.high_watermark.unwrap_or(90),
                    f.low_watermark.unwrap_or(80),
                )
                .map_err(|e| ConfigError::Invalid(format!("cdn.quota: {e}")))?;
                Some(q)
            }
        };
        Ok(Self {
            revalidate_after: dur(&f.revalidate_after, "revalidate_after", d.revalidate_after)?,
            no_validator_ttl: dur(&f.no_validator_ttl, "no_validator_ttl", d.no_validator_ttl)?,
            negative_ttl: dur(&f.negative_ttl, "negative_ttl", d.negative_ttl)?,
            source_retries: f.source_retries.unwrap_or(d.source_retries).min(10),
            retry_backoff: dur(&f.retry_backoff, "retry_backoff", d.retry_backoff)?,
            source_idle_timeout: dur(
                &f.source_idle_timeout,
                "source_idle_timeout",
                d.source_idle_timeout,
            )?,
            ca_bundle: f.ca_bundle.clone(),
            quota,
            idle_after: dur(&f.idle_after, "idle_after", d.idle_after)?,
            file_roots: f.file_roots.clone(),
            piece_size: match &f.piece_size {
                None => None,
                Some(p) => {
                    let v = parse_rate(p).ok().flatten().unwrap_or(0);
                    if !(v.is_power_of_two() && (64 << 10..=64 << 20).contains(&v)) {
                        return Err(ConfigError::Invalid(format!(
                            "cdn.piece_size: '{p}' must be a power of two from 64K to 64M"
                        )));
                    }
                    Some(v as u32)
                }
            },
        })
    }
}

/// What the cache remembers about a URL across restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CacheRecord {
    /// The URL (canonical form), for operators.
    pub(crate) url: String,
    /// Task id of the current version.
    pub(crate) version: TaskId,
    /// Counts the versions seen; part of the version's task id.
    pub(crate) generation: u64,
    /// Validators the source sent with this version.
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    /// When the version was fetched (ms since the epoch).
    pub(crate) fetched_at_ms: u64,
    /// The source can be asked again from the record alone (the URL is the canonical one
    /// and no headers were needed), so a restart may resume the copy by itself.
    #[serde(default)]
    pub(crate) resumable: bool,
}

impl CacheRecord {
    /// Whether a conditional request can tell if this copy is still current.
    pub(crate) fn has_validators(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// Why a registration is refused, as the peer is told.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) code: StatusCode,
    pub(crate) message: String,
    pub(crate) source_status: Option<u16>,
}

impl Failure {
    pub(crate) fn source(e: &odonata_source::SourceError) -> Self {
        Self {
            code: StatusCode::BAD_GATEWAY,
            message: e.to_string(),
            source_status: e.status(),
        }
    }

    pub(crate) fn internal(message: String) -> Self {
        Self {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            message,
            source_status: None,
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Task>, Failure>>>;

/// One URL's cache state.
struct Entry {
    record: Option<CacheRecord>,
    current: Option<Arc<Task>>,
    /// When the source last confirmed the current copy (ms since the epoch)...
    validated_at_ms: u64,
    /// ...to a request with these headers (see [`headers_hash`]).
    validated_for: [u8; 32],
    negative: Option<(Instant, Failure, [u8; 32])>,
    flight: Option<(Flight, [u8; 32])>,
}

/// Identifies the user's headers. The source decides access per request (Authorization,
/// Cookie), so a copy validated, or a failure seen, with some headers is only reused for
/// the same headers; others get their own (conditional) request.
pub(crate) fn headers_hash(headers: &[Header]) -> [u8; 32] {
    let mut pairs: Vec<(String, &str)> = headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.as_str()))
        .collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (n, v) in pairs {
        h.update(n.as_bytes());
        h.update(b"\0");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

/// Every URL's cache state.
pub(crate) struct Cache {
    dir: PathBuf,
    entries: Mutex<HashMap<TaskId, Entry>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Task id of a URL's `generation`-th version. The first version keeps the URL's own id,
/// so peers and tools that compute the id from the URL find it.
pub(crate) fn version_id(url_id: &TaskId, generation: u64) -> TaskId {
    if generation <= 1 {
        return url_id.clone();
    }
    let mut h = Sha256::new();
    h.update(b"version\0");
    h.update(url_id.as_str().as_bytes());
    h.update(generation.to_le_bytes());
    TaskId::parse(&hex::encode(h.finalize())).unwrap_or_else(|_| url_id.clone())
}

impl Cache {
    /// The cache whose records live under `home/cache`.
    pub(crate) fn open(home: &Path) -> std::io::Result<Self> {
        let dir = home.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<TaskId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_path(&self, url_id: &TaskId) -> PathBuf {
        self.dir.join(format!("{url_id}.json"))
    }

    fn load_record(&self, url_id: &TaskId) -> Option<CacheRecord> {
        let raw = std::fs::read(self.record_path(url_id)).ok()?;
        match serde_json::from_slice(&raw) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(url_id = %url_id, error = %e, "ignoring unreadable cache record");
                None
            }
        }
    }

    /// Writes the record by rename so a crash leaves the old or the new one.
    pub(crate) fn save_record(&self, url_id: &TaskId, rec: &CacheRecord) -> std::io::Result<()> {
        let path = self.record_path(url_id);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    /// Records the end of a source request for the URL.
    pub(crate) fn settle(
        &self,
        url_id: &TaskId,
        hash: [u8; 32],
        result: &Result<Arc<Task>, Failure>,
        record: Option<CacheRecord>,
    ) {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(url_id) else {
            return;
        };
        e.flight = None;
        match result {
            Ok(t) => {
                e.current = Some(t.clone());
                e.validated_at_ms = now_ms();
                e.validated_for = hash;
                e.negative = None;
                if record.is_some() {
                    e.record = record;
                }
            }
            Err(f) => e.negative = Some((Instant::now(), f.clone(), hash)),
        }
    }

    /// Remembers a seed's failure so the next registrations get it without a source storm.
    pub(crate) fn seed_failed(&self, url_id: &TaskId, hash: [u8; 32], f: Failure) {
        if let Some(e) = self.entries().get_mut(url_id) {
            e.negative = Some((Instant::now(), f, hash));
        }
    }
}

/// Whether the current copy may be served without asking the source.
fn fresh(e: &Entry, node: &Supernode, cfg: &CdnConfig, hash: &[u8; 32]) -> Option<Arc<Task>> {
    let t = e.current.as_ref()?;
    match t.lock().state {
        // Being fetched right now: it is as fresh as it gets.
        TaskState::Running => return Some(t.clone()),
        TaskState::Failed { .. } => return None,
        TaskState::Done => {}
    }
    node.store().get(&t.id)?;
    if &e.validated_for != hash {
        return None;
    }
    let rec = e.record.as_ref()?;
    let now = now_ms();
    let fresh = if rec.has_validators() {
        now.saturating_sub(e.validated_at_ms) < cfg.revalidate_after.as_millis() as u64
    } else {
        now.saturating_sub(rec.fetched_at_ms) < cfg.no_validator_ttl.as_millis() as u64
    };
    fresh.then(|| t.clone())
}

/// The task version a registration for `key` joins: the cached copy when fresh, else what
/// one (shared) request to the source decides.
pub(crate) async fn resolve(
    node: &Supernode,
    key: TaskKey,
    headers: Vec<Header>,
) -> Result<Arc<Task>, Failure> {
    let cfg = node.cdn();
    let url_id = key.id();
    let hash = headers_hash(&headers);
    let cache = node.cache();
    // A flight for other headers is waited for, then the state looked at again.
    for _ in 0..8 {
        let (flight, mine) = {
            let mut entries = cache.entries();
            let e = entries.entry(url_id.clone()).or_insert_with(|| Entry {
                record: cache.load_record(&url_id),
                current: None,
                validated_at_ms: 0,
                validated_for: [0; 32],
                negative: None,
                flight: None,
            });
            if let Some((at, f, h)) = &e.negative {
                if at.elapsed() < cfg.negative_ttl && *h == hash {
                    node.metrics().cdn.negative_hits.inc();
                    return Err(f.clone());
                }
                if at.elapsed() >= cfg.negative_ttl {
                    e.negative = None;
                }
            }
            if let Some((f, h)) = &e.flight {
                (f.clone(), *h == hash)
            } else if let Some(t) = fresh(e, node, &cfg, &hash) {
                return Ok(t);
            } else {
                let (n, id) = (node.clone(), url_id.clone());
                let record = e.record.clone();
                let (k, hd) = (key.clone(), headers.clone());
                let job = tokio::spawn(async move {
                    let (r, rec) = crate::validate::revalidate(n.clone(), k, hd, record).await;
                    n.cache().settle(&id, hash, &r, rec);
                    r
                });
                let (n, id) = (node.clone(), url_id.clone());
                let flight: Flight = async move {
                    job.await.unwrap_or_else(|e| {
                        let r = Err(Failure::internal(format!("source request: {e}")));
                        n.cache().settle(&id, hash, &r, None);
                        r
                    })
                }
                .boxed()
                .shared();
                e.flight = Some((flight.clone(), hash));
                (flight, true)
            }
        };
        let r = flight.await;
        if mine {
            return r;
        }
    }
    Err(Failure::internal(format!(
        "too many concurrent source requests for {} with different headers",
        key.url
    )))
}

/// After a restart, resumes every partial copy whose record allows it, without waiting
/// for a peer to ask again.
pub(crate) async fn resume_partial(node: Supernode) {
    let Ok(dir) = std::fs::read_dir(&node.cache().dir) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| TaskId::parse(n).ok())
        else {
            continue;
        };
        let Some(rec) = node.cache().load_record(&id) else {
            continue;
        };
        let partial = node
            .store()
            .get(&rec.version)
            .is_some_and(|d| !d.is_complete());
        if !(rec.resumable && partial) {
            continue;
        }
        let Ok(key) = TaskKey::new(&rec.url, &[]) else {
            continue;
        };
        tracing::info!(url = %rec.url, "resuming a partial copy after restart");
        let n = node.clone();
        tokio::spawn(async move {
            if let Err(f) = resolve(&n, key, Vec::new()).await {
                tracing::warn!(error = %f.message, "resuming after restart failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_version_keeps_the_url_id_and_later_ones_differ() {
        let id = TaskKey::new("http://h/f", &[]).unwrap().id();
        assert_eq!(version_id(&id, 1), id);
        assert_ne!(version_id(&id, 2), id);
        assert_ne!(version_id(&id, 2), version_id(&id, 3));
    }

    #[test]
    fn cdn_config_parses_and_refuses_bad_values() {
        let f: CdnFile = serde_yaml_ng::from_str(
            "quota: 512M\nhigh_watermark: 90\nlow_watermark: 70\nnegative_ttl: 5s\n",
        )
        .unwrap();
        let c = CdnConfig::resolve(&f).unwrap();
        assert_eq!(c.quota.unwrap().limit, 512 << 20);
        assert_eq!(c.negative_ttl, Duration::from_secs(5));
        let f: CdnFile = serde_yaml_ng::from_str("quota: lots\n").unwrap();
        let e = CdnConfig::resolve(&f).unwrap_err().to_string();
        assert!(e.contains("cdn.quota"), "{e}");
        assert!(serde_yaml_ng::from_str::<CdnFile>("qouta: 1\n").is_err());
    }
}
