//! Which part of the OCI distribution API a request path names.

/// A parsed registry request path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/` (API version check).
    Ping,
    /// `/v2/NAME/manifests/REFERENCE`.
    Manifest {
        /// Repository name.
        repo: String,
        /// Tag or digest.
        reference: String,
    },
    /// `/v2/NAME/blobs/DIGEST`.
    Blob {
        /// Repository name.
        repo: String,
        /// `ALGO:HEX`.
        digest: String,
    },
    /// `/v2/NAME/tags/list`.
    Tags {
        /// Repository name.
        repo: String,
    },
}

/// Why a path is not a pull request of the API.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// Not under `/v2/`, or not an endpoint a mirror serves.
    #[error("'{0}' is not a registry pull endpoint")]
    Unknown(String),
    /// A repository name outside the distribution spec's grammar.
    #[error("repository name '{0}' is invalid")]
    Name(String),
    /// A tag or digest outside the spec's grammar.
    #[error("reference '{0}' is invalid")]
    Reference(String),
}

fn cut(s: &str) -> String {
    s.chars().take(120).collect()
}

/// `[a-z0-9]+([._-][a-z0-9]+)*` components joined by `/` (separators `.`, `_`, `__`, `-`+).
fn valid_repo(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `algorithm:encoded` as the spec allows.
pub(crate) fn valid_digest(d: &str) -> bool {
    let Some((algo, enc)) = d.split_once(':') else {
        return false;
    };
    !algo.is_empty()
        && algo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && enc.len() >= 32
        && enc.len() <= 256
        && enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

/// The lower-case hex of a `sha256:` digest, when the digest is one.
pub(crate) fn sha256_hex(d: &str) -> Option<[u8; 32]> {
    let hex = d.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// Parses the path of a request to the mirror.
pub(crate) fn parse(path: &str) -> Result<Route, RouteError> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Ping);
    }
    let rest = path
        .strip_prefix("/v2/")
        .ok_or_else(|| RouteError::Unknown(cut(path)))?;
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return if valid_repo(repo) {
            Ok(Route::Tags { repo: repo.into() })
        } else {
            Err(RouteError::Name(cut(repo)))
        };
    }
    for (marker, is_blob) in [("/manifests/", false), ("/blobs/", true)] {
        if let Some(i) = rest.rfind(marker) {
            let repo = &rest[..i];
            let reference = &rest[i + marker.len()..];
            if !valid_repo(repo) {
                return Err(RouteError::Name(cut(repo)));
            }
            let ok = valid_digest(reference) || (!is_blob && valid_tag(reference));
            if !ok {
                return Err(RouteError::Reference(cut(reference)));
            }
            return Ok(if is_blob {
                Route::Blob {
                    repo: repo.into(),
                    digest: reference.into(),
                }
            } else {
                Route::Manifest {
                    repo: repo.into(),
                    reference: reference.into(),
                }
            });
        }
    }
    Err(RouteError::Unknown(cut(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/").unwrap(), Route::Ping);
        assert_eq!(
            parse("/v2/library/alpine/manifests/3.19").unwrap(),
            Route::Manifest {
                repo: "library/alpine".into(),
                reference: "3.19".into()
            }
        );
        assert_eq!(
            parse(&format!("/v2/a/b-c/blobs/{D}")).unwrap(),
            Route::Blob {
                repo: "a/b-c".into(),
                digest: D.into()
            }
        );
        assert_eq!(
            parse("/v2/x/tags/list").unwrap(),
            Route::Tags { repo: "x".into() }
        );
        // A repository may itself contain "manifests".
        assert!(matches!(
            parse("/v2/manifests/manifests/latest").unwrap(),
            Route::Manifest { .. }
        ));
    }

    #[test]
    fn refusals() {
        assert!(matches!(parse("/"), Err(RouteError::Unknown(_))));
        assert!(matches!(
            parse("/v2/../etc/manifests/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            parse("/v2/A/manifests/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/latest"),
            Err(RouteError::Reference(_))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/-x"),
            Err(RouteError::Reference(_))
        ));
        assert!(matches!(parse("/v2/a/b"), Err(RouteError::Unknown(_))));
        assert!(sha256_hex(D).is_some());
        assert!(sha256_hex("sha512:00").is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_path_parses_or_is_refused(p in "(/v2/)?[a-zA-Z0-9:/._-]{0,80}", raw in ".{0,80}") {
            for path in [p, raw] {
                if let Ok(Route::Blob { repo, digest }) = parse(&path) {
                    proptest::prop_assert!(valid_repo(&repo) && valid_digest(&digest));
                    proptest::prop_assert!(!repo.contains(".."));
                }
            }
        }
    }
}
