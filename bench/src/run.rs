//! One benchmark run: build the shaped testbed, start a system, let every peer fetch the
//! file, measure, check every copy, tear everything down.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use odonata_testkit::cluster::{bin, wait_unix};
use odonata_testkit::netns::{has_netem, HostSpec, Testbed};
use serde::{Deserialize, Serialize};

use crate::measure::{load_average, lower_bound, proc_stat, ProcStat};
use crate::{interrupted, System};

/// One row of the matrix.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Which system moves the file.
    pub system: System,
    /// File size in bytes.
    pub size: u64,
    /// Number of peers.
    pub peers: usize,
    /// Peer link rate, Mbit/s, both ways.
    pub peer_mbit: u64,
    /// Origin link rate, Mbit/s, both ways.
    pub origin_mbit: u64,
    /// Added one-way delay on every host's upload, ms (needs netem).
    pub delay_ms: u64,
    /// Give up on the run after this long.
    pub timeout: Duration,
}

/// What one run measured (one JSON line).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RunRecord {
    /// System name.
    pub system: String,
    /// File size, bytes.
    pub file_bytes: u64,
    /// Number of peers.
    pub peers: usize,
    /// Peer link rate, Mbit/s.
    pub peer_mbit: u64,
    /// Origin link rate, Mbit/s.
    pub origin_mbit: u64,
    /// Added one-way delay, ms.
    pub delay_ms: u64,
    /// Why the row did not run, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Seconds from the start until each peer had the file (None: it never did).
    pub per_peer_s: Vec<Option<f64>>,
    /// Seconds until every peer had the file (None if one failed).
    pub all_done_s: Option<f64>,
    /// The lower bound T, seconds.
    pub lower_bound_s: f64,
    /// all_done / T.
    pub ratio: Option<f64>,
    /// Bytes the origin host sent on its link during the run (veth counter, headers in).
    pub origin_egress_bytes: u64,
    /// origin_egress / file size.
    pub origin_egress_ratio: f64,
    /// Copies whose sha256 matched.
    pub sha256_ok: usize,
    /// Failures, one line each.
    pub failures: Vec<String>,
    /// Each client's last output line (dfget says where its pieces came from).
    #[serde(default)]
    pub client_notes: Vec<String>,
    /// CPU and peak RSS of every long-running process.
    pub procs: Vec<ProcStat>,
    /// Load averages (1, 5, 15 min) at the start and at the end.
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// Unix time of the start.
    pub started_unix: u64,
    /// The Odonata commit the binaries were built from (as checked out when run).
    #[serde(default)]
    pub commit: String,
}

/// The file every system moves, made once per size.
pub struct Payload {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its sha256.
    pub sha256: String,
}

impl Payload {
    /// Writes `size` pseudo-random bytes into `dir` (reused if already there).
    pub fn make(dir: &Path, size: u64) -> anyhow::Result<Self> {
        let path = dir.join(format!("payload-{size}.bin"));
        let len = usize::try_from(size).context("file size does not fit in memory")?;
        let data = odonata_testkit::sample(len, 20_260_000 + size);
        let sha256 = odonata_testkit::sha256_hex(&data);
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(size) {
            std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Self { path, size, sha256 })
    }

