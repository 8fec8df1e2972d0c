//! The segment lock: one interface ([`RawLock`]), one implementation per lock mode and key
//! type, chosen once when the segment is attached ([`SegmentLock`]).
//!
//! | lock | what it takes | a dead holder |
//! |---|---|---|
//! | [`FastLock`] (`LockMode::Fast`) | a word in qshm's lock state: 0 or the holder's label | its slot is free: the next waiter takes over within milliseconds |
//! | [`QtPosixLock`] (Qt-compatible, POSIX key) | a unit of Qt's semaphore (glibc's `sem_t`), labelled with the qshm holder in the same instruction | labelled: as Fast; unlabelled (a Qt holder): when no living process could hold it (`census.rs`) |
//! | [`QtSystemVLock`] (Qt-compatible, System V key) | a unit of Qt's semaphore set, `SEM_UNDO` | the kernel gives the unit back; the qshm holder's label says it died |
//!
//! # No pointers in shared memory
//!
//! Every word another process can write is a plain integer changed with atomics and
//! futex calls: a holder's label (a slot and its generation, `lock_state/slots.rs`), a
//! contended flag, a semaphore value. No qshm process writes through, or follows, a
//! pointer read from a mapping another process can write. What such a process can write
//! there makes the lock busy or free, and nothing else.
//!
//! # Holders are known by what the kernel keeps
//!
//! A holder is alive while its slot's byte lock is held (the kernel drops it when the
//! process dies or `exec`s), whoever and wherever it is (another user, another PID
//! namespace). A waiter looks every [`LIVENESS_INTERVAL`] while it waits, and `try_lock` at
//! most that often; its own process's holders are always alive to it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Failure, SharedMemoryError};
use crate::sys::lock_state::LockState;
use crate::sys::{LockMode, LockParts};

mod census;
mod deadline;
mod fast;
mod local;
mod qt_posix;
mod qt_system_v;

pub(crate) use census::nobody_could_hold;
pub(crate) use deadline::Deadline;
pub(crate) use fast::FastLock;
pub(crate) use local::{LocalHolder, LockId};
pub(crate) use qt_posix::QtPosixLock;
pub(crate) use qt_system_v::QtSystemVLock;

/// The lock word's flag: others may sleep on it, so the holder must wake one at unlock.
pub(crate) const CONTENDED: u32 = 1 << 31;

/// How long a waiter waits before it first looks whether the holder lives, and how often
/// it looks again. Recovery of a dead qshm holder takes at most about this long.
pub(crate) const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);

/// How long an unlabelled POSIX semaphore unit (a Qt holder's) must stay taken before a
/// waiter looks for its holder in `/proc`, and how far apart the two looks are.
pub(crate) const DEAD_QT_HOLDER_LOOK: Duration = Duration::from_millis(1000);

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The previous holder gave it back.
    Clean,
    /// The previous holder died holding it (or, System V, its label says so): the data it
    /// guards may be half written.
    PreviousOwnerDied,
}

/// How a lock attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    Acquired(Acquired),
    /// Held by someone else until the deadline.
    Busy,
}

/// A lock between threads and processes. The calling thread is the holder between a
/// successful attempt and [`unlock`](RawLock::unlock).
pub(crate) trait RawLock {
    /// Take the lock, waiting until `deadline`.
    fn lock(&self, deadline: Deadline) -> Result<Attempt, Failure>;
    /// Give the lock back; the calling thread holds it.
    fn unlock(&self) -> Result<(), Failure>;
}

/// The lock of one attached segment, in its mode.
pub(crate) enum SegmentLock {
    Fast(FastLock),
    QtPosix(QtPosixLock),
    QtSystemV(QtSystemVLock),
    /// This user may read the segment but not take its lock.
    Unlockable(Unlockable),
}

/// The lock of a segment this user may not take (it may not write the segment): every
/// attempt is `PermissionDenied`; the lock state, read-only, still tells of changes.
pub(crate) struct Unlockable {
    state: Option<Arc<LockState>>,
    mode: LockMode,
}

