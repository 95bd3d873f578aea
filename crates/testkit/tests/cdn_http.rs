//! Standard HTTP through the supernode: the user's headers reach the source (and decide
//! access per request), redirects are followed, and every kind of source failure reaches
//! dfget as one line naming the status or the fault.

mod cdn_common;

use std::collections::HashMap;

use cdn_common::{dfget, error_line, ok};
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::{Fault, Origin};
use odonata_testkit::{sample, sha256_file, sha256_hex};

const LEN: usize = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_redirects_and_source_failures() {
    let secret = sample(LEN, 51);
    let plain = sample(LEN, 52);
    let origin = Origin::local(
        HashMap::from([
            ("secret.bin".to_owned(), secret.clone()),
            ("plain.bin".to_owned(), plain.clone()),
            ("reset.bin".to_owned(), sample(LEN, 53)),
            ("stall.bin".to_owned(), sample(LEN, 54)),
        ]),
        0,
    )
    .await
    .unwrap();
    origin.configure("secret.bin", |o| {
        o.require_header = Some(("authorization".into(), "Bearer t0k".into()));
    });
    origin.configure("reset.bin", |o| {
        o.fault = Some(Fault::KillAfter(1 << 20));
        o.fault_count = 100;
    });
    origin.configure("stall.bin", |o| {
        o.fault = Some(Fault::StallAfter(1 << 20));
        o.fault_count = 100;
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let sn = Supernode::start_with_config(
        &d,
        "cdn:\n  source_idle_timeout: 1s\n  source_retries: 1\n  retry_backoff: 50ms\n",
    )
    .unwrap();
    let node = sn.addr;
    let run = |name: &str, url: &str, extra: &[&str]| {
        let out = d.join(format!("{name}.out"));
        let mut args = vec!["--notbs"];
        args.extend_from_slice(extra);
        let o = tokio::task::block_in_place(|| dfget(&d, name, node, url, &out, &args));
        (o, out)
    };

    // Without credentials: 403, one line. With them: the file. And without again: the
    // cached copy is not handed out; the source is asked with these (missing) credentials.
    let (o, out) = run("noauth", &origin.url("secret.bin"), &[]);
    assert!(error_line(&o).contains("403"));
    assert!(!out.exists());
    let (o, out) = run(
        "auth",
        &origin.url("secret.bin"),
        &["--header", "Authorization: Bearer t0k"],
    );
    ok(&o);
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&secret));
    let (o, _) = run("noauth2", &origin.url("secret.bin"), &[]);
    assert!(error_line(&o).contains("403"));

    // A redirect is followed.
    let (o, out) = run("redir", &origin.url("redirect/plain.bin"), &[]);
    ok(&o);
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&plain));

    // Status failures name the status.
    for code in [404, 403, 500, 503] {
        let (o, out) = run(
            &format!("s{code}"),
            &origin.url(&format!("status/{code}")),
            &[],
        );
        let e = error_line(&o);
        assert!(e.contains(&code.to_string()), "{e}");
        assert!(!out.exists());
    }
    // A connection reset mid-body and a stalled body: one line naming the fault.
    let (o, out) = run("reset", &origin.url("reset.bin"), &[]);
    let e = error_line(&o);
    assert!(
        e.contains("reading source") && e.contains("reset.bin"),
        "{e}"
    );
    assert!(!out.exists());
    let (o, out) = run("stall", &origin.url("stall.bin"), &[]);
    let e = error_line(&o);
    assert!(e.contains("no data for"), "{e}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_downloads_go_through_p2p_and_share_one_cached_copy() {
    const BIG: usize = 8 << 20;
    let data = sample(BIG, 55);
    let origin = Origin::local(HashMap::from([("r.bin".to_owned(), data.clone())]), 0)
        .await
        .unwrap();
    let url = origin.url("r.bin");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let sn = Supernode::start(&d).unwrap();
    let node = sn.addr;
    for (name, range, a, b) in [
        ("r1", "1000-2999999", 1000usize, 3_000_000usize),
        ("r2", "5000000-", 5_000_000, BIG),
        ("r3", "0-0", 0, 1),
    ] {
        let out = d.join(format!("{name}.out"));
        let o = tokio::task::block_in_place(|| {
            dfget(&d, name, node, &url, &out, &["--notbs", "--range", range])
        });
        ok(&o);
        assert!(String::from_utf8_lossy(&o.stdout).contains("via p2p"));
        assert_eq!(
            sha256_file(&out).unwrap(),
            sha256_hex(&data[a..b]),
            "{range}"
        );
    }
    assert_eq!(
        origin.full_gets(),
        1,
        "one copy from the origin for every range"
    );
    assert_eq!(origin.bytes_served(), BIG as u64);

    // A range past the end is a clear error; a fallback to the source asks only the range.
    let out = d.join("bad.out");
    let o = tokio::task::block_in_place(|| {
        dfget(
            &d,
            "bad",
            node,
            &url,
            &out,
            &["--notbs", "--range", "9000000-"],
        )
    });
    assert!(error_line(&o).contains("range starts at byte 9000000"));
    let out = d.join("direct.out");
    let home = d.join("direct");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = odonata_testkit::cluster::dfget_standalone(&home).unwrap();
    cmd.arg("-u")
        .arg(&url)
        .arg("-o")
        .arg(&out)
        .arg("--node")
        .arg("127.0.0.1:1")
        .arg("--range")
        .arg("10-99");
    let o = tokio::task::block_in_place(|| {
        odonata_testkit::cluster::run_with_limit(cmd, std::time::Duration::from_secs(60))
    })
    .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("via source"));
    assert_eq!(std::fs::read(&out).unwrap(), &data[10..100]);
    assert_eq!(origin.ranged_gets(), 1);
}
