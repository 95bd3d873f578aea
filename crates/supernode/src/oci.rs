//! Just enough of the OCI distribution API for preheat: resolve an image reference to the
//! blob URLs of its config and layers (following an index to the linux/amd64 manifest, or
//! the first one).

use odonata_proto::messages::Header;
use serde::Deserialize;

use crate::service::Supernode;

/// Largest manifest we read.
const MANIFEST_LIMIT: usize = 4 << 20;

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// `HOST[:PORT]/REPO[:TAG|@DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub(crate) scheme: &'static str,
    pub(crate) host: String,
    pub(crate) repo: String,
    pub(crate) reference: String,
}

impl ImageRef {
    /// Parses a reference; the registry host must be given (no implicit Docker Hub).
    pub(crate) fn parse(s: &str, plain_http: Option<bool>) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "image reference '{}': {why}",
                s.chars().take(200).collect::<String>()
            )
        };
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("expected HOST/REPO[:TAG]"))?;
        if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(
                "the registry host must come first, e.g. 127.0.0.1:5000/app:v1",
            ));
        }
        let (repo, reference) = if let Some((r, d)) = rest.split_once('@') {
            (r, d.to_owned())
        } else {
            match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_owned()),
                _ => (rest, "latest".to_owned()),
            }
        };
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repo.is_empty() || !repo.chars().all(ok) {
            return Err(bad("invalid repository name"));
        }
        let ref_ok = |c: char| c.is_ascii_alphanumeric() || "._-:+".contains(c);
        if reference.is_empty() || !reference.chars().all(ref_ok) {
            return Err(bad("invalid tag or digest"));
        }
        let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback =
            hostname == "localhost" || hostname.starts_with("127.") || hostname == "[::1]";
        let scheme = if plain_http.unwrap_or(loopback) {
            "http"
        } else {
            "https"
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            repo: repo.to_owned(),
            reference,
        })
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{reference}",
            self.scheme, self.host, self.repo
        )
    }

    fn blob_url(&self, digest: &str) -> String {
        format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme, self.host, self.repo
        )
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// Present in an index / manifest list.
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn valid_digest(d: &str) -> bool {
    d.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty()
            && !hex.is_empty()
            && alg.chars().all(|c| c.is_ascii_alphanumeric())
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

async fn fetch_manifest(
    node: &Supernode,
    url: &str,
    headers: &[Header],
) -> Result<Manifest, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("manifest URL {url}: {e}"))?;
    let mut h = headers.to_vec();
    h.push(Header {
        name: "Accept".into(),
        value: ACCEPT.into(),
    });
    let mut resp = node
        .source()
        .get(&parsed, &h, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&c);
        if body.len() > MANIFEST_LIMIT {
            return Err(format!(
                "manifest {url} is larger than {MANIFEST_LIMIT} bytes"
            ));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("manifest {url} is not valid JSON: {e}"))
}

/// The blob URLs (config first, then layers) of the image.
pub(crate) async fn blob_urls(
    node: &Supernode,
    img: &ImageRef,
    headers: &[Header],
) -> Result<Vec<String>, String> {
    let mut m = fetch_manifest(node, &img.manifest_url(&img.reference), headers).await?;
    if !m.manifests.is_empty() {
        let pick = m
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or_else(|| m.manifests.first())
            .map(|d| d.digest.clone())
            .unwrap_or_default();
        if !valid_digest(&pick) {
            return Err(format!("index of {} names a malformed digest", img.repo));
        }
        m = fetch_manifest(node, &img.manifest_url(&pick), headers).await?;
    }
    let mut urls = Vec::new();
    for d in m.config.iter().chain(m.layers.iter()) {
        if !valid_digest(&d.digest) {
            return Err(format!(
                "manifest of {} names a malformed digest '{}'",
                img.repo,
                d.digest.chars().take(80).collect::<String>()
            ));
        }
        urls.push(img.blob_url(&d.digest));
    }
    if urls.is_empty() {
        return Err(format!("manifest of {} lists no layers", img.repo));
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = ImageRef::parse("127.0.0.1:5000/lib/app:v1", None).unwrap();
        assert_eq!(
            (
                r.scheme,
                r.host.as_str(),
                r.repo.as_str(),
                r.reference.as_str()
            ),
            ("http", "127.0.0.1:5000", "lib/app", "v1")
        );
        let r = ImageRef::parse("reg.example.com/app", None).unwrap();
        assert_eq!((r.scheme, r.reference.as_str()), ("https", "latest"));
        let r = ImageRef::parse("localhost:5000/app@sha256:abcd", None).unwrap();
        assert_eq!(r.reference, "sha256:abcd");
        assert!(ImageRef::parse("app:v1", None).is_err());
        assert!(ImageRef::parse("reg.io/App", None).is_err());
        assert!(ImageRef::parse("reg.io/app:../../x", None).is_err());
    }
}
