//! Change notification: a writer says "the data changed" ([`SharedMemory::notify_all`]),
//! readers in any process sleep until it does ([`SharedMemory::wait_for_change`]).
//!
//! The word is the `generation` counter in the segment's lock state, a shared futex:
//! `notify_all` bumps it and wakes every sleeper (`FUTEX_WAKE`); `wait_for_change` sleeps
//! (`FUTEX_WAIT`) while it still holds the value the caller saw. A sleeper holds nothing,
//! so one killed while waiting stalls nobody; a wake-up is never lost, because the
//! kernel checks the word and queues the sleeper in one step, and the notifier changes
//! the word before it wakes. A count of sleepers in the lock state lets `notify_all`
//! skip the system call when nobody waits. Users who may only read the segment may wait
//! (their mapping of the lock state is read-only, which a futex wait needs no more) but
//! cannot count themselves: a segment with such users is always woken, and only its
//! writers may notify.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::SharedMemory;
use crate::error::{Error, Result, SharedMemoryError};
use crate::os;
use crate::sys::lock_state::LockState;

/// How many times a segment's data was announced as changed ([`SharedMemory::notify_all`]),
/// as seen at some moment: pass it to [`SharedMemory::wait_for_change`] to sleep until
/// the next change.
///
/// A 32-bit counter that wraps around: a waiter can only miss a change if exactly 2³²
/// notifications happen between two of its looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Generation(u32);

impl Generation {
    /// The generation whose counter value is `value` (crate-internal: callers get theirs
    /// from the segment).
    #[cfg(feature = "async")]
    pub(crate) fn from_value(value: u32) -> Generation {
        Generation(value)
    }

    /// The counter's value.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl SharedMemory {
    /// The segment's current [`Generation`], to wait for the next change with
    /// [`wait_for_change`](Self::wait_for_change).
    ///
    /// Errors as for [`notify_all`](Self::notify_all).
    pub fn generation(&self) -> Result<Generation> {
        let result = self
            .change_word("generation")
            .map(|state| Generation(state.words().generation.load(Ordering::Acquire)));
        self.record(result)
    }

    /// Announce that the data changed: bump the segment's [`Generation`] and wake every
    /// thread and process sleeping in [`wait_for_change`](Self::wait_for_change). Returns
    /// the new generation. Call it after the write (after the guard is gone, or use
    /// [`LockGuard::unlock_and_notify`](crate::LockGuard::unlock_and_notify)).
    ///
    /// It costs one atomic add, and one system call (`FUTEX_WAKE`) only when someone may
    /// be waiting. It works between qshm processes in both lock modes. Qt programs neither
    /// see nor send these notifications (see the README for a pattern that includes them).
    ///
    /// `LockError` when not attached, in a `fork()`ed child, or when the segment has no
    /// qshm lock state and we may not add one (another user's segment made by Qt): the
    /// counter lives there. In Qt-compatible mode on a POSIX segment the lock state is
    /// made now if the first lock has not made it yet.
    ///
    /// ```
    /// use qshm::{AccessMode, SharedMemory};
    /// use std::time::Duration;
    /// # let key = format!("doc-notify-{}", std::process::id());
    /// let mut shm = SharedMemory::new(&key);
    /// shm.create(64, AccessMode::ReadWrite)?;
    /// let seen = shm.generation()?;
    /// shm.lock()?[0] = 42;
    /// let now = shm.notify_all()?;
    /// // a waiter that saw `seen` returns at once: the generation moved on
    /// assert_eq!(shm.wait_for_change(seen, Duration::from_secs(1))?, now);
    /// // one that saw `now` sleeps until the next notification, here at most 10 ms
    /// assert_eq!(shm.wait_for_change(now, Duration::from_millis(10))?, now);
    /// # Ok::<(), qshm::Error>(())
    /// ```
    #[doc(alias = "QSystemSemaphore")]
    pub fn notify_all(&self) -> Result<Generation> {
        let result = self.change_word("notify").and_then(|state| {
            if !state.may_lock() {
                return Err(self.error_of(
                    "notify",
                    SharedMemoryError::PermissionDenied,
                    "only users who may write the segment may announce changes",
                ));
            }
            let words = state.words();
            let generation = &words.generation;
            // SeqCst pairs with the waiter's SeqCst raise of `waiters` and reload of the
            // generation: either it sees the new value, or we see it waiting.
            let new = generation.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
            if words.waiters.load(Ordering::SeqCst) != 0 || state.has_read_only_users() {
                os::futex_wake_all(generation).map_err(|e| {
                    self.error_of(
                        "notify",
                        SharedMemoryError::UnknownError,
                        "cannot wake the waiters",
                    )
                    .with_os(e)
                })?;
            }
            Ok(Generation(new))
        });
        self.record(result)
    }

