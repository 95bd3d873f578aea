//! Prometheus text-format counters of the daemon, on the upload port's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use odonata_transfer::UploadStats;

use crate::engine::EngineStats;

pub(crate) fn router(engine: Arc<EngineStats>, upload: Arc<UploadStats>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (e, u) = (engine.clone(), upload.clone());
            async move {
                let mut out = String::new();
                for (name, help, v) in [
                    (
                        "odonata_daemon_p2p_bytes_total",
                        "Bytes fetched from peers and seeds.",
                        e.p2p_bytes.load(Ordering::Relaxed),
                    ),
                    (
                        "odonata_daemon_source_bytes_total",
                        "Bytes fetched directly from sources.",
                        e.source_bytes.load(Ordering::Relaxed),
                    ),
                    (
                        "odonata_daemon_downloads_total",
                        "Downloads completed.",
                        e.downloads.load(Ordering::Relaxed),
                    ),
                    (
                        "odonata_daemon_download_failures_total",
                        "Downloads failed.",
                        e.failures.load(Ordering::Relaxed),
                    ),
                    (
                        "odonata_daemon_upload_bytes_total",
                        "Piece bytes served to peers.",
                        u.bytes.load(Ordering::Relaxed),
                    ),
                    (
                        "odonata_daemon_upload_pieces_total",
                        "Pieces served to peers.",
                        u.pieces.load(Ordering::Relaxed),
                    ),
                ] {
                    let _ = writeln!(
                        out,
                        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
                    );
                }
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }
        }),
    )
}
