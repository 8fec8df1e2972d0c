//! Taking the segment's lock: the guards' constructors, with the inlined uncontended path.

use std::time::Duration;

use super::guard::{LockGuard, ReadGuard};
use super::{AccessMode, Attachment, SharedMemory};
use crate::error::{Error, Failure, Result, SharedMemoryError};
use crate::lock::{Acquired, Attempt, Deadline, RawLock};

impl SharedMemory {
    /// Lock the segment for reading and writing, waiting as long as it takes.
    ///
    /// `LockError` when not attached (or a second lock from the thread holding it: Qt
    /// would return at once, but two guards would be two `&mut` to the same bytes),
    /// `PermissionDenied` when attached read-only (use [`lock_read`](Self::lock_read)) or
    /// when this user may not write the segment (only its writers may take its lock).
    #[inline(always)]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        let (a, died) = self
            .take(Deadline::Never, true)?
            .ok_or_else(|| self.never_empty())?;
        Ok(LockGuard::new(self, a, died))
    }

    /// Lock for writing if nobody holds the lock now; `Ok(None)` if it is busy.
    ///
    /// It never sleeps. A lock whose holder died is taken over (and the guard says so)
    /// when this looks at the holder, which a try does at most every 10 ms; a POSIX lock a
    /// Qt process held when it died needs two looks a second apart, which only a waiting
    /// call ([`lock_timeout`](Self::lock_timeout)) makes.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Deadline::Now, true)?
            .map(|(a, died)| LockGuard::new(self, a, died)))
    }

    /// Lock for writing, waiting at most `timeout`; `Ok(None)` on timeout.
    /// (`Duration::MAX` waits for ever.)
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Deadline::after(Some(timeout)), true)?
            .map(|(a, died)| LockGuard::new(self, a, died)))
    }

    /// Lock the segment for reading (works for both access modes).
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_read(&self) -> Result<ReadGuard<'_>> {
        let (a, died) = self
            .take(Deadline::Never, false)?
            .ok_or_else(|| self.never_empty())?;
        Ok(ReadGuard::new(self, a, died))
    }

    /// [`lock_read`](Self::lock_read) without waiting; `Ok(None)` if busy.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn try_lock_read(&self) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Deadline::Now, false)?
            .map(|(a, died)| ReadGuard::new(self, a, died)))
    }

    /// [`lock_read`](Self::lock_read), waiting at most `timeout`; `Ok(None)` on timeout.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Deadline::after(Some(timeout)), false)?
            .map(|(a, died)| ReadGuard::new(self, a, died)))
    }

    /// Take the lock (the whole uncontended path is inlined: one compare-and-swap).
    #[inline(always)]
    fn take(&self, deadline: Deadline, write: bool) -> Result<Option<(&Attachment, bool)>> {
        let result = match &self.attached {
            Some(a) if (!write || a.access == AccessMode::ReadWrite) && !a.forked() => {
                match a.lock.lock(deadline) {
                    Ok(Attempt::Acquired(how)) => Ok(Some((a, how == Acquired::PreviousOwnerDied))),
                    Ok(Attempt::Busy) => Ok(None),
                    Err(f) => Err(self.lock_error(f)),
                }
            }
            _ => Err(self.cannot_lock(write)),
        };
        self.record(result)
    }

    /// Why a handle cannot lock at all.
    #[cold]
    fn cannot_lock(&self, write: bool) -> Error {
        const OP: &str = "lock";
        match &self.attached {
            None => self.error_of(
                OP,
                SharedMemoryError::LockError,
                "not attached: create or attach first",
            ),
            Some(a) if a.forked() => self.error_of(
                OP,
                SharedMemoryError::LockError,
                "this handle was inherited through fork(); attach anew in the child process",
            ),
            Some(_) if write => self.error_of(
                OP,
                SharedMemoryError::PermissionDenied,
                "attached read-only: use lock_read()",
            ),
            Some(_) => self.error_of(OP, SharedMemoryError::LockError, "cannot lock"),
        }
    }

    /// A blocking acquire cannot come back empty; if it ever did, say so instead of panicking.
    #[cold]
    fn never_empty(&self) -> Error {
        self.error_of(
            "lock",
            SharedMemoryError::LockError,
            "the lock wait ended without the lock",
        )
    }

    #[cold]
    fn lock_error(&self, f: Failure) -> Error {
        Error::from_failure("lock", self.key.display_name(), f)
    }

    #[cold]
    pub(crate) fn unlock_error(&self, f: Failure) -> Error {
        Error::from_failure("unlock", self.key.display_name(), f)
    }
}
