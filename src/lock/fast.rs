//! [`FastLock`]: `LockMode::Fast`, a futex lock word in qshm's lock state.
//!
//! The word is 0 when free, else the holder's label, with [`CONTENDED`] set once someone
//! may sleep on it. Taking it is one compare-and-swap (0 to our label), giving it back one
//! more (our label to 0); a system call only when contended. A waiter sleeps on the word
//! in slices of [`LIVENESS_INTERVAL`] and between them asks whether the label's process
//! lives; if it does not, the waiter swaps its own label in, in one compare-and-swap
//! against the dead label it saw, so two waiters never both take over.
//!
//! The release is a compare-and-swap, not the plain store of a spin lock: a lock whose
//! waiters sleep must learn, in the same atomic step as its release, whether anyone sleeps.
//! The one alternative, an asymmetric fence (`membarrier`) that every waiter pays before it
//! sleeps, costs about 16 µs a call on a VM (`qshm-bench`'s `fence_us`) to save about 7 ns
//! per uncontended pair: declined (README, Benchmarks).

use std::hint::spin_loop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::{
    Acquired, Attempt, CONTENDED, Deadline, LIVENESS_INTERVAL, LocalHolder, LockId, RawLock,
    held_by_this_thread, os_failure, readers_may_not_lock, taken_from_us,
};
use crate::error::Failure;
use crate::os;
use crate::sys::lock_state::{Holder, Label, LockState};

/// How often a waiter looks at the word before it sleeps (short critical sections end
/// while it spins, and it takes the lock without a system call).
const SPINS: u32 = 64;

/// The Fast-mode lock of one segment.
pub(crate) struct FastLock {
    state: Arc<LockState>,
    label: Label,
    local: LocalHolder,
}

impl FastLock {
    /// The lock in `state`; `PermissionDenied` for a user who may not write it.
    pub(crate) fn new(state: Arc<LockState>) -> Result<FastLock, Failure> {
        let label = state.label().ok_or_else(readers_may_not_lock)?;
        let (dev, ino) = state.file_id();
        Ok(FastLock {
            local: LocalHolder::of(LockId::File(dev, ino)),
            state,
            label,
        })
    }

    pub(crate) fn state(&self) -> Option<&LockState> {
        Some(&self.state)
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        &self.state.words().fast
    }

    /// The word is `seen` and names a holder that is gone: take it over.
    fn take_over(&self, seen: u32) -> bool {
        let ours = self.label.word() | CONTENDED;
        self.word()
            .compare_exchange(seen, ours, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the holder named by word `seen` is gone.
    fn holder_gone(&self, seen: u32) -> Result<bool, Failure> {
        match Label::from_word(seen) {
            None => Ok(false),
            Some(label) => Ok(self.state.holder(label).map_err(os_failure)? == Holder::Gone),
        }
    }

    #[cold]
    fn contended(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        if self.local.is_this_thread() {
            return Err(held_by_this_thread());
        }
        let word = self.word();
        let ours = self.label.word();
        // a short spin: a holder in a short critical section is gone before we sleep
        for _ in 0..SPINS {
            if word.load(Ordering::Relaxed) == 0
                && word
                    .compare_exchange(0, ours, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(self.held(Acquired::Clean));
            }
            spin_loop();
        }
        if deadline == Deadline::Now {
            return self.try_recover();
        }
        let started = Instant::now();
        let mut next_look = started + LIVENESS_INTERVAL;
        loop {
            let seen = word.load(Ordering::Relaxed);
            if seen == 0 {
                // others may sleep on it still: keep the flag, the unlock wakes one
                if word
                    .compare_exchange(0, ours | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.held(Acquired::Clean));
                }
                continue;
            }
            if Instant::now() >= next_look {
                next_look = Instant::now() + LIVENESS_INTERVAL;
                if self.holder_gone(seen)? {
                    if self.take_over(seen) {
                        return Ok(self.held(Acquired::PreviousOwnerDied));
                    }
                    continue;
                }
            }
            if seen & CONTENDED == 0
                && word
                    .compare_exchange(seen, seen | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if deadline.passed() {
                return Ok(Attempt::Busy);
            }
            let nap = deadline.slice(next_look.saturating_duration_since(Instant::now()));
            os::futex_wait(word, seen | CONTENDED, Some(nap)).map_err(os_failure)?;
        }
    }

    /// One look at a busy lock for `try_lock`: if its holder is gone (looked at most every
    /// [`LIVENESS_INTERVAL`], so that polling costs no system call per try), take it over.
    fn try_recover(&self) -> Result<Attempt, Failure> {
        let seen = self.word().load(Ordering::Relaxed);
        if seen == 0 {
            return match self.word().compare_exchange(
                0,
                self.label.word(),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => Ok(self.held(Acquired::Clean)),
                Err(_) => Ok(Attempt::Busy),
            };
        }
        if self.state.look_due(LIVENESS_INTERVAL) && self.holder_gone(seen)? && self.take_over(seen) {
            return Ok(self.held(Acquired::PreviousOwnerDied));
        }
        Ok(Attempt::Busy)
    }

    #[inline(always)]
    fn held(&self, how: Acquired) -> Attempt {
        self.local.set();
        Attempt::Acquired(how)
    }

    #[cold]
    fn unlock_contended(&self) -> Result<(), Failure> {
        let word = self.word();
        let ours = self.label.word();
        loop {
            let seen = word.load(Ordering::Relaxed);
            if seen & !CONTENDED != ours {
                return Err(taken_from_us());
            }
            // (only the flag can be added meanwhile: then look again)
            if word
                .compare_exchange(seen, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                if seen & CONTENDED != 0 {
                    os::futex_wake(word, 1).map_err(os_failure)?;
                }
                return Ok(());
            }
        }
    }
}

impl RawLock for FastLock {
    #[inline(always)]
    fn lock(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        match self
            .word()
            .compare_exchange(0, self.label.word(), Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(self.held(Acquired::Clean)),
            Err(_) => self.contended(deadline),
        }
    }

    #[inline(always)]
    fn unlock(&self) -> Result<(), Failure> {
        self.local.clear();
        match self
            .word()
            .compare_exchange(self.label.word(), 0, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(_) => self.unlock_contended(),
        }
    }
}
