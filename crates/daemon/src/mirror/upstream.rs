//! The upstream registries a mirror request may go to, and how headers cross to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use url::Url;

use super::config::{canonical_host, MirrorConfig, RegistrySpec};
use super::MirrorError;

/// One upstream registry and its HTTP client.
pub(crate) struct Upstream {
    /// The name requests use for it (`?ns=` value, or `default`).
    pub(crate) name: String,
    /// Base URL (scheme, host, port).
    pub(crate) base: Url,
    /// Client trusting the upstream's CA bundle, if one was given.
    pub(crate) http: reqwest::Client,
    /// Configured credentials, used when a client sends none.
    pub(crate) credentials: Option<(String, String)>,
}

impl Upstream {
    /// The upstream URL of an API path (`/v2/...`) with the client's query minus `ns`.
    pub(crate) fn url(&self, path: &str, query: Option<&str>) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        let kept: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| k != "ns")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if !kept.is_empty() {
            u.query_pairs_mut().extend_pairs(kept);
        }
        u
    }
}

/// Builds a client for one upstream.
pub(crate) fn client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, MirrorError> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        // Storage redirects are followed here; reqwest drops Authorization across hosts.
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            MirrorError::Config(format!("reading CA bundle {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            MirrorError::Config(format!("CA bundle {} is not PEM: {e}", path.display()))
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| MirrorError::Config(format!("building the upstream client: {e}")))
}

/// All upstreams, listed and (when allowed) discovered from `?ns=`.
pub(crate) struct Upstreams {
    default: Option<Arc<Upstream>>,
    named: HashMap<String, Arc<Upstream>>,
    allow_unlisted: bool,
    unlisted: Mutex<HashMap<String, Arc<Upstream>>>,
    plain: reqwest::Client,
}

fn make(name: &str, spec: &RegistrySpec) -> Result<Arc<Upstream>, MirrorError> {
    Ok(Arc::new(Upstream {
        name: name.to_owned(),
        base: spec.url.clone(),
        http: client(spec.ca_file.as_deref())?,
        credentials: spec.credentials.clone(),
    }))
}

impl Upstreams {
    /// Builds clients for every configured upstream.
    pub(crate) fn new(cfg: &MirrorConfig) -> Result<Self, MirrorError> {
        let default = cfg
            .default
            .as_ref()
            .map(|s| make("default", s))
            .transpose()?;
        let mut named = HashMap::new();
        for (name, spec) in &cfg.registries {
            named.insert(name.clone(), make(name, spec)?);
        }
        Ok(Self {
            default,
            named,
            allow_unlisted: cfg.allow_unlisted,
            unlisted: Mutex::new(HashMap::new()),
            plain: client(None)?,
        })
    }

    /// The upstream for a request: `?ns=NAME` if given, else the default.
    pub(crate) fn pick(&self, ns: Option<&str>) -> Result<Arc<Upstream>, MirrorError> {
        let Some(ns) = ns.filter(|n| !n.is_empty()) else {
            return self.default.clone().ok_or(MirrorError::NoUpstream);
        };
        if let Some(u) = self.named.get(ns) {
            return Ok(u.clone());
        }
        // The default may be the registry named: same host and port.
        if let Some(d) = &self.default {
            let host = canonical_host(ns.split(':').next().unwrap_or(ns));
            let same_host = d.base.host_str() == Some(host);
            let port_ok = match ns.split_once(':') {
                Some((_, p)) => {
                    d.base.port_or_known_default().map(|x| x.to_string()) == Some(p.to_owned())
                }
                None => true,
            };
            if same_host && port_ok {
                return Ok(d.clone());
            }
        }
        if !self.allow_unlisted {
            return Err(MirrorError::UnknownRegistry(ns.chars().take(100).collect()));
        }
        let mut unlisted = self.unlisted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = unlisted.get(ns) {
            return Ok(u.clone());
        }
        let host = match ns.split_once(':') {
            Some((h, p)) => format!("{}:{p}", canonical_host(h)),
            None => canonical_host(ns).to_owned(),
        };
        let base = Url::parse(&format!("https://{host}"))
            .ok()
            .filter(|u| u.path() == "/" && u.host_str().is_some())
            .ok_or_else(|| MirrorError::UnknownRegistry(ns.chars().take(100).collect()))?;
        let up = Arc::new(Upstream {
            name: ns.to_owned(),
            base,
            http: self.plain.clone(),
            credentials: None,
        });
        // Bounded: a client naming endless hosts must not grow this without limit.
        if unlisted.len() < 256 {
            unlisted.insert(ns.to_owned(), up.clone());
        }
        Ok(up)
    }
}

/// Headers that belong to one connection and never cross a proxy.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The client's headers as the upstream should get them: every line kept (repeated
/// `Accept` lines stay separate), minus hop-by-hop ones, `Host` and body framing.
pub(crate) fn to_upstream(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in client {
        if hop_by_hop(k) || k == header::HOST || k == header::CONTENT_LENGTH {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// The upstream's headers as the client should get them, `Content-Length` kept exactly.
pub(crate) fn to_client(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in upstream {
        if hop_by_hop(k) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_is_stripped_and_other_params_kept() {
        let up = Upstream {
            name: "x".into(),
            base: Url::parse("http://127.0.0.1:5000").unwrap(),
            http: reqwest::Client::new(),
            credentials: None,
        };
        assert_eq!(
            up.url("/v2/a/tags/list", Some("ns=docker.io&n=10"))
                .as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?n=10"
        );
        assert_eq!(
            up.url("/v2/", Some("ns=docker.io")).as_str(),
            "http://127.0.0.1:5000/v2/"
        );
    }

    #[test]
    fn picks_by_ns() {
        let mut cfg = MirrorConfig {
            default: Some(RegistrySpec {
                url: Url::parse("https://registry-1.docker.io").unwrap(),
                ca_file: None,
                credentials: None,
            }),
            ..MirrorConfig::default()
        };
        let ups = Upstreams::new(&cfg).unwrap();
        assert_eq!(ups.pick(None).unwrap().name, "default");
        assert_eq!(ups.pick(Some("docker.io")).unwrap().name, "default");
        let q = ups.pick(Some("quay.io")).unwrap();
        assert_eq!(q.base.as_str(), "https://quay.io/");
        cfg.allow_unlisted = false;
        let ups = Upstreams::new(&cfg).unwrap();
        assert!(ups.pick(Some("quay.io")).is_err());
        assert!(ups.pick(Some("a b")).is_err());
    }

    #[test]
    fn repeated_accept_lines_survive() {
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT, "a/b".parse().unwrap());
        h.append(header::ACCEPT, "c/d".parse().unwrap());
        h.insert(header::HOST, "127.0.0.1:65001".parse().unwrap());
        h.insert(header::CONNECTION, "close".parse().unwrap());
        let o = to_upstream(&h);
        assert_eq!(o.get_all(header::ACCEPT).iter().count(), 2);
        assert!(o.get(header::HOST).is_none() && o.get(header::CONNECTION).is_none());
    }
}
