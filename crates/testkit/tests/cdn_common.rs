//! Helpers shared by the cdn*.rs tests (included with `mod`, not a test binary itself).

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use std::net::SocketAddr;

use odonata_testkit::cluster::{dfget_standalone, run_with_limit};

/// Runs a standalone dfget (its own peer) against supernode `node` for `url` into `out`.
pub fn dfget(
    dir: &Path,
    name: &str,
    node: SocketAddr,
    url: &str,
    out: &Path,
    extra: &[&str],
) -> Output {
    let home = dir.join(format!("peer-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = dfget_standalone(&home).unwrap();
    cmd.arg("-u")
        .arg(url)
        .arg("-o")
        .arg(out)
        .arg("--node")
        .arg(node.to_string())
        .args(extra);
    run_with_limit(cmd, Duration::from_secs(180)).unwrap()
}

/// Asserts the command succeeded, showing its stderr when not.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "dfget failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `dfget: error: ...` line of a failed run (warnings from an in-process peer may
/// come before it).
pub fn error_line(out: &Output) -> String {
    let e = stderr(out);
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("dfget: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {e}");
    lines[0].to_owned()
}
