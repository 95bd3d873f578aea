//! `dfdaemon`: parse flags, set up logging, bind, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use odonata_daemon::config::{Args, DaemonConfig};
use odonata_transfer::runtime::{grace_period, init_logging, shutdown_on_signal};

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("dfdaemon: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(if args.verbose { "debug" } else { "info" });
    let cfg = DaemonConfig::resolve(&args)?;
    if cfg.supernodes.is_empty() {
        tracing::warn!("no supernode configured: downloads go straight to the source");
    }
    let upload = tokio::net::TcpListener::bind(cfg.upload_listen)
        .await
        .with_context(|| format!("binding upload address {}", cfg.upload_listen))?;
    let local = odonata_daemon::bind_socket(&cfg.home)
        .await
        .with_context(|| format!("binding the local socket in {}", cfg.home.display()))?;
    let proxy = match cfg.proxy_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the mirror/proxy address {a}"))?,
        ),
        None => None,
    };
    tracing::info!(
        upload = %upload.local_addr()?,
        proxy = ?cfg.proxy_listen,
        socket = %odonata_daemon::socket_path(&cfg.home).display(),
        supernodes = ?cfg.supernodes,
        "dfdaemon listening"
    );
    let shutdown = shutdown_on_signal();
    let home = cfg.home.clone();
    let grace = shutdown.clone();
    let r = tokio::select! {
        r = odonata_daemon::run_with_proxy(cfg, upload, local, proxy, shutdown) => r,
        () = grace_period(grace) => {
            tracing::warn!("connections still open after the grace period; exiting");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(odonata_daemon::socket_path(&home));
    r?;
    Ok(())
}
