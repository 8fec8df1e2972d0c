//! Futexes on words in shared file mappings.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::timespec;

/// Sleep while `word` holds `expected` (`FUTEX_WAIT`), at most `timeout` (`None`: until
/// woken). Deliberately without `FUTEX_PRIVATE_FLAG`: the word lives in a `MAP_SHARED`
/// file mapping, and the kernel matches waiters and wakers of such a word by the file
/// and offset, so processes that map it at different addresses meet. `Ok(true)`: woken,
/// interrupted by a signal, or the word did not hold `expected` (the caller looks
/// again); `Ok(false)`: the timeout passed. A waiter holds nothing: killing it leaves
/// no trace in the word.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<bool> {
    // SAFETY: the borrow keeps the word alive and aligned for the call.
    unsafe { futex_wait_at(word.as_ptr(), expected, timeout) }
}

/// [`futex_wait`] on the 32-bit word at `word`: the value word of a glibc semaphore,
/// which other processes change with 64-bit atomics (the kernel only reads the word).
///
/// # Safety
/// `word` must point to a live, 4-byte aligned word of a mapping for the whole call.
pub(crate) unsafe fn futex_wait_at(
    word: *const u32,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word is live and aligned per the caller's contract; FUTEX_WAIT only reads
    // it; ts_ptr is null or points to a valid relative timespec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(true),
        Some(libc::ETIMEDOUT) => Ok(false),
        _ => Err(e),
    }
}

/// Wake every process and thread sleeping in [`futex_wait`] on `word` (`FUTEX_WAKE`,
/// shared, as there). Returns how many were woken.
pub(crate) fn futex_wake_all(word: &AtomicU32) -> io::Result<usize> {
    futex_wake(word, i32::MAX)
}

/// Wake at most `count` processes and threads sleeping on `word` (`FUTEX_WAKE`, shared).
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) -> io::Result<usize> {
    // SAFETY: the borrow keeps the word alive and aligned for the call.
    unsafe { futex_wake_at(word.as_ptr(), count) }
}

/// [`futex_wake`] on the 32-bit word at `word` (see [`futex_wait_at`]).
///
/// # Safety
/// `word` must point to a live, 4-byte aligned word of a mapping for the whole call.
pub(crate) unsafe fn futex_wake_at(word: *const u32, count: i32) -> io::Result<usize> {
    // SAFETY: word is live and aligned per the caller's contract; FUTEX_WAKE does not
    // touch it (the address only names the wait queue).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}
