//! The pull API: manifests and tags passed through exactly, blobs through the swarm once.

use bytes::Bytes;
use odonata_testkit::cluster::Supernode;
use odonata_testkit::registry::{FakeRegistry, RegistryAuth};
use odonata_testkit::{sample, sha256_hex};
use reqwest::header;

use crate::util::{client, manifest_get, MirrorDaemon, ACCEPTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_tags_and_ping_pass_through_exactly() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let img = reg.put_image("team/app", "v1", &[sample(1000, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let d = MirrorDaemon::start(dir.path(), "a", &[], &reg.url(), &[]);
    let c = client();
    let base = d.url();

    let r = c.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // By tag, with ?ns= as containerd sends it, and the Accept lines kept separate.
    let url = format!("{base}/v2/team/app/manifests/v1?ns={}", reg.addr);
    let r = manifest_get(&c, &url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(
        h[header::CONTENT_TYPE],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(h["docker-content-digest"], img.manifest.as_str());
    assert_eq!(
        h[header::CONTENT_LENGTH],
        img.manifest_bytes.len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), img.manifest_bytes);
    let seen = reg.seen();
    let last = seen
        .iter()
        .rev()
        .find(|s| s.path.contains("/manifests/"))
        .unwrap();
    assert_eq!(
        last.accept.len(),
        ACCEPTS.len(),
        "Accept lines were merged: {last:?}"
    );
    assert_eq!(last.query, None, "?ns= must not reach the upstream");

    // A second lookup of the tag within the tag cache's time does not reach the upstream.
    let before = reg.seen().len();
    let r = manifest_get(&c, &url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), img.manifest_bytes);
    assert_eq!(reg.seen().len(), before, "the tag lookup was not cached");

    // HEAD by digest: same headers, no body.
    let r = c
        .head(format!("{base}/v2/team/app/manifests/{}", img.manifest))
        .header(header::ACCEPT, ACCEPTS[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        img.manifest_bytes.len().to_string().as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], img.manifest.as_str());

    // A client that does not accept OCI manifests is refused by the registry, and so here.
    let r = c
        .get(format!("{base}/v2/team/app/manifests/v1"))
        .header(header::ACCEPT, ACCEPTS[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .get(format!("{base}/v2/team/app/tags/list?n=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"][0], "v1");

    // Unknown things are the upstream's 404; bad names are refused here.
    let r = manifest_get(&c, &format!("{base}/v2/team/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = c
        .get(format!("{base}/v2/team/app/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/v2/Bad/Name/manifests/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .delete(format!("{base}/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_come_through_the_swarm_once_with_ranges() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let layers: Vec<Bytes> = vec![sample(5 << 20, 2), sample(3 << 20, 3), sample(100, 4)];
    let img = reg.put_image("app", "v1", &layers);
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let a = MirrorDaemon::start(dir.path(), "a", &nodes, &reg.url(), &[]);
    let b = MirrorDaemon::start(dir.path(), "b", &nodes, &reg.url(), &[]);
    let c = client();
    for d in [&a, &b] {
        for (digest, data) in img.layers.iter().zip(&layers) {
            let r = c
                .get(format!("{}/v2/app/blobs/{digest}", d.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
            assert_eq!(
                r.headers()[header::CONTENT_LENGTH],
                data.len().to_string().as_str()
            );
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256_hex(&body), sha256_hex(data));
        }
    }
    for d in &img.layers {
        assert_eq!(
            reg.blob_gets(d),
            1,
            "the registry served {d} more than once"
        );
    }
    let total: usize = layers.iter().map(Bytes::len).sum();
    assert_eq!(reg.blob_bytes(), total as u64);
    assert_eq!(b.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
    assert!(b.metric("odonata_mirror_blob_bytes_p2p_total").await >= total as u64);

    // Range gives 206 with exactly those bytes; HEAD gives the length.
    let big = &img.layers[0];
    let r = c
        .get(format!("{}/v2/app/blobs/{big}", b.url()))
        .header(header::RANGE, "bytes=1048570-2097160")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 1048570-2097160/{}", 5 << 20).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), layers[0].slice(1048570..=2097160));
    let r = c
        .get(format!("{}/v2/app/blobs/{big}", b.url()))
        .header(header::RANGE, format!("bytes={}-", 5 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = c
        .head(format!("{}/v2/app/blobs/{big}", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        (5u64 << 20).to_string().as_str()
    );

    // A third name for the same layer (another repository) is still the same task.
    reg.put_image("other/name", "v2", &layers[..1]);
    let r = c
        .get(format!("{}/v2/other/name/blobs/{big}", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 5 << 20);
    assert_eq!(reg.blob_gets(big), 1);
}
