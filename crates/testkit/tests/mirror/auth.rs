//! Upstream auth: Basic passed through, token exchange done for the client, one token
//! request for many concurrent pulls, no bytes for clients without rights.

use base64::Engine as _;
use odonata_testkit::cluster::Supernode;
use odonata_testkit::registry::{FakeRegistry, RegistryAuth};
use odonata_testkit::{sample, sha256_hex};
use reqwest::header;

use crate::util::{client, manifest_get, MirrorDaemon};

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

async fn check_rights(reg: &FakeRegistry, d: &MirrorDaemon, blob: &str, want: &str) {
    let c = client();
    let url = format!("{}/v2/private/app/blobs/{blob}", d.url());
    let before = reg.blob_bytes();
    for cred in [None, Some(basic("alice", "wrong"))] {
        let mut r = c.get(&url);
        if let Some(v) = &cred {
            r = r.header(header::AUTHORIZATION, v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "credentials {cred:?}");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        let m = manifest_get(&c, &format!("{}/v2/private/app/manifests/v1", d.url()));
        let m = match &cred {
            Some(v) => m.header(header::AUTHORIZATION, v),
            None => m,
        };
        assert_eq!(m.send().await.unwrap().status(), 401);
    }
    assert_eq!(
        reg.blob_bytes(),
        before,
        "blob bytes went out to a client without rights"
    );
    let r = c
        .get(&url)
        .header(header::AUTHORIZATION, basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry() {
    let reg = FakeRegistry::start(RegistryAuth::Basic("alice".into(), "s3cret".into()))
        .await
        .unwrap();
    let data = sample(1 << 20, 20);
    let img = reg.put_image("private/app", "v1", std::slice::from_ref(&data));
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let d = MirrorDaemon::start(dir.path(), "a", &[sn.addr.to_string()], &reg.url(), &[]);
    check_rights(&reg, &d, &img.layers[0], &sha256_hex(&data)).await;
    // Once cached, the layer is still refused to a client without rights.
    let r = client()
        .get(format!(
            "{}/v2/private/app/blobs/{}",
            d.url(),
            img.layers[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registry_one_token_for_fifty_pulls() {
    let reg = FakeRegistry::start(RegistryAuth::Token("alice".into(), "s3cret".into()))
        .await
        .unwrap();
    let data = sample(2 << 20, 21);
    let img = reg.put_image("private/app", "v1", std::slice::from_ref(&data));
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let d = MirrorDaemon::start(dir.path(), "a", &[sn.addr.to_string()], &reg.url(), &[]);
    let c = client();
    let want = sha256_hex(&data);
    let pulls: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            let base = d.url();
            let img = img.clone();
            tokio::spawn(async move {
                let auth = basic("alice", "s3cret");
                let m = manifest_get(&c, &format!("{base}/v2/private/app/manifests/v1"))
                    .header(header::AUTHORIZATION, &auth)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(m.status(), 200);
                let r = c
                    .get(format!("{base}/v2/private/app/blobs/{}", img.layers[0]))
                    .header(header::AUTHORIZATION, &auth)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                sha256_hex(&r.bytes().await.unwrap())
            })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), want);
    }
    assert_eq!(
        reg.token_requests(),
        1,
        "50 concurrent pulls must share one token request"
    );
    assert_eq!(d.metric("odonata_mirror_token_requests_total").await, 1);
    assert_eq!(reg.blob_gets(&img.layers[0]), 1);
    check_rights(&reg, &d, &img.layers[0], &want).await;
}