    /// Sleep until the segment's [`Generation`] differs from `seen` (a
    /// [`notify_all`](Self::notify_all) in any process since `seen` was read), at most
    /// `timeout` (`Duration::MAX`: for ever). Returns the current generation: different
    /// from `seen` after a change, equal to `seen` when the timeout passed.
    ///
    /// The sleep is a futex wait in the kernel: no polling, no lock held, so a waiter
    /// killed with `SIGKILL` stalls nobody. A signal does not end the wait; to stay
    /// responsive to one, wait in slices. Errors as for [`notify_all`](Self::notify_all).
    pub fn wait_for_change(&self, seen: Generation, timeout: Duration) -> Result<Generation> {
        let result = self
            .change_word("wait for change")
            .and_then(|state| wait(state, seen, timeout).map_err(|e| self.wait_error(e)));
        self.record(result)
    }

    /// The segment's lock state (its process slots, change counter and words), for the
    /// features built on them (frame channels, message queues, async waits); errors as
    /// for [`notify_all`](Self::notify_all), in operation `op`.
    pub(crate) fn lock_state(&self, op: &'static str) -> Result<&LockState> {
        self.change_word(op)
    }

    /// The lock state whose generation word this handle's notifications use.
    fn change_word(&self, op: &'static str) -> Result<&LockState> {
        let Some(a) = &self.attached else {
            return Err(self.error_of(
                op,
                SharedMemoryError::LockError,
                "not attached: create or attach first",
            ));
        };
        if a.forked() {
            return Err(self.error_of(
                op,
                SharedMemoryError::LockError,
                "this handle was inherited through fork(); attach anew in the child process",
            ));
        }
        match a.lock.state() {
            Some(state) => Ok(state),
            None => Err(self.error_of(
                op,
                SharedMemoryError::LockError,
                "no change notification for this segment: it has no qshm lock state (another \
                 program made it, and only the segment's owner may add one); pair it with a \
                 SystemSemaphore instead",
            )),
        }
    }

    #[cold]
    fn wait_error(&self, e: std::io::Error) -> Error {
        self.error_of(
            "wait for change",
            SharedMemoryError::UnknownError,
            "the wait failed",
        )
        .with_os(e)
    }
}

/// Sleep on `state`'s generation while it is `seen`, at most `timeout`.
pub(crate) fn wait(state: &LockState, seen: Generation, timeout: Duration) -> std::io::Result<Generation> {
    let words = state.words();
    let generation = &words.generation;
    let now = generation.load(Ordering::Acquire);
    if now != seen.0 || timeout.is_zero() {
        return Ok(Generation(now));
    }
    let deadline = Instant::now().checked_add(timeout); // None: for ever
    // a read-only mapping cannot count itself (notifiers of such segments always wake)
    let waiters = state.may_lock().then_some(&words.waiters);
    if let Some(waiters) = waiters {
        waiters.fetch_add(1, Ordering::SeqCst);
    }
    let result = loop {
        let now = generation.load(Ordering::SeqCst);
        if now != seen.0 {
            break Ok(Generation(now));
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => break Ok(seen),
                left => Some(left),
            },
        };
        if let Err(e) = os::futex_wait(generation, seen.0, left) {
            break Err(e);
        }
    };
    if let Some(waiters) = waiters {
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
    result
}
