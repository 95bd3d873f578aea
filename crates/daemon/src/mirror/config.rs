//! Mirror settings: which upstream registries exist, how to reach them, and proxy rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use odonata_proto::config::ConfigError;
use odonata_proto::units::parse_duration;
use serde::Deserialize;
use url::Url;

/// The `mirror:` section of dfdaemon.yml (every key optional).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MirrorFile {
    /// Default upstream for requests naming none (`--registry`).
    pub registry: Option<String>,
    /// Upstreams by the name clients use in `?ns=NAME` (e.g. `docker.io`, `127.0.0.1:5000`).
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryFile>,
    /// How long a manifest answer for a tag is reused (`5s`; `0s` turns it off).
    pub tag_cache: Option<String>,
    /// Whether `?ns=HOST` may name a registry not listed; it is then reached over HTTPS.
    pub allow_unlisted: Option<bool>,
    /// Proxy mode: regular expressions of URLs fetched through P2P; the rest pass through.
    pub proxy_rules: Option<Vec<String>>,
    /// Proxy mode: whether HTTPS `CONNECT` is tunnelled (default true).
    pub connect: Option<bool>,
}

/// One upstream in the file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RegistryFile {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    pub url: String,
    /// PEM bundle of extra CA certificates to trust for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Credentials used when the client sends none.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
}

/// A resolved upstream registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySpec {
    /// Its base URL (scheme, host, port; no path).
    pub url: Url,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Configured credentials (user, password).
    pub credentials: Option<(String, String)>,
}

/// Resolved mirror settings.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// Upstream for requests without `?ns=`.
    pub default: Option<RegistrySpec>,
    /// Upstreams by name.
    pub registries: BTreeMap<String, RegistrySpec>,
    /// Reuse time of tag lookups.
    pub tag_cache: Duration,
    /// Whether unlisted `?ns=` hosts are allowed.
    pub allow_unlisted: bool,
    /// Proxy-mode regular expressions (validated).
    pub proxy_rules: Vec<String>,
    /// Whether CONNECT is tunnelled.
    pub connect: bool,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            default: None,
            registries: BTreeMap::new(),
            tag_cache: Duration::from_secs(5),
            allow_unlisted: true,
            proxy_rules: Vec::new(),
            connect: true,
        }
    }
}

/// Docker Hub's names all lead to the host that actually serves the v2 API.
pub(crate) fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        h => h,
    }
}

/// Parses an upstream URL: http(s), a host, nothing after it.
pub fn parse_registry_url(s: &str) -> Result<Url, ConfigError> {
    let bad = |why: &str| ConfigError::Invalid(format!("registry URL '{s}' {why}"));
    let mut u = Url::parse(s.trim()).map_err(|e| bad(&format!("does not parse: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?;
    let canon = canonical_host(host).to_owned();
    if canon != host {
        u.set_host(Some(&canon)).map_err(|e| bad(&e.to_string()))?;
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
        return Err(bad(
            "must name only scheme, host and port (no path or query)",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "must not carry credentials (use username/password keys)",
        ));
    }
    u.set_path("");
    Ok(u)
}

fn spec(name: &str, f: &RegistryFile) -> Result<RegistrySpec, ConfigError> {
    let url = parse_registry_url(&f.url)?;
    if let Some(ca) = &f.ca_file {
        if !ca.is_file() {
            return Err(ConfigError::Invalid(format!(
                "registry '{name}': ca_file {} does not exist",
                ca.display()
            )));
        }
    }
    let credentials = match (&f.username, &f.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "registry '{name}': username and password go together"
            )))
        }
    };
    Ok(RegistrySpec {
        url,
        ca_file: f.ca_file.clone(),
        credentials,
    })
}

impl MirrorConfig {
    /// Merges the file's `mirror:` section with the `--registry` flag, then validates.
    pub fn resolve(
        file: Option<&MirrorFile>,
        registry_flag: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let empty = MirrorFile::default();
        let file = file.unwrap_or(&empty);
        let mut registries = BTreeMap::new();
        for (name, r) in &file.registries {
            if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!(
                    "registry name '{name}' must be a host[:port] as clients write it"
                )));
            }
            registries.insert(name.clone(), spec(name, r)?);
        }
        let default = match registry_flag.or(file.registry.as_deref()) {
            None => None,
            // A listed name picks that entry, with its CA and credentials.
            Some(s) => match registries.get(s) {
                Some(r) => Some(r.clone()),
                None => Some(RegistrySpec {
                    url: parse_registry_url(s)?,
                    ca_file: None,
                    credentials: None,
                }),
            },
        };
        let tag_cache = match &file.tag_cache {
            Some(s) => parse_duration(s).map_err(|e| ConfigError::Invalid(e.to_string()))?,
            None => Duration::from_secs(5),
        };
        let proxy_rules = file.proxy_rules.clone().unwrap_or_default();
        for r in &proxy_rules {
            regex::Regex::new(r).map_err(|e| {
                ConfigError::Invalid(format!(
                    "proxy rule '{r}' is not a regular expression: {}",
                    e.to_string().lines().last().unwrap_or_default()
                ))
            })?;
        }
        Ok(Self {
            default,
            registries,
            tag_cache,
            allow_unlisted: file.allow_unlisted.unwrap_or(true),
            proxy_rules,
            connect: file.connect.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls() {
        assert_eq!(
            parse_registry_url("https://index.docker.io")
                .unwrap()
                .as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            parse_registry_url("http://127.0.0.1:5000/")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/"
        );
        for bad in ["ftp://x", "http://h/v2/", "nope", "http://u:p@h"] {
            assert!(parse_registry_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_file_and_flag() {
        let yaml = "registry: reg.local:5000\nregistries:\n  reg.local:5000: {url: 'http://127.0.0.1:5000', username: u, password: p}\ntag_cache: 0s\nproxy_rules: ['blobs/sha256.*']\n";
        let f: MirrorFile = serde_yaml_ng::from_str(yaml).unwrap();
        let c = MirrorConfig::resolve(Some(&f), None).unwrap();
        let d = c.default.unwrap();
        assert_eq!(d.url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(d.credentials, Some(("u".into(), "p".into())));
        assert_eq!(c.tag_cache, Duration::ZERO);
        let c = MirrorConfig::resolve(Some(&f), Some("https://other")).unwrap();
        assert_eq!(c.default.unwrap().url.as_str(), "https://other/");
        let f: MirrorFile = serde_yaml_ng::from_str("proxy_rules: ['(']").unwrap();
        let e = MirrorConfig::resolve(Some(&f), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxy rule '('"), "{e}");
        let f: MirrorFile =
            serde_yaml_ng::from_str("registries: {a: {url: 'http://a', username: u}}").unwrap();
        assert!(MirrorConfig::resolve(Some(&f), None).is_err());
        assert!(serde_yaml_ng::from_str::<MirrorFile>("bogus: 1").is_err());
    }
}
