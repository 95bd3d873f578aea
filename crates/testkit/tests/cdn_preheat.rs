//! Acceptance 5: preheat of a URL and of an image completes, and a later download of the
//! URL by a peer takes nothing from the origin (for an image pulled through the mirror, see
//! tests/mirror/preheat.rs, against a real registry).

mod cdn_common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use cdn_common::{dfget, ok};
use odonata_testkit::cluster::{bin, run_with_limit, Supernode};
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

fn preheat(node: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin("dfpreheat").unwrap());
    cmd.arg("--node").arg(node.to_string()).args(args);
    run_with_limit(cmd, Duration::from_secs(120)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preheated_url_and_image_cost_the_origin_nothing_later() {
    let file = sample(12 << 20, 71);
    let config = Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#);
    let layers = [sample(5 << 20, 72), sample(3 << 20, 73)];
    let digest = |b: &Bytes| format!("sha256:{}", sha256_hex(b));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len()
        })).collect::<Vec<_>>(),
    });
    let mut files = HashMap::from([
        ("file.bin".to_owned(), file.clone()),
        (
            "v2/team/app/manifests/v1".to_owned(),
            Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        ),
        (
            format!("v2/team/app/blobs/{}", digest(&config)),
            config.clone(),
        ),
    ]);
    for l in &layers {
        files.insert(format!("v2/team/app/blobs/{}", digest(l)), l.clone());
    }
    let origin = Origin::local(files, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let sn = Supernode::start(&d).unwrap();
    let node = sn.addr;

    let url = origin.url("file.bin");
    let o = tokio::task::block_in_place(|| preheat(node, &["-u", &url]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("done: 1/1 files"));
    let image = format!("{}/team/app:v1", origin.addr);
    let o = tokio::task::block_in_place(|| preheat(node, &["--image", &image]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("done: 3/3 files"));
    let after_preheat = origin.bytes_served();

    let out = d.join("file.out");
    ok(&tokio::task::block_in_place(|| {
        dfget(&d, "f", node, &url, &out, &["--notbs"])
    }));
    assert_eq!(sha256_file(&out).unwrap(), sha256_hex(&file));
    // The image's blobs were each fetched once; they are keyed by digest, so the later
    // download that takes nothing from the registry is a pull through a daemon's mirror:
    // tests/mirror/preheat.rs shows it with a real registry and skopeo.
    for l in layers.iter().chain([&config]) {
        assert_eq!(
            origin.requests_for(&format!("v2/team/app/blobs/{}", digest(l))),
            1
        );
    }
    assert_eq!(
        origin.bytes_served(),
        after_preheat,
        "nothing from the origin after preheat"
    );

    // Bad references and failing sources are one clear line.
    let o = tokio::task::block_in_place(|| preheat(node, &["--image", "team/app:v1"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("registry host must come first"));
    let missing = origin.url("status/404");
    let o = tokio::task::block_in_place(|| preheat(node, &["-u", &missing]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"));
}
