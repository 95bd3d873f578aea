//! dfdaemon: the peer on every host. A piece store, an upload server for other peers, the
//! download engine, and the local API dfget talks to over a unix socket.
//!
//! The engine is also what `dfget` runs in-process when no daemon is running.

#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod client;
pub mod config;
pub mod control;
pub mod engine;
mod export;
mod local;
mod metrics;
pub mod mirror;
pub mod range;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use odonata_storage::Store;
use odonata_transfer::{upload_router, UploadStats};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::DaemonConfig;
pub use engine::{DownloadError, Engine, EngineConfig};

use crate::api::{DownloadRequest, Event, Outcome};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The piece store could not be opened.
    #[error("opening the piece store: {0}")]
    Store(#[from] odonata_storage::StorageError),
    /// The engine could not be built.
    #[error("starting the engine: {0}")]
    Engine(#[from] DownloadError),
    /// A listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The registry mirror could not be set up.
    #[error("{0}")]
    Mirror(#[from] mirror::MirrorError),
}

/// Path of the daemon's socket in `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(api::SOCKET_NAME)
}

/// Binds the local API socket in `home`, replacing a stale one left by a dead daemon.
pub async fn bind_socket(home: &Path) -> Result<UnixListener, std::io::Error> {
    std::fs::create_dir_all(home)?;
    let path = socket_path(home);
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("a daemon is already running on {}", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    UnixListener::bind(&path)
}

/// Runs the daemon on listeners bound by the caller until `shutdown` is cancelled.
pub async fn run(
    cfg: DaemonConfig,
    upload: TcpListener,
    local: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_with_proxy(cfg, upload, local, None, shutdown).await
}

/// [`run`], plus the registry mirror / HTTP proxy on `proxy` when given.
pub async fn run_with_proxy(
    cfg: DaemonConfig,
    upload: TcpListener,
    local: UnixListener,
    proxy: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let store = Arc::new(Store::open(&cfg.home)?);
    let upload_stats = Arc::new(UploadStats::default());
    let engine = Engine::new(
        EngineConfig {
            supernodes: cfg.supernodes.clone(),
            parallel: cfg.parallel,
            total_limit: cfg.total_limit,
            advertise_ip: cfg.advertise_ip,
            upload_port: upload.local_addr()?.port(),
            leave_when_done: false,
        },
        store.clone(),
    )?;
    let mirror_task = match proxy {
        Some(l) => {
            let m = mirror::Mirror::new(cfg.mirror.clone(), engine.clone())?;
            Some(tokio::spawn(mirror::serve(l, m, shutdown.clone())))
        }
        None => None,
    };
    let upload_app = upload_router(
        store,
        upload_stats.clone(),
        cfg.upload_limit.map(odonata_transfer::limiter),
    )
    .merge(metrics::router(engine.stats(), upload_stats));
    let s1 = shutdown.clone();
    let s2 = shutdown.clone();
    let up =
        axum::serve(upload, upload_app).with_graceful_shutdown(async move { s1.cancelled().await });
    let lo = axum::serve(local, local::local_router(engine))
        .with_graceful_shutdown(async move { s2.cancelled().await });
    let (a, b) = tokio::join!(async { up.await }, async { lo.await });
    if let Some(t) = mirror_task {
        let _ = t.await;
    }
    a?;
    b?;
    Ok(())
}

/// Runs one download with a peer living only in this process (dfget without a daemon):
/// its own temporary store under `home`, an upload server on an ephemeral port so that
/// others can fetch from it meanwhile, and it leaves the swarm when done.
pub async fn download_in_process(
    home: &Path,
    mut cfg: EngineConfig,
    req: DownloadRequest,
    on_event: impl FnMut(&Event),
) -> Result<Outcome, DownloadError> {
    let dir = home
        .join("tmp")
        .join(format!("dfget-{}", std::process::id()));
    let result = in_process(&dir, &mut cfg, req, on_event).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn in_process(
    dir: &Path,
    cfg: &mut EngineConfig,
    req: DownloadRequest,
    mut on_event: impl FnMut(&Event),
) -> Result<Outcome, DownloadError> {
    let io = |e: &dyn std::fmt::Display| DownloadError::Io(format!("in-process peer: {e}"));
    let store = Arc::new(Store::open(dir).map_err(|e| io(&e))?);
    let upload = TcpListener::bind(("0.0.0.0", 0))
        .await
        .map_err(|e| io(&e))?;
    cfg.upload_port = upload.local_addr().map_err(|e| io(&e))?.port();
    cfg.leave_when_done = true;
    let engine = Engine::new(cfg.clone(), store.clone())?;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(async move {
        let app = upload_router(store, Arc::new(UploadStats::default()), None);
        let _ = axum::serve(upload, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    let (tx, mut rx) = mpsc::channel(64);
    let job = tokio::spawn(async move { engine.download(req, tx).await });
    while let Some(ev) = rx.recv().await {
        on_event(&ev);
    }
    let r = job
        .await
        .map_err(|e| DownloadError::Io(e.to_string()))
        .and_then(|r| r);
    stop.cancel();
    let _ = server.await;
    r
}
