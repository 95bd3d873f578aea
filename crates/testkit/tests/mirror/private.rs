//! Real registries that need something from the mirror: token auth with a token server of
//! ours (distribution checks our JWTs), and HTTPS with a certificate from a private CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use odonata_testkit::cluster::{free_port, run_with_limit, Supernode};
use odonata_testkit::sha256_hex;
use odonata_testkit::token::{signing_cert, TokenConfig, TokenServer};
use reqwest::header;

use crate::clients::{
    assert_each_blob_once, assert_unpacked, build_image, check_layout, hosts_dir,
    mirror_config_file, missing, private_mirrors_refuse_strangers, push_image, registries_conf,
    run, skopeo_pull_cmd, Containerd, RealRegistry,
};
use crate::util::{client, manifest_get, MirrorDaemon};

fn basic(creds: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_right_credentials_pull_wrong_ones_get_nothing_fifty_pulls_one_token() {
    if let Some(why) = missing(
        &[
            "docker-registry",
            "skopeo",
            "containerd",
            "ctr",
            "openssl",
            "tar",
            "gzip",
        ],
        true,
    ) {
        println!("SKIPPED token-auth mirror test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signer = signing_cert(d).unwrap();
    let service = "odonata-test-registry";
    let tokens = TokenServer::start(
        TokenConfig {
            user: "alice".into(),
            password: "s3cret".into(),
            service: service.into(),
            issuer: "odonata-test-issuer".into(),
        },
        &signer,
    )
    .await
    .unwrap();
    let reg = RealRegistry::start(
        d,
        &format!(
            "auth:\n  token:\n    realm: {}\n    service: {service}\n    issuer: odonata-test-issuer\n    rootcertbundle: {}\n",
            tokens.realm(),
            signer.cert.display()
        ),
    );
    let img = build_image(d, "v1");
    // skopeo does the token dance itself; the registry accepting its push means it
    // accepted our JWTs.
    push_image(&img, reg.addr, "private/app", Some("alice:s3cret"));

    // As in the htpasswd test: daemons reach the registry through the counter, clients
    // name it where nothing listens. The token server is reachable by everyone.
    // Bound whole: a `..` pattern would drop (stop) the supernode and daemon A at once.
    let m = private_mirrors_refuse_strangers(d, reg.addr, &img).await;
    let (counter, closed, b) = (&m.counter, &m.closed, &m.b);
    let (nodes, upstream, cfg_s) = (&m.nodes, &m.upstream, &m.cfg);

    // containerd through daemon B.
    let hosts = hosts_dir(d, closed, b.proxy);
    let ctrd = Containerd::start(d);
    let reference = format!("{closed}/private/app:v1");
    let before = counter.blob_bytes();
    let o = run_with_limit(
        ctrd.pull(&hosts, &reference, Some("alice:wrong")),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(
        !o.status.success(),
        "ctr with wrong credentials pulled a private image"
    );
    assert_eq!(counter.blob_bytes(), before);
    run(
        ctrd.pull(&hosts, &reference, Some("alice:s3cret")),
        "ctr pull with the right credentials",
    );
    assert_unpacked(d, &img);
    assert_each_blob_once(counter, &img);

    // 50 concurrent pulls with Basic credentials through a fresh daemon, which does the
    // token exchange for them: one token request in all.
    let c_daemon = MirrorDaemon::start(d, "c", nodes, upstream, &["--config", cfg_s]);
    let http = client();
    let before = tokens.requests();
    let layer = img.layers[1].clone();
    let pulls: Vec<_> = (0..50)
        .map(|_| {
            let http = http.clone();
            let base = c_daemon.url();
            let layer = layer.clone();
            tokio::spawn(async move {
                let auth = basic("alice:s3cret");
                let m = manifest_get(&http, &format!("{base}/v2/private/app/manifests/v1"))
                    .header(header::AUTHORIZATION, &auth)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(m.status(), 200, "manifest: {:?}", m.text().await);
                let r = http
                    .get(format!("{base}/v2/private/app/blobs/{layer}"))
                    .header(header::AUTHORIZATION, &auth)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "blob: {:?}", r.text().await);
                format!("sha256:{}", sha256_hex(&r.bytes().await.unwrap()))
            })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), layer);
    }
    assert_eq!(
        tokens.requests() - before,
        1,
        "50 concurrent pulls must share one token request"
    );
    assert_eq!(
        c_daemon.metric("odonata_mirror_token_requests_total").await,
        1
    );

    // The daemon's own exchange with wrong or no credentials: the registry's 401, no bytes.
    let before = counter.blob_bytes();
    for cred in [None, Some(basic("alice:wrong"))] {
        for url in [
            format!("{}/v2/private/app/manifests/v1", c_daemon.url()),
            format!("{}/v2/private/app/blobs/{layer}", c_daemon.url()),
        ] {
            let mut r = manifest_get(&http, &url);
            if let Some(v) = &cred {
                r = r.header(header::AUTHORIZATION, v);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401, "{url} with {cred:?}");
            assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        }
    }
    assert_eq!(counter.blob_bytes(), before);
}

/// Runs `openssl` with `args`, panicking with its output on failure.
fn openssl(args: &[&str], what: &str) {
    let mut c = Command::new("openssl");
    c.args(args);
    run(c, what);
}

/// A private CA and a server certificate it signed for the IP 127.0.0.1; returns the CA
/// certificate, the server certificate and the server key (PEM paths).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(ec);
    let (ca_key, ca, srv_key, csr, srv, ext) = (
        p("ca-key.pem"),
        p("ca.pem"),
        p("srv-key.pem"),
        p("srv.csr"),
        p("srv.pem"),
        p("srv.ext"),
    );
    args.extend([
        "-subj",
        "/CN=odonata test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&args, "openssl CA");
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(ec);
    args.extend(["-subj", "/CN=127.0.0.1", "-keyout", &srv_key, "-out", &csr]);
    openssl(&args, "openssl server key");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &srv,
        ],
        "openssl server certificate",
    );
    (ca.into(), srv.into(), srv_key.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_with_private_ca_pulls_with_ca_file_and_fails_clearly_without() {
    if let Some(why) = missing(
        &["docker-registry", "skopeo", "openssl", "tar", "gzip"],
        false,
    ) {
        println!("SKIPPED private-CA mirror test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = private_ca(d);
    let reg = RealRegistry::start_tls(d, &cert, &key, "");
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "test/app", None);

    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let url = format!("https://{}", reg.addr);
    let with_ca = mirror_config_file(d, "with-ca.yml", &closed, &url, Some(&ca));
    let without = mirror_config_file(d, "without-ca.yml", &closed, &url, None);
    let sn = Supernode::start(d).unwrap();
    let nodes = vec![sn.addr.to_string()];
    // `--registry NAME` picks the listed entry (with its ca_file) as the default upstream.
    let good = MirrorDaemon::start(d, "good", &nodes, &closed, &["--config", &with_ca]);
    let bad = MirrorDaemon::start(d, "bad", &nodes, &closed, &["--config", &without]);

    let conf = registries_conf(d, &closed, good.proxy);
    run(
        skopeo_pull_cmd(d, &conf, good.proxy, &closed, "test/app", None, "ok"),
        "skopeo through the mirror trusting the private CA",
    );
    check_layout(&d.join("ok"), &img);

    // Without the CA: a prompt 502 naming the certificate problem, for manifests and blobs.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for path in [
        "/v2/test/app/manifests/v1".to_owned(),
        format!("/v2/test/app/blobs/{}", img.layers[0]),
    ] {
        let r = manifest_get(&http, &format!("{}{path}", bad.url()))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 502, "{path}: {body}");
        assert!(
            body.to_lowercase().contains("certificate"),
            "{path}: {body}"
        );
    }
    let log = std::fs::read_to_string(bad.daemon.home.join("dfdaemon.log")).unwrap();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_token_registry_with_private_ca_token_exchange_trusts_ca_file() {
    if let Some(why) = missing(
        &["docker-registry", "skopeo", "openssl", "tar", "gzip"],
        false,
    ) {
        println!("SKIPPED private-CA token mirror test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = private_ca(d);
    let signer = signing_cert(d).unwrap();
    // The token server shares the registry's certificate, as it often shares its host.
    let tokens = TokenServer::start_tls(
        TokenConfig {
            user: "alice".into(),
            password: "s3cret".into(),
            service: "odonata-test-registry".into(),
            issuer: "odonata-test-issuer".into(),
        },
        &signer,
        &cert,
        &key,
    )
    .await
    .unwrap();
    let reg = RealRegistry::start_tls(
        d,
        &cert,
        &key,
        &format!(
            "auth:\n  token:\n    realm: {}\n    service: odonata-test-registry\n    issuer: odonata-test-issuer\n    rootcertbundle: {}\n",
            tokens.realm(),
            signer.cert.display()
        ),
    );
    let img = build_image(d, "v1");
    push_image(&img, reg.addr, "private/app", Some("alice:s3cret"));

    // Configured credentials, a client that sends none: the daemon does the exchange
    // with the token server, which only the ca_file makes trusted.
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let cfg = d.join("dfdaemon.yml");
    std::fs::write(
        &cfg,
        format!(
            "mirror:\n  registries:\n    \"{closed}\": {{url: \"https://{}\", ca_file: \"{}\", username: alice, password: s3cret}}\n",
            reg.addr,
            ca.display()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let sn = Supernode::start(d).unwrap();
    let nodes = vec![sn.addr.to_string()];
    let m = MirrorDaemon::start(d, "m", &nodes, &closed, &["--config", &cfg_s]);
    let http = client();
    let before = tokens.requests();
    let r = manifest_get(&http, &format!("{}/v2/private/app/manifests/v1", m.url()))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{:?}", r.text().await);
    let layer = &img.layers[1];
    let r = http
        .get(format!("{}/v2/private/app/blobs/{layer}", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&r.bytes().await.unwrap())),
        *layer
    );
    assert_eq!(tokens.requests() - before, 1);
}
