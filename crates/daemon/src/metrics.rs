//! Prometheus text-format counters of the daemon, on the upload port's `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use odonata_transfer::runtime::render_metrics;
use odonata_transfer::UploadStats;

use crate::engine::EngineStats;

pub(crate) fn router(engine: Arc<EngineStats>, upload: Arc<UploadStats>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (e, u) = (engine.clone(), upload.clone());
            async move {
                let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let out = render_metrics(&[
                    (
                        "odonata_daemon_p2p_bytes_total",
                        "Bytes fetched from peers and seeds.",
                        "counter",
                        load(&e.p2p_bytes),
                    ),
                    (
                        "odonata_daemon_source_bytes_total",
                        "Bytes fetched directly from sources.",
                        "counter",
                        load(&e.source_bytes),
                    ),
                    (
                        "odonata_daemon_downloads_total",
                        "Downloads completed.",
                        "counter",
                        load(&e.downloads),
                    ),
                    (
                        "odonata_daemon_download_failures_total",
                        "Downloads failed.",
                        "counter",
                        load(&e.failures),
                    ),
                    (
                        "odonata_daemon_upload_bytes_total",
                        "Piece bytes served to peers.",
                        "counter",
                        load(&u.bytes),
                    ),
                    (
                        "odonata_daemon_upload_pieces_total",
                        "Pieces served to peers.",
                        "counter",
                        load(&u.pieces),
                    ),
                ]);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }
        }),
    )
}
