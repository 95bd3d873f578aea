//! A supernode and 8 daemons on loopback; one 64 MiB file requested by all 8 at once.

use std::collections::HashMap;
use std::time::Duration;

use odonata_testkit::cluster::{run_with_limit, Daemon, Supernode};
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_daemons_fetch_one_file_and_the_origin_serves_one_copy() {
    const LEN: usize = 64 << 20;
    let data = sample(LEN, 8);
    let want = sha256_hex(&data);
    let origin = Origin::local(HashMap::from([("big.bin".to_owned(), data)]), 0)
        .await
        .unwrap();
    let url = origin.url("big.bin");
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let daemons: Vec<Daemon> = (0..8)
        .map(|i| Daemon::start(dir.path(), &format!("peer{i}"), &nodes, &[]).unwrap())
        .collect();
    let outs: Vec<_> = (0..8)
        .map(|i| dir.path().join(format!("out{i}.bin")))
        .collect();
    let handles: Vec<_> = daemons
        .iter()
        .zip(&outs)
        .map(|(d, out)| {
            let mut cmd = d.dfget().unwrap();
            cmd.arg("-u").arg(&url).arg("-o").arg(out).arg("--notbs");
            tokio::task::spawn_blocking(move || run_with_limit(cmd, Duration::from_secs(240)))
        })
        .collect();
    for h in handles {
        let out = h.await.unwrap().unwrap();
        assert!(
            out.status.success(),
            "dfget failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("via p2p"), "{text}");
        // Every piece is accounted for exactly once (64 MiB in 1 MiB pieces).
        let counts: Vec<u32> = text
            .split("pieces: ")
            .nth(1)
            .unwrap_or_default()
            .split(", ")
            .filter_map(|part| part.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(counts.len(), 3, "{text}");
        assert_eq!(counts.iter().sum::<u32>(), 64, "{text}");
    }
    for out in &outs {
        assert_eq!(sha256_file(out).unwrap(), want, "{} differs", out.display());
    }
    let served = origin.bytes_served();
    assert!(
        served as f64 <= LEN as f64 * 1.05,
        "origin served {served} bytes for a {LEN}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_odd_sized_files_arrive_exactly() {
    let files: Vec<(String, bytes::Bytes)> = vec![
        ("empty".into(), bytes::Bytes::new()),
        ("one".into(), sample(1, 1)),
        ("odd".into(), sample((3 << 20) + 12345, 2)),
    ];
    let origin = Origin::local(files.iter().cloned().collect(), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let a = Daemon::start(dir.path(), "a", &nodes, &[]).unwrap();
    let b = Daemon::start(dir.path(), "b", &nodes, &[]).unwrap();
    for (name, data) in &files {
        for d in [&a, &b] {
            let out = dir.path().join(format!("{name}.{}", d.upload.port()));
            let mut cmd = d.dfget().unwrap();
            cmd.arg("-u")
                .arg(origin.url(name))
                .arg("-o")
                .arg(&out)
                .arg("--notbs");
            let o = run_with_limit(cmd, Duration::from_secs(60)).unwrap();
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(std::fs::read(&out).unwrap(), data.as_ref(), "{name}");
        }
    }
}
