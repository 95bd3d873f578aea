//! Acceptance 2: a seed killed (kill -9) half way and restarted resumes with a Range
//! request; the origin sends at most 1.05x the file.

mod cdn_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdn_common::{dfget, ok};
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

/// The two tests kill a seed mid-body and count origin bytes; run one at a time so a busy
/// CPU does not let the kernel's socket buffers fill (bytes the origin counts as sent).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_killed_at_half_resumes_with_range() {
    let _one = SERIAL.lock().await;
    const LEN: usize = 64 << 20;
    let data = sample(LEN, 21);
    // 16 MiB/s: the kill lands mid-body, and paced sending keeps socket buffers near empty.
    let origin = Origin::local(
        HashMap::from([("big.bin".to_owned(), data.clone())]),
        16 << 20,
    )
    .await
    .unwrap();
    let url = origin.url("big.bin");
    let dir = tempfile::tempdir().unwrap();
    let mut sn = Supernode::start(dir.path()).unwrap();
    let out = dir.path().join("out.bin");
    let (d, node, o2) = (dir.path().to_owned(), sn.addr, out.clone());
    let get = tokio::task::spawn_blocking(move || dfget(&d, "a", node, &url, &o2, &["--notbs"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while origin.bytes_served() < LEN as u64 / 2 {
        assert!(Instant::now() < deadline, "origin never reached half way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| sn.restart()).unwrap();
    let o = get.await.unwrap();
    ok(&o);
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&data));
    assert_eq!(origin.ranged_gets(), 1, "resumed with one Range request");
    let served = origin.bytes_served();
    assert!(
        served as f64 <= LEN as f64 * 1.05,
        "origin served {served} bytes for a {LEN}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_supernode_resumes_a_partial_copy_by_itself() {
    let _one = SERIAL.lock().await;
    const LEN: usize = 64 << 20;
    let data = sample(LEN, 22);
    let origin = Origin::local(
        HashMap::from([("p.bin".to_owned(), data.clone())]),
        16 << 20,
    )
    .await
    .unwrap();
    let url = origin.url("p.bin");
    let dir = tempfile::tempdir().unwrap();
    let mut sn = Supernode::start(dir.path()).unwrap();
    // Preheat starts the seed with no peer attached; kill it half way.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("http://{}/api/v1/preheat", sn.addr))
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while origin.bytes_served() < LEN as u64 / 2 {
        assert!(Instant::now() < deadline, "origin never reached half way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| sn.restart()).unwrap();
    // Nobody asks; the restarted supernode finishes the copy with a Range request.
    while origin.ranged_gets() == 0 || origin.bytes_served() < LEN as u64 {
        assert!(
            Instant::now() < deadline,
            "the partial copy was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = dir.path().join("out.bin");
    let (d, node, o2, u) = (dir.path().to_owned(), sn.addr, out.clone(), url.clone());
    let o = tokio::task::spawn_blocking(move || dfget(&d, "a", node, &u, &o2, &["--notbs"]))
        .await
        .unwrap();
    ok(&o);
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&data));
    assert_eq!(origin.full_gets(), 1);
    let served = origin.bytes_served();
    assert!(
        served as f64 <= LEN as f64 * 1.05,
        "origin served {served} bytes"
    );
}
