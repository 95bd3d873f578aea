//! `file://` sources: a local path on the host running the client, readable only under
//! configured root directories (a peer must not be able to make the supernode read and
//! publish arbitrary local files). The ETag is the file's length and modification time, so
//! revalidation and resume work as for HTTP.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use url::Url;

use crate::{Body, Conditions, Fetched, SourceError, SourceResponse};

const CHUNK: usize = 256 << 10;

/// Reads `file://` URLs under a set of root directories.
#[derive(Clone, Debug, Default)]
pub struct FileSource {
    roots: Vec<PathBuf>,
}

/// The next chunk of a file body; None at its end.
pub(crate) async fn read_chunk(f: &mut tokio::fs::File) -> std::io::Result<Option<Bytes>> {
    let mut buf = BytesMut::zeroed(CHUNK);
    let n = f.read(&mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some(buf.freeze()))
}

impl FileSource {
    /// A file source allowed to read under `roots` (none: every file URL is refused).
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self { roots }
    }

    fn allowed(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| {
            std::fs::canonicalize(r)
                .map(|r| path.starts_with(r))
                .unwrap_or(false)
        })
    }

    /// Opens `url` (from `cond.from` on), or answers not-modified when the ETag matches.
    pub async fn open(&self, url: &Url, cond: &Conditions) -> Result<Fetched, SourceError> {
        let name = url.to_string();
        let not_allowed = |detail: &str| SourceError::NotAllowed {
            url: name.clone(),
            detail: detail.to_owned(),
        };
        if self.roots.is_empty() {
            return Err(not_allowed(
                "file:// sources are off here (configure file_roots)",
            ));
        }
        let path = url
            .to_file_path()
            .map_err(|_| not_allowed("not a local absolute path"))?;
        let status = |code: http::StatusCode| SourceError::Status {
            url: name.clone(),
            status: code,
        };
        // Resolve symlinks and `..` before the root check.
        let real = match tokio::fs::canonicalize(&path).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(status(http::StatusCode::NOT_FOUND))
            }
            Err(e) => {
                return Err(SourceError::Connect {
                    url: name.clone(),
                    detail: e.to_string(),
                })
            }
        };
        if !self.allowed(&real) {
            return Err(not_allowed("outside the configured file_roots"));
        }
        let mut f = tokio::fs::File::open(&real)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => status(http::StatusCode::NOT_FOUND),
                std::io::ErrorKind::PermissionDenied => status(http::StatusCode::FORBIDDEN),
                _ => SourceError::Connect {
                    url: name.clone(),
                    detail: e.to_string(),
                },
            })?;
        let meta = f.metadata().await.map_err(|e| SourceError::Connect {
            url: name.clone(),
            detail: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(not_allowed("not a regular file"));
        }
        let len = meta.len();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let etag = format!("\"{len:x}-{mtime:x}\"");
        if cond.if_none_match.as_deref() == Some(etag.as_str()) {
            return Ok(Fetched::NotModified {
                etag: Some(etag),
                last_modified: None,
            });
        }
        let range_ok = cond.if_range.as_deref().is_none_or(|v| v == etag);
        let from = cond.from.filter(|f| *f > 0 && *f < len && range_ok);
        if let Some(from) = from {
            f.seek(SeekFrom::Start(from))
                .await
                .map_err(|e| SourceError::Body {
                    url: name.clone(),
                    detail: e.to_string(),
                })?;
        }
        Ok(Fetched::Content(Box::new(SourceResponse {
            url: name,
            body: Body::File(f),
            idle: std::time::Duration::from_secs(30),
            content_length: Some(len),
            partial: from.is_some(),
            offset: from.unwrap_or(0),
            etag: Some(etag),
            last_modified: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(f: Fetched) -> (Vec<u8>, SourceResponseInfo) {
        let Fetched::Content(mut r) = f else {
            panic!("expected content")
        };
        let info = SourceResponseInfo {
            partial: r.partial,
            etag: r.etag.clone(),
        };
        let mut out = Vec::new();
        while let Some(c) = r.chunk().await.unwrap() {
            out.extend_from_slice(&c);
        }
        (out, info)
    }

    struct SourceResponseInfo {
        partial: bool,
        etag: Option<String>,
    }

    #[tokio::test]
    async fn reads_resumes_revalidates_and_refuses_outside_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pub");
        std::fs::create_dir_all(&root).unwrap();
        let p = root.join("f.bin");
        std::fs::write(&p, b"0123456789").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        let src = FileSource::new(vec![root.clone()]);
        let url = Url::from_file_path(&p).unwrap();
        let (all, info) = body(src.open(&url, &Conditions::default()).await.unwrap()).await;
        assert_eq!(all, b"0123456789");
        let etag = info.etag.unwrap();
        let cond = Conditions {
            from: Some(4),
            if_range: Some(etag.clone()),
            ..Conditions::default()
        };
        let (rest, info) = body(src.open(&url, &cond).await.unwrap()).await;
        assert!(info.partial);
        assert_eq!(rest, b"456789");
        let cond = Conditions {
            if_none_match: Some(etag),
            ..Conditions::default()
        };
        assert!(matches!(
            src.open(&url, &cond).await.unwrap(),
            Fetched::NotModified { .. }
        ));
        let escape = Url::parse(&format!("file://{}/pub/../secret", dir.path().display())).unwrap();
        let e = src
            .open(&escape, &Conditions::default())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("outside"), "{e}");
        let e = FileSource::default()
            .open(&url, &Conditions::default())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("file_roots"), "{e}");
        let missing = Url::from_file_path(root.join("nope")).unwrap();
        let e = src
            .open(&missing, &Conditions::default())
            .await
            .err()
            .unwrap();
        assert_eq!(e.status(), Some(404));
    }
}
