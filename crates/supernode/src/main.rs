//! `supernode`: parse flags, set up logging, bind, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use odonata_supernode::config::{Args, SupernodeConfig};
use odonata_transfer::runtime::{grace_period, init_logging, shutdown_on_signal};

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("supernode: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(if args.verbose { "debug" } else { "info" });
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
    let shutdown = shutdown_on_signal();
    let grace = shutdown.clone();
    tokio::select! {
        r = odonata_supernode::run(cfg, control, upload, shutdown) => r?,
        () = grace_period(grace) => tracing::warn!("connections still open after the grace period; exiting"),
    }
    Ok(())
}
