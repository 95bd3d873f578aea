//! Placing outputs: atomically, verified, never half-written.
//!
//! Every output is first written to a temporary file beside it and renamed into place only
//! when complete and (if asked) digest-checked, so a crash or error leaves no output at all.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use odonata_proto::digest::Hasher;
use odonata_proto::Digest;
use odonata_source::HttpSource;
use odonata_storage::TaskData;
use odonata_transfer::Limiter;
use tokio::sync::mpsc;
use url::Url;

use crate::api::{DownloadRequest, Event};
use crate::engine::DownloadError;
use crate::range::ByteRange;

/// Refuses outputs that cannot be written, before any byte is fetched.
pub(crate) fn check_output(output: &Path) -> Result<(), DownloadError> {
    if !output.is_absolute() {
        return Err(DownloadError::BadRequest(format!(
            "output path '{}' must be absolute",
            output.display()
        )));
    }
    if output.is_dir() {
        return Err(DownloadError::BadRequest(format!(
            "output '{}' is a directory",
            output.display()
        )));
    }
    let dir = output.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(DownloadError::BadRequest(format!(
            "output directory '{}' does not exist",
            dir.display()
        )));
    }
    if output.file_name().is_none() {
        return Err(DownloadError::BadRequest(format!(
            "output '{}' names no file",
            output.display()
        )));
    }
    Ok(())
}

/// A temporary file beside `output`, removed on drop unless persisted.
struct TempOut {
    path: PathBuf,
    keep: bool,
}

