//! `supernode`: parse flags, set up logging, bind, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use odonata_supernode::config::{Args, SupernodeConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("supernode: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = if args.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = SupernodeConfig::resolve(&args)?;
    let control = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding control address {}", cfg.listen))?;
    let upload = tokio::net::TcpListener::bind(cfg.upload_listen)
        .await
        .with_context(|| format!("binding upload address {}", cfg.upload_listen))?;
    tracing::info!(
        control = %control.local_addr()?,
        upload = %upload.local_addr()?,
        home = %cfg.home.display(),
        "supernode listening"
    );
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        odonata_transfer::shutdown_signal().await;
        stopper.cancel();
    });
    let grace = shutdown.clone();
    tokio::select! {
        r = odonata_supernode::run(cfg, control, upload, shutdown) => r?,
        () = grace_period(grace) => tracing::warn!("connections still open after the grace period; exiting"),
    }
    Ok(())
}

/// Resolves a while after shutdown began: long downloads must not hold the process forever.
async fn grace_period(token: CancellationToken) {
    token.cancelled().await;
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
}
