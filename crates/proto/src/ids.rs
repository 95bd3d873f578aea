//! Task and peer identities.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use url::Url;

/// Identity of one piece of content in the swarm: a sha256 over what makes content differ.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// The id as 64 lower-case hex characters (safe as a file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a task id received from the network or a file name.
    pub fn parse(s: &str) -> Result<Self, TaskKeyError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(TaskKeyError::BadTaskId(s.chars().take(80).collect()))
        }
    }
}

impl TaskId {
    /// The id of content named by an explicit identity instead of its URL (for OCI blobs
    /// `oci-blob:sha256:HEX`), so the same content reached by different URLs is one task.
    /// Peers and supernodes must both use this rule for the identity they exchange.
    pub fn for_identity(identity: &str) -> Result<Self, TaskKeyError> {
        if identity.is_empty() || identity.len() > 512 || identity.chars().any(char::is_control) {
            return Err(TaskKeyError::BadIdentity(
                identity.chars().take(80).collect(),
            ));
        }
        let mut h = Sha256::new();
        // A different prefix from URL ids, so an identity can never collide with a URL.
        h.update(b"identity\0");
        h.update(identity.as_bytes());
        Ok(TaskId(hex::encode(h.finalize())))
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskKeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(t: TaskId) -> String {
        t.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0[..12])
    }
}

/// Identity of one peer (one dfdaemon or in-process dfget) in the swarm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub String);

impl PeerId {
    /// A fresh id: host name plus a random suffix, readable in logs.
    pub fn generate(host: &str, random: u64) -> Self {
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .take(48)
            .collect();
        Self(format!("{host}-{random:016x}"))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a task could not be identified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskKeyError {
    /// The URL does not parse.
    #[error("malformed URL '{url}': {reason}")]
    BadUrl {
        /// The offending URL (cut to 200 characters).
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// A scheme we have no source client for.
    #[error("unsupported URL scheme '{0}' (use http, https or file)")]
    Scheme(String),
    /// A task id that is not 64 hex characters.
    #[error("malformed task id '{0}'")]
    BadTaskId(String),
    /// An explicit task identity that is empty, too long or has control characters.
    #[error("malformed task identity '{0}' (1..=512 printable characters)")]
    BadIdentity(String),
}

/// What decides task identity: the URL with filtered query parameters removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKey {
    /// The URL as the source will be asked for it.
    pub url: Url,
    /// The URL with filtered query parameters removed, as identity.
    pub canonical: String,
    /// An explicit identity that names the content instead of the URL (see
    /// [`TaskId::for_identity`]); set with [`TaskKey::with_identity`].
    pub identity: Option<String>,
}

impl TaskKey {
    /// Parses and validates `url`; query parameters named in `filter` do not change the id.
    pub fn new(url: &str, filter: &[String]) -> Result<Self, TaskKeyError> {
        let parsed = Url::parse(url.trim()).map_err(|e| TaskKeyError::BadUrl {
            url: url.chars().take(200).collect(),
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "http" | "https" => {}
            // A local path on the supernode, served only from its configured roots.
            "file" if parsed.host_str().is_none_or(str::is_empty) => {}
            other => return Err(TaskKeyError::Scheme(other.to_owned())),
        }
        if parsed.scheme() != "file" && parsed.host_str().is_none_or(str::is_empty) {
            return Err(TaskKeyError::BadUrl {
                url: url.chars().take(200).collect(),
                reason: "no host".into(),
            });
        }
        let mut canonical = parsed.clone();
        canonical.set_fragment(None);
        if !filter.is_empty() && parsed.query().is_some() {
            let kept: Vec<(String, String)> = parsed
                .query_pairs()
                .filter(|(k, _)| !filter.iter().any(|f| f == k))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if kept.is_empty() {
                canonical.set_query(None);
            } else {
                canonical.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        Ok(Self {
            url: parsed,
            canonical: canonical.to_string(),
            identity: None,
        })
    }

    /// The same key named by an explicit identity (e.g. `oci-blob:sha256:HEX`): its id
    /// no longer depends on the URL, which stays what the source is asked for.
    pub fn with_identity(mut self, identity: &str) -> Result<Self, TaskKeyError> {
        TaskId::for_identity(identity)?;
        self.identity = Some(identity.to_owned());
        Ok(self)
    }

    /// The task id: from the explicit identity when set, else sha256 of the canonical URL.
    pub fn id(&self) -> TaskId {
        if let Some(id) = self
            .identity
            .as_deref()
            .and_then(|i| TaskId::for_identity(i).ok())
        {
            return id;
        }
        let mut h = Sha256::new();
        h.update(b"url\0");
        h.update(self.canonical.as_bytes());
        TaskId(hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_removes_query_params_from_identity() {
        let a = TaskKey::new("http://h/f?sig=1&x=2", &["sig".into()]).unwrap();
        let b = TaskKey::new("http://h/f?sig=9&x=2", &["sig".into()]).unwrap();
        let c = TaskKey::new("http://h/f?sig=9&x=3", &["sig".into()]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        // The source still gets the full URL.
        assert_eq!(a.url.as_str(), "http://h/f?sig=1&x=2");
    }

    #[test]
    fn rejects_bad_urls_clearly() {
        let e = TaskKey::new("htp:/x", &[]).unwrap_err();
        assert!(e.to_string().contains("unsupported URL scheme"), "{e}");
        let e = TaskKey::new("not a url", &[]).unwrap_err();
        assert!(e.to_string().starts_with("malformed URL"), "{e}");
        assert!(TaskKey::new("http://", &[]).is_err());
    }

    #[test]
    fn explicit_identity_ignores_url() {
        let a = TaskId::for_identity("oci-blob:sha256:ab").unwrap();
        assert_eq!(a, TaskId::for_identity("oci-blob:sha256:ab").unwrap());
        assert_ne!(a, TaskId::for_identity("oci-blob:sha256:cd").unwrap());
        assert_ne!(
            a,
            TaskKey::new("http://h/oci-blob:sha256:ab", &[])
                .unwrap()
                .id()
        );
        assert!(TaskId::for_identity("").is_err());
        assert!(TaskId::for_identity("a\nb").is_err());
        assert!(TaskId::for_identity(&"x".repeat(513)).is_err());
        let k = TaskKey::new("http://h/v2/r/blobs/sha256:ab", &[])
            .unwrap()
            .with_identity("oci-blob:sha256:ab")
            .unwrap();
        assert_eq!(k.id(), a);
        assert_eq!(k.url.as_str(), "http://h/v2/r/blobs/sha256:ab");
    }

    #[test]
    fn task_id_parse_roundtrip() {
        let id = TaskKey::new("http://h/f", &[]).unwrap().id();
        assert_eq!(TaskId::parse(id.as_str()).unwrap(), id);
        assert!(TaskId::parse("../etc/passwd").is_err());
    }
}
