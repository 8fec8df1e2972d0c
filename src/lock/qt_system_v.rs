//! [`QtSystemVLock`]: Qt-compatible mode of a System V segment, a unit of Qt's semaphore
//! set taken with `SEM_UNDO` (the kernel gives a dead holder's unit back at once).
//!
//! The kernel does not say that it did. So a qshm holder writes its label into the lock
//! state's `qt_holder` word after it took the unit and clears it before it gives it back:
//! a label the next qshm holder finds there was left by a holder that did not give the
//! unit back itself, which the kernel did for it when it died, and the death is reported
//! ([`Acquired::PreviousOwnerDied`]). (Asking whether the label's process lives would be
//! wrong here: the kernel gives the unit back before it closes the dead process's files.)
//! A Qt holder writes nothing, so its death is not reported (the data it guarded may be
//! half written; Qt does not say so either).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    Acquired, Attempt, Deadline, LocalHolder, LockId, RawLock, held_by_this_thread, os_failure,
    readers_may_not_lock,
};
use crate::error::Failure;
use crate::sys::lock_state::{Label, LockState};
use crate::sys::sysv::Semaphore;

/// The Qt-compatible lock of one System V segment.
pub(crate) struct QtSystemVLock {
    sem: Arc<Semaphore>,
    state: Option<Arc<LockState>>,
    label: u32,
    local: LocalHolder,
}

impl QtSystemVLock {
    /// The lock on `sem`, recorded in `state` when there is one this process may write.
    pub(crate) fn new(sem: Arc<Semaphore>, state: Option<Arc<LockState>>) -> QtSystemVLock {
        let label = state.as_ref().and_then(|s| s.label()).map_or(0, Label::word);
        QtSystemVLock {
            local: LocalHolder::of(LockId::SystemV(sem.id())),
            sem,
            state,
            label,
        }
    }

    pub(crate) fn state(&self) -> Option<&LockState> {
        self.state.as_deref()
    }

    /// The unit is ours: say so in the lock state, and learn whether the holder before
    /// us died holding it.
    fn held(&self) -> Result<Attempt, Failure> {
        self.local.set();
        let Some(state) = self.state.as_ref().filter(|_| self.label != 0) else {
            return Ok(Attempt::Acquired(Acquired::Clean));
        };
        let before = state.words().qt_holder.swap(self.label, Ordering::AcqRel);
        let died = Label::from_word(before).is_some();
        Ok(Attempt::Acquired(if died {
            Acquired::PreviousOwnerDied
        } else {
            Acquired::Clean
        }))
    }
}

impl RawLock for QtSystemVLock {
    fn lock(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        if self.local.is_this_thread() {
            return Err(held_by_this_thread());
        }
        // the kernel waits (and ends the wait for a dead holder): no slices needed
        let taken = self
            .sem
            .take(deadline.left())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => readers_may_not_lock().with_os(e),
                _ => os_failure(e),
            })?;
        if taken { self.held() } else { Ok(Attempt::Busy) }
    }

    fn unlock(&self) -> Result<(), Failure> {
        self.local.clear();
        if let Some(state) = self.state.as_ref().filter(|_| self.label != 0) {
            let _ =
                state
                    .words()
                    .qt_holder
                    .compare_exchange(self.label, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        self.sem.give(1).map_err(os_failure)
    }
}
