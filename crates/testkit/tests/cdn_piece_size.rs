//! Measurement behind the piece-size rule (docs/architecture.md, "Piece size"): time for 8
//! daemons to fetch one file at several fixed piece sizes. Not a pass/fail test: run with
//! `cargo test -p odonata-testkit --test cdn_piece_size -- --ignored --nocapture`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use odonata_testkit::cluster::{run_with_limit, Daemon, Supernode};
use odonata_testkit::origin::Origin;
use odonata_testkit::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn piece_size_sweep() {
    let mib: usize = std::env::var("SWEEP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let data = sample(len, 99);
    for ps in ["256K", "1M", "4M", "16M"] {
        let origin = Origin::local(HashMap::from([("f".to_owned(), data.clone())]), 0)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sn = Supernode::start_with_config(dir.path(), &format!("cdn:\n  piece_size: {ps}\n"))
            .unwrap();
        let nodes = vec![sn.addr.to_string()];
        let daemons: Vec<Daemon> = (0..8)
            .map(|i| Daemon::start(dir.path(), &format!("p{i}"), &nodes, &[]).unwrap())
            .collect();
        let started = Instant::now();
        let runs: Vec<_> = daemons
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut cmd = d.dfget().unwrap();
                cmd.arg("-u")
                    .arg(origin.url("f"))
                    .arg("-o")
                    .arg(dir.path().join(format!("o{i}")))
                    .arg("--notbs");
                tokio::task::spawn_blocking(move || run_with_limit(cmd, Duration::from_secs(600)))
            })
            .collect();
        for r in runs {
            let o = r.await.unwrap().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let last = started.elapsed().as_secs_f64();
        eprintln!(
            "piece_size {ps:>4}: {mib} MiB to 8 daemons, all done in {last:.2}s, origin {} MiB",
            origin.bytes_served() >> 20
        );
    }
}
