//! The piece store: one data file per task plus metadata that survives a crash.
//!
//! Layout under the store's root (Dragonfly's workspace shape):
//! - `data/<task_id>`: the content, each piece at `num * piece_size`;
//! - `meta/<task_id>.json`: URL and layout, written once by rename;
//! - `meta/<task_id>.pieces`: an append-only log of 40-byte records (num, len, sha256)
//!   written after the piece's bytes.
//!
//! A piece is "held" only once its record is in the log. On open every logged piece is
//! hashed again and dropped if it does not match, so a crash at any moment (or a torn
//! write after power loss) can cost pieces but never lets an unverified one be served.
//! All calls are blocking; async callers use `spawn_blocking`.

#![warn(missing_docs, unreachable_pub)]

mod quota;
mod task;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use odonata_proto::{PieceLayout, TaskId};
use serde::{Deserialize, Serialize};

pub use quota::{Quota, QuotaError};
pub use task::TaskData;

/// Errors of the piece store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A piece number outside the file, or a length that does not fit the layout.
    #[error("piece {num} of task {task} does not fit its layout ({detail})")]
    OutOfRange {
        /// The task.
        task: TaskId,
        /// The piece.
        num: u32,
        /// What did not fit.
        detail: String,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the disk is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// What is written once per task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// The task.
    pub task_id: TaskId,
    /// Where the content came from.
    pub url: String,
    /// How it is cut.
    pub layout: PieceLayout,
}

/// The piece store of one supernode or dfdaemon.
pub struct Store {
    root: PathBuf,
    tasks: Mutex<HashMap<TaskId, Arc<TaskData>>>,
}

impl Store {
    /// Opens (creating) a store under `root`, reloading and re-verifying every task there.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let data = root.join("data");
        let meta = root.join("meta");
        for d in [&data, &meta] {
            fs::create_dir_all(d).map_err(|e| StorageError::io("create directory", d, e))?;
        }
        let mut tasks = HashMap::new();
        let entries = fs::read_dir(&meta).map_err(|e| StorageError::io("read", &meta, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = TaskId::parse(id) else { continue };
            match TaskData::load(root, &id) {
                Ok(Some(t)) => {
                    tracing::info!(task = %id, pieces = t.held_count(), "reloaded task");
                    tasks.insert(id, Arc::new(t));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "dropping unreadable task");
                    remove_files(root, &id);
                }
            }
        }
        Ok(Self {
            root: root.to_owned(),
            tasks: Mutex::new(tasks),
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<TaskData>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task's data, if the store has it.
    pub fn get(&self, id: &TaskId) -> Option<Arc<TaskData>> {
        self.tasks().get(id).cloned()
    }

    /// Every task held.
    pub fn list(&self) -> Vec<Arc<TaskData>> {
        self.tasks().values().cloned().collect()
    }

    /// Returns the task's data, reusing what is on disk when its layout still fits and
    /// starting afresh otherwise. A length learnt later is recorded.
    pub fn prepare(&self, meta: TaskMeta) -> Result<Arc<TaskData>, StorageError> {
        let mut tasks = self.tasks();
        if let Some(t) = tasks.get(&meta.task_id) {
            let old = t.layout();
            let fits = old.piece_size == meta.layout.piece_size
                && (old.content_length.is_none()
                    || meta.layout.content_length.is_none()
                    || old.content_length == meta.layout.content_length);
            if fits {
                if let Some(len) = meta.layout.content_length {
                    t.set_content_length(len)?;
                }
                return Ok(t.clone());
            }
            tracing::info!(task = %meta.task_id, "layout changed, starting the task afresh");
            tasks.remove(&meta.task_id);
            remove_files(&self.root, &meta.task_id);
        }
        let t = Arc::new(TaskData::create(&self.root, meta.clone())?);
        tasks.insert(meta.task_id, t.clone());
        Ok(t)
    }

    /// Forgets a task and deletes its files (readers holding it keep their open file).
    pub fn remove(&self, id: &TaskId) {
        self.tasks().remove(id);
        remove_files(&self.root, id);
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn remove_files(root: &Path, id: &TaskId) {
    for p in [
        task::data_path(root, id),
        task::meta_path(root, id),
        task::log_path(root, id),
    ] {
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "could not remove");
            }
        }
    }
}

#[cfg(test)]
mod tests;