    /// The file's name (as served and as in the torrent).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A client process (dfget, curl, aria2c peer) killed when dropped.
struct Client {
    name: String,
    child: Option<Child>,
    done_at: Option<f64>,
    error: Option<String>,
    log: PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_client(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Client> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Client {
        name: name.to_owned(),
        child: Some(child),
        done_at: None,
        error: None,
        log: log.to_owned(),
    })
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// Where one system's pieces stand in a run: what the origin host is and how clients run.
struct Setup {
    /// Long-running processes to measure: (pid, role, host).
    daemons: Vec<(u32, String, String)>,
}

/// Why a row cannot run on this machine, if it cannot.
pub fn skip_reason(spec: &RunSpec) -> Option<String> {
    (spec.delay_ms > 0 && !netem_available()).then(|| {
        format!(
            "cannot run here: {} ms delay needs the netem qdisc, which this kernel lacks",
            spec.delay_ms
        )
    })
}

fn new_record(spec: &RunSpec) -> RunRecord {
    let mbit = |m: u64| m as f64 * 1e6 / 8.0;
    let peer_rates = vec![mbit(spec.peer_mbit); spec.peers];
    let bound = lower_bound(
        spec.size,
        mbit(spec.origin_mbit),
        mbit(spec.peer_mbit),
        &peer_rates,
    );
    RunRecord {
        system: spec.system.name().to_owned(),
        file_bytes: spec.size,
        peers: spec.peers,
        peer_mbit: spec.peer_mbit,
        origin_mbit: spec.origin_mbit,
        delay_ms: spec.delay_ms,
        skipped: None,
        per_peer_s: vec![None; spec.peers],
        all_done_s: None,
        lower_bound_s: bound,
        ratio: None,
        origin_egress_bytes: 0,
        origin_egress_ratio: 0.0,
        sha256_ok: 0,
        failures: Vec::new(),
        client_notes: Vec::new(),
        procs: Vec::new(),
        load_start: load_average(),
        load_end: String::new(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        commit: commit(),
    }
}

fn commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The record of a row that cannot run here.
pub fn skipped(spec: &RunSpec, why: String) -> RunRecord {
    let mut rec = new_record(spec);
    rec.per_peer_s = Vec::new();
    rec.skipped = Some(why);
    rec
}

/// Runs one row and returns its record.
pub fn run(spec: &RunSpec, payload: &Payload, work: &Path) -> anyhow::Result<RunRecord> {
    let mut rec = new_record(spec);
    let bound = rec.lower_bound_s;
    let run_dir = work.join(format!(
        "{}-{}-n{}-{}M-origin{}M",
        spec.system.name(),
        payload.size,
        spec.peers,
        spec.peer_mbit,
        spec.origin_mbit
    ));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;

    let mut specs = vec![HostSpec::symmetric("origin", spec.origin_mbit * 1_000_000)];
    specs.extend(
        (1..=spec.peers).map(|i| HostSpec::symmetric(&format!("p{i}"), spec.peer_mbit * 1_000_000)),
    );
    let tb = Testbed::create(&specs).context("building the testbed")?;
    if spec.delay_ms > 0 {
        for h in tb.hosts() {
            tb.add_delay(&h.name, Duration::from_millis(spec.delay_ms))?;
        }
    }
    let origin_ip = tb.host("origin")?.ip;
    let outs: Vec<PathBuf> = (1..=spec.peers)
        .map(|i| run_dir.join(format!("p{i}")).join(payload.name()))
        .collect();
    for o in &outs {
        if let Some(p) = o.parent() {
            std::fs::create_dir_all(p)?;
        }
    }

    let setup = match spec.system {
        System::Odonata => start_odonata(&tb, origin_ip, payload, &run_dir)?,
        System::Direct => start_origin_only(&tb, origin_ip, payload, &run_dir)?,
        System::Bittorrent => start_tracker_and_seed(&tb, origin_ip, payload, &run_dir)?,
    };
    let before = tb.counters("origin")?;
    eprintln!("odonata-bench: {} starting", describe(spec));
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for i in 1..=spec.peers {
        let host = format!("p{i}");
        let out = &outs[i - 1];
        let log = run_dir.join(format!("client-{host}.log"));
        let cmd = match spec.system {
            System::Odonata => {
                let mut c = tb.command(&host, bin("dfget")?);
                c.arg("--home")
                    .arg(run_dir.join(format!("home-{host}")))
                    .args(["--config", "/dev/null", "--notbs", "-u"])
                    .arg(format!("http://{origin_ip}:8080/{}", payload.name()))
                    .arg("-o")
                    .arg(out);
                c
            }
            System::Direct => {
                let mut c = tb.command(&host, "curl");
                c.args(["-sS", "--fail", "--noproxy", "*", "-o"])
                    .arg(out)
                    .arg(format!("http://{origin_ip}:8080/{}", payload.name()));
                c
            }
            System::Bittorrent => aria2_peer(&tb, &host, &run_dir, out)?,
        };
        clients.push(spawn_client(&host, cmd, &log)?);
    }
    let deadline = t0 + spec.timeout;
    loop {
        let now = t0.elapsed().as_secs_f64();
        let mut pending = 0;
        for c in &mut clients {
            if c.done_at.is_some() || c.error.is_some() {
                continue;
            }
            match spec.system {
                // aria2c keeps seeding after it finishes: its hook marks the end.
                System::Bittorrent => {
                    let done = c.log.with_extension("done");
                    if done.exists() {
                        c.done_at = Some(now);
                    } else if let Some(ch) = c.child.as_mut() {
                        if let Ok(Some(st)) = ch.try_wait() {
                            c.error =
                                Some(format!("aria2c exited with {st}: {}", last_line(&c.log)));
                        }
                    }
                }
                _ => {
                    if let Some(ch) = c.child.as_mut() {
                        match ch.try_wait() {
                            Ok(Some(st)) if st.success() => c.done_at = Some(now),
                            Ok(Some(st)) => {
                                c.error = Some(format!("exited with {st}: {}", last_line(&c.log)))
                            }
                            Ok(None) => {}
                            Err(e) => c.error = Some(format!("waiting: {e}")),
                        }
                    }
                }
            }
            if c.done_at.is_none() && c.error.is_none() {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        if interrupted() {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            for c in &mut clients {
                if c.done_at.is_none() && c.error.is_none() {
                    c.error = Some(format!("not done after {:?}", spec.timeout));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = tb.counters("origin")?;
    // Measured before anything is stopped: /proc is gone once a process is reaped.
    for (pid, role, host) in &setup.daemons {
        if let Some(s) = proc_stat(*pid, role, host) {
            rec.procs.push(s);
        }
    }
    if spec.system == System::Bittorrent {
        // The peers' aria2c processes are BitTorrent's daemons: they also serve.
        for c in &clients {
            if let Some(s) = c
                .child
                .as_ref()
                .and_then(|ch| proc_stat(ch.id(), "aria2c", &c.name))
            {
                rec.procs.push(s);
            }
        }
    }
    for c in &clients {
        let i: usize = c.name.trim_start_matches('p').parse().unwrap_or(1);
        rec.per_peer_s[i - 1] = c.done_at;
        rec.client_notes
            .push(format!("{}: {}", c.name, last_line(&c.log)));
        if let Some(e) = &c.error {
            rec.failures.push(format!("{}: {e}", c.name));
        }
    }
    drop(clients);
    drop(tb);
    rec.origin_egress_bytes = after.tx_bytes.saturating_sub(before.tx_bytes);
    rec.origin_egress_ratio = rec.origin_egress_bytes as f64 / payload.size as f64;
    if rec.failures.is_empty() {
        rec.all_done_s = rec
            .per_peer_s
            .iter()
            .copied()
            .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)));
        rec.ratio = rec.all_done_s.map(|t| t / bound);
    }
    for (i, o) in outs.iter().enumerate() {
        match odonata_testkit::sha256_file(o) {
            Ok(h) if h == payload.sha256 => rec.sha256_ok += 1,
            Ok(h) => rec.failures.push(format!("p{}: sha256 {h} differs", i + 1)),
            Err(e) => rec.failures.push(format!("p{}: no copy: {e}", i + 1)),
        }
    }
    if rec.sha256_ok < spec.peers {
        rec.all_done_s = None;
        rec.ratio = None;
    }
    rec.load_end = load_average();
    // Copies and daemon stores are large; logs stay.
    for o in &outs {
        let _ = std::fs::remove_file(o);
    }
    for e in std::fs::read_dir(&run_dir)?.flatten() {
        if e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(rec)
}

/// Whether netem exists, probed once per process.
fn netem_available() -> bool {
    static NETEM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NETEM.get_or_init(has_netem)
}

/// One line naming a row.
pub fn describe(spec: &RunSpec) -> String {
    format!(
        "{} F={}MiB N={} peers={}Mbit origin={}Mbit delay={}ms",
        spec.system.name(),
        spec.size >> 20,
        spec.peers,
        spec.peer_mbit,
        spec.origin_mbit,
        spec.delay_ms
    )
}

fn start_origin(
    tb: &Testbed,
    origin_ip: Ipv4Addr,
    payload: &Payload,
    run_dir: &Path,
) -> anyhow::Result<u32> {
    let mut cmd = tb.command("origin", bin("odonata-origin")?);
    cmd.arg("--listen")
        .arg(format!("{origin_ip}:8080"))
        .arg("--file")
        .arg(format!("{}={}", payload.name(), payload.path.display()));
    let pid = tb.spawn("origin", cmd, &run_dir.join("origin.log"))?;
    tb.wait_tcp("origin", origin_ip, 8080, Duration::from_secs(60))?;
    Ok(pid)
}

fn start_origin_only(
    tb: &Testbed,
    origin_ip: Ipv4Addr,
    payload: &Payload,
    run_dir: &Path,
) -> anyhow::Result<Setup> {
    let pid = start_origin(tb, origin_ip, payload, run_dir)?;
    Ok(Setup {
        daemons: vec![(pid, "origin".into(), "origin".into())],
    })
}

fn start_odonata(
    tb: &Testbed,
    origin_ip: Ipv4Addr,
    payload: &Payload,
    run_dir: &Path,
) -> anyhow::Result<Setup> {
    let mut daemons = Vec::new();
    let pid = start_origin(tb, origin_ip, payload, run_dir)?;
    daemons.push((pid, "origin".into(), "origin".into()));
    let sn_home = run_dir.join("home-supernode");
    std::fs::create_dir_all(&sn_home)?;
    let mut cmd = tb.command("origin", bin("supernode")?);
    cmd.arg("--home")
        .arg(&sn_home)
        .arg("--listen")
        .arg(format!("{origin_ip}:8002"))
        .arg("--upload-listen")
        .arg(format!("{origin_ip}:8001"))
        .arg("--advertise-ip")
        .arg(origin_ip.to_string())
        .args(["--config", "/dev/null"]);
    let pid = tb.spawn("supernode", cmd, &run_dir.join("supernode.log"))?;
    daemons.push((pid, "supernode".into(), "origin".into()));
    tb.wait_tcp("origin", origin_ip, 8002, Duration::from_secs(30))?;
    let mut homes = Vec::new();
    for h in tb.hosts().iter().filter(|h| h.name != "origin") {
        let home = run_dir.join(format!("home-{}", h.name));
        std::fs::create_dir_all(&home)?;
        let mut cmd = tb.command(&h.name, bin("dfdaemon")?);
        cmd.arg("--home")
            .arg(&home)
            .arg("--supernode")
            .arg(format!("{origin_ip}:8002"))
            .arg("--upload-listen")
            .arg(format!("{}:65000", h.ip))
            .arg("--advertise-ip")
            .arg(h.ip.to_string())
            .args(["--config", "/dev/null"]);
        let pid = tb.spawn(
            "dfdaemon",
            cmd,
            &run_dir.join(format!("dfdaemon-{}.log", h.name)),
        )?;
        daemons.push((pid, "dfdaemon".into(), h.name.clone()));
        homes.push(home);
    }
    for home in &homes {
        wait_unix(&home.join("dfdaemon.sock"), Duration::from_secs(30))?;
    }
    Ok(Setup { daemons })
}

/// aria2c options shared by the seed and the peers: no DHT or local discovery (the tracker
/// and peer exchange only, inside the testbed), no IPv6, quiet output.
fn aria2_common(cmd: &mut Command) {
    cmd.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--disable-ipv6=true",
        "--seed-ratio=0.0",
        "--listen-port=6881",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--max-overall-upload-limit=0",
        "--bt-max-peers=0",
    ]);
}

fn start_tracker_and_seed(
    tb: &Testbed,
    origin_ip: Ipv4Addr,
    payload: &Payload,
    run_dir: &Path,
) -> anyhow::Result<Setup> {
    for tool in ["opentracker", "aria2c", "mktorrent"] {
        if which(tool).is_none() {
            bail!("{tool} not installed: run bench/setup.sh (Debian packages opentracker aria2 mktorrent)");
        }
    }
    let dir = payload.path.parent().unwrap_or(Path::new("."));
    // 256 KiB pieces, the usual choice for files of this size.
    let torrent = dir.join(format!("{}.torrent", payload.name()));
    if !torrent.exists() {
        let out = Command::new("mktorrent")
            .args(["-l", "18", "-a"])
            .arg(format!("http://{origin_ip}:6969/announce"))
            .arg("-o")
            .arg(&torrent)
            .arg(&payload.path)
            .output()
            .context("running mktorrent")?;
        if !out.status.success() {
            bail!(
                "mktorrent failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    std::fs::copy(&torrent, run_dir.join("file.torrent"))?;
    // Debian's opentracker serves only whitelisted torrents: list this one's info hash.
    let show = Command::new("aria2c")
        .arg("-S")
        .arg(&torrent)
        .output()
        .context("running aria2c -S")?;
    let info_hash = String::from_utf8_lossy(&show.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Info Hash: ").map(|h| h.trim().to_owned()))
        .context("aria2c -S printed no info hash")?;
    std::fs::write(run_dir.join("whitelist.txt"), format!("{info_hash}\n"))?;
    let mut daemons = Vec::new();
    let mut cmd = tb.command("origin", "opentracker");
    cmd.arg("-i")
        .arg(origin_ip.to_string())
        .args(["-p", "6969", "-P", "6969", "-w", "whitelist.txt", "-d"])
        .arg(run_dir)
        .current_dir(run_dir);
    let pid = tb.spawn("opentracker", cmd, &run_dir.join("opentracker.log"))?;
    daemons.push((pid, "opentracker".into(), "origin".into()));
    tb.wait_tcp("origin", origin_ip, 6969, Duration::from_secs(20))?;
    let mut cmd = tb.command("origin", "aria2c");
    aria2_common(&mut cmd);
    cmd.arg(format!("--dir={}", dir.display()))
        .args(["--bt-seed-unverified=true", "--check-integrity=false"])
        .arg(run_dir.join("file.torrent"));
    let pid = tb.spawn("aria2c-seed", cmd, &run_dir.join("seed.log"))?;
    daemons.push((pid, "aria2c-seed".into(), "origin".into()));
    tb.wait_tcp("origin", origin_ip, 6881, Duration::from_secs(30))?;
    // The hook marks each peer's end by a file next to its log.
    let hook = run_dir.join("done-hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$DONE_FILE\"\n")?;
    let _ = Command::new("chmod").arg("+x").arg(&hook).status();
    Ok(Setup { daemons })
}

fn aria2_peer(tb: &Testbed, host: &str, run_dir: &Path, out: &Path) -> anyhow::Result<Command> {
    let mut cmd = tb.command(host, "aria2c");
    aria2_common(&mut cmd);
    let dir = out.parent().unwrap_or(run_dir);
    cmd.env("DONE_FILE", run_dir.join(format!("client-{host}.done")))
        .arg(format!("--dir={}", dir.display()))
        .arg(format!(
            "--on-bt-download-complete={}",
            run_dir.join("done-hook.sh").display()
        ))
        .arg(run_dir.join("file.torrent"));
    Ok(cmd)
}

/// The path of a program on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}
