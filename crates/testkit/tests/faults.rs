//! Fault tests of the core path: lying peers, dying parents, a dead supernode, bad input,
//! and a daemon killed mid-download.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use odonata_proto::messages::{
    PieceDone, RegisterRequest, RegisterResponse, SyncRequest, TaskInfo,
};
use odonata_proto::PeerId;
use odonata_testkit::cluster::{dfget_standalone, free_port, run_with_limit, Daemon, Supernode};
use odonata_testkit::origin::Origin;
use odonata_testkit::{sample, sha256_file, sha256_hex};

const LIMIT: Duration = Duration::from_secs(180);

struct World {
    dir: tempfile::TempDir,
    origin: Origin,
    data: Bytes,
    sn: Supernode,
}

impl World {
    async fn new(len: usize) -> Self {
        let data = sample(len, len as u64);
        let origin = Origin::local(HashMap::from([("f.bin".to_owned(), data.clone())]), 0)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sn = Supernode::start(dir.path()).unwrap();
        Self {
            dir,
            origin,
            data,
            sn,
        }
    }

    fn url(&self) -> String {
        self.origin.url("f.bin")
    }

    fn nodes(&self) -> Vec<String> {
        vec![self.sn.addr.to_string()]
    }

    fn daemon(&self, name: &str, extra: &[&str]) -> Daemon {
        Daemon::start(self.dir.path(), name, &self.nodes(), extra).unwrap()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn assert_same(&self, out: &Path) {
        assert_eq!(
            sha256_file(out).unwrap(),
            sha256_hex(&self.data),
            "{} differs from the source",
            out.display()
        );
    }

    async fn task_info(&self, task: &str) -> TaskInfo {
        reqwest::get(format!("http://{}/api/v1/tasks/{task}", self.sn.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn dfget(mut cmd: std::process::Command, url: &str, out: &Path, flags: &[&str]) -> Output {
    cmd.arg("-u").arg(url).arg("-o").arg(out).args(flags);
    tokio::task::spawn_blocking(move || run_with_limit(cmd, LIMIT))
        .await
        .unwrap()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "dfget failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a clean failure: non-zero exit, exactly one line on stderr containing `needle`.
fn failed_with(o: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
    assert!(
        !o.status.success(),
        "dfget should have failed; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.lines().count(), 1, "want one line, got: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    err
}

/// No output and no temporary file beside where it would have been.
fn assert_nothing_written(out: &Path) {
    assert!(!out.exists(), "{} should not exist", out.display());
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    for e in std::fs::read_dir(out.parent().unwrap()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(&name), "leftover {n}");
    }
}

/// A peer that registers, claims every piece, and serves garbage of the right length.
async fn start_liar(w: &World) -> (PeerId, Arc<AtomicU64>, String) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let piece_size = Arc::new(AtomicU64::new(0));
    let ps = piece_size.clone();
    let total = w.data.len() as u64;
    let app = axum::Router::new().route(
        "/pieces/{task}/{num}",
        axum::routing::get(
            move |axum::extract::Path((_t, num)): axum::extract::Path<(String, u64)>| {
                let (h, ps) = (h.clone(), ps.clone());
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    let size = ps.load(Ordering::Relaxed);
                    let len = size.min(total - num * size);
                    vec![0x5au8; len as usize]
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let me = PeerId("liar-1".into());
    let reg: RegisterResponse = http
        .post(format!("http://{}/api/v1/tasks", w.sn.addr))
        .json(&RegisterRequest {
            url: w.url(),
            headers: vec![],
            filter: vec![],
            digest: None,
            peer_id: me.clone(),
            peer_addr: addr,
            task_identity: None,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    piece_size.store(u64::from(reg.layout.piece_size), Ordering::Relaxed);
    let count = reg.layout.piece_count().unwrap();
    let resp = http
        .post(format!(
            "http://{}/api/v1/tasks/{}/sync",
            w.sn.addr, reg.task_id
        ))
        .json(&SyncRequest {
            peer_id: me.clone(),
            finished: (0..count)
                .map(|num| PieceDone {
                    num,
                    parent: None,
                    cost_ms: 0,
                })
                .collect(),
            failed: vec![],
            released: vec![],
            lost: vec![],
            want: 0,
            wait_ms: 0,
        })
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    (me, hits, reg.task_id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_caught_reported_and_avoided() {
    let w = World::new(16 << 20).await;
    let a = w.daemon("a", &[]);
    ok(&dfget(a.dfget().unwrap(), &w.url(), &w.out("a.bin"), &[]).await);
    let (liar, hits, task) = start_liar(&w).await;

    let b = w.daemon("b", &[]);
    let out = ok(&dfget(b.dfget().unwrap(), &w.url(), &w.out("b.bin"), &["--notbs"]).await);
    assert!(out.contains("via p2p"), "{out}");
    w.assert_same(&w.out("b.bin"));
    let tried = hits.load(Ordering::Relaxed);
    assert!(
        tried > 0,
        "the liar was never asked; the test proves nothing"
    );
    let info = w.task_info(&task).await;
    let l = info.peers.iter().find(|p| p.peer_id == liar).unwrap();
    assert!(l.blocked, "the liar should be blocked: {l:?}");

    // Once reported, it is never chosen again.
    let c = w.daemon("c", &[]);
    ok(&dfget(c.dfget().unwrap(), &w.url(), &w.out("c.bin"), &["--notbs"]).await);
    w.assert_same(&w.out("c.bin"));
    assert_eq!(
        hits.load(Ordering::Relaxed),
        tried,
        "a blocked peer was asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_killed_mid_transfer_does_not_fail_the_download() {
    let w = World::new(32 << 20).await;
    let mut a = w.daemon("a", &[]);
    ok(&dfget(a.dfget().unwrap(), &w.url(), &w.out("a.bin"), &[]).await);
    let b = w.daemon("b", &[]);
    let cmd = b.dfget().unwrap();
    let url = w.url();
    let out_b = w.out("b.bin");
    let job =
        tokio::spawn(
            async move { dfget(cmd, &url, &out_b, &["--notbs", "--locallimit", "8M"]).await },
        );
    // Kill the peer parent while b is still pulling from it (32 MiB at 8 MiB/s takes ~4 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = reqwest::get(format!("http://{}/metrics", a.upload))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    a.proc.kill();
    let served: u64 = before
        .lines()
        .find(|l| l.starts_with("odonata_daemon_upload_pieces_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        served > 0,
        "b never used a as a parent; the test proves nothing"
    );
    let o = job.await.unwrap();
    let text = ok(&o);
    assert!(text.contains("via p2p"), "{text}");
    w.assert_same(&w.out("b.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supernode_down_falls_back_to_source_unless_notbs() {
    let w = World::new(4 << 20).await;
    let dead = format!("127.0.0.1:{}", free_port().unwrap());
    let d = Daemon::start(w.dir.path(), "lonely", &[dead], &[]).unwrap();
    let out = ok(&dfget(d.dfget().unwrap(), &w.url(), &w.out("x.bin"), &[]).await);
    assert!(out.contains("via source"), "{out}");
    w.assert_same(&w.out("x.bin"));

    let o = dfget(d.dfget().unwrap(), &w.url(), &w.out("y.bin"), &["--notbs"]).await;
    let err = failed_with(&o, "--notbs");
    assert!(err.contains("cannot reach supernode"), "{err}");
    assert_nothing_written(&w.out("y.bin"));

    // The same without any daemon: dfget runs the peer in-process.
    let home = w.dir.path().join("nodaemon");
    let o = dfget(
        dfget_standalone(&home).unwrap(),
        &w.url(),
        &w.out("z.bin"),
        &["--node", &format!("127.0.0.1:{}", free_port().unwrap())],
    )
    .await;
    assert!(ok(&o).contains("via source"));
    w.assert_same(&w.out("z.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_peer_downloads_through_the_swarm() {
    let w = World::new(8 << 20).await;
    let home = w.dir.path().join("nodaemon");
    let node = w.sn.addr.to_string();
    let out = ok(&dfget(
        dfget_standalone(&home).unwrap(),
        &w.url(),
        &w.out("p.bin"),
        &["--node", &node, "--notbs"],
    )
    .await);
    assert!(out.contains("via p2p"), "{out}");
    w.assert_same(&w.out("p.bin"));
    // Its temporary store is gone.
    assert!(!home.join("tmp").read_dir().unwrap().any(|_| true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_fails_and_leaves_no_output() {
    let w = World::new(4 << 20).await;
    let d = w.daemon("d", &[]);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("w.bin"),
        &["--digest", &wrong],
    )
    .await;
    failed_with(&o, "digest mismatch");
    assert_nothing_written(&w.out("w.bin"));
    // The right digest passes, and md5 works too.
    let right = format!("sha256:{}", sha256_hex(&w.data));
    ok(&dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("r.bin"),
        &["--digest", &right],
    )
    .await);
    w.assert_same(&w.out("r.bin"));
    let o = dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("m.bin"),
        &["--md5", &"f".repeat(32)],
    )
    .await;
    failed_with(&o, "digest mismatch");
    assert_nothing_written(&w.out("m.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_bad_sources_give_one_clear_line() {
    let w = World::new(1 << 20).await;
    let d = w.daemon("d", &[]);
    let closed = format!("http://127.0.0.1:{}/x.bin", free_port().unwrap());
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (closed, vec![], "cannot reach source"),
        (w.origin.url("missing.bin"), vec![], "404"),
        (w.origin.url("status/503"), vec![], "503"),
        ("htp:/x".into(), vec![], "unsupported URL scheme"),
        ("http://[::1".into(), vec![], "malformed URL"),
        (w.url(), vec!["--header", "nocolon"], "Name: value"),
        (w.url(), vec!["--header", "X: a\u{7}b"], "header"),
        (w.url(), vec!["--digest", "sha256:xyz"], "sha256"),
        (w.url(), vec!["--locallimit", "fast"], "invalid rate"),
        (w.url(), vec!["--node", "nohostport"], "HOST:PORT"),
    ];
    for (i, (url, flags, needle)) in cases.iter().enumerate() {
        let out = w.out(&format!("bad{i}.bin"));
        let o = dfget(d.dfget().unwrap(), url, &out, flags).await;
        failed_with(&o, needle);
        assert_nothing_written(&out);
    }
    // A 404 is final: no second trip to the source after the seed's.
    let before = w.origin.requests();
    let o = dfget(
        d.dfget().unwrap(),
        &w.origin.url("gone.bin"),
        &w.out("g.bin"),
        &[],
    )
    .await;
    failed_with(&o, "404");
    assert_eq!(w.origin.requests() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_resumes_from_the_pieces_it_had() {
    let w = World::new(48 << 20).await;
    let mut d = w.daemon("d", &["--totallimit", "12M"]);
    let cmd = d.dfget().unwrap();
    let url = w.url();
    let out = w.out("k.bin");
    let job = tokio::spawn(async move { dfget(cmd, &url, &out, &["--notbs"]).await });
    // ~4 s at 12 MiB/s; kill -9 in the middle.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    d.proc.kill();
    let o = job.await.unwrap();
    assert!(
        !o.status.success(),
        "the download should have died with its daemon"
    );
    assert_nothing_written(&w.out("k.bin"));

    // Restart without the limit; the same download resumes.
    d.restart().unwrap();
    let text = ok(&dfget(d.dfget().unwrap(), &w.url(), &w.out("k.bin"), &["--notbs"]).await);
    w.assert_same(&w.out("k.bin"));
    let reused: u32 = text
        .split("pieces: ")
        .nth(1)
        .and_then(|s| s.split(" reused").next())
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no reuse count in: {text}"));
    assert!(reused > 0, "nothing was resumed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_clear_errors_and_servers_survive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new(1 << 20).await;
    let d = w.daemon("d", &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{}", w.sn.addr);
    let r = http
        .post(format!("{base}/api/v1/tasks"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("bad request body"));
    let r = http
        .post(format!("{base}/api/v1/tasks"))
        .json(&serde_json::json!({"url": "ftp://x/y", "peer_id": "p", "peer_addr": "127.0.0.1:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unsupported URL scheme"));
    let r = http
        .post(format!("{base}/api/v1/tasks/{}/sync", "a".repeat(64)))
        .json(&serde_json::json!({"peer_id": "p", "want": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for path in ["/pieces/zzz/1", "/pieces/../../etc/passwd/1"] {
        let r = http
            .get(format!("http://{}{path}", d.upload))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let r = http
        .get(format!(
            "http://{}/pieces/{}/99999999999",
            d.upload,
            "a".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Raw garbage and a TLS ClientHello on the plain ports: answered or dropped, never fatal.
    for addr in [w.sn.addr, w.sn.upload, d.upload] {
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GARBAGE\r\n\r\n",
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(junk).await.unwrap();
            let mut buf = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        }
    }
    // Everything still works.
    ok(&dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("after.bin"),
        &["--notbs"],
    )
    .await);
    w.assert_same(&w.out("after.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_edited_in_place_never_leaks_into_the_next_download() {
    // Outputs are hard links to the daemon's cached file; editing one in place edits the
    // cache too. The next download of the same URL must still get the source's bytes.
    let w = World::new(6 << 20).await;
    let d = w.daemon("d", &[]);
    ok(&dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("first.bin"),
        &["--notbs"],
    )
    .await);
    w.assert_same(&w.out("first.bin"));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(w.out("first.bin"))
            .unwrap();
        f.write_all_at(b"edited by the user", 3 << 20).unwrap();
    }
    ok(&dfget(
        d.dfget().unwrap(),
        &w.url(),
        &w.out("second.bin"),
        &["--notbs"],
    )
    .await);
    w.assert_same(&w.out("second.bin"));
}
