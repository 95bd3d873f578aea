//! Acceptance 1: the supernode revalidates its cached copy with the source; sources without
//! validators, without Range, with a chunked body or a broken body still give right bytes.

mod cdn_common;

use std::collections::HashMap;
use std::path::Path;

use cdn_common::{dfget, error_line, ok};
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::{Fault, Origin};
use odonata_testkit::{sample, sha256_file, sha256_hex};

const LEN: usize = 6 << 20;

fn get(dir: &Path, name: &str, sn: &Supernode, url: &str, out: &Path) -> std::process::Output {
    tokio::task::block_in_place(|| dfget(dir, name, sn.addr, url, out, &["--notbs"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_file_costs_one_304_and_a_changed_file_one_full_get() {
    let v1 = sample(LEN, 1);
    let origin = Origin::local(HashMap::from([("f.bin".to_owned(), v1.clone())]), 0)
        .await
        .unwrap();
    let url = origin.url("f.bin");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sn = Supernode::start_with_config(d, "cdn:\n  revalidate_after: 0s\n").unwrap();
    let out = d.join("out.bin");
    ok(&get(d, "a", &sn, &url, &out));
    assert_eq!(origin.full_gets(), 1);
    assert_eq!(origin.bytes_served(), LEN as u64);

    // Second download: one conditional request, answered 304, no body bytes.
    ok(&get(d, "b", &sn, &url, &out));
    assert_eq!(origin.conditional_requests(), 1);
    assert_eq!(origin.not_modified(), 1);
    assert_eq!(origin.full_gets(), 1);
    assert_eq!(origin.bytes_served(), LEN as u64);
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&v1));

    // The file changes (same length): the next download gets it with one full GET.
    let v2 = sample(LEN, 2);
    origin.put("f.bin", v2.clone());
    ok(&get(d, "c", &sn, &url, &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&v2));
    assert_eq!(origin.full_gets(), 2);
    assert_eq!(origin.conditional_requests(), 2);
    assert_eq!(origin.not_modified(), 1);
    assert_eq!(origin.bytes_served(), 2 * LEN as u64);

    // The source now fails: a clear error naming the status, never the stale copy.
    origin.configure("f.bin", |o| o.status = Some(500));
    let none = d.join("none.bin");
    let o = get(d, "d", &sn, &url, &none);
    assert!(!o.status.success());
    let e = error_line(&o);
    assert!(e.contains("500"), "{e}");
    assert!(!none.exists(), "no output on error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_resume_with_range_or_restart_without_range_support() {
    let a = sample(LEN, 3);
    let b = sample(LEN, 4);
    let c = sample(LEN + 12345, 5);
    let origin = Origin::local(
        HashMap::from([
            ("a.bin".to_owned(), a.clone()),
            ("b.bin".to_owned(), b.clone()),
            ("c.bin".to_owned(), c.clone()),
        ]),
        0,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sn = Supernode::start(d).unwrap();

    // The body breaks at 2.5 MiB: the seed asks for the rest with Range + If-Range.
    origin.configure("a.bin", |o| {
        o.fault = Some(Fault::KillAfter(5 << 19));
        o.fault_count = 1;
    });
    let out = d.join("a.out");
    ok(&get(d, "a", &sn, &origin.url("a.bin"), &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&a));
    assert_eq!(origin.ranged_gets(), 1);
    assert!(origin.bytes_served() <= LEN as u64 + (1 << 20));

    // No Range support: the seed reads it all again, still right.
    origin.configure("b.bin", |o| {
        o.ranges = false;
        o.fault = Some(Fault::KillAfter(5 << 19));
        o.fault_count = 1;
    });
    let out = d.join("b.out");
    ok(&get(d, "b", &sn, &origin.url("b.bin"), &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&b));
    assert_eq!(origin.requests_for("b.bin"), 2);

    // Chunked, unknown length.
    origin.configure("c.bin", |o| o.chunked = true);
    let out = d.join("c.out");
    ok(&get(d, "c", &sn, &origin.url("c.bin"), &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_validators_is_served_for_its_freshness_time_then_refetched() {
    let v1 = sample(LEN, 6);
    let origin = Origin::local(HashMap::from([("n.bin".to_owned(), v1.clone())]), 0)
        .await
        .unwrap();
    origin.configure("n.bin", |o| {
        o.etag = None;
        o.last_modified = None;
    });
    let url = origin.url("n.bin");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sn =
        Supernode::start_with_config(d, "cdn:\n  revalidate_after: 0s\n  no_validator_ttl: 2s\n")
            .unwrap();
    let out = d.join("out.bin");
    ok(&get(d, "a", &sn, &url, &out));
    ok(&get(d, "b", &sn, &url, &out));
    assert_eq!(
        origin.requests_for("n.bin"),
        1,
        "served from cache while fresh"
    );
    let v2 = sample(LEN, 7);
    origin.put("n.bin", v2.clone());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    ok(&get(d, "c", &sn, &url, &out));
    assert_eq!(origin.requests_for("n.bin"), 2, "fetched again once stale");
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_are_seeded_from_configured_roots_only_and_revalidated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("pub");
    std::fs::create_dir_all(&root).unwrap();
    let f = root.join("f.bin");
    let v1 = sample(LEN, 8);
    std::fs::write(&f, &v1).unwrap();
    std::fs::write(d.join("private.bin"), b"secret").unwrap();
    let sn = Supernode::start_with_config(
        d,
        &format!(
            "cdn:\n  revalidate_after: 0s\n  file_roots: [{}]\n",
            root.display()
        ),
    )
    .unwrap();
    let url = format!("file://{}", f.display());
    let out = d.join("out.bin");
    ok(&get(d, "a", &sn, &url, &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&v1));
    let v2 = sample(LEN, 9);
    std::fs::write(&f, &v2).unwrap();
    ok(&get(d, "b", &sn, &url, &out));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&v2));
    let o = get(
        d,
        "c",
        &sn,
        &format!("file://{}/private.bin", d.display()),
        &d.join("p.out"),
    );
    assert!(error_line(&o).contains("outside the configured file_roots"));
}
