//! The embedded default job: a supernode and three dfdaemons on 127.0.0.1 distribute a
//! generated file from a local HTTP origin with dfget, then report each host's time, the
//! bytes the origin served and the sha256 check.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use odonata_testkit::cluster::{Daemon, Supernode};
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

#[derive(Parser)]
#[command(
    name = "odonata-demo",
    about = "Run a local Odonata cluster and distribute a sample file"
)]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: usize,
    /// Number of hosts (dfdaemons).
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Keep the working directory (logs, caches) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("odonata-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.peers == 0 || args.size_mib == 0 {
        bail!("--peers and --size-mib must be at least 1");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let len = args.size_mib << 20;
    println!("generating a {} MiB sample file ...", args.size_mib);
    let data = sample(len, 42);
    let want = sha256_hex(&data);
    let origin = rt.block_on(Origin::local(
        HashMap::from([("sample.bin".to_owned(), data)]),
        0,
    ))?;
    let url = origin.url("sample.bin");
    let dir = tempfile::Builder::new().prefix("odonata-demo-").tempdir()?;
    println!("origin      {url}");
    let sn = Supernode::start(dir.path()).context("starting the supernode")?;
    println!("supernode   control {} pieces {}", sn.addr, sn.upload);
    let nodes = vec![sn.addr.to_string()];
    let mut daemons = Vec::new();
    for i in 1..=args.peers {
        let d = Daemon::start(dir.path(), &format!("host{i}"), &nodes, &[])
            .with_context(|| format!("starting dfdaemon host{i}"))?;
        println!(
            "host{i}       dfdaemon uploads on {} home {}",
            d.upload,
            d.home.display()
        );
        daemons.push(d);
    }
    println!("\nall hosts run: dfget -u {url} -o <out> --showbar\n");
    let started = Instant::now();
    let mut jobs = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        let host = format!("host{}", i + 1);
        let out = dir.path().join(format!("{host}.out"));
        let mut cmd = d.dfget()?;
        cmd.arg("-u").arg(&url).arg("-o").arg(&out).arg("--showbar");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting dfget")?;
        let stderr = child.stderr.take();
        jobs.push(std::thread::spawn(move || {
            if let Some(e) = stderr {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    println!("[{host}] {line}");
                }
            }
            let res = child.wait_with_output();
            (host, out, started.elapsed(), res)
        }));
    }
    let mut rows = Vec::new();
    let mut all_ok = true;
    for j in jobs {
        let (host, out, took, res) = j
            .join()
            .map_err(|_| anyhow::anyhow!("a dfget thread panicked"))?;
        let res = res?;
        let stdout = String::from_utf8_lossy(&res.stdout).trim().to_owned();
        let ok = res.status.success() && sha256_file(&out).map(|h| h == want).unwrap_or(false);
        all_ok &= ok;
        let via = if stdout.contains("via p2p") {
            "p2p"
        } else if stdout.contains("via source") {
            "source"
        } else {
            "-"
        };
        rows.push((host, took, via, ok, stdout));
    }
    let total = started.elapsed();
    println!("\n| host | time | via | sha256 |");
    println!("|---|---|---|---|");
    for (host, took, via, ok, _) in &rows {
        println!(
            "| {host} | {:.2} s | {via} | {} |",
            took.as_secs_f64(),
            if *ok { "ok" } else { "MISMATCH" }
        );
    }
    for (host, _, _, _, line) in &rows {
        println!("{host}: {line}");
    }
    let served = origin.bytes_served();
    println!(
        "\nall {} hosts done in {:.2} s; origin served {} bytes = {:.3}x the file; expected sha256 {want}",
        rows.len(),
        total.as_secs_f64(),
        served,
        served as f64 / len as f64
    );
    drop(daemons);
    drop(sn);
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    std::thread::sleep(Duration::from_millis(10));
    if !all_ok {
        bail!("a host did not get a correct copy");
    }
    Ok(())
}
