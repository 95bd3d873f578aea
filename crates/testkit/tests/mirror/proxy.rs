//! Plain HTTP proxy mode: URLs matching a rule come through the swarm, the rest pass
//! through, and CONNECT is tunnelled untouched.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use odonata_testkit::cluster::Supernode;
use odonata_testkit::origin::Origin;
use odonata_testkit::registry::{FakeRegistry, RegistryAuth};
use odonata_testkit::{sample, sha256_hex};

use crate::util::MirrorDaemon;

fn via(proxy: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_choose_p2p_and_connect_is_tunnelled() {
    let big = sample(6 << 20, 30);
    let origin = Origin::local(
        HashMap::from([
            ("files/big.bin".to_owned(), big.clone()),
            ("files/note.txt".to_owned(), Bytes::from_static(b"hello")),
        ]),
        0,
    )
    .await
    .unwrap();
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let layer = sample(2 << 20, 31);
    let img = reg.put_image("app", "v1", std::slice::from_ref(&layer));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dfdaemon.yml");
    std::fs::write(
        &cfg,
        "mirror:\n  proxy_rules: ['\\.bin$', 'blobs/sha256.*']\n",
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let sn = Supernode::start(dir.path()).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let a = MirrorDaemon::start(dir.path(), "a", &nodes, &reg.url(), &["--config", &cfg_s]);
    let b = MirrorDaemon::start(dir.path(), "b", &nodes, &reg.url(), &["--config", &cfg_s]);

    for d in [&a, &b] {
        let r = via(d.proxy)
            .get(origin.url("files/big.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&big));
        let r = via(d.proxy)
            .get(origin.url("files/note.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), Bytes::from_static(b"hello"));
        let r = via(d.proxy)
            .get(origin.url("files/missing.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // A registry blob URL through the proxy is keyed (and verified) by its digest.
        let url = format!("{}/v2/app/blobs/{}", reg.url(), img.layers[0]);
        let r = via(d.proxy).get(url).send().await.unwrap();
        assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&layer));
    }
    // One copy of the big file from the origin for both daemons, plus the small one twice.
    assert_eq!(origin.bytes_served(), big.len() as u64 + 10);
    assert_eq!(reg.blob_gets(&img.layers[0]), 1);
    assert!(b.metric("odonata_mirror_blob_bytes_p2p_total").await >= big.len() as u64);

    // CONNECT: a tunnel to the origin carrying a plain request, untouched.
    let (proxy, target) = (a.proxy, origin.addr);
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
        let mut head = [0u8; 128];
        let n = s.read(&mut head).unwrap();
        assert!(
            head[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&head[..n])
        );
        write!(
            s,
            "GET /files/note.txt HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello"),
        "{reply}"
    );
}
