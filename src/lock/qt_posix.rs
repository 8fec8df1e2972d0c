//! [`QtPosixLock`]: Qt-compatible mode of a POSIX segment, a unit of Qt's semaphore
//! (glibc's `sem_t`, which Qt processes take with `sem_wait`).
//!
//! qshm takes the unit with a 16-byte compare-and-swap that also writes its label into
//! the semaphore's unused pad, and clears the label in the one that gives the unit back
//! (`sys/posix/semaphore_file.rs`), so a unit a qshm process holds always names its
//! holder. A waiter counts itself as a waiter the way glibc does (so that `sem_post` in a
//! Qt process wakes it), sleeps on the value word in slices, and between slices:
//!
//! * a **labelled** unit whose holder's slot is gone is taken over in one
//!   compare-and-swap against the word it saw ([`LIVENESS_INTERVAL`]);
//! * an **unlabelled** unit is a Qt process's (or a qshm process's without a lock state):
//!   it is taken over when the kernel says that no other process has the semaphore open
//!   any more (a write-lease probe, every [`LIVENESS_INTERVAL`]), or, while others have it
//!   open, when `/proc` shows that none of them could hold it, twice,
//!   [`DEAD_QT_HOLDER_LOOK`] apart (`census.rs`). A living process that may hold it, or
//!   one qshm may not look at that could, keeps the waiter waiting, as Qt's own
//!   `sem_wait` would.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{
    Acquired, Attempt, DEAD_QT_HOLDER_LOOK, Deadline, LIVENESS_INTERVAL, LocalHolder, LockId, RawLock,
    held_by_this_thread, nobody_could_hold, os_failure,
};
use crate::error::Failure;
use crate::sys::lock_state::{Holder, Label, LockState};
use crate::sys::posix::{SemaphoreFile, Take, holder_label, seen_value};

/// The Qt-compatible lock of one POSIX segment.
pub(crate) struct QtPosixLock {
    sem: Arc<SemaphoreFile>,
    /// The segment's lock state, if it has one and this process may lock through it:
    /// then its units are labelled.
    state: Option<Arc<LockState>>,
    label: u32,
    local: LocalHolder,
    /// The look for a dead unlabelled holder, kept across calls: a caller that polls with
    /// short timeouts waits as long as one long call, and must see it recovered as well.
    watch: Mutex<Option<Watch>>,
}

/// How long a waiter has waited for an unlabelled unit, and what its looks found.
#[derive(Clone, Copy, Debug)]
struct Watch {
    since: Instant,
    /// The last call that did not get the unit ended.
    left: Instant,
    last_look: Option<Instant>,
    /// Looks in a row that found no living process that could hold it.
    nobody_seen: u32,
}

impl Watch {
    /// The watch of the previous call goes on if that call ended just now (the caller is
    /// polling), else a new one starts.
    fn resume(previous: Option<Watch>) -> Watch {
        let now = Instant::now();
        match previous {
            Some(w) if w.left.elapsed() < DEAD_QT_HOLDER_LOOK => w,
            _ => Watch {
                since: now,
                left: now,
                last_look: None,
                nobody_seen: 0,
            },
        }
    }

    fn look_due(&self) -> bool {
        self.since.elapsed() >= DEAD_QT_HOLDER_LOOK
            && self.last_look.is_none_or(|t| t.elapsed() >= DEAD_QT_HOLDER_LOOK)
    }
}

