//! Starting daemons with the mirror on, and asking them things.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use odonata_testkit::cluster::{free_port, wait_tcp, Daemon};

/// A daemon with its mirror listening on loopback.
pub struct MirrorDaemon {
    pub daemon: Daemon,
    pub proxy: SocketAddr,
}

impl MirrorDaemon {
    /// Starts a daemon named `name` mirroring `registry` (the default upstream), using
    /// `supernodes`, with `extra` flags.
    pub fn start(
        dir: &Path,
        name: &str,
        supernodes: &[String],
        registry: &str,
        extra: &[&str],
    ) -> Self {
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let p = proxy.to_string();
        let mut args = vec!["--proxy-listen", p.as_str(), "--registry", registry];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(dir, name, supernodes, &args).unwrap();
        wait_tcp(proxy, Duration::from_secs(20)).unwrap();
        Self { daemon, proxy }
    }

    /// `http://ADDR` of the mirror.
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// A value of the mirror's `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = client()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The distribution spec's Accept lines, sent separately as skopeo and dockerd do.
pub const ACCEPTS: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A GET with the Accept lines above.
pub fn manifest_get(c: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    let mut r = c.get(url);
    for a in ACCEPTS {
        r = r.header(reqwest::header::ACCEPT, a);
    }
    r
}
