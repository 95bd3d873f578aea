//! Disk quota with high/low watermarks and least-recently-used eviction of idle tasks.
//!
//! Tasks are charged their full length as soon as it is known (the data file is sized to
//! it up front), so a reservation is made before the first byte is written and a task that
//! cannot fit is refused at once rather than after filling the disk.

use odonata_proto::TaskId;

use crate::Store;

/// Limits on what the store may hold, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Hard limit: a task that would push usage past it is refused.
    pub limit: u64,
    /// Above this, idle tasks are evicted...
    pub high: u64,
    /// ...until usage is at or below this.
    pub low: u64,
}

impl Quota {
    /// A quota with watermarks at `high_pct`% and `low_pct`% of `limit`.
    pub fn with_watermarks(limit: u64, high_pct: u8, low_pct: u8) -> Result<Self, String> {
        if limit == 0 {
            return Err("quota must be more than 0 bytes".into());
        }
        if !(low_pct <= high_pct && high_pct <= 100) {
            return Err(format!(
                "watermarks must satisfy low <= high <= 100 (got low {low_pct}%, high {high_pct}%)"
            ));
        }
        Ok(Self {
            limit,
            high: limit / 100 * u64::from(high_pct),
            low: limit / 100 * u64::from(low_pct),
        })
    }
}

/// Why a task was refused room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The task alone is bigger than the quota.
    #[error("the file is {size} bytes, more than the whole cache quota of {limit} bytes")]
    TooLarge {
        /// The task's length.
        size: u64,
        /// The quota.
        limit: u64,
    },
    /// Tasks in use hold too much for this one to fit now.
    #[error("the cache cannot make room for {size} bytes: {in_use} of {limit} bytes are held by tasks in use")]
    Full {
        /// The task's length.
        size: u64,
        /// Bytes held by tasks that may not be evicted.
        in_use: u64,
        /// The quota.
        limit: u64,
    },
}

impl Store {
    /// Bytes charged to every task held (or being filled).
    pub fn usage(&self) -> u64 {
        self.list().iter().map(|t| t.footprint()).sum()
    }

    /// Makes room for `size` more bytes for task `id` under `quota`: evicts least recently
    /// used tasks for which `in_use` is false once usage would pass the high watermark,
    /// down to the low one. Returns the evicted tasks, or why the task cannot fit.
    pub fn make_room(
        &self,
        id: &TaskId,
        size: u64,
        quota: &Quota,
        in_use: &dyn Fn(&TaskId) -> bool,
    ) -> Result<Vec<TaskId>, QuotaError> {
        if size > quota.limit {
            return Err(QuotaError::TooLarge {
                size,
                limit: quota.limit,
            });
        }
        let mut tasks: Vec<_> = self.list().into_iter().filter(|t| t.id() != id).collect();
        let mut usage: u64 = tasks.iter().map(|t| t.footprint()).sum();
        let mut evicted = Vec::new();
        if usage + size > quota.high {
            tasks.sort_by_key(|t| t.last_used_ms());
            for t in tasks {
                if usage + size <= quota.low {
                    break;
                }
                if in_use(t.id()) {
                    continue;
                }
                tracing::info!(task = %t.id(), bytes = t.footprint(), "evicting least recently used task");
                usage = usage.saturating_sub(t.footprint());
                self.remove(t.id());
                evicted.push(t.id().clone());
            }
        }
        if usage + size > quota.limit {
            return Err(QuotaError::Full {
                size,
                in_use: usage,
                limit: quota.limit,
            });
        }
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskMeta;
    use odonata_proto::{PieceLayout, TaskKey};

    fn add(store: &Store, name: &str, len: u64) -> TaskId {
        let id = TaskKey::new(&format!("http://h/{name}"), &[]).unwrap().id();
        store
            .prepare(TaskMeta {
                task_id: id.clone(),
                url: name.into(),
                layout: PieceLayout {
                    piece_size: 1 << 20,
                    content_length: Some(len),
                },
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
        id
    }

    #[test]
    fn evicts_least_recently_used_idle_tasks_down_to_the_low_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Quota::with_watermarks(1000, 90, 80).unwrap();
        let a = add(&store, "a", 300);
        let b = add(&store, "b", 300);
        let c = add(&store, "c", 300);
        store.get(&a).unwrap().touch(); // a is now the most recent
        let new = TaskKey::new("http://h/new", &[]).unwrap().id();
        // b is the oldest but in use; c is next.
        let evicted = store.make_room(&new, 200, &q, &|t| *t == b).unwrap();
        assert_eq!(evicted, vec![c.clone()]);
        assert!(store.get(&c).is_none() && store.get(&a).is_some() && store.get(&b).is_some());
        let e = store.make_room(&new, 1001, &q, &|_| false).unwrap_err();
        assert!(matches!(e, QuotaError::TooLarge { .. }), "{e}");
        let e = store.make_room(&new, 500, &q, &|_| true).unwrap_err();
        assert!(matches!(e, QuotaError::Full { .. }), "{e}");
    }

    #[test]
    fn watermarks_are_validated() {
        assert!(Quota::with_watermarks(100, 50, 80).is_err());
        assert!(Quota::with_watermarks(0, 90, 80).is_err());
        assert_eq!(Quota::with_watermarks(1000, 90, 80).unwrap().high, 900);
    }
}
