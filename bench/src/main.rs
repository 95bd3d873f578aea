//! `odonata-bench`: Odonata against direct HTTP and BitTorrent on a shaped
//! network-namespace testbed (see docs/benchmarks.md for the commands and results).

mod measure;
mod report;
mod run;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use odonata_testkit::netns::{requires_root, HostSpec, Testbed};

use crate::run::{describe, Payload, RunSpec};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM) arrived; every wait checks it so the testbed is torn down.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// A system that moves the file to every peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// Origin + supernode on the origin host, dfdaemon + dfget on every peer.
    Odonata,
    /// Every peer fetches from the origin with curl.
    Direct,
    /// opentracker + an aria2c seed on the origin host, aria2c on every peer.
    Bittorrent,
}

impl System {
    /// Its name in records.
    pub fn name(self) -> &'static str {
        match self {
            System::Odonata => "odonata",
            System::Direct => "direct",
            System::Bittorrent => "bittorrent",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "odonata-bench",
    about = "Odonata vs direct HTTP vs BitTorrent on a shaped network-namespace testbed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct Matrix {
    /// Systems to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "odonata,direct,bittorrent"
    )]
    systems: Vec<System>,
    /// File sizes, comma-separated, e.g. 256Mi,1Gi.
    #[arg(long, value_delimiter = ',', default_value = "256Mi")]
    sizes: Vec<String>,
    /// Peer counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    peers: Vec<usize>,
    /// Peer link rate, Mbit/s (upload and download).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Origin link rate, Mbit/s (default: the peer rate).
    #[arg(long)]
    origin_rate: Option<u64>,
    /// One-way delay added on every host's upload, ms (needs netem).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Give up on one run after this many seconds (default: 10 x the one-link time, or
    /// 1.5 x the time to send N copies from the origin when that is longer, + 60).
    #[arg(long)]
    timeout_s: Option<u64>,
    /// JSON lines are appended here.
    #[arg(long, default_value = "bench/results/results.jsonl")]
    out: PathBuf,
    /// Scratch directory for the payload, stores and copies.
    #[arg(long)]
    workdir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs every combination of systems, sizes and peer counts, one JSON line each.
    Run(Matrix),
    /// Builds a testbed, prints its hosts, and holds it until Ctrl-C or --hold-s.
    Testbed {
        /// Number of peers.
        #[arg(long, default_value_t = 4)]
        peers: usize,
        /// Peer link rate, Mbit/s.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Origin link rate, Mbit/s (default: the peer rate).
        #[arg(long)]
        origin_rate: Option<u64>,
        /// Seconds to hold it.
        #[arg(long, default_value_t = 600)]
        hold_s: u64,
    },
    /// Turns JSON lines into a markdown table and PNG charts.
    Report {
        /// JSON lines written by `run`.
        #[arg(long, default_value = "bench/results/results.jsonl")]
        input: PathBuf,
        /// Where the markdown table goes.
        #[arg(long, default_value = "bench/results/results.md")]
        markdown: PathBuf,
        /// Directory for the PNG charts (python3 with matplotlib draws them).
        #[arg(long, default_value = "bench/results")]
        png_dir: PathBuf,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("odonata-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    match cli.cmd {
        Cmd::Run(m) => run_matrix(&m),
        Cmd::Testbed {
            peers,
            rate,
            origin_rate,
            hold_s,
        } => hold_testbed(peers, rate, origin_rate.unwrap_or(rate), hold_s),
        Cmd::Report {
            input,
            markdown,
            png_dir,
        } => report::report(&input, &markdown, &png_dir),
    }
}

fn need_root() -> anyhow::Result<()> {
    if let Some(why) = requires_root() {
        bail!("{why}");
    }
    Ok(())
}

