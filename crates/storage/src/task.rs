//! One task's data file and piece log.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use odonata_proto::{PieceDigest, PieceLayout, TaskId};

use crate::{StorageError, TaskMeta};

const RECORD: usize = 4 + 4 + 32;

pub(crate) fn data_path(root: &Path, id: &TaskId) -> PathBuf {
    root.join("data").join(id.as_str())
}
pub(crate) fn meta_path(root: &Path, id: &TaskId) -> PathBuf {
    root.join("meta").join(format!("{id}.json"))
}
pub(crate) fn log_path(root: &Path, id: &TaskId) -> PathBuf {
    root.join("meta").join(format!("{id}.pieces"))
}

/// A piece held on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldPiece {
    len: u32,
    digest: PieceDigest,
}

/// One task on disk: content file, layout, and which pieces are held and verified.
pub struct TaskData {
    id: TaskId,
    root: PathBuf,
    data_path: PathBuf,
    file: File,
    meta: Mutex<TaskMeta>,
    pieces: Mutex<BTreeMap<u32, HeldPiece>>,
    log: Mutex<File>,
    held_bytes: AtomicU64,
    last_used: AtomicU64,
    /// Pieces dropped by a re-check since the owner last asked (to tell the scheduler).
    lost: Mutex<Vec<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_meta(root: &Path, meta: &TaskMeta) -> Result<(), StorageError> {
    let path = meta_path(root, &meta.task_id);
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(meta)
        .map_err(|e| StorageError::io("encode", &path, std::io::Error::other(e.to_string())))?;
    fs::write(&tmp, body).map_err(|e| StorageError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename", &path, e))
}

/// Replaces the piece log with records of exactly `pieces`; returns it open for appending.
fn rewrite_log(lp: &Path, pieces: &BTreeMap<u32, HeldPiece>) -> Result<File, StorageError> {
    let mut clean = Vec::with_capacity(pieces.len() * RECORD);
    for (num, p) in pieces {
        encode_record(&mut clean, *num, p);
    }
    let tmp = lp.with_extension("pieces.tmp");
    fs::write(&tmp, &clean).map_err(|e| StorageError::io("write", &tmp, e))?;
    fs::rename(&tmp, lp).map_err(|e| StorageError::io("rename", lp, e))?;
    OpenOptions::new()
        .append(true)
        .open(lp)
        .map_err(|e| StorageError::io("open", lp, e))
}

impl TaskData {
    pub(crate) fn create(root: &Path, meta: TaskMeta) -> Result<Self, StorageError> {
        let id = meta.task_id.clone();
        let dp = data_path(root, &id);
        // A finished download's output may be a hard link to the old data file: unlink it
        // rather than truncate it, so the user's copy is never touched.
        match fs::remove_file(&dp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("replace", &dp, e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&dp)
            .map_err(|e| StorageError::io("create", &dp, e))?;
        if let Some(len) = meta.layout.content_length {
            file.set_len(len)
                .map_err(|e| StorageError::io("preallocate", &dp, e))?;
        }
        let lp = log_path(root, &id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lp)
            .map_err(|e| StorageError::io("create", &lp, e))?;
        log.set_len(0)
            .map_err(|e| StorageError::io("truncate", &lp, e))?;
        write_meta(root, &meta)?;
        Ok(Self {
            id,
            root: root.to_owned(),
            data_path: dp,
            file,
            meta: Mutex::new(meta),
            pieces: Mutex::new(BTreeMap::new()),
            log: Mutex::new(log),
            held_bytes: AtomicU64::new(0),
            last_used: AtomicU64::new(now_ms()),
            lost: Mutex::new(Vec::new()),
        })
    }

    /// Reloads a task, keeping only logged pieces whose bytes still hash right.
    pub(crate) fn load(root: &Path, id: &TaskId) -> Result<Option<Self>, StorageError> {
        let mp = meta_path(root, id);
        let raw = fs::read(&mp).map_err(|e| StorageError::io("read", &mp, e))?;
        let meta: TaskMeta = serde_json::from_slice(&raw)
            .map_err(|e| StorageError::io("decode", &mp, std::io::Error::other(e.to_string())))?;
        if &meta.task_id != id {
            return Ok(None);
        }
        let dp = data_path(root, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dp)
            .map_err(|e| StorageError::io("open", &dp, e))?;
        let lp = log_path(root, id);
        let mut records = Vec::new();
        if let Ok(mut f) = File::open(&lp) {
            f.read_to_end(&mut records)
                .map_err(|e| StorageError::io("read", &lp, e))?;
        }
        let mut pieces = BTreeMap::new();
        let mut buf = Vec::new();
        let layout = meta.layout;
        for rec in records.chunks_exact(RECORD) {
            let num = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let len = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
            let mut d = [0u8; 32];
            d.copy_from_slice(&rec[8..]);
            let digest = PieceDigest(d);
            if len > layout.piece_size {
                continue;
            }
            buf.resize(len as usize, 0);
            if file.read_exact_at(&mut buf, layout.offset(num)).is_err() {
                continue;
            }
            if PieceDigest::of(&buf) == digest {
                pieces.insert(num, HeldPiece { len, digest });
            } else {
                tracing::warn!(task = %id, piece = num, "dropping piece that no longer verifies");
            }
        }
        // Rewrite the log with exactly the verified pieces, dropping torn or bad records.
        let log = rewrite_log(&lp, &pieces)?;
        let held: u64 = pieces.values().map(|p| u64::from(p.len)).sum();
        Ok(Some(Self {
            id: id.clone(),
            root: root.to_owned(),
            data_path: dp,
            file,
            meta: Mutex::new(meta),
            pieces: Mutex::new(pieces),
            log: Mutex::new(log),
            held_bytes: AtomicU64::new(held),
            last_used: AtomicU64::new(now_ms()),
            lost: Mutex::new(Vec::new()),
        }))
    }

    /// The task id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// Source URL.
    pub fn url(&self) -> String {
        lock(&self.meta).url.clone()
    }

    /// Current layout.
    pub fn layout(&self) -> PieceLayout {
        lock(&self.meta).layout
    }

    /// Path of the data file (for export by copy or reflink).
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Records the total length once known, and sizes the data file to it.
    pub fn set_content_length(&self, len: u64) -> Result<(), StorageError> {
        let mut meta = lock(&self.meta);
        if meta.layout.content_length == Some(len) {
            return Ok(());
        }
        meta.layout.content_length = Some(len);
        self.file
            .set_len(len)
            .map_err(|e| StorageError::io("resize", &self.data_path, e))?;
        write_meta(&self.root, &meta)
    }

    /// The digest of a held piece.
    pub fn piece(&self, num: u32) -> Option<(u32, PieceDigest)> {
        lock(&self.pieces).get(&num).map(|p| (p.len, p.digest))
    }

    /// Numbers of held pieces.
    pub fn held(&self) -> Vec<u32> {
        lock(&self.pieces).keys().copied().collect()
    }

    /// How many pieces are held.
    pub fn held_count(&self) -> u32 {
        lock(&self.pieces).len() as u32
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Whether every piece is held (needs the length to be known).
    pub fn is_complete(&self) -> bool {
        let layout = self.layout();
        match layout.piece_count() {
            Some(n) => self.held_count() == n,
            None => false,
        }
    }

    /// Seconds since the epoch when the task was last read or written.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed) / 1000
    }

    /// Milliseconds since the epoch when the task was last read or written (LRU order).
    pub fn last_used_ms(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Marks the task used now (a peer asked for it), for LRU eviction.
    pub fn touch(&self) {
        self.last_used.store(now_ms(), Ordering::Relaxed);
    }

    /// Bytes the task takes (or will take) on disk: its length once known, else what is held.
    pub fn footprint(&self) -> u64 {
        self.layout()
            .content_length
            .unwrap_or_else(|| self.held_bytes())
    }

    /// Checks that a piece of `len` bytes fits the layout at `num`.
    fn check_fits(&self, num: u32, len: u64) -> Result<PieceLayout, StorageError> {
        let layout = self.layout();
        let fits = len <= u64::from(layout.piece_size)
            && match layout.piece_len(num) {
                Some(expected) => u64::from(expected) == len,
                None => layout.content_length.is_none(),
            };
        if fits {
            Ok(layout)
        } else {
            Err(StorageError::OutOfRange {
                task: self.id.clone(),
                num,
                detail: format!("{len} bytes"),
            })
        }
    }

    /// Writes a verified piece at its offset, then logs it as held.
    ///
    /// The caller has checked `digest` against the bytes; this writes the bytes before the
    /// record so that a record never points at bytes not yet written.
    pub fn write_piece(
        &self,
        num: u32,
        data: &[u8],
        digest: PieceDigest,
    ) -> Result<(), StorageError> {
        self.check_fits(num, data.len() as u64)?;
        if self.piece(num).is_some() {
            return Ok(());
        }
        self.write_unverified(num, 0, data)?;
        self.commit_piece(num, data.len() as u32, digest)
    }

    /// Writes bytes of a piece not yet held, at `at` within the piece, before they are
    /// verified (so a transfer needs no piece-sized buffer). Nothing reads them until
    /// [`TaskData::commit_piece`] marks the piece held; a held piece is never overwritten.
    pub fn write_unverified(&self, num: u32, at: u64, data: &[u8]) -> Result<(), StorageError> {
        let layout = self.layout();
        let limit = layout
            .piece_len(num)
            .map_or(u64::from(layout.piece_size), u64::from);
        if at + data.len() as u64 > limit
            || layout
                .content_length
                .is_some_and(|len| layout.offset(num) >= len.max(1))
        {
            return Err(StorageError::OutOfRange {
                task: self.id.clone(),
                num,
                detail: format!("{} bytes at {at}", data.len()),
            });
        }
        if self.piece(num).is_some() {
            return Err(StorageError::OutOfRange {
                task: self.id.clone(),
                num,
                detail: "piece already held".into(),
            });
        }
        self.file
            .write_all_at(data, layout.offset(num) + at)
            .map_err(|e| StorageError::io("write", &self.data_path, e))
    }

    /// Marks a piece whose `len` bytes are written and verified against `digest` as held.
    pub fn commit_piece(
        &self,
        num: u32,
        len: u32,
        digest: PieceDigest,
    ) -> Result<(), StorageError> {
        self.check_fits(num, u64::from(len))?;
        let held = HeldPiece { len, digest };
        let mut rec = Vec::with_capacity(RECORD);
        encode_record(&mut rec, num, &held);
        let mut pieces = lock(&self.pieces);
        if pieces.contains_key(&num) {
            return Ok(());
        }
        {
            let mut log = lock(&self.log);
            let before = log.metadata().map(|m| m.len()).ok();
            if let Err(e) = log.write_all(&rec) {
                // A torn record would shift every later one: cut the log back to the last
                // whole record so the piece simply stays missing.
                if let Some(len) = before {
                    let _ = log.set_len(len);
                }
                return Err(StorageError::io(
                    "append",
                    &log_path(&self.root, &self.id),
                    e,
                ));
            }
        }
        pieces.insert(num, held);
        self.held_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        self.last_used.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Hashes every held piece again and forgets those that no longer match (the data file
    /// is shared with an output that may have been edited); returns how many were dropped.
    pub fn reverify(&self) -> Result<u32, StorageError> {
        let layout = self.layout();
        let held: Vec<(u32, HeldPiece)> =
            lock(&self.pieces).iter().map(|(n, p)| (*n, *p)).collect();
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for (num, p) in held {
            buf.resize(p.len as usize, 0);
            let ok = self
                .file
                .read_exact_at(&mut buf, layout.offset(num))
                .is_ok()
                && PieceDigest::of(&buf) == p.digest;
            if !ok {
                bad.push(num);
            }
        }
        if bad.is_empty() {
            return Ok(0);
        }
        let mut pieces = lock(&self.pieces);
        for num in &bad {
            if let Some(p) = pieces.remove(num) {
                self.held_bytes
                    .fetch_sub(u64::from(p.len), Ordering::Relaxed);
            }
        }
        let mut log = lock(&self.log);
        *log = rewrite_log(&log_path(&self.root, &self.id), &pieces)?;
        lock(&self.lost).extend_from_slice(&bad);
        Ok(bad.len() as u32)
    }

    /// Pieces dropped by [`TaskData::reverify`] since the last call.
    pub fn take_lost(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.lost))
    }

    /// Whether an output shares this task's data file (an export linked it).
    pub fn shared_with_output(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.data_path).is_ok_and(|m| m.nlink() > 1)
    }

    /// Waits until the data file's bytes are on disk.
    pub fn sync_data(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("sync", &self.data_path, e))
    }

    /// Reads a held piece; None when it is not held.
    pub fn read_piece(&self, num: u32) -> Result<Option<Vec<u8>>, StorageError> {
        let Some((len, _)) = self.piece(num) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, self.layout().offset(num))
            .map_err(|e| StorageError::io("read", &self.data_path, e))?;
        self.last_used.store(now_ms(), Ordering::Relaxed);
        Ok(Some(buf))
    }

    /// Reads `buf.len()` bytes at `offset` of the content (for export with hashing).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| StorageError::io("read", &self.data_path, e))
    }
}

fn encode_record(out: &mut Vec<u8>, num: u32, p: &HeldPiece) {
    out.extend_from_slice(&num.to_le_bytes());
    out.extend_from_slice(&p.len.to_le_bytes());
    out.extend_from_slice(&p.digest.0);
}
