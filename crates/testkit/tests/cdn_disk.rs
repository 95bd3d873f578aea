//! Acceptance 4: disk quota with LRU eviction of idle tasks, refusal of what cannot fit, and
//! a full disk (ENOSPC) as a clean error with the cache intact.
//!
//! The quota test is the acceptance scenario at full size: a 512 MiB quota, three files of
//! 200 MiB, a 600 MiB file refused.

mod cdn_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cdn_common::{dfget, error_line, ok};
use odonata_proto::TaskKey;
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

const MIB: usize = 1 << 20;

fn data_file(sn_home: &Path, url: &str) -> PathBuf {
    let id = TaskKey::new(url, &[]).unwrap().id();
    sn_home.join("data").join(id.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_evicts_the_lru_idle_task_never_one_in_use_and_refuses_what_cannot_fit() {
    let a = sample(200 * MIB, 31);
    let b = sample(200 * MIB, 32);
    let c = sample(200 * MIB, 33);
    let big = sample(600 * MIB, 34);
    let fast = Origin::local(
        HashMap::from([
            ("a.bin".to_owned(), a.clone()),
            ("c.bin".to_owned(), c.clone()),
            ("big.bin".to_owned(), big.clone()),
        ]),
        0,
    )
    .await
    .unwrap();
    // B comes slowly, so it is still being seeded (in use) when C needs room.
    let slow = Origin::local(
        HashMap::from([("b.bin".to_owned(), b.clone())]),
        20 * MIB as u64,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let sn = Supernode::start_with_config(
        &d,
        "cdn:\n  quota: 512M\n  high_watermark: 90\n  low_watermark: 30\n  idle_after: 1s\n",
    )
    .unwrap();
    let node = sn.addr;
    let (ua, ub, uc) = (fast.url("a.bin"), slow.url("b.bin"), fast.url("c.bin"));
    let out_a = d.join("a.out");
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "a", node, &ua, &out_a, &["--notbs"])
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await; // A is idle now

    let (d2, ub2) = (d.clone(), ub.clone());
    let get_b = tokio::task::spawn_blocking(move || {
        dfget(&d2, "b", node, &ub2, &d2.join("b.out"), &["--notbs"])
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow.bytes_served() < MIB as u64 {
        assert!(Instant::now() < deadline, "B never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 200 (A) + 200 (B) + 200 (C) > 460.8 (high): evict down towards 153.6 (low): A goes,
    // B is in use and stays although that leaves usage above the low watermark.
    let out_c = d.join("c.out");
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "c", node, &uc, &out_c, &["--notbs"])
    }));
    assert_eq!(sha256_file(&out_c).unwrap(), sha256_hex(&c));
    assert!(!data_file(&sn.home, &ua).exists(), "A (LRU, idle) evicted");
    assert!(data_file(&sn.home, &ub).exists(), "B (in use) kept");
    let o = get_b.await.unwrap();
    ok(&o);
    assert_eq!(sha256_file(&d.join("b.out")).unwrap(), sha256_hex(&b));

    // 600 MiB can never fit a 512 MiB quota: refused at once (before any byte of it is
    // fetched), with the sizes named.
    let ubig = fast.url("big.bin");
    let o = tokio::task::block_in_place(|| {
        dfget(&d, "big", node, &ubig, &d.join("big.out"), &["--notbs"])
    });
    assert!(!o.status.success());
    let e = error_line(&o);
    assert!(e.contains("more than the whole cache quota"), "{e}");
    assert!(!data_file(&sn.home, &ubig).exists());
    assert!(
        fast.requests_for("big.bin") <= 1,
        "refused after at most the first answer's headers, without a transfer"
    );
    // Without --notbs the peer falls back to the source.
    let o = tokio::task::block_in_place(|| dfget(&d, "big2", node, &ubig, &d.join("big.out"), &[]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("via source"));
    assert_eq!(sha256_file(&d.join("big.out")).unwrap(), sha256_hex(&big));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A small tmpfs, unmounted when dropped (after whatever uses it has been stopped).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&dir).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?;
        st.success().then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clean_error_and_the_cache_stays_intact() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let x = sample(16 * MIB, 41);
    let y = sample(80 * MIB, 42);
    let origin = Origin::local(
        HashMap::from([("x.bin".to_owned(), x.clone()), ("y.bin".to_owned(), y)]),
        0,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let Some(fs) = Tmpfs::mount(d.join("tmpfs"), "64m") else {
        eprintln!("skipped: could not mount a tmpfs here");
        return;
    };
    let mut sn = Supernode::start_in(fs.0.join("sn"), PathBuf::from("/dev/null")).unwrap();
    let node = sn.addr;
    let (ux, uy) = (origin.url("x.bin"), origin.url("y.bin"));
    let out_x = d.join("x.out");
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "x1", node, &ux, &out_x, &["--notbs"])
    }));

    let o =
        tokio::task::block_in_place(|| dfget(&d, "y", node, &uy, &d.join("y.out"), &["--notbs"]));
    assert!(!o.status.success());
    let e = error_line(&o);
    assert!(e.contains("disk is full"), "{e}");
    assert!(!d.join("y.out").exists());
    assert!(
        !data_file(&sn.home, &uy).exists(),
        "the failed task's space is given back"
    );

    // X is intact, before and after a restart (which re-verifies every piece).
    std::fs::remove_file(&out_x).unwrap();
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "x2", node, &ux, &out_x, &["--notbs"])
    }));
    assert_eq!(sha256_file(&out_x).unwrap(), sha256_hex(&x));
    tokio::task::block_in_place(|| sn.restart()).unwrap();
    std::fs::remove_file(&out_x).unwrap();
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "x3", node, &ux, &out_x, &["--notbs"])
    }));
    assert_eq!(sha256_file(&out_x).unwrap(), sha256_hex(&x));
    assert_eq!(origin.full_gets(), 2, "X fetched once (plus Y's attempt)");
    sn.proc.kill();
    drop(fs);
}
