//! Telling a `fork()`ed child from its parent: a counter the child side of `pthread_atfork`
//! bumps. A handle records the count when it attaches; if it differs later, the handle is
//! a copy made by `fork()` and must neither unlock the parent's lock nor destroy the
//! parent's segment (a POSIX attachment's `flock` even belongs to both).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static EPOCH: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The current count, after making sure the `fork` handler is installed.
pub(crate) fn epoch_watched() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: in_child is async-signal-safe (one atomic add) as atfork handlers must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    epoch()
}

/// The current count (cheap: one relaxed load).
#[inline]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}
