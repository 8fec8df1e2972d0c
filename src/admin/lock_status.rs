//! The status of a segment's lock, found without taking or mapping anything.
//!
//! A POSIX semaphore at 0 may be held by a process that is gone (the kernel never gives
//! a dead holder's unit back). It is reported as [`LockStatus::HolderDied`] when, looked
//! at twice [`DEAD_HOLDER_LOOK`] apart, no living process could hold it: the rule waiters
//! use ([`lock::no_living_holder_possible`]: every process mapping the semaphore also
//! maps the lock state), and no qshm process holds the lock (`marker` held in the held or
//! releasing phase), which a waiter knows because it holds `marker` itself.

use super::{LockStatus, Maker};
use crate::key::NativeIpcKey;
use crate::lock::{self, DEAD_HOLDER_LOOK};
use crate::os;
use crate::sys::lock_state::{LockState, Peek, SegmentId, phase};
use crate::sys::{LockMode, posix, sysv};

/// How to find out the status of a POSIX semaphore lock.
#[derive(Clone, Debug)]
pub(super) struct Probe {
    pub semaphore: NativeIpcKey,
    /// The segment's lock state, if it has one.
    pub lock_state: Option<SegmentId>,
}

/// What one look at a POSIX semaphore lock found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Known(LockStatus),
    /// Taken, and no living process could hold the semaphore in this file right now.
    Nobody((u64, u64)),
}

/// A Fast-mode lock: held while a thread owns the mutex (the kernel clears a dead
/// owner's id, and the next locker recovers the mutex at once).
fn fast(peek: &Peek) -> LockStatus {
    if peek.fast_owner.is_some() {
        LockStatus::Held
    } else {
        LockStatus::Free
    }
}

/// A System V segment's lock: the kernel gives a dead holder's unit back (`SEM_UNDO`),
/// so it is free or held.
pub(super) fn system_v(peek: Option<&Peek>, semaphore: Option<&NativeIpcKey>) -> LockStatus {
    if let Some(p) = peek.filter(|p| p.mode == LockMode::Fast) {
        return fast(p);
    }
    let value = semaphore
        .and_then(sysv::numeric_key)
        .and_then(|key| os::semget(key, 0).and_then(os::sem_getval).ok());
    match value {
        Some(v) if v > 0 => LockStatus::Free,
        Some(_) => LockStatus::Held,
        None => LockStatus::Unknown,
    }
}

/// A POSIX segment's lock: known now (Fast mode, nothing to look at), or to be
/// looked at ([`settle`]).
pub(super) fn posix(
    peek: Option<&Peek>,
    maker: Maker,
    semaphore: Option<&NativeIpcKey>,
    id: SegmentId,
) -> (LockStatus, Option<Probe>) {
    match (peek, maker, semaphore) {
        (Some(p), ..) if p.mode == LockMode::Fast => (fast(p), None),
        // a Fast-mode segment whose lock state is missing: unfinished, nobody locks it
        (None, Maker::Qshm { lock_mode: None }, _) | (_, _, None) => (LockStatus::Unknown, None),
        (_, _, Some(sem)) => {
            let probe = Probe {
                semaphore: sem.clone(),
                lock_state: peek.map(|_| id),
            };
            (LockStatus::Unknown, Some(probe))
        }
    }
}

/// A living qshm process holds the lock (not: waits for it).
fn qshm_holder(peek: &Peek) -> bool {
    peek.marker_owner.is_some() && matches!(peek.phase, phase::HELD | phase::RELEASING)
}

fn look_once(probe: &Probe) -> Seen {
    let (value, file) = match posix::peek_value(&probe.semaphore) {
        Ok(seen) => seen,
        // no semaphore: nobody has locked yet (qshm makes it at the first lock)
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Seen::Known(LockStatus::Free),
        Err(_) => return Seen::Known(LockStatus::Unknown),
    };
    if value > 0 {
        return Seen::Known(LockStatus::Free);
    }
    let peek = probe.lock_state.and_then(|id| LockState::peek(id).ok().flatten());
    if peek.as_ref().is_some_and(qshm_holder) {
        return Seen::Known(LockStatus::Held);
    }
    if lock::no_living_holder_possible(file, peek.map(|p| p.file)) {
        Seen::Nobody(file)
    } else {
        Seen::Known(LockStatus::Held)
    }
}

/// Settle the status of every lock that needs a look (`probe`, the status to set): one
/// look now and, for the locks that look abandoned, another one [`DEAD_HOLDER_LOOK`] later.
pub(super) fn settle<'a>(locks: impl IntoIterator<Item = (&'a Probe, &'a mut LockStatus)>) {
    let mut suspects = Vec::new();
    for (probe, status) in locks {
        match look_once(probe) {
            Seen::Nobody(file) => suspects.push((probe, status, file)),
            Seen::Known(known) => *status = known,
        }
    }
    if suspects.is_empty() {
        return;
    }
    std::thread::sleep(DEAD_HOLDER_LOOK);
    for (probe, status, file) in suspects {
        *status = match look_once(probe) {
            Seen::Nobody(again) if again == file => LockStatus::HolderDied,
            Seen::Known(known) => known,
            Seen::Nobody(_) => LockStatus::Held,
        };
    }
}
