//! The supernode: scheduler for every task and passive CDN seed.
//!
//! Two listeners: the control API (JSON over HTTP/1.1, default 8002) that daemons register,
//! sync and leave through, and the piece upload server (default 8001) that serves what the
//! seed has cut from the source.

#![warn(missing_docs, unreachable_pub)]

pub mod cache;
pub mod config;
mod metrics;
mod oci;
pub mod preheat;
mod seed;
mod service;
mod validate;

use std::sync::Arc;

use odonata_storage::Store;
use odonata_transfer::{upload_router, UploadStats};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::SupernodeConfig;
pub use service::Supernode;

/// Errors that stop the supernode from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The piece store could not be opened.
    #[error("opening the piece store: {0}")]
    Store(#[from] odonata_storage::StorageError),
    /// The source client could not be built.
    #[error("building the source client: {0}")]
    Source(#[from] odonata_source::SourceError),
    /// A listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the supernode on listeners bound by the caller until `shutdown` is cancelled.
pub async fn run(
    cfg: SupernodeConfig,
    control: TcpListener,
    upload: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let store = Arc::new(Store::open(&cfg.home)?);
    let upload_stats = Arc::new(UploadStats::default());
    let upload_port = upload.local_addr()?.port();
    let node = Supernode::new(cfg, store.clone(), upload_port, upload_stats.clone())?;
    let expiry = node.clone().expire_loop(shutdown.clone());
    tokio::spawn(cache::resume_partial(node.clone()));
    let control_app = node.router();
    let upload_app = upload_router(store, upload_stats, None);
    let s1 = shutdown.clone();
    let s2 = shutdown.clone();
    let control_srv = axum::serve(control, control_app)
        .with_graceful_shutdown(async move { s1.cancelled().await });
    let upload_srv =
        axum::serve(upload, upload_app).with_graceful_shutdown(async move { s2.cancelled().await });
    let (a, b, ()) = tokio::join!(
        async { control_srv.await },
        async { upload_srv.await },
        expiry
    );
    a?;
    b?;
    Ok(())
}
