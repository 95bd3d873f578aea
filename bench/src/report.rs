//! Turning run records into a markdown table and charts.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::run::RunRecord;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The daemon that counts for memory and CPU per system (dfdaemon, aria2c peer).
fn peer_daemon(r: &RunRecord) -> Option<&'static str> {
    match r.system.as_str() {
        "odonata" => Some("dfdaemon"),
        "bittorrent" => Some("aria2c"),
        _ => None,
    }
}

/// Max peak RSS (MiB) and mean CPU seconds per GB moved of the peers' daemons.
fn daemon_cost(r: &RunRecord) -> (Option<f64>, Option<f64>) {
    let Some(name) = peer_daemon(r) else {
        return (None, None);
    };
    let ds: Vec<_> = r.procs.iter().filter(|p| p.name == name).collect();
    if ds.is_empty() {
        return (None, None);
    }
    let rss = ds.iter().map(|p| p.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let gb = r.file_bytes as f64 / 1e9;
    let cpu = ds.iter().map(|p| p.cpu_s).sum::<f64>() / ds.len() as f64 / gb;
    (Some(rss), Some(cpu))
}

/// One line for the console after a run.
pub fn summary(r: &RunRecord) -> String {
    if let Some(why) = &r.skipped {
        return format!("{} N={}: {why}", r.system, r.peers);
    }
    format!(
        "{} F={}MiB N={}: all done {}s (bound {:.2}s, ratio {}), origin egress {:.3}x, sha256 ok {}/{}{}",
        r.system,
        r.file_bytes >> 20,
        r.peers,
        opt(r.all_done_s, 2),
        r.lower_bound_s,
        opt(r.ratio, 2),
        r.origin_egress_ratio,
        r.sha256_ok,
        r.peers,
        if r.failures.is_empty() {
            String::new()
        } else {
            format!("; failures: {}", r.failures.join("; "))
        }
    )
}

/// The markdown table of every record.
pub fn table(recs: &[RunRecord]) -> String {
    let mut s = String::from(
        "| system | F MiB | N | peer / origin Mbit/s | delay ms | all done s | bound T s | ratio | \
         median peer s | origin egress ×F | sha256 ok | peer daemon peak RSS MiB | peer daemon CPU s/GB | \
         supernode/seed CPU s | load at start | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in recs {
        if let Some(why) = &r.skipped {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} / {} | {} | {why} | | | | | | | | | {} | {} |",
                r.system,
                r.file_bytes >> 20,
                r.peers,
                r.peer_mbit,
                r.origin_mbit,
                r.delay_ms,
                r.load_start,
                r.commit
            );
            continue;
        }
        let mut done: Vec<f64> = r.per_peer_s.iter().flatten().copied().collect();
        done.sort_by(f64::total_cmp);
        let median = done.get(done.len() / 2).copied();
        let (rss, cpu) = daemon_cost(r);
        let seed_cpu = r
            .procs
            .iter()
            .find(|p| p.name == "supernode" || p.name == "aria2c-seed")
            .map(|p| p.cpu_s);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} | {} | {:.2} | {} | {} | {:.3} | {}/{} | {} | {} | {} | {} | {} |",
            r.system,
            r.file_bytes >> 20,
            r.peers,
            r.peer_mbit,
            r.origin_mbit,
            r.delay_ms,
            opt(r.all_done_s, 2),
            r.lower_bound_s,
            opt(r.ratio, 2),
            opt(median, 2),
            r.origin_egress_ratio,
            r.sha256_ok,
            r.peers,
            opt(rss, 1),
            opt(cpu, 2),
            opt(seed_cpu, 1),
            r.load_start,
            r.commit
        );
    }
    s
}

/// Reads the JSON lines, writes the table, and draws the charts when python3 with
/// matplotlib is there (else says so).
pub fn report(input: &Path, markdown: &Path, png_dir: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let mut recs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: RunRecord = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a run record", input.display(), i + 1))?;
        recs.push(r);
    }
    let t = table(&recs);
    std::fs::write(markdown, &t).with_context(|| format!("writing {}", markdown.display()))?;
    print!("{t}");
    std::fs::create_dir_all(png_dir)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("plot.py");
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import matplotlib"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match python {
        Some(py) => {
            let st = Command::new(py)
                .arg(&script)
                .arg(input)
                .arg(png_dir)
                .status()
                .context("running plot.py")?;
            if !st.success() {
                anyhow::bail!("plot.py failed ({st})");
            }
        }
        None => eprintln!(
            "odonata-bench: no PNG charts: python3 with matplotlib not found (bench/setup.sh installs python3-matplotlib)"
        ),
    }
    Ok(())
}
