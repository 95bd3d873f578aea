//! A shaped network testbed made of network namespaces, for end-to-end tests and benchmarks.
//!
//! Every host is a namespace with one veth pair to a bridge that lives in a namespace of its
//! own, so the root namespace's interfaces are never touched. Each host's upload is shaped on
//! the egress of its own veth end and its download on the egress of the bridge-side end, with
//! `tbf` and a short drop-tail queue (about 25 ms at the link rate): a sender that pushes too
//! hard sees losses, as on a real link, instead of hiding congestion in a deep buffer.
//!
//! Addresses come from 198.18.0.0/15 (the benchmarking range, RFC 2544); every namespace and
//! link carries a per-run prefix. Dropping the [`Testbed`] kills the processes it started (by
//! PID) and deletes every namespace it made, also when it is dropped half-built after a
//! failure.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::Proc;

/// What went wrong while building or using a testbed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command (`ip`, `tc`, ...) failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot run `{cmd}`: {source}")]
    Exec {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// A process inside a host could not be started.
    #[error("starting {name} in {host}: {reason}")]
    Spawn {
        /// The process's name.
        name: String,
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// No host has that name.
    #[error("no host named '{0}' in the testbed")]
    NoHost(String),
    /// The testbed description is not usable.
    #[error("bad testbed: {0}")]
    Invalid(String),
    /// A wait ran out of time.
    #[error("{0}")]
    Timeout(String),
}

/// One host to create.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Short name (letters, digits, '-'), unique in the testbed.
    pub name: String,
    /// Upload rate in bits per second (0 = unshaped).
    pub up_bps: u64,
    /// Download rate in bits per second (0 = unshaped).
    pub down_bps: u64,
}

impl HostSpec {
    /// A host with the same rate both ways.
    pub fn symmetric(name: &str, bps: u64) -> Self {
        Self {
            name: name.to_owned(),
            up_bps: bps,
            down_bps: bps,
        }
    }
}

/// A host of a running testbed.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its name as given.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Its own veth end (inside `ns`); egress is the host's upload.
    pub dev: String,
    /// The bridge-side veth end (inside the bridge namespace); egress is the host's download.
    pub bridge_dev: String,
    /// Upload rate in bits per second (0 = unshaped).
    pub up_bps: u64,
    /// Download rate in bits per second (0 = unshaped).
    pub down_bps: u64,
}

/// Byte counters of a host's veth end, as the kernel sees them (headers included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Bytes the host sent (its upload).
    pub tx_bytes: u64,
    /// Bytes the host received (its download).
    pub rx_bytes: u64,
}

/// A testbed: hosts in namespaces on one bridge. Everything is removed on drop.
pub struct Testbed {
    /// The per-run prefix of every name.
    pub prefix: String,
    /// The namespace holding the bridge.
    pub bridge_ns: String,
    hosts: Vec<Host>,
    /// Namespaces made so far, deleted on drop (the bridge's last).
    made: Vec<String>,
    procs: Mutex<Vec<Proc>>,
}

/// Returns why netns tests cannot run here (not root, `ip`/`tc` missing, namespaces, bridges,
/// veth or tbf unavailable), or None.
pub fn requires_root() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("network-namespace testbed needs root (running as non-root)".into());
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "network-namespace testbed needs `{tool}` (Debian package iproute2)"
            ));
        }
    }
    // A one-host testbed exercises namespaces, bridge, veth and tbf: a sandbox or kernel
    // lacking any of them is a reason to skip, not a test failure.
    match Testbed::create(&[HostSpec::symmetric("probe", 10_000_000)]) {
        Ok(tb) => {
            drop(tb);
            None
        }
        Err(e) => Some(format!(
            "cannot build a network-namespace testbed here: {e}"
        )),
    }
}

/// Whether this kernel has the netem qdisc (needed for added delay). Checked on a throwaway
/// veth pair inside a throwaway namespace.
pub fn has_netem() -> bool {
    let ns = format!("odnetem{}", std::process::id() % 100_000);
    if run(Command::new("ip").args(["netns", "add", &ns])).is_err() {
        return false;
    }
    let ok = run(Command::new("ip").args([
        "-n", &ns, "link", "add", "nt0", "type", "veth", "peer", "name", "nt1",
    ]))
    .is_ok()
        && run(Command::new("ip").args([
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "nt0", "root", "netem", "delay",
            "1ms",
        ]))
        .is_ok();
    let _ = run(Command::new("ip").args(["netns", "del", &ns]));
    ok
}

