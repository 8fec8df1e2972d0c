//! Which thread of this process holds a lock: one record per lock per process, shared by
//! every handle of the process, so that a second lock from the holding thread is an error
//! (not a deadlock), and a handle never takes its own process's hold for a dead one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::shared_here::SharedHere;

/// What a lock is, to this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LockId {
    /// A lock word or semaphore in a file: (device, inode).
    File(u64, u64),
    /// A System V semaphore set, by id.
    SystemV(i32),
}

static HOLDERS: SharedHere<LockId, AtomicU64> = SharedHere::new();

/// The thread of this process holding one lock (0: none).
#[derive(Debug, Clone)]
pub(crate) struct LocalHolder(Arc<AtomicU64>);

/// A number for the calling thread, unique among the live threads of the process (the
/// address of a thread-local), never 0; reading it costs no call.
#[inline]
fn this_thread() -> u64 {
    thread_local!(static MARK: u8 = const { 0 });
    MARK.with(|m| m as *const u8 as u64)
}

impl LocalHolder {
    /// The record of lock `id` in this process.
    pub(crate) fn of(id: LockId) -> LocalHolder {
        LocalHolder(HOLDERS.share(id, || AtomicU64::new(0)))
    }

    /// The calling thread holds it.
    #[inline]
    pub(crate) fn set(&self) {
        self.0.store(this_thread(), Ordering::Relaxed);
    }

    /// Nobody in this process holds it.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Whether the calling thread holds it.
    #[inline]
    pub(crate) fn is_this_thread(&self) -> bool {
        self.0.load(Ordering::Relaxed) == this_thread()
    }

    /// Whether a thread of this process holds it.
    pub(crate) fn held_here(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_lock_per_process() {
        let a = LocalHolder::of(LockId::File(1, 424242));
        let b = LocalHolder::of(LockId::File(1, 424242));
        let other = LocalHolder::of(LockId::SystemV(424242));
        a.set();
        assert!(b.is_this_thread(), "shared by handles");
        assert!(!other.held_here());
        let seen = std::thread::scope(|s| s.spawn(|| (b.is_this_thread(), b.held_here())).join().unwrap());
        assert_eq!(seen, (false, true), "another thread sees it held, not by itself");
        b.clear();
        assert!(!a.held_here());
    }
}
