//! Taking the segment's lock: the guards' constructors, with the inlined uncontended path.

use std::time::Duration;

use super::guard::{LockGuard, ReadGuard};
use super::{AccessMode, Attachment, SharedMemory};
use crate::error::{Error, Result, SharedMemoryError};

impl SharedMemory {
    /// Lock the segment for reading and writing, waiting as long as it takes.
    ///
    /// `LockError` when not attached (or a second lock from the thread holding it: Qt
    /// would return at once, but two guards would be two `&mut` to the same bytes),
    /// `PermissionDenied` when attached read-only (use [`lock_read`](Self::lock_read)).
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        let (a, died) = self.take(None, true)?.ok_or_else(|| self.never_empty())?;
        Ok(LockGuard::new(self, &a.locker, &a.mapping, died))
    }

    /// Lock for writing if nobody holds the lock now; `Ok(None)` if it is busy.
    ///
    /// It never waits, so it never finds out that a holder of a Qt-compatible POSIX lock
    /// died (that takes two looks a second apart): a caller that polls uses
    /// [`lock_timeout`](Self::lock_timeout), which recovers such a lock.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Some(Duration::ZERO), true)?
            .map(|(a, died)| LockGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Lock for writing, waiting at most `timeout`; `Ok(None)` on timeout.
    /// (`Duration::MAX` waits for ever.)
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Some(timeout), true)?
            .map(|(a, died)| LockGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Lock the segment for reading (works for both access modes).
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_read(&self) -> Result<ReadGuard<'_>> {
        let (a, died) = self.take(None, false)?.ok_or_else(|| self.never_empty())?;
        Ok(ReadGuard::new(self, &a.locker, &a.mapping, died))
    }

    /// [`lock_read`](Self::lock_read) without waiting; `Ok(None)` if busy.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn try_lock_read(&self) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Some(Duration::ZERO), false)?
            .map(|(a, died)| ReadGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// [`lock_read`](Self::lock_read), waiting at most `timeout`; `Ok(None)` on timeout.
    #[inline]
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Some(timeout), false)?
            .map(|(a, died)| ReadGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Take the lock: the inlined uncontended Fast-mode path first, else the general one.
    #[inline]
    fn take(&self, timeout: Option<Duration>, write: bool) -> Result<Option<(&Attachment, bool)>> {
        if let Some(a) = &self.attached
            && (!write || a.access == AccessMode::ReadWrite)
            && let Some(fast) = a.locker.try_fast()
        {
            let result = fast.map(|died| Some((a, died))).map_err(|e| self.lock_error(e));
            return self.record(result);
        }
        let result = self.take_slow(timeout, write);
        self.record(result)
    }

    #[inline(never)]
    fn take_slow(&self, timeout: Option<Duration>, write: bool) -> Result<Option<(&Attachment, bool)>> {
        const OP: &str = "lock";
        let Some(a) = &self.attached else {
            return Err(self.error_of(
                OP,
                SharedMemoryError::LockError,
                "not attached: create or attach first",
            ));
        };
        if write && a.access == AccessMode::ReadOnly {
            return Err(self.error_of(
                OP,
                SharedMemoryError::PermissionDenied,
                "attached read-only: use lock_read()",
            ));
        }
        match a.locker.acquire(timeout) {
            Ok(Some(died)) => Ok(Some((a, died))),
            Ok(None) => Ok(None),
            Err(e) => Err(self.lock_error(e)),
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
    fn lock_error(&self, e: std::io::Error) -> Error {
        if e.raw_os_error() == Some(libc::EDEADLK) {
            return self.error_of(
                "lock",
                SharedMemoryError::LockError,
                "this thread already holds the lock",
            );
        }
        Error::new(SharedMemoryError::LockError, "lock", self.key.display_name())
            .with_detail("unable to lock")
            .with_os(e)
    }

    /// Tell the next holder that the holder before it died, while this handle holds the
    /// lock without using the data (a tool that frees a dead holder's lock).
    #[cfg(feature = "admin")]
    pub(crate) fn pass_on_owner_death(&self) {
        if let Some(state) = self.attached.as_ref().and_then(|a| a.locker.state()) {
            state
                .owner_died_pending()
                .store(1, std::sync::atomic::Ordering::Release);
        }
    }

    #[cold]
    pub(crate) fn unlock_error(&self, e: std::io::Error) -> Error {
        Error::new(SharedMemoryError::LockError, "unlock", self.key.display_name())
            .with_detail("unable to unlock")
            .with_os(e)
    }
}
