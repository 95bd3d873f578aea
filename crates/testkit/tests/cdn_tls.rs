//! HTTPS sources: the supernode trusts a custom CA bundle (rustls, no OpenSSL in our
//! binaries; the openssl CLI only makes the test certificates, and the test skips without it).

mod cdn_common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use cdn_common::{dfget, error_line, ok};
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=odonata test CA",
    ]);
    let mut csr = vec!["req"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &ca)
        && openssl(dir, &csr)
        && openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_source_with_a_custom_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    if !make_certs(&d) {
        eprintln!("skipped: the openssl command is needed to make test certificates");
        return;
    }
    let data = sample(3 << 20, 81);
    let origin = Origin::start_tls(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        HashMap::from([("s.bin".to_owned(), data.clone())]),
        0,
        &d.join("srv.pem"),
        &d.join("srv.key"),
    )
    .await
    .unwrap();
    let url = format!("https://{}/s.bin", origin.addr);

    // Without the CA the source is refused, in one line.
    let plain = d.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let sn = Supernode::start(&plain).unwrap();
    let o = tokio::task::block_in_place(|| {
        dfget(&d, "x", sn.addr, &url, &d.join("x.out"), &["--notbs"])
    });
    let e = error_line(&o);
    assert!(
        e.contains("cannot reach source") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    drop(sn);

    let sn = Supernode::start_with_config(
        &d,
        &format!("cdn:\n  ca_bundle: {}\n", d.join("ca.pem").display()),
    )
    .unwrap();
    let out = d.join("s.out");
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "s", sn.addr, &url, &out, &["--notbs"])
    }));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&data));
    assert_eq!(origin.full_gets(), 1);
}
