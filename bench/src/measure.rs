//! What a run measures besides time: process CPU and memory, machine load, the lower bound.

use serde::{Deserialize, Serialize};

/// CPU and peak memory of one long-running process (a daemon, seed or tracker).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProcStat {
    /// Its role (`dfdaemon`, `supernode`, `aria2c`, ...).
    pub name: String,
    /// The testbed host it ran in.
    pub host: String,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// Linux reports times in USER_HZ ticks, which is 100 on every architecture Linux exports
/// to user space (the kernel scales internally), so no sysconf call is needed.
const USER_HZ: f64 = 100.0;

/// Reads CPU seconds and VmHWM of a live process from /proc; None once it has gone.
pub fn proc_stat(pid: u32, name: &str, host: &str) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcStat {
        name: name.to_owned(),
        host: host.to_owned(),
        cpu_s: (utime + stime) / USER_HZ,
        peak_rss_kib: hwm,
    })
}

/// The machine's load averages, as `uptime` shows them ("1.02 0.87 0.65").
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// T = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)) in seconds, rates in bytes per second: no
/// system can beat the origin sending one copy, the slowest peer receiving one, or the
/// whole swarm's upload carrying N copies.
pub fn lower_bound(file: u64, origin_up: f64, peer_down_min: f64, peer_ups: &[f64]) -> f64 {
    let f = file as f64;
    let n = peer_ups.len() as f64;
    let swarm: f64 = origin_up + peer_ups.iter().sum::<f64>();
    (f / origin_up).max(f / peer_down_min).max(n * f / swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_bound_picks_the_tightest_term() {
        let r = 12.5e6; // 100 Mbit/s
        let f = 256 << 20;
        // One peer: the origin's uplink and the peer's downlink are the same.
        assert!((lower_bound(f, r, r, &[r]) - f as f64 / r).abs() < 1e-9);
        // 8 peers at equal rates: N·F/((N+1)·r) < F/r, so F/r holds.
        assert!((lower_bound(f, r, r, &[r; 8]) - f as f64 / r).abs() < 1e-9);
        // A fast origin: the peers' downlinks bound it.
        assert!((lower_bound(f, 10.0 * r, r, &[r; 8]) - f as f64 / r).abs() < 1e-9);
        // A slow origin: its uplink bounds it.
        assert!((lower_bound(f, r / 10.0, r, &[r; 8]) - 10.0 * f as f64 / r).abs() < 1e-6);
    }

    #[test]
    fn reads_its_own_process() {
        let s = proc_stat(std::process::id(), "self", "root").unwrap();
        assert!(s.peak_rss_kib > 0);
        assert!(s.cpu_s >= 0.0);
    }
}