impl QtPosixLock {
    /// The lock on `sem`, labelled through `state` when there is one this process may
    /// lock through.
    pub(crate) fn new(sem: Arc<SemaphoreFile>, state: Option<Arc<LockState>>) -> QtPosixLock {
        let label = state.as_ref().and_then(|s| s.label()).map_or(0, Label::word);
        let (dev, ino) = sem.file_id();
        QtPosixLock {
            local: LocalHolder::of(LockId::File(dev, ino)),
            sem,
            state,
            label,
            watch: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> Option<&LockState> {
        self.state.as_deref()
    }

    #[inline]
    fn held(&self, how: Acquired) -> Attempt {
        self.local.set();
        Attempt::Acquired(how)
    }

    /// Whether the qshm process that labelled a unit is gone (`false` without a lock state
    /// to ask: then the unit is treated as unlabelled).
    fn labelled_holder_gone(&self, label: u32) -> Result<bool, Failure> {
        match (&self.state, Label::from_word(label)) {
            (Some(state), Some(label)) => Ok(state.holder(label).map_err(os_failure)? == Holder::Gone),
            _ => Ok(false),
        }
    }

    #[cold]
    fn contended(&self, first: u128, deadline: Deadline) -> Result<Attempt, Failure> {
        if self.local.is_this_thread() {
            return Err(held_by_this_thread());
        }
        if deadline == Deadline::Now {
            return self.try_recover(first);
        }
        self.sem.add_waiter();
        let result = self.wait(deadline);
        if !matches!(result, Ok(Attempt::Acquired(_))) {
            self.sem.remove_waiter();
        }
        result
    }

    /// Counted as a waiter: wait for a unit, or for its holder to be found gone.
    fn wait(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        let started = Instant::now();
        let mut next_look = started + LIVENESS_INTERVAL;
        let mut saved = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let mut watch = Watch::resume(saved.take());
        loop {
            let seen = match self.sem.try_take(self.label, true).map_err(os_failure)? {
                Take::Took => return Ok(self.held(Acquired::Clean)),
                Take::Busy(seen) => seen,
            };
            let holder = holder_label(seen);
            if holder != 0 && self.state.is_some() {
                watch = Watch::resume(None);
                if Instant::now() >= next_look {
                    next_look = Instant::now() + LIVENESS_INTERVAL;
                    if self.labelled_holder_gone(holder)? {
                        if self.sem.take_over(seen, self.label, true) {
                            return Ok(self.held(Acquired::PreviousOwnerDied));
                        }
                        continue;
                    }
                }
            } else {
                // unlabelled: a Qt process's (or one qshm cannot label). Nobody else has the
                // semaphore open at all: its holder is gone (the kernel's word, at once).
                if Instant::now() >= next_look {
                    next_look = Instant::now() + LIVENESS_INTERVAL;
                    if !self.local.held_here() && self.sem.alone() == Some(true) {
                        if self.sem.take_over(seen, self.label, true) {
                            return Ok(self.held(Acquired::PreviousOwnerDied));
                        }
                        continue;
                    }
                }
                // Others have it open: nobody in /proc could hold it, twice, a second apart.
                if watch.look_due() {
                    watch.last_look = Some(Instant::now());
                    let nobody = !self.local.held_here()
                        && nobody_could_hold(
                            self.sem.file_id(),
                            self.sem.owner(),
                            self.state.as_ref().map(|s| s.file_id()),
                        );
                    watch.nobody_seen = if nobody { watch.nobody_seen + 1 } else { 0 };
                    if watch.nobody_seen >= 2 {
                        watch.nobody_seen = 0;
                        if seen_value(seen) == 0 && self.sem.take_over(seen, self.label, true) {
                            return Ok(self.held(Acquired::PreviousOwnerDied));
                        }
                        continue;
                    }
                }
            }
            if deadline.passed() {
                watch.left = Instant::now();
                *saved = Some(watch);
                return Ok(Attempt::Busy);
            }
            let cap = next_look.saturating_duration_since(Instant::now());
            self.sem.sleep(deadline.slice(cap)).map_err(os_failure)?;
        }
    }

    /// `try_lock` on a busy semaphore: take over a labelled unit whose holder is gone
    /// (looked at most every [`LIVENESS_INTERVAL`]). An unlabelled one needs two looks a
    /// second apart, which a try does not wait for.
    fn try_recover(&self, seen: u128) -> Result<Attempt, Failure> {
        let holder = holder_label(seen);
        let due = self.state.as_ref().is_some_and(|s| s.look_due(LIVENESS_INTERVAL));
        if holder != 0
            && due
            && self.labelled_holder_gone(holder)?
            && self.sem.take_over(seen, self.label, false)
        {
            return Ok(self.held(Acquired::PreviousOwnerDied));
        }
        Ok(Attempt::Busy)
    }
}

impl RawLock for QtPosixLock {
    #[inline]
    fn lock(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        match self.sem.try_take(self.label, false).map_err(os_failure)? {
            Take::Took => Ok(self.held(Acquired::Clean)),
            Take::Busy(seen) => self.contended(seen, deadline),
        }
    }

    #[inline]
    fn unlock(&self) -> Result<(), Failure> {
        self.local.clear();
        self.sem.give_back(self.label).map_err(os_failure)
    }
}
