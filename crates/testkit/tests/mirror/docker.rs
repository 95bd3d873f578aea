//! `docker pull` of a docker.io-named image through `registry-mirrors`, with a local
//! registry standing in for Docker Hub behind the mirror.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odonata_testkit::cluster::{free_port, wait_unix, Proc, Supernode};
use odonata_testkit::counting::CountingProxy;

use crate::clients::{build_image, missing, on_path, push_image, run, RealRegistry};
use crate::util::MirrorDaemon;

/// Directories holding dockerd and docker: PATH, or Debian's docker.io package unpacked by
/// scripts/install-test-deps.sh into target/test-deps/docker.
fn docker_dirs() -> Option<Vec<PathBuf>> {
    if on_path("dockerd") && on_path("docker") {
        return Some(Vec::new());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-deps/docker/usr");
    let dirs = vec![root.join("bin"), root.join("sbin")];
    (dirs[1].join("dockerd").is_file() && dirs[0].join("docker").is_file()).then_some(dirs)
}

/// Our own dockerd; stopped with SIGTERM so it takes its containerd down with it.
struct Dockerd {
    proc: Proc,
    socket: PathBuf,
    path: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(30));
    }
}

impl Dockerd {
    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("PATH", &self.path)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pull_of_a_docker_io_name_through_registry_mirrors() {
    if let Some(why) = missing(
        &["docker-registry", "skopeo", "containerd", "tar", "gzip"],
        true,
    ) {
        println!("SKIPPED docker mirror test: {why}");
        return;
    }
    let Some(extra_dirs) = docker_dirs() else {
        println!(
            "SKIPPED docker mirror test: dockerd not found on PATH nor in target/test-deps/docker \
             (scripts/install-test-deps.sh unpacks Debian's docker.io there)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = RealRegistry::start(d, "");
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "library/odonata-app", None);
    let counter = CountingProxy::start(reg.addr).await.unwrap();
    let sn = Supernode::start(d).unwrap();
    let a = MirrorDaemon::start(
        d,
        "a",
        &[sn.addr.to_string()],
        &format!("http://{}", counter.addr),
        &[],
    );

    let mut path = std::env::var("PATH").unwrap_or_default();
    for x in &extra_dirs {
        path = format!("{}:{path}", x.display());
    }
    let socket = d.join("docker.sock");
    // Should dockerd fall back to Docker Hub, it must hit a closed loopback port rather
    // than the internet: every non-loopback request goes to a proxy that is not there.
    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let mut cmd = Command::new("dockerd");
    cmd.env("PATH", &path)
        .env("HTTP_PROXY", &nowhere)
        .env("HTTPS_PROXY", &nowhere)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .arg("--data-root")
        .arg(d.join("docker-data"))
        .arg("--exec-root")
        .arg(d.join("docker-exec"))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
        ])
        .arg("--registry-mirror")
        .arg(a.url());
    let proc = Proc::spawn("dockerd", cmd, &d.join("dockerd.log")).unwrap();
    if let Err(e) = wait_unix(&socket, Duration::from_secs(60)) {
        let log = std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
        println!("SKIPPED docker mirror test: dockerd does not start here ({e}): {log}");
        return;
    }
    let dockerd = Dockerd { proc, socket, path };
    let mut pull = dockerd.docker();
    pull.args(["pull", "odonata-app:v1"]);
    run(pull, "docker pull through registry-mirrors");
    let mut inspect = dockerd.docker();
    inspect.args([
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        "odonata-app:v1",
    ]);
    let layers = run(inspect, "docker image inspect");
    for id in &img.diff_ids {
        assert!(layers.contains(id.as_str()), "{id} not in {layers}");
    }
    let gets = counter.blob_gets();
    for digest in img.layers.iter().chain([&img.config]) {
        assert_eq!(
            gets.get(digest).copied().unwrap_or(0),
            1,
            "{digest}: {gets:?}"
        );
    }
}
