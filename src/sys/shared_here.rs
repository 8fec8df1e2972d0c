//! [`SharedHere`]: one object per thing per process (a lock state's mapping and slot, a
//! semaphore's mapping, a lock's holder record), shared by every handle of the process.
//! Objects a `fork()`ed child inherited are never handed out again in the child.

use std::sync::{Arc, Mutex, Weak};

use super::fork;

/// A process-wide table of shared objects by key, holding them weakly: an object lives as
/// long as a handle uses it.
pub(crate) struct SharedHere<K, T> {
    entries: Mutex<Vec<Entry<K, T>>>,
}

struct Entry<K, T> {
    key: K,
    object: Weak<T>,
    fork_epoch: u64,
}

impl<K: Copy + PartialEq, T> SharedHere<K, T> {
    pub(crate) const fn new() -> Self {
        SharedHere {
            entries: Mutex::new(Vec::new()),
        }
    }

    fn live(entries: &[Entry<K, T>], key: K) -> Option<Arc<T>> {
        let epoch = fork::epoch();
        entries
            .iter()
            .filter(|e| e.key == key && e.fork_epoch == epoch)
            .find_map(|e| e.object.upgrade())
    }

    /// The object of `key`, if this process has one.
    pub(crate) fn find(&self, key: K) -> Option<Arc<T>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::live(&entries, key)
    }

    /// The object of `key`: this process's, or `made` (or what `make` makes), which is
    /// shared from now on. Another thread may have shared one meanwhile: then that one.
    pub(crate) fn share(&self, key: K, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = Self::live(&entries, key) {
            return found;
        }
        entries.retain(|e| e.object.strong_count() > 0);
        let made = Arc::new(make());
        entries.push(Entry {
            key,
            object: Arc::downgrade(&made),
            fork_epoch: fork::epoch_watched(),
        });
        made
    }
}
