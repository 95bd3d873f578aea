//! Real clients from Debian packages (docker-registry, skopeo, containerd's ctr) pulling
//! through two daemons' mirrors. Each test says why it skips when a client cannot run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odonata_testkit::cluster::{free_port, run_with_limit, wait_tcp, wait_unix, Proc, Supernode};
use odonata_testkit::counting::CountingProxy;
use odonata_testkit::{sample, sha256_file, sha256_hex};

use base64::Engine as _;

use crate::util::MirrorDaemon;

/// Whether `name` is an executable on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Why the real-client tests cannot run here, if they cannot.
pub fn missing(bins: &[&str], need_root: bool) -> Option<String> {
    if need_root && !is_root() {
        return Some("needs root (containerd and its snapshotter)".into());
    }
    let absent: Vec<&str> = bins.iter().copied().filter(|b| !on_path(b)).collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not installed (scripts/install-test-deps.sh installs them from Debian)",
            absent.join(", ")
        )
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

/// Runs a command to its end (2 min at most), panicking with its output on failure.
pub fn run(mut cmd: Command, what: &str) -> String {
    cmd.env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let out = run_with_limit(cmd, Duration::from_secs(120)).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A CNCF distribution registry (Debian's docker-registry) on a loopback port.
pub struct RealRegistry {
    pub _proc: Proc,
    pub addr: std::net::SocketAddr,
}

impl RealRegistry {
    /// Starts it with storage under `dir`; `auth` is an extra YAML `auth:` section.
    pub fn start(dir: &Path, auth: &str) -> Self {
        Self::launch(dir, "", auth)
    }

    /// Starts it serving HTTPS with this PEM certificate chain and key, and `auth` as in
    /// [`RealRegistry::start`].
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path, auth: &str) -> Self {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        Self::launch(dir, &tls, auth)
    }

    fn launch(dir: &Path, http_extra: &str, auth: &str) -> Self {
        let port = free_port().unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let root = dir.join("registry-data");
        std::fs::create_dir_all(&root).unwrap();
        let cfg = dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{http_extra}{auth}",
                root.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&cfg);
        let proc = Proc::spawn("docker-registry", cmd, &dir.join("registry.log")).unwrap();
        wait_tcp(addr, Duration::from_secs(20)).unwrap();
        Self { _proc: proc, addr }
    }
}

/// A test image: its layers' files and the OCI layout holding it.
pub struct TestImage {
    /// `(file name inside the layer, content)` per layer.
    pub files: Vec<(String, bytes::Bytes)>,
    /// Digests of the layer blobs (gzipped tars).
    pub layers: Vec<String>,
    /// Digests of the uncompressed layer tars (the config's diff_ids).
    pub diff_ids: Vec<String>,
    /// Digest of the config.
    pub config: String,
    /// The OCI layout directory.
    pub layout: PathBuf,
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// Writes an OCI layout with one image of three gzipped tar layers, tagged `tag`.
pub fn build_image(dir: &Path, tag: &str) -> TestImage {
    let layout = dir.join("oci-src");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let sizes = [6 << 20, 3 << 20, 1000];
    let mut files = Vec::new();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut diff_id_list = Vec::new();
    let mut layers = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let content = sample(*size, 100 + i as u64);
        let src = dir.join(format!("layer{i}"));
        std::fs::create_dir_all(&src).unwrap();
        let name = format!("layer{i}.bin");
        std::fs::write(src.join(&name), &content).unwrap();
        let tar = dir.join(format!("layer{i}.tar"));
        let mut cmd = Command::new("tar");
        cmd.args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(&name);
        run(cmd, "tar");
        // Compressed already, so that skopeo pushes the layers as they are (it gzips
        // uncompressed layers on the way to a registry, changing their digests).
        let mut gz = Command::new("gzip");
        gz.arg("-n").arg("-k").arg(&tar);
        run(gz, "gzip");
        let diff_id = format!("sha256:{}", sha256_file(&tar).unwrap());
        let bytes = std::fs::read(dir.join(format!("layer{i}.tar.gz"))).unwrap();
        let d = put_blob(&layout, &bytes);
        layer_descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            bytes.len()
        ));
        diff_ids.push(format!("\"{diff_id}\""));
        diff_id_list.push(diff_id);
        layers.push(d);
        files.push((name, content));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config_digest = put_blob(&layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_descs.join(",")
    );
    let md = put_blob(&layout, manifest.as_bytes());
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    TestImage {
        files,
        layers,
        diff_ids: diff_id_list,
        config: config_digest,
        layout,
    }
}

