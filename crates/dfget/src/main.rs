//! `dfget`: download a file through the Odonata swarm, wget-like, with Dragonfly's flags.
//!
//! Asks the local dfdaemon (unix socket in `--home`); with no daemon running it runs a peer
//! in-process for this one download. Falls back to the source unless `--notbs`.

mod args;
mod progress;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use odonata_daemon::api::{Event, Outcome, Via};
use odonata_daemon::client::{download_via_daemon, ClientError};
use odonata_daemon::{download_in_process, socket_path, EngineConfig};

use odonata_transfer::runtime::init_logging;

use crate::args::{Args, Plan};
use crate::progress::Progress;

fn main() -> ExitCode {
    let args = Args::parse();
    // Errors reach the user as one line of our own; logs only with -v (or RUST_LOG).
    init_logging(if args.verbose { "debug" } else { "off" });
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dfget: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dfget: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(run(plan));
    // Let cancelled work drop its temporary files before the process ends.
    rt.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run(plan: Plan) -> ExitCode {
    let started = Instant::now();
    let mut progress = Progress::new(plan.show_bar, &plan.request.url);
    let timeout = plan.timeout;
    let work = download(&plan, &mut progress);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}s", t.as_secs_f64())),
        },
        None => work.await,
    };
    progress.finish();
    match result {
        Ok(o) => {
            let secs = started.elapsed().as_secs_f64();
            let via = match o.via {
                Via::P2p => "p2p",
                Via::Source => "source",
            };
            println!(
                "dfget: done: {} bytes in {secs:.2}s via {via} (pieces: {} from peers, {} from seed, {} reused) -> {}",
                o.bytes,
                o.from_peers,
                o.from_seed,
                o.reused_pieces,
                plan.request.output.display()
            );
            if let Some(r) = &o.fallback_reason {
                eprintln!("dfget: note: went to the source because {r}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dfget: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn download(plan: &Plan, progress: &mut Progress) -> Result<Outcome, String> {
    let socket = socket_path(&plan.home);
    let mut on_event = |ev: &Event| progress.event(ev);
    match download_via_daemon(&socket, &plan.request, &mut on_event).await {
        Ok(Event::Done(o)) => return Ok(o),
        Ok(Event::Error { message }) => return Err(message),
        Ok(Event::Progress { .. }) => return Err("daemon ended without a result".into()),
        Err(ClientError::NoDaemon(_)) => {
            tracing::debug!("no daemon, running a peer in-process");
        }
        Err(e @ ClientError::Broken(_)) => {
            if plan.request.no_source && plan.request.supernodes.is_empty() {
                return Err(e.to_string());
            }
            tracing::warn!(error = %e, "daemon failed, running a peer in-process");
        }
    }
    let cfg = EngineConfig {
        supernodes: plan.request.supernodes.clone(),
        parallel: 8,
        total_limit: plan.total_limit,
        advertise_ip: None,
        upload_port: 0,
        leave_when_done: true,
    };
    download_in_process(&plan.home, cfg, plan.request.clone(), on_event)
        .await
        .map_err(|e| e.to_string())
}
