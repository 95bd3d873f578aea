//! Preheat of an image from a real local registry (Debian's docker-registry): the supernode
//! seeds every blob ahead of time, and a later pull through a daemon's mirror takes no blob
//! byte from the registry.

use std::process::Command;
use std::time::Duration;

use odonata_testkit::cluster::{bin, free_port, run_with_limit, Supernode};
use odonata_testkit::counting::CountingProxy;
use odonata_testkit::sha256_file;

use crate::clients::{
    build_image, mirror_config, missing, push_image, registries_conf, skopeo_pull_via_mirror,
    RealRegistry,
};
use crate::util::MirrorDaemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preheated_image_from_a_real_registry_costs_it_no_blob_bytes_later() {
    if let Some(why) = missing(&["docker-registry", "skopeo", "tar", "gzip"], false) {
        println!("SKIPPED preheat-from-registry test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = RealRegistry::start(d, "");
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "test/app", None);
    let counter = CountingProxy::start(reg.addr).await.unwrap();
    let sn = Supernode::start(d).unwrap();

    let mut pre = Command::new(bin("dfpreheat").unwrap());
    pre.arg("--node")
        .arg(sn.addr.to_string())
        .arg("--image")
        .arg(format!("{}/test/app:v1", counter.addr));
    let o = tokio::task::block_in_place(|| run_with_limit(pre, Duration::from_secs(120))).unwrap();
    assert!(
        o.status.success(),
        "preheat failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let blobs: Vec<&String> = img.layers.iter().chain([&img.config]).collect();
    let after_preheat = counter.blob_gets();
    let bytes_after_preheat = counter.blob_bytes();
    for digest in &blobs {
        assert_eq!(
            after_preheat.get(*digest).copied(),
            Some(1),
            "{digest}: {after_preheat:?}"
        );
    }

    // A pull through a daemon's mirror: every blob comes from the preheated seed.
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let cfg_s = mirror_config(d, &closed, counter.addr);
    let nodes = vec![sn.addr.to_string()];
    let upstream = format!("http://{}", counter.addr);
    let a = MirrorDaemon::start(d, "a", &nodes, &upstream, &["--config", &cfg_s]);
    let conf = registries_conf(d, &closed, a.proxy);
    let out = d.join("oci-out");
    skopeo_pull_via_mirror(&conf, &closed, "test/app", &out);
    for digest in &blobs {
        let hex = digest.trim_start_matches("sha256:");
        assert_eq!(
            sha256_file(&out.join("blobs/sha256").join(hex)).unwrap(),
            hex,
            "pulled copy of {digest}"
        );
    }
    assert_eq!(
        counter.blob_gets(),
        after_preheat,
        "the registry served blobs again"
    );
    assert_eq!(
        counter.blob_bytes(),
        bytes_after_preheat,
        "the registry sent blob bytes again"
    );
    assert_eq!(a.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
}