/// Pushes the test image to `reg` as `repo:v1` with skopeo, with credentials if given.
pub fn push_image(img: &TestImage, reg: std::net::SocketAddr, repo: &str, creds: Option<&str>) {
    let mut push = Command::new("skopeo");
    push.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        push.args(["--dest-creds", c]);
    }
    push.arg(format!("oci:{}:v1", img.layout.display()))
        .arg(format!("docker://{reg}/{repo}:v1"));
    run(push, "skopeo push to the local registry");
}

/// Writes a dfdaemon config whose mirror maps the registry name `closed` (where nothing
/// listens) to `upstream`; returns the path for `--config`.
pub fn mirror_config(dir: &Path, closed: &str, upstream: std::net::SocketAddr) -> String {
    mirror_config_file(
        dir,
        "dfdaemon.yml",
        closed,
        &format!("http://{upstream}"),
        None,
    )
}

/// Writes `dir/file`, a dfdaemon config whose mirror maps the registry name `closed` to
/// the upstream `url`, trusting `ca_file` for it if given; returns the path.
pub fn mirror_config_file(
    dir: &Path,
    file: &str,
    closed: &str,
    url: &str,
    ca_file: Option<&Path>,
) -> String {
    let cfg = dir.join(file);
    let ca = ca_file
        .map(|p| format!(", ca_file: \"{}\"", p.display()))
        .unwrap_or_default();
    std::fs::write(
        &cfg,
        format!("mirror:\n  registries:\n    \"{closed}\": {{url: \"{url}\"{ca}}}\n"),
    )
    .unwrap();
    cfg.to_string_lossy().into_owned()
}

/// Writes a registries.conf that sends pulls of `closed` to the mirror at `proxy`.
pub fn registries_conf(dir: &Path, closed: &str, proxy: std::net::SocketAddr) -> PathBuf {
    let conf = dir.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{closed}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{proxy}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    conf
}

/// Pulls `closed/repo:v1` with skopeo into an OCI layout at `out`, through the mirror that
/// `conf` (from [`registries_conf`]) names.
pub fn skopeo_pull_via_mirror(conf: &Path, closed: &str, repo: &str, out: &Path) {
    let mut pull = Command::new("skopeo");
    // skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; its hidden flag works.
    pull.arg("--registries-conf")
        .arg(conf)
        .args(["--insecure-policy", "copy"])
        .arg(format!("docker://{closed}/{repo}:v1"))
        .arg(format!("oci:{}:v1", out.display()));
    run(pull, "skopeo copy through the mirror");
}

/// A skopeo copy of `closed/repo:v1` into an OCI layout at `dir/out`, through the mirror
/// at `mirror` that `conf` names, with `creds` (`user:password`) for the mirror if given.
pub fn skopeo_pull_cmd(
    dir: &Path,
    conf: &Path,
    mirror: std::net::SocketAddr,
    closed: &str,
    repo: &str,
    creds: Option<&str>,
    out: &str,
) -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--registries-conf")
        .arg(conf)
        .args(["--insecure-policy", "copy"]);
    // skopeo takes a mirror's credentials from an authfile keyed by the mirror's host
    // (--src-creds only reaches the primary location).
    let authfile = dir.join(format!("{out}-auth.json"));
    let auths = match creds {
        Some(cr) => format!(
            r#"{{"auths":{{"{mirror}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(cr)
        ),
        None => r#"{"auths":{}}"#.to_owned(),
    };
    std::fs::write(&authfile, auths).unwrap();
    c.arg("--src-authfile").arg(&authfile);
    c.arg(format!("docker://{closed}/{repo}:v1"))
        .arg(format!("oci:{}:v1", dir.join(out).display()));
    c
}

/// Writes `dir/certs.d/CLOSED/hosts.toml` sending containerd's pulls of `closed` to the
/// mirror at `mirror`; returns the `certs.d` directory for `--hosts-dir`.
pub fn hosts_dir(dir: &Path, closed: &str, mirror: std::net::SocketAddr) -> PathBuf {
    let certs = dir.join("certs.d");
    let hosts = certs.join(closed);
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{closed}\"\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    certs
}