/// Runs a command to its end; its stdout on success, its stderr in the error otherwise.
fn run(cmd: &mut Command) -> Result<String, NetnsError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Exec {
            cmd: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// A prefix no namespace on this machine has yet: `od<pid%10000><letter>`.
fn fresh_prefix() -> Result<String, NetnsError> {
    let existing = run(Command::new("ip").args(["netns", "list"]))?;
    let pid = std::process::id() % 10_000;
    for _ in 0..26 {
        let n = RUNS.fetch_add(1, Ordering::Relaxed) % 26;
        let letter = char::from(b'a' + n as u8);
        let prefix = format!("od{pid}{letter}");
        let taken = existing
            .lines()
            .any(|l| l.starts_with(&format!("{prefix}-")));
        if !taken {
            return Ok(prefix);
        }
    }
    Err(NetnsError::Invalid(
        "no free namespace prefix for this process (26 testbeds alive?)".into(),
    ))
}

/// tc arguments for a rate-limiting drop-tail shaper at `bps` bits per second.
fn tbf_args(bps: u64) -> Vec<String> {
    let bytes_per_sec = bps / 8;
    // Burst: a few ms at the rate (the timer grain), at least a few full frames.
    let burst = (bytes_per_sec / 250).max(16 * 1024);
    // Queue: about 25 ms at the rate on top of the burst, so overload turns into drops.
    let limit = burst + (bytes_per_sec / 40).max(32 * 1024);
    vec![
        "root".into(),
        "handle".into(),
        "1:".into(),
        "tbf".into(),
        "rate".into(),
        format!("{bps}bit"),
        "burst".into(),
        burst.to_string(),
        "limit".into(),
        limit.to_string(),
    ]
}

impl Testbed {
    /// Builds the testbed: a bridge namespace and one namespace per host, host `i` at
    /// 198.18.0.(i+1)/24, shaped as its spec says. On any failure everything made so far is
    /// removed before the error is returned.
    pub fn create(specs: &[HostSpec]) -> Result<Self, NetnsError> {
        if specs.is_empty() || specs.len() > 250 {
            return Err(NetnsError::Invalid(format!(
                "1..=250 hosts, got {}",
                specs.len()
            )));
        }
        for (i, s) in specs.iter().enumerate() {
            let ok = !s.name.is_empty()
                && s.name.len() <= 32
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(NetnsError::Invalid(format!(
                    "host name '{}' must be 1..=32 letters, digits or '-'",
                    s.name
                )));
            }
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(NetnsError::Invalid(format!(
                    "host name '{}' given twice",
                    s.name
                )));
            }
        }
        let prefix = fresh_prefix()?;
        let bridge_ns = format!("{prefix}-br");
        // Built field by field: if a step fails, dropping `tb` removes what exists.
        let mut tb = Testbed {
            prefix: prefix.clone(),
            bridge_ns: bridge_ns.clone(),
            hosts: Vec::new(),
            made: Vec::new(),
            procs: Mutex::new(Vec::new()),
        };
        run(Command::new("ip").args(["netns", "add", &bridge_ns]))?;
        tb.made.push(bridge_ns.clone());
        let br = format!("{prefix}br");
        tb.ip(&bridge_ns, &["link", "set", "lo", "up"])?;
        tb.ip(&bridge_ns, &["link", "add", &br, "type", "bridge"])?;
        tb.ip(&bridge_ns, &["link", "set", &br, "up"])?;
        for (i, s) in specs.iter().enumerate() {
            let ns = format!("{prefix}-{}", s.name);
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            tb.made.push(ns.clone());
            let dev = format!("{prefix}h{i}");
            let bridge_dev = format!("{prefix}b{i}");
            let ip = Ipv4Addr::new(198, 18, 0, (i + 1) as u8);
            // Both ends are made inside the bridge namespace, then one is moved to the host.
            tb.ip(
                &bridge_ns,
                &[
                    "link",
                    "add",
                    &bridge_dev,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &dev,
                ],
            )?;
            tb.ip(&bridge_ns, &["link", "set", &dev, "netns", &ns])?;
            tb.ip(&bridge_ns, &["link", "set", &bridge_dev, "master", &br])?;
            tb.ip(&bridge_ns, &["link", "set", &bridge_dev, "up"])?;
            tb.ip(&ns, &["link", "set", "lo", "up"])?;
            tb.ip(&ns, &["addr", "add", &format!("{ip}/24"), "dev", &dev])?;
            tb.ip(&ns, &["link", "set", &dev, "up"])?;
            if s.up_bps > 0 {
                tb.tc(&ns, &dev, &tbf_args(s.up_bps))?;
            }
            if s.down_bps > 0 {
                tb.tc(&bridge_ns, &bridge_dev, &tbf_args(s.down_bps))?;
            }
            tb.hosts.push(Host {
                name: s.name.clone(),
                ns,
                ip,
                dev,
                bridge_dev,
                up_bps: s.up_bps,
                down_bps: s.down_bps,
            });
        }
        Ok(tb)
    }

    fn ip(&self, ns: &str, args: &[&str]) -> Result<String, NetnsError> {
        run(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    fn tc(&self, ns: &str, dev: &str, qdisc: &[String]) -> Result<String, NetnsError> {
        run(Command::new("ip")
            .args(["netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev])
            .args(qdisc))
    }

    /// Every host, in the order given.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host, NetnsError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| NetnsError::NoHost(name.to_owned()))
    }

    /// Adds a one-way delay with netem on the host's upload (fails on kernels without netem,
    /// see [`has_netem`]). The shaper stays: netem becomes the child of the tbf root.
    pub fn add_delay(&self, name: &str, delay: Duration) -> Result<(), NetnsError> {
        let h = self.host(name)?;
        let ms = format!("{}ms", delay.as_millis());
        let parent: &[&str] = if h.up_bps > 0 {
            &["parent", "1:1", "handle", "10:"]
        } else {
            &["root", "handle", "1:"]
        };
        run(Command::new("ip")
            .args(["netns", "exec", &h.ns, "tc", "qdisc", "add", "dev", &h.dev])
            .args(parent)
            .args(["netem", "delay", &ms]))?;
        Ok(())
    }

    /// A command that runs `program` inside the host's namespace.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ns = self
            .host(name)
            .map(|h| h.ns.clone())
            .unwrap_or_else(|_| format!("{}-{name}", self.prefix));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).arg(program);
        cmd
    }

    /// Starts a long-running process made with [`Testbed::command`], output to `log`. The
    /// testbed owns it and kills it on drop; the returned PID is for measurements.
    /// (`ip netns exec` execs the program, so the PID is the program's own.)
    pub fn spawn(&self, name: &str, cmd: Command, log: &Path) -> Result<u32, NetnsError> {
        let p = Proc::spawn(name, cmd, log).map_err(|e| NetnsError::Spawn {
            name: name.to_owned(),
            host: log.display().to_string(),
            reason: format!("{e:#}"),
        })?;
        let pid = p.pid().unwrap_or(0);
        self.procs.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        Ok(pid)
    }

    /// Stops a process started by [`Testbed::spawn`] (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&self, pid: u32, grace: Duration) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = procs.iter().position(|p| p.pid() == Some(pid)) {
            let mut p = procs.remove(i);
            p.terminate(grace);
        }
    }

    /// Whether a process started by [`Testbed::spawn`] has exited.
    pub fn exited(&self, pid: u32) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs
            .iter_mut()
            .find(|p| p.pid() == Some(pid))
            .is_none_or(|p| p.exited())
    }

    /// Waits until something inside host `name` accepts TCP connections on `ip:port`
    /// (probed from inside that namespace).
    pub fn wait_tcp(
        &self,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
        limit: Duration,
    ) -> Result<(), NetnsError> {
        let deadline = Instant::now() + limit;
        let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
        while Instant::now() < deadline {
            let ok = self
                .command(name, "bash")
                .args(["-c", &probe])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(NetnsError::Timeout(format!(
            "nothing listening on {ip}:{port} in host {name} after {limit:?}"
        )))
    }

    /// The kernel's byte counters of the host's own veth end (tx = what it uploaded).
    pub fn counters(&self, name: &str) -> Result<LinkCounters, NetnsError> {
        let h = self.host(name)?;
        let out = self.ip(&h.ns, &["-j", "-s", "link", "show", "dev", &h.dev])?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| NetnsError::Command {
            cmd: format!("ip -j -s link show dev {}", h.dev),
            stderr: format!("unreadable JSON: {e}"),
        })?;
        let stats = &v[0]["stats64"];
        let get = |dir: &str| stats[dir]["bytes"].as_u64();
        match (get("tx"), get("rx")) {
            (Some(tx_bytes), Some(rx_bytes)) => Ok(LinkCounters { tx_bytes, rx_bytes }),
            _ => Err(NetnsError::Command {
                cmd: format!("ip -j -s link show dev {}", h.dev),
                stderr: "no stats64 byte counters in the output".into(),
            }),
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Processes first: a namespace lives on while anything runs inside it.
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|p| p.into_inner()));
        drop(procs);
        // Hosts before the bridge; deleting a namespace deletes its veth ends with it.
        for ns in self.made.iter().rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("testbed cleanup: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_queue_is_short_and_burst_covers_frames() {
        let a = tbf_args(100_000_000);
        assert_eq!(a[5], "100000000bit");
        let burst: u64 = a[7].parse().unwrap();
        let limit: u64 = a[9].parse().unwrap();
        assert!(burst >= 16 * 1024);
        // About 25 ms of queue at 12.5 MB/s on top of the burst.
        assert!(limit - burst <= 12_500_000 / 40 + 1);
    }
}