impl Unlockable {
    fn state(&self) -> Option<&LockState> {
        self.state.as_deref()
    }
}

impl RawLock for Unlockable {
    fn lock(&self, _: Deadline) -> Result<Attempt, Failure> {
        Err(readers_may_not_lock())
    }

    fn unlock(&self) -> Result<(), Failure> {
        Err(readers_may_not_lock())
    }
}

/// Run `$body` with `$lock` bound to the implementation (the one place that tells modes
/// apart).
macro_rules! each {
    ($self:expr, $lock:ident => $body:expr) => {
        match $self {
            SegmentLock::Fast($lock) => $body,
            SegmentLock::QtPosix($lock) => $body,
            SegmentLock::QtSystemV($lock) => $body,
            SegmentLock::Unlockable($lock) => $body,
        }
    };
}

// The uncontended path, from `SharedMemory::lock` through these to the guard's drop, is
// `inline(always)`: with plain `#[inline]` the compiler kept `lock` and the dispatch out of
// line and a Fast lock+unlock cost 21.5 ns instead of 8.7 ns (bench/RESULTS.md); the slow
// paths stay `#[cold]` and out of line.
impl RawLock for SegmentLock {
    #[inline(always)]
    fn lock(&self, deadline: Deadline) -> Result<Attempt, Failure> {
        each!(self, lock => lock.lock(deadline))
    }

    #[inline(always)]
    fn unlock(&self) -> Result<(), Failure> {
        each!(self, lock => lock.unlock())
    }
}

impl SegmentLock {
    /// The lock made of the parts a backend found or made.
    pub(crate) fn from_parts(parts: LockParts) -> SegmentLock {
        match parts {
            LockParts::Fast { state } => match FastLock::new(state.clone()) {
                Ok(lock) => SegmentLock::Fast(lock),
                Err(_) => SegmentLock::Unlockable(Unlockable {
                    state: Some(state),
                    mode: LockMode::Fast,
                }),
            },
            LockParts::QtPosix { semaphore, state } => {
                SegmentLock::QtPosix(QtPosixLock::new(semaphore, state))
            }
            LockParts::QtSystemV { semaphore, state } => {
                SegmentLock::QtSystemV(QtSystemVLock::new(semaphore, state))
            }
            LockParts::Unlockable { state, mode } => SegmentLock::Unlockable(Unlockable { state, mode }),
        }
    }

    /// The lock mode.
    pub(crate) fn mode(&self) -> LockMode {
        match self {
            SegmentLock::Fast(_) => LockMode::Fast,
            SegmentLock::QtPosix(_) | SegmentLock::QtSystemV(_) => LockMode::QtCompatible,
            SegmentLock::Unlockable(lock) => lock.mode,
        }
    }

    /// The segment's lock state, if it has one (also the home of change notification).
    pub(crate) fn state(&self) -> Option<&LockState> {
        each!(self, lock => lock.state())
    }
}

/// The error for a lock that this user may not take.
pub(crate) fn readers_may_not_lock() -> Failure {
    Failure::because(
        SharedMemoryError::PermissionDenied,
        "only users who may write the segment may take its lock (as with Qt, whose lock \
         semaphore its owner's readers cannot open); wait_for_change() works for readers",
    )
}

/// The error for a second lock from the thread that holds it.
pub(crate) fn held_by_this_thread() -> Failure {
    Failure::because(SharedMemoryError::LockError, "this thread already holds the lock")
        .with_os(std::io::Error::from_raw_os_error(libc::EDEADLK))
}

/// The error for a lock word that changed hands while this thread held it.
pub(crate) fn taken_from_us() -> Failure {
    Failure::because(
        SharedMemoryError::LockError,
        "the lock was no longer held by this thread at unlock: another process wrote its lock word",
    )
}

/// A system call of the lock failed.
pub(crate) fn os_failure(e: std::io::Error) -> Failure {
    Failure::from(e).with_kind(SharedMemoryError::LockError)
}
