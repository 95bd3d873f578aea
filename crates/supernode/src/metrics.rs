//! Prometheus text-format counters of the supernode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use odonata_transfer::runtime::{render_metrics, Metric};
use odonata_transfer::UploadStats;

/// A monotonically increasing counter.
#[derive(Default, Debug, Clone)]
pub(crate) struct Counter(Arc<AtomicU64>);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) struct Metrics {
    pub(crate) registrations: Counter,
    pub(crate) seeds_started: Counter,
    pub(crate) source_bytes: Counter,
    pub(crate) assignments: Counter,
    pub(crate) piece_failures: Counter,
    pub(crate) cdn: CdnCounters,
    upload: Arc<UploadStats>,
}

impl Metrics {
    pub(crate) fn new(upload: Arc<UploadStats>) -> Self {
        Self {
            registrations: Counter::default(),
            seeds_started: Counter::default(),
            source_bytes: Counter::default(),
            assignments: Counter::default(),
            piece_failures: Counter::default(),
            cdn: CdnCounters::default(),
            upload,
        }
    }

    pub(crate) fn render(&self, tasks: usize) -> String {
        let mut m: Vec<Metric<'_>> = vec![
            (
                "odonata_supernode_tasks",
                "Tasks known.",
                "gauge",
                tasks as u64,
            ),
            (
                "odonata_supernode_registrations_total",
                "Peer registrations.",
                "counter",
                self.registrations.get(),
            ),
            (
                "odonata_supernode_seeds_started_total",
                "Seeds started (source fetches).",
                "counter",
                self.seeds_started.get(),
            ),
            (
                "odonata_supernode_source_bytes_total",
                "Bytes read from sources.",
                "counter",
                self.source_bytes.get(),
            ),
            (
                "odonata_supernode_assignments_total",
                "Piece assignments handed to peers.",
                "counter",
                self.assignments.get(),
            ),
            (
                "odonata_supernode_piece_failures_total",
                "Failed piece transfers reported by peers.",
                "counter",
                self.piece_failures.get(),
            ),
            (
                "odonata_supernode_upload_bytes_total",
                "Piece bytes served by the seed.",
                "counter",
                self.upload.bytes.load(Ordering::Relaxed),
            ),
            (
                "odonata_supernode_upload_pieces_total",
                "Pieces served by the seed.",
                "counter",
                self.upload.pieces.load(Ordering::Relaxed),
            ),
        ];
        m.extend(
            self.cdn
                .all()
                .into_iter()
                .map(|(name, help, c)| (name, help, "counter", c.get())),
        );
        render_metrics(&m)
    }
}

/// Counters of the passive-CDN cache.
#[derive(Default)]
pub(crate) struct CdnCounters {
    pub(crate) negative_hits: Counter,
    pub(crate) not_modified: Counter,
    pub(crate) changed: Counter,
    pub(crate) resumed: Counter,
    pub(crate) source_retries: Counter,
    pub(crate) evictions: Counter,
    pub(crate) refused: Counter,
}

impl CdnCounters {
    fn all(&self) -> [(&'static str, &'static str, &Counter); 7] {
        [
            (
                "odonata_supernode_negative_cache_hits_total",
                "Registrations answered from a remembered source failure.",
                &self.negative_hits,
            ),
            (
                "odonata_supernode_revalidated_total",
                "Cached copies the source confirmed (304).",
                &self.not_modified,
            ),
            (
                "odonata_supernode_new_versions_total",
                "New task versions fetched because content changed or was not cached.",
                &self.changed,
            ),
            (
                "odonata_supernode_resumed_total",
                "Partial copies resumed with a Range request.",
                &self.resumed,
            ),
            (
                "odonata_supernode_source_retries_total",
                "Source requests retried after a retryable failure.",
                &self.source_retries,
            ),
            (
                "odonata_supernode_evictions_total",
                "Tasks evicted to respect the disk quota.",
                &self.evictions,
            ),
            (
                "odonata_supernode_refused_total",
                "Tasks refused because they cannot fit the disk quota.",
                &self.refused,
            ),
        ]
    }
}