/// A containerd of our own (socket, root and state under `dir`, no CRI).
pub struct Containerd {
    pub _proc: Proc,
    pub socket: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let cfg = dir.join("containerd.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{r}\"\nstate = \"{s}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                r = dir.join("ctr-root").display(),
                s = dir.join("ctr-state").display(),
                sock = socket.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&cfg);
        let proc = Proc::spawn("containerd", cmd, &dir.join("containerd.log")).unwrap();
        wait_unix(&socket, Duration::from_secs(30)).unwrap();
        Self {
            _proc: proc,
            socket,
        }
    }

    /// A `ctr` command on this containerd, in namespace `odonata`.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.socket).arg("-n").arg("odonata");
        c
    }

    /// `ctr images pull` of `reference` with the native snapshotter, hosts from `hosts`
    /// (see [`hosts_dir`]), as `user` (`name:password`) if given.
    pub fn pull(&self, hosts: &Path, reference: &str, user: Option<&str>) -> Command {
        let mut c = self.ctr();
        c.args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(hosts);
        if let Some(u) = user {
            c.args(["--user", u]);
        }
        c.arg(reference);
        c
    }
}

/// Finds a file by name under `root`.
pub fn find(root: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_then_containerd_pull_through_two_daemons_registry_serves_each_blob_once() {
    if let Some(why) = missing(
        &[
            "docker-registry",
            "skopeo",
            "containerd",
            "ctr",
            "tar",
            "gzip",
        ],
        true,
    ) {
        println!("SKIPPED skopeo/containerd mirror test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = RealRegistry::start(d, "");
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "test/app", None);

    // The daemons reach the registry only through the counter; clients name it by an
    // address where nothing listens, so a pull that skips the mirror fails.
    let counter = CountingProxy::start(reg.addr).await.unwrap();
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let cfg_s = mirror_config(d, &closed, counter.addr);
    let sn = Supernode::start(d).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let upstream = format!("http://{}", counter.addr);
    let a = MirrorDaemon::start(d, "a", &nodes, &upstream, &["--config", &cfg_s]);
    let b = MirrorDaemon::start(d, "b", &nodes, &upstream, &["--config", &cfg_s]);

    // skopeo through daemon A (registries.conf mirror).
    let conf = registries_conf(d, &closed, a.proxy);
    let out = d.join("oci-out");
    skopeo_pull_via_mirror(&conf, &closed, "test/app", &out);
    for digest in img.layers.iter().chain([&img.config]) {
        let hex = digest.trim_start_matches("sha256:");
        assert_eq!(
            sha256_file(&out.join("blobs/sha256").join(hex)).unwrap(),
            hex,
            "skopeo's copy of {digest}"
        );
    }

    // containerd through daemon B (hosts.toml), unpacked with the native snapshotter.
    let hosts = hosts_dir(d, &closed, b.proxy);
    let ctrd = Containerd::start(d);
    let pull = ctrd.pull(&hosts, &format!("{closed}/test/app:v1"), None);
    run(pull, "ctr pull through daemon B");
    let mut ls = ctrd.ctr();
    ls.args(["content", "ls", "-q"]);
    let content = run(ls, "ctr content ls");
    for digest in img.layers.iter().chain([&img.config]) {
        assert!(
            content.contains(digest.as_str()),
            "{digest} missing in containerd: {content}"
        );
    }
    assert_unpacked(d, &img);

    // The registry served every blob once in total, for both pulls.
    assert_each_blob_once(&counter, &img);
    assert!(b.metric("odonata_mirror_blob_bytes_p2p_total").await > 0);
    assert_eq!(b.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
    assert_eq!(a.metric("odonata_mirror_blob_bytes_direct_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_right_credentials_pull_wrong_ones_get_nothing() {
    if let Some(why) = missing(
        &[
            "docker-registry",
            "skopeo",
            "containerd",
            "ctr",
            "htpasswd",
            "tar",
            "gzip",
        ],
        true,
    ) {
        println!("SKIPPED htpasswd mirror test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut hp = Command::new("htpasswd");
    hp.args(["-Bbn", "alice", "s3cret"]);
    let line = run(hp, "htpasswd");
    let pwfile = d.join("htpasswd");
    std::fs::write(&pwfile, line.trim().to_owned() + "\n").unwrap();
    let reg = RealRegistry::start(
        d,
        &format!(
            "auth:\n  htpasswd:\n    realm: odonata-test\n    path: {}\n",
            pwfile.display()
        ),
    );
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "private/app", Some("alice:s3cret"));

    // Bound whole: a `..` pattern would drop (stop) the supernode and daemon A at once.
    let m = private_mirrors_refuse_strangers(d, reg.addr, &img).await;
    let (counter, closed, b) = (&m.counter, &m.closed, &m.b);

    let hosts = hosts_dir(d, closed, b.proxy);
    let ctrd = Containerd::start(d);
    let reference = format!("{closed}/private/app:v1");
    let ctr_pull = |user: Option<&str>| ctrd.pull(&hosts, &reference, user);
    let before = counter.blob_bytes();
    let o = run_with_limit(ctr_pull(Some("alice:wrong")), Duration::from_secs(120)).unwrap();
    assert!(
        !o.status.success(),
        "ctr with wrong credentials pulled a private image"
    );
    assert_eq!(counter.blob_bytes(), before);
    run(
        ctr_pull(Some("alice:s3cret")),
        "ctr pull with the right credentials",
    );
    assert_each_blob_once(counter, &img);
}

/// Checks that the OCI layout at `out` holds the image's config and layers, byte for byte.
pub fn check_layout(out: &Path, img: &TestImage) {
    for digest in img.layers.iter().chain([&img.config]) {
        let hex = digest.trim_start_matches("sha256:");
        assert_eq!(
            odonata_testkit::sha256_file(&out.join("blobs/sha256").join(hex)).unwrap(),
            hex,
            "copy of {digest} in {}",
            out.display()
        );
    }
}

/// A supernode and two mirror daemons in front of a private registry, as the private-registry
/// tests set them up.
pub struct PrivateMirrors {
    /// Counts what the daemons take from the registry.
    pub counter: CountingProxy,
    /// The registry's name for clients: an address where nothing listens.
    pub closed: String,
    /// The supernode (kept alive with the daemons).
    pub _sn: Supernode,
    /// Daemon A, which skopeo used (kept running with the rest).
    pub _a: MirrorDaemon,
    /// Daemon B, left for containerd.
    pub b: MirrorDaemon,
    /// The daemons' supernode list, upstream URL and mirror config path, for more daemons.
    pub nodes: Vec<String>,
    /// Upstream URL (the counter).
    pub upstream: String,
    /// Mirror config file.
    pub cfg: String,
}

/// Starts [`PrivateMirrors`] for the registry at `reg` holding `img` as `private/app:v1`
/// (user alice, password s3cret), then checks skopeo through daemon A: no and wrong
/// credentials get 401 and no blob bytes leave the registry; the right ones pull it whole.
pub async fn private_mirrors_refuse_strangers(
    d: &Path,
    reg: std::net::SocketAddr,
    img: &TestImage,
) -> PrivateMirrors {
    let counter = CountingProxy::start(reg).await.unwrap();
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let cfg = mirror_config(d, &closed, counter.addr);
    let sn = Supernode::start(d).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let upstream = format!("http://{}", counter.addr);
    let a = MirrorDaemon::start(d, "a", &nodes, &upstream, &["--config", &cfg]);
    let b = MirrorDaemon::start(d, "b", &nodes, &upstream, &["--config", &cfg]);
    let conf = registries_conf(d, &closed, a.proxy);
    let skopeo = |creds: Option<&str>, out: &str| {
        skopeo_pull_cmd(d, &conf, a.proxy, &closed, "private/app", creds, out)
    };
    for (creds, out) in [(None, "no-creds"), (Some("alice:wrong"), "bad-creds")] {
        let o = run_with_limit(skopeo(creds, out), Duration::from_secs(120)).unwrap();
        assert!(
            !o.status.success(),
            "skopeo with {creds:?} pulled a private image"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("401") || err.to_lowercase().contains("unauthorized"),
            "{err}"
        );
    }
    assert_eq!(
        counter.blob_bytes(),
        0,
        "blob bytes left the registry for a client without rights"
    );
    run(
        skopeo(Some("alice:s3cret"), "ok"),
        "skopeo with the right credentials",
    );
    check_layout(&d.join("ok"), img);
    PrivateMirrors {
        counter,
        closed,
        _sn: sn,
        _a: a,
        b,
        nodes,
        upstream,
        cfg,
    }
}

/// Checks that containerd (native snapshotter under `d`) unpacked every file of `img` intact.
pub fn assert_unpacked(d: &Path, img: &TestImage) {
    let snapshots = d.join("ctr-root/io.containerd.snapshotter.v1.native/snapshots");
    for (name, data) in &img.files {
        let f = find(&snapshots, name).unwrap_or_else(|| panic!("{name} not unpacked"));
        assert_eq!(
            sha256_file(&f).unwrap(),
            sha256_hex(data),
            "unpacked {name}"
        );
    }
}

/// Checks that the registry behind `counter` served each blob of `img` exactly once.
pub fn assert_each_blob_once(counter: &CountingProxy, img: &TestImage) {
    let gets = counter.blob_gets();
    for digest in img.layers.iter().chain([&img.config]) {
        assert_eq!(
            gets.get(digest).copied().unwrap_or(0),
            1,
            "{digest}: {gets:?}"
        );
    }
}
