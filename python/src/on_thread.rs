//! [`OnThread`]: a value that is not `Send` (the library's lock guards), carried by a
//! Python object that any thread may reach, and touched or dropped only on the thread
//! that made it.
//!
//! Hand-written rather than `send_wrapper::SendWrapper`, which does the same, because its
//! check calls `std::thread::current()`, which clones and drops the thread's `Arc` (two
//! atomic read-modify-writes) every time; a lock+unlock pair checks three times, and that
//! was a tenth of the pair's cost from Python. Here the check reads a thread-local number.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};

/// A number unique to the calling thread, never reused by another (a thread's address
/// in memory can be; this counter cannot).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|token| *token)
}

/// `value`, bound to the thread that made it: [`take`](Self::take) gives it back there
/// only; dropped elsewhere, it is leaked (never dropped on a thread it does not allow).
pub(crate) struct OnThread<T> {
    value: ManuallyDrop<T>,
    thread: u64,
}

// SAFETY: the value is reached only through `take` and `Drop`, both of which check that
// they run on the thread that made it (its token); on any other thread nothing touches it
// (`take` returns it still wrapped, `Drop` leaks it). So moving or sharing the wrapper
// across threads never moves or shares the value's use.
unsafe impl<T> Send for OnThread<T> {}
// SAFETY: as above; `&OnThread<T>` gives no access to the value at all.
unsafe impl<T> Sync for OnThread<T> {}

impl<T> OnThread<T> {
    pub(crate) fn new(value: T) -> OnThread<T> {
        OnThread {
            value: ManuallyDrop::new(value),
            thread: thread_token(),
        }
    }

    /// True on the thread that made it (also in a `fork()`ed child of that thread, whose
    /// thread-local memory is a copy).
    pub(crate) fn here(&self) -> bool {
        self.thread == thread_token()
    }

    /// The value, on its own thread; elsewhere `Err` with the wrapper untouched.
    pub(crate) fn take(self) -> Result<T, OnThread<T>> {
        if !self.here() {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used again (and its Drop never runs), so the value is
        // taken out exactly once; we are on the thread that made it.
        Ok(unsafe { ManuallyDrop::take(&mut this.value) })
    }
}

impl<T> Drop for OnThread<T> {
    fn drop(&mut self) {
        if self.here() {
            // SAFETY: dropped once (`take` skips this Drop), on the thread that made it.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
        // elsewhere: leaked, see the type's documentation
    }
}

#[cfg(test)]
mod tests {
    use super::OnThread;
    use std::rc::Rc;

    #[test]
    fn only_the_making_thread_takes_or_drops_the_value() {
        let counted = Rc::new(());
        let here = OnThread::new(counted.clone());
        assert!(here.here());
        assert!(here.take().is_ok());
        let there = OnThread::new(counted.clone());
        let back = std::thread::spawn(move || {
            assert!(!there.here());
            there.take().expect_err("another thread cannot take it")
        })
        .join()
        .expect("thread");
        drop(back); // dropped here, on its own thread: the Rc count goes down
        assert_eq!(Rc::strong_count(&counted), 1);
        let leaked = OnThread::new(counted.clone());
        std::thread::spawn(move || drop(leaked)).join().expect("thread");
        assert_eq!(
            Rc::strong_count(&counted),
            2,
            "dropped elsewhere: leaked, not dropped"
        );
    }
}
