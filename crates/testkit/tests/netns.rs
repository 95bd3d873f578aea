//! End to end in a shaped network: an origin, the supernode and 4 peers, each in its own
//! network namespace on one bridge, every link shaped to 100 Mbit/s; one 128 MiB file.
//! Asserts every copy's sha256 and that the origin sent about one copy (measured on its
//! veth). Times are printed, never asserted. Skips with a reason when not root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use odonata_testkit::cluster::{bin, run_with_limit, wait_unix};
use odonata_testkit::netns::{requires_root, HostSpec, Testbed};
use odonata_testkit::{sample, sha256_file, sha256_hex};

const LEN: usize = 128 << 20;
const PEERS: usize = 4;
const RATE_BPS: u64 = 100_000_000;

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["origin.log", "supernode.log"]
        .into_iter()
        .map(str::to_owned)
        .chain((1..=PEERS).map(|i| format!("dfdaemon-p{i}.log")))
    {
        out += &format!("--- {name}\n{}\n", tail(&dir.join(&name)));
    }
    out
}

#[test]
fn four_peers_on_shaped_links_get_the_file_and_the_origin_sends_one_copy() {
    if let Some(why) = requires_root() {
        println!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut specs = vec![
        HostSpec::symmetric("origin", RATE_BPS),
        HostSpec::symmetric("sn", RATE_BPS),
    ];
    specs.extend((1..=PEERS).map(|i| HostSpec::symmetric(&format!("p{i}"), RATE_BPS)));
    let tb = Testbed::create(&specs).unwrap();
    let origin_ip = tb.host("origin").unwrap().ip;
    let sn_ip = tb.host("sn").unwrap().ip;

    let mut cmd = tb.command("origin", bin("odonata-origin").unwrap());
    cmd.arg("--listen")
        .arg(format!("{origin_ip}:8080"))
        .arg("--generate")
        .arg(format!("big.bin={LEN}:44"));
    tb.spawn("origin", cmd, &dir.path().join("origin.log"))
        .unwrap();
    // The same bytes, made here to know the digest every copy must have.
    let want = sha256_hex(&sample(LEN, 44));
    tb.wait_tcp("origin", origin_ip, 8080, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir.path())));
    let url = format!("http://{origin_ip}:8080/big.bin");

    let sn_home = dir.path().join("sn");
    std::fs::create_dir_all(&sn_home).unwrap();
    let mut cmd = tb.command("sn", bin("supernode").unwrap());
    cmd.arg("--home")
        .arg(&sn_home)
        .arg("--listen")
        .arg(format!("{sn_ip}:8002"))
        .arg("--upload-listen")
        .arg(format!("{sn_ip}:8001"))
        .arg("--advertise-ip")
        .arg(sn_ip.to_string())
        .arg("--config")
        .arg("/dev/null");
    tb.spawn("supernode", cmd, &dir.path().join("supernode.log"))
        .unwrap();
    tb.wait_tcp("sn", sn_ip, 8002, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir.path())));

    let mut homes: Vec<PathBuf> = Vec::new();
    for i in 1..=PEERS {
        let name = format!("p{i}");
        let ip = tb.host(&name).unwrap().ip;
        let home = dir.path().join(&name);
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = tb.command(&name, bin("dfdaemon").unwrap());
        cmd.arg("--home")
            .arg(&home)
            .arg("--supernode")
            .arg(format!("{sn_ip}:8002"))
            .arg("--upload-listen")
            .arg(format!("{ip}:65000"))
            .arg("--advertise-ip")
            .arg(ip.to_string())
            .arg("--config")
            .arg("/dev/null");
        tb.spawn(
            "dfdaemon",
            cmd,
            &dir.path().join(format!("dfdaemon-{name}.log")),
        )
        .unwrap();
        homes.push(home);
    }
    for home in &homes {
        wait_unix(&home.join("dfdaemon.sock"), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir.path())));
    }
    let before = tb.counters("origin").unwrap();
    println!(
        "testbed {} up in {:.1}s",
        tb.prefix,
        started.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let dfget = bin("dfget").unwrap();
    let outs: Vec<PathBuf> = (1..=PEERS)
        .map(|i| dir.path().join(format!("out{i}.bin")))
        .collect();
    let handles: Vec<_> = (1..=PEERS)
        .map(|i| {
            let name = format!("p{i}");
            let mut cmd: Command = tb.command(&name, &dfget);
            cmd.arg("--home")
                .arg(&homes[i - 1])
                .arg("--config")
                .arg("/dev/null")
                .arg("-u")
                .arg(&url)
                .arg("-o")
                .arg(&outs[i - 1])
                .arg("--notbs");
            std::thread::spawn(move || {
                let r = run_with_limit(cmd, Duration::from_secs(90));
                (name, r, t0.elapsed())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (name, r, took) = h.join().unwrap();
        match r {
            Ok(out) if out.status.success() => println!(
                "{name}: done in {:.2}s: {}",
                took.as_secs_f64(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            Ok(out) => failures.push(format!(
                "{name}: dfget failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        logs(dir.path())
    );
    let all_done = t0.elapsed();
    for out in &outs {
        assert_eq!(sha256_file(out).unwrap(), want, "{} differs", out.display());
    }
    let after = tb.counters("origin").unwrap();
    let sn = tb.counters("sn").unwrap();
    let egress = after.tx_bytes - before.tx_bytes;
    let f = LEN as f64;
    let bound = f / (RATE_BPS as f64 / 8.0);
    println!(
        "all {PEERS} done in {:.2}s (one link's time for the file: {bound:.2}s); origin egress \
         {egress} bytes = {:.3}x the file; supernode egress {:.3}x; whole test {:.1}s",
        all_done.as_secs_f64(),
        egress as f64 / f,
        sn.tx_bytes as f64 / f,
        started.elapsed().as_secs_f64()
    );
    assert!(
        egress as f64 <= f * 1.05,
        "origin sent {egress} bytes on its link for a {LEN}-byte file"
    );
}
