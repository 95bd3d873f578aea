//! Fallback to the upstream, redirects, corrupt bytes, and hostile clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use odonata_testkit::cluster::{free_port, Supernode};
use odonata_testkit::registry::{FakeRegistry, RegistryAuth};
use odonata_testkit::{sample, sha256_hex};

use crate::util::{client, MirrorDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_the_upstream_and_follows_redirects() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let data = sample(3 << 20, 10);
    let img = reg.put_image("app", "v1", std::slice::from_ref(&data));
    reg.set_redirect(true);
    let dir = tempfile::tempdir().unwrap();
    // A supernode address where nothing listens: the swarm fails, the upstream serves.
    let dead = vec![format!("127.0.0.1:{}", free_port().unwrap())];
    let d = MirrorDaemon::start(dir.path(), "a", &dead, &reg.url(), &[]);
    let r = client()
        .get(format!("{}/v2/app/blobs/{}", d.url(), img.layers[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));
    assert!(d.metric("odonata_mirror_blob_bytes_direct_total").await >= data.len() as u64);

    // Through the swarm, the seed follows the 307 while the task stays keyed by digest.
    let sn = Supernode::start(dir.path()).unwrap();
    let e = MirrorDaemon::start(dir.path(), "e", &[sn.addr.to_string()], &reg.url(), &[]);
    let r = client()
        .get(format!("{}/v2/app/blobs/{}", e.url(), img.layers[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));
    assert_eq!(e.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_upstream_bytes_never_complete_a_response() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let data = sample(2 << 20, 11);
    let img = reg.put_image("app", "v1", std::slice::from_ref(&data));
    reg.corrupt(&img.layers[0]);
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let dead = vec![format!("127.0.0.1:{}", free_port().unwrap())];
    let via_swarm = MirrorDaemon::start(dir.path(), "a", &[sn.addr.to_string()], &reg.url(), &[]);
    let direct = MirrorDaemon::start(dir.path(), "b", &dead, &reg.url(), &[]);
    for d in [&via_swarm, &direct] {
        let r = client()
            .get(format!("{}/v2/app/blobs/{}", d.url(), img.layers[0]))
            .send()
            .await
            .unwrap();
        // The status and length were promised; the body must break off before its end.
        assert_eq!(r.status(), 200);
        assert!(
            r.bytes().await.is_err(),
            "a corrupt blob came through whole"
        );
        assert_eq!(d.metric("odonata_mirror_digest_mismatches_total").await, 1);
    }
}

fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_tls_garbage_and_clients_that_leave_mid_blob() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let data = sample(24 << 20, 12);
    let img = reg.put_image("app", "v1", std::slice::from_ref(&data));
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let d = MirrorDaemon::start(dir.path(), "a", &[sn.addr.to_string()], &reg.url(), &[]);
    let addr = d.proxy;
    // A TLS ClientHello (as skopeo sends first with insecure = true).
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 1, 2, 3, 4, 5, 6, 7, 8,
        9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        32, 0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00,
    ];
    let out = tokio::task::spawn_blocking(move || raw(addr, hello))
        .await
        .unwrap();
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 400"),
        "{out:?}"
    );
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /v2/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://127.0.0.1:1/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        &[b'A'; 70_000][..],
    ] {
        let j = junk.to_vec();
        let out = tokio::task::spawn_blocking(move || raw(addr, &j))
            .await
            .unwrap();
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    // Clients that read a little of a big blob and go away.
    for _ in 0..3 {
        let digest = img.layers[0].clone();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
        })
        .await
        .unwrap();
    }
    // Everything they started winds down by itself: no stream or task left running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let streams = d.metric("odonata_mirror_open_streams").await;
        let tasks = d.metric("odonata_mirror_running_tasks").await;
        if streams == 0 && tasks == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{streams} streams, {tasks} tasks still running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The daemon still serves, and its home holds no temporary files.
    let r = client()
        .get(format!("{}/v2/app/blobs/{}", d.url(), img.layers[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));
    let stray: Vec<_> = walk(&d.daemon.home)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("tmp"))
        })
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    assert_eq!(reg.blob_gets(&img.layers[0]), 1);
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_corrupt_pieces_never_spoils_a_pull() {
    let reg = FakeRegistry::start(RegistryAuth::Open).await.unwrap();
    let data = sample(8 << 20, 13);
    let img = reg.put_image("app", "v1", std::slice::from_ref(&data));
    let digest = &img.layers[0];
    let dir = tempfile::tempdir().unwrap();
    let sn = Supernode::start(dir.path()).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let a = MirrorDaemon::start(dir.path(), "a", &nodes, &reg.url(), &[]);
    let b = MirrorDaemon::start(dir.path(), "b", &nodes, &reg.url(), &[]);
    let url = |d: &MirrorDaemon| format!("{}/v2/app/blobs/{digest}", d.url());
    let r = client().get(url(&a)).send().await.unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));

    // Peer A's copy rots on disk after it was verified: every piece gets a flipped byte.
    let task = odonata_proto::TaskId::for_identity(&format!("oci-blob:{digest}")).unwrap();
    let path = a.daemon.home.join("data").join(task.as_str());
    let mut bytes = std::fs::read(&path).unwrap();
    for off in (4096..bytes.len()).step_by(1 << 20) {
        bytes[off] ^= 0x55;
    }
    std::fs::write(&path, &bytes).unwrap();

    // B takes pieces from A or the seed; A's are refused by their piece digests.
    let r = client().get(url(&b)).send().await.unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));
    assert_eq!(b.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
    assert_eq!(reg.blob_gets(digest), 1);
    // A itself never hands its rotten copy out as a complete blob: the response breaks
    // off, the copy is dropped, and the next pull is whole again.
    let r = client().get(url(&a)).send().await.unwrap();
    assert!(
        r.bytes().await.is_err(),
        "A served its corrupt copy as complete"
    );
    let r = client().get(url(&a)).send().await.unwrap();
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&data));
}
