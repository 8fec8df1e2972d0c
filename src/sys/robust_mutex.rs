//! Robust, process-shared, error-checking pthread mutexes living in shared memory.
//!
//! "Robust": when the holder dies, the kernel (through glibc's robust list) hands the
//! mutex to the next locker with `EOWNERDEAD`; we mark it consistent and report
//! [`Locked::OwnerDied`]. "Error-checking": a second lock from the holding thread is
//! `EDEADLK` instead of a deadlock, and an unlock by another thread is `EPERM`.

use std::io;
use std::time::Duration;

use crate::os;

/// How a lock attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Locked; the previous owner released it normally.
    Yes,
    /// Locked, but the previous owner died holding it; it has been made consistent.
    OwnerDied,
    /// Not locked: busy (when trying) or timed out.
    Busy,
}

/// Initialise a robust, process-shared, error-checking mutex in place.
///
/// # Safety
/// `m` must point to writable memory for a `pthread_mutex_t` that no one uses now.
pub(crate) unsafe fn init(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    // SAFETY: attr is initialised by pthread_mutexattr_init before any other use; m is
    // valid per the caller's contract.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let result = check(libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|_| {
            check(libc::pthread_mutexattr_setrobust(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        .and_then(|_| {
            check(libc::pthread_mutexattr_settype(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))
        })
        .and_then(|_| check(libc::pthread_mutex_init(m, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        result
    }
}

/// Try once, without waiting (the uncontended fast path: no system call).
///
/// # Safety
/// `m` must point to a mutex initialised by [`init`] in memory that stays mapped.
#[inline]
pub(crate) unsafe fn try_lock(m: *mut libc::pthread_mutex_t) -> io::Result<Locked> {
    // SAFETY: m is a valid initialised mutex per the caller's contract.
    let rc = unsafe { libc::pthread_mutex_trylock(m) };
    if rc == 0 {
        return Ok(Locked::Yes);
    }
    // SAFETY: as above.
    unsafe { outcome(m, rc) }
}

/// Lock, waiting at most `timeout` (`Duration::ZERO` tries once).
///
/// # Safety
/// `m` must point to a mutex initialised by [`init`] in memory that stays mapped.
pub(crate) unsafe fn lock(m: *mut libc::pthread_mutex_t, timeout: Duration) -> io::Result<Locked> {
    // SAFETY: m is a valid initialised mutex per the caller's contract.
    let rc = unsafe {
        if timeout.is_zero() {
            libc::pthread_mutex_trylock(m)
        } else {
            libc::pthread_mutex_timedlock(m, &os::realtime_deadline(timeout))
        }
    };
    // SAFETY: as above.
    unsafe { outcome(m, rc) }
}

/// Turn a lock call's return code into an outcome.
///
/// # Safety
/// `m` as in [`lock`].
#[cold]
unsafe fn outcome(m: *mut libc::pthread_mutex_t, rc: libc::c_int) -> io::Result<Locked> {
    match rc {
        0 => Ok(Locked::Yes),
        libc::EOWNERDEAD => {
            // SAFETY: EOWNERDEAD hands us the mutex; mark it usable again.
            match unsafe { libc::pthread_mutex_consistent(m) } {
                0 => Ok(Locked::OwnerDied),
                rc => Err(io::Error::from_raw_os_error(rc)),
            }
        }
        libc::EBUSY | libc::ETIMEDOUT => Ok(Locked::Busy),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Unlock.
///
/// # Safety
/// `m` must be a mutex initialised by [`init`], locked by the calling thread.
#[inline]
pub(crate) unsafe fn unlock(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: guaranteed by the caller.
    match unsafe { libc::pthread_mutex_unlock(m) } {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}