fn hold_testbed(peers: usize, rate: u64, origin_rate: u64, hold_s: u64) -> anyhow::Result<()> {
    need_root()?;
    let mut specs = vec![HostSpec::symmetric("origin", origin_rate * 1_000_000)];
    specs.extend((1..=peers).map(|i| HostSpec::symmetric(&format!("p{i}"), rate * 1_000_000)));
    let tb = Testbed::create(&specs)?;
    println!("bridge namespace: {}", tb.bridge_ns);
    for h in tb.hosts() {
        println!(
            "{:8} ns={} ip={} up={}bit down={}bit (ip netns exec {} bash)",
            h.name, h.ns, h.ip, h.up_bps, h.down_bps, h.ns
        );
    }
    println!("holding for {hold_s}s; Ctrl-C removes it");
    let end = Instant::now() + Duration::from_secs(hold_s);
    while Instant::now() < end && !interrupted() {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(tb);
    println!("testbed removed");
    Ok(())
}

/// Parses `256Mi`, `1Gi`, `1048576`.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("size '{s}' must be a number with an optional Ki/Mi/Gi"))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => bail!("size '{s}': unknown unit '{unit}' (Ki, Mi, Gi)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size '{s}' is too large"))
}

fn run_matrix(m: &Matrix) -> anyhow::Result<()> {
    need_root()?;
    let sizes: Vec<u64> = m
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<anyhow::Result<_>>()?;
    if m.peers.iter().any(|&n| n == 0 || n > 64) {
        bail!("--peers: every count must be 1..=64");
    }
    if m.rate == 0 || m.origin_rate == Some(0) {
        bail!("--rate/--origin-rate must be > 0 Mbit/s");
    }
    let work = match &m.workdir {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("odonata-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    if let Some(p) = m.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    if m.delay_ms > 0 && !odonata_testkit::netns::has_netem() {
        // Said once, recorded per row, and no payload made for rows that cannot run.
        eprintln!(
            "odonata-bench: every row of this matrix cannot run here: {} ms delay needs the \
             netem qdisc, which this kernel lacks",
            m.delay_ms
        );
    }
    let result = (|| -> anyhow::Result<()> {
        for &size in &sizes {
            let mut payload: Option<Payload> = None;
            for &peers in &m.peers {
                for &system in &m.systems {
                    if interrupted() {
                        bail!("interrupted");
                    }
                    let origin_mbit = m.origin_rate.unwrap_or(m.rate);
                    let bound_s = size as f64 / (m.rate.min(origin_mbit) as f64 * 1e6 / 8.0);
                    // Direct HTTP needs every copy through the origin's uplink: N x F / u_s.
                    let serial_s = peers as f64 * size as f64 / (origin_mbit as f64 * 1e6 / 8.0);
                    let spec = RunSpec {
                        system,
                        size,
                        peers,
                        peer_mbit: m.rate,
                        origin_mbit,
                        delay_ms: m.delay_ms,
                        timeout: Duration::from_secs(
                            m.timeout_s
                                .unwrap_or((bound_s * 10.0).max(serial_s * 1.5) as u64 + 60),
                        ),
                    };
                    let rec = match run::skip_reason(&spec) {
                        Some(why) => run::skipped(&spec, why),
                        None => {
                            if payload.is_none() {
                                payload = Some(Payload::make(&work, size)?);
                            }
                            let p = payload.as_ref().context("payload")?;
                            run::run(&spec, p, &work)
                                .with_context(|| format!("run {}", describe(&spec)))?
                        }
                    };
                    let line = serde_json::to_string(&rec)?;
                    println!("{line}");
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&m.out)
                        .with_context(|| format!("opening {}", m.out.display()))?;
                    writeln!(f, "{line}")?;
                    eprintln!("odonata-bench: {}", report::summary(&rec));
                }
            }
        }
        Ok(())
    })();
    // Payloads are up to a GiB each; logs of the last runs stay for a look.
    for e in std::fs::read_dir(&work).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "bin") {
            let _ = std::fs::remove_file(p);
        }
    }
    if std::fs::remove_dir(&work).is_err() {
        eprintln!("odonata-bench: logs in {}", work.display());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert!(parse_size("1G").is_err());
        assert!(parse_size("x").is_err());
    }
}