impl TempOut {
    fn new(output: &Path) -> Self {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = output.with_file_name(format!(
            ".{name}.odonata-tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        Self { path, keep: false }
    }

    fn persist(mut self, output: &Path) -> Result<(), DownloadError> {
        fs::rename(&self.path, output).map_err(|e| {
            DownloadError::Io(format!(
                "moving output into place at {}: {e}",
                output.display()
            ))
        })?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Compares a finished hash with the digest the user asked for.
fn check_digest(h: Hasher, want: &Digest) -> Result<(), DownloadError> {
    let got = h.finish();
    if &got == want {
        Ok(())
    } else {
        Err(DownloadError::Digest {
            expected: want.to_string(),
            actual: got.to_string(),
        })
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DownloadError {
    DownloadError::Io(format!("{what} {}: {e}", path.display()))
}

/// Links (or copies) a complete task to `output`, after
/// checking the whole-file digest when one is given. Returns the byte count.
pub(crate) fn export(
    data: &TaskData,
    output: &Path,
    digest: Option<&Digest>,
) -> Result<u64, DownloadError> {
    let len = data.layout().content_length.unwrap_or(0);
    if let Some(want) = digest {
        let mut h = want.hasher();
        let mut buf = vec![0u8; 4 << 20];
        let mut off = 0u64;
        while off < len {
            let n = buf.len().min((len - off) as usize);
            data.read_at(&mut buf[..n], off)
                .map_err(|e| DownloadError::Io(e.to_string()))?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        check_digest(h, want)?;
    }
    let tmp = TempOut::new(output);
    // A hard link costs no copy and no second write of the file, as Dragonfly does; the
    // store never writes into a complete task's file again, and unlinks (never truncates)
    // it when the task is replaced. Another file system, or one without links: copy
    // (std::fs::copy uses copy_file_range, which shares extents on btrfs/XFS).
    let linked = fs::metadata(data.data_path()).is_ok_and(|m| m.len() == len)
        && fs::hard_link(data.data_path(), &tmp.path).is_ok();
    if linked {
        data.sync_data()
            .map_err(|e| DownloadError::Io(e.to_string()))?;
    } else {
        fs::copy(data.data_path(), &tmp.path).map_err(|e| io_err("writing", &tmp.path, e))?;
        let f = OpenOptions::new()
            .write(true)
            .open(&tmp.path)
            .map_err(|e| io_err("opening", &tmp.path, e))?;
        f.set_len(len).map_err(|e| io_err("sizing", &tmp.path, e))?;
        f.sync_all().map_err(|e| io_err("syncing", &tmp.path, e))?;
    }
    tmp.persist(output)?;
    Ok(len)
}

/// Copies the byte range `range` of a complete task to `output`, checking `digest`
/// (if given) against those bytes. Returns the byte count.
pub(crate) fn export_range(
    data: &TaskData,
    output: &Path,
    range: ByteRange,
    digest: Option<&Digest>,
) -> Result<u64, DownloadError> {
    let len = data.layout().content_length.unwrap_or(0);
    let (start, end) = range.within(len).map_err(DownloadError::BadRequest)?;
    let tmp = TempOut::new(output);
    let mut file = File::create(&tmp.path).map_err(|e| io_err("creating", &tmp.path, e))?;
    let mut h = digest.map(Digest::hasher);
    let mut buf = vec![0u8; 4 << 20];
    let mut off = start;
    while off < end {
        let n = buf.len().min((end - off) as usize);
        data.read_at(&mut buf[..n], off)
            .map_err(|e| DownloadError::Io(e.to_string()))?;
        if let Some(h) = h.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n])
            .map_err(|e| io_err("writing", &tmp.path, e))?;
        off += n as u64;
    }
    if let (Some(h), Some(want)) = (h, digest) {
        check_digest(h, want)?;
    }
    file.sync_all()
        .map_err(|e| io_err("syncing", &tmp.path, e))?;
    drop(file);
    tmp.persist(output)?;
    Ok(end - start)
}

/// Downloads straight from the source into `req.output` (the fallback path).
pub(crate) async fn from_source(
    source: &HttpSource,
    url: &Url,
    req: &DownloadRequest,
    limits: &[Limiter],
    events: &mpsc::Sender<Event>,
    counter: &AtomicU64,
) -> Result<u64, DownloadError> {
    let mut headers = req.headers.clone();
    if let Some(r) = req.range {
        headers.push(odonata_proto::messages::Header {
            name: "Range".into(),
            value: r.header_value(),
        });
    }
    let mut resp = source
        .get(url, &headers, None)
        .await
        .map_err(|e| DownloadError::Source {
            status: e.status(),
            message: e.to_string(),
        })?;
    // With --range: the span wanted, and how much of the body to skip when the source
    // ignored the Range header and sent the whole file.
    let (mut skip, total) = match (req.range, resp.content_length) {
        (Some(r), Some(len)) => {
            let (start, end) = r.within(len).map_err(DownloadError::BadRequest)?;
            let skip = if resp.partial { 0 } else { start };
            (skip, Some(end - start))
        }
        (Some(r), None) if !resp.partial => (r.start, r.end.map(|e| e + 1 - r.start)),
        (Some(r), None) => (0, r.end.map(|e| e + 1 - r.start)),
        (None, len) => (0, len),
    };
    let tmp = TempOut::new(&req.output);
    let mut file = File::create(&tmp.path).map_err(|e| io_err("creating", &tmp.path, e))?;
    let mut hasher = req.digest.as_ref().map(Digest::hasher);
    let mut done = 0u64;
    let mut last_event = std::time::Instant::now();
    while let Some(chunk) = resp.chunk().await.map_err(|e| DownloadError::Source {
        status: None,
        message: e.to_string(),
    })? {
        let mut chunk = chunk;
        if skip > 0 {
            let n = (skip as usize).min(chunk.len());
            skip -= n as u64;
            let _ = chunk.split_to(n);
        }
        if let Some(t) = total {
            chunk.truncate(
                usize::try_from(t - done)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len()),
            );
        }
        if chunk.is_empty() {
            if total.is_some_and(|t| done >= t) {
                break;
            }
            continue;
        }
        odonata_transfer::acquire(limits, chunk.len()).await;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        // Small synchronous writes into the page cache; not worth a thread hop each.
        file.write_all(&chunk)
            .map_err(|e| io_err("writing", &tmp.path, e))?;
        done += chunk.len() as u64;
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if last_event.elapsed().as_millis() >= 250 {
            last_event = std::time::Instant::now();
            if events.send(Event::Progress { done, total }).await.is_err() {
                return Err(DownloadError::Cancelled);
            }
        }
    }
    if let Some(t) = total.filter(|t| *t != done) {
        return Err(DownloadError::Source {
            status: None,
            message: format!("source {url} sent {done} bytes but announced {t}"),
        });
    }
    if let (Some(h), Some(want)) = (hasher, req.digest.as_ref()) {
        check_digest(h, want)?;
    }
    file.sync_all()
        .map_err(|e| io_err("syncing", &tmp.path, e))?;
    drop(file);
    let _ = events.send(Event::Progress { done, total }).await;
    if events.is_closed() {
        return Err(DownloadError::Cancelled);
    }
    tmp.persist(&req.output)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use odonata_proto::{PieceDigest, PieceLayout, TaskKey};
    use odonata_storage::{Store, TaskMeta};

    use super::*;

    fn complete_task(store: &Store, body: &[u8]) -> std::sync::Arc<TaskData> {
        let t = store
            .prepare(TaskMeta {
                task_id: TaskKey::new("http://h/f", &[]).unwrap().id(),
                url: "http://h/f".into(),
                layout: PieceLayout {
                    piece_size: 1024,
                    content_length: Some(body.len() as u64),
                },
            })
            .unwrap();
        for (i, chunk) in body.chunks(1024).enumerate() {
            t.write_piece(i as u32, chunk, PieceDigest::of(chunk))
                .unwrap();
        }
        assert!(t.is_complete());
        t
    }

    #[test]
    fn export_links_the_data_file_and_checks_the_digest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        let body: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let t = complete_task(&store, &body);
        let out = dir.path().join("out.bin");
        std::fs::write(&out, b"old contents").unwrap();
        let wrong: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        assert!(matches!(
            export(&t, &out, Some(&wrong)),
            Err(DownloadError::Digest { .. })
        ));
        assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
        assert_eq!(export(&t, &out, None).unwrap(), body.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap(), body);
        // One inode for the cache and the output: no copy, no second write of the file.
        let (a, b) = (
            std::fs::metadata(t.data_path()).unwrap(),
            std::fs::metadata(&out).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("odonata-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
