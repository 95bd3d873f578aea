//! `odonata-origin`: the test origin as a process, for network-namespace tests and benchmarks.
//! Serves files from memory with Range support and counts body bytes (`GET /_stats`).

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use odonata_testkit::origin::Origin;

/// Command line of `odonata-origin`.
#[derive(Parser, Debug)]
#[command(
    name = "odonata-origin",
    about = "HTTP origin for Odonata tests and benchmarks"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve a file from disk: NAME=PATH (repeatable; read into memory).
    #[arg(long = "file")]
    files: Vec<String>,
    /// Serve generated data: NAME=BYTES[:SEED], BYTES with an optional K/M/G/Ki/Mi/Gi suffix.
    #[arg(long = "generate")]
    generate: Vec<String>,
    /// Bytes per second per response (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// Parses `256Mi`, `1G`, `1048576`.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("size '{s}' must be a number with an optional unit"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "k" | "KB" => 1000,
        "M" | "MB" => 1000 * 1000,
        "G" | "GB" => 1000 * 1000 * 1000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => bail!("size '{s}': unknown unit '{unit}' (K, M, G, Ki, Mi, Gi)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size '{s}' is too large"))
}

fn name_value(spec: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match spec.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() && !n.starts_with('_') => {
            Ok((n.to_owned(), v.to_owned()))
        }
        _ => bail!("--{flag} '{spec}' must be NAME=VALUE (NAME not starting with '_')"),
    }
}

fn load_files(args: &Args) -> anyhow::Result<HashMap<String, Bytes>> {
    let mut files = HashMap::new();
    for spec in &args.files {
        let (name, path) = name_value(spec, "file")?;
        let data = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        files.insert(name, Bytes::from(data));
    }
    for spec in &args.generate {
        let (name, v) = name_value(spec, "generate")?;
        let (size, seed) = match v.split_once(':') {
            Some((s, seed)) => (
                s,
                seed.parse::<u64>()
                    .with_context(|| format!("--generate '{spec}': seed must be a number"))?,
            ),
            None => (v.as_str(), 1),
        };
        let len = usize::try_from(parse_size(size)?)
            .with_context(|| format!("--generate '{spec}': too large"))?;
        files.insert(name, odonata_testkit::sample(len, seed));
    }
    if files.is_empty() {
        bail!("nothing to serve: give --file NAME=PATH or --generate NAME=BYTES[:SEED]");
    }
    Ok(files)
}

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("odonata-origin: error: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = load_files(&args)?;
    let mut names: Vec<_> = files.iter().map(|(n, d)| (n.clone(), d.len())).collect();
    names.sort();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let origin = Origin::start(listener, files, args.rate).await;
    for (n, len) in names {
        println!("odonata-origin: serving {} ({len} bytes)", origin.url(&n));
    }
    // The line tests and benchmarks wait for.
    println!("odonata-origin: listening on {}", origin.addr);
    shutdown_signal().await;
    let s = origin.bytes_served();
    println!(
        "odonata-origin: served {s} bytes in {} requests",
        origin.requests()
    );
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_junk() {
        assert_eq!(parse_size("128Mi").unwrap(), 128 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("Mi").is_err());
    }
}
