//! [`NamedFile`]: a file opened by name the careful way, once for every user of the idiom
//! (segment files, key files, lock state): never through a symbolic link, only a regular
//! file, `flock`ed with a bounded wait, and checked to still carry its name afterwards
//! (a file unlinked, or replaced, while we waited is not the one the name means now).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::os::{self, FileStat};

/// How long `flock` waits for another process before giving up. Every legitimate
/// holder (a create, attach or destroy of the same key) holds it for milliseconds.
pub(crate) const FILE_LOCK_WAIT: Duration = Duration::from_secs(3);

/// How long [`NamedFile::open_past_probes`] waits for another process's probe (a lease
/// held for microseconds; a second is ample even on a loaded machine).
pub(crate) const PROBE_PATIENCE: Duration = Duration::from_secs(1);

/// A regular file opened by name.
///
/// A `flock` taken through it is released explicitly when it drops, not by closing the
/// descriptor: a child another thread forked or spawned meanwhile (`posix_spawn` and
/// `vfork` copy the descriptor table too, and run no fork handlers) shares the open file
/// description until it calls `exec` (or for ever, if it never does), and closing our
/// copy would leave the lock held by the child for that long. A segment's shared lock so
/// kept made its last detacher take it for another attachment and keep the segment.
#[derive(Debug)]
pub(crate) struct NamedFile {
    pub fd: OwnedFd,
    pub stat: FileStat,
    pub path: CString,
    /// The `flock` this process took through `fd`: [`UNLOCKED`], [`SHARED`] or [`EXCLUSIVE`].
    locked: AtomicU8,
    /// `fork::epoch()` when opened: a child's copy never unlocks its parent's lock.
    fork_epoch: u64,
}

const UNLOCKED: u8 = 0;
const SHARED: u8 = 1;
const EXCLUSIVE: u8 = 2;

/// Shared or exclusive `flock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileLock {
    Shared,
    Exclusive,
}

impl FileLock {
    fn op(self) -> libc::c_int {
        match self {
            FileLock::Shared => libc::LOCK_SH,
            FileLock::Exclusive => libc::LOCK_EX,
        }
    }
}

/// The error a bounded lock wait ends with: `ErrorKind::TimedOut`.
pub(crate) fn lock_wait_timeout(path: &CStr) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{} has been locked by another process for more than {} s",
            path.to_string_lossy(),
            FILE_LOCK_WAIT.as_secs()
        ),
    )
}

impl NamedFile {
    /// Open `path` with `flags` (`O_NOFOLLOW`, `O_NONBLOCK` and `O_CLOEXEC` are added) and
    /// check that it is a regular file (`EINVAL` if not; a symbolic link is `ELOOP`).
    /// `O_NONBLOCK`: a file someone holds a lease on (a destroyer probing it, or another
    /// user's program holding one for ever) is `EWOULDBLOCK` at once, never the kernel's
    /// lease-break wait of 45 s.
    pub(crate) fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<NamedFile> {
        let fd = os::open(path, flags | libc::O_NOFOLLOW | libc::O_NONBLOCK, mode)?;
        let stat = os::fstat(&fd)?;
        if !stat.is_regular() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(NamedFile::from_parts(fd, stat, path.to_owned()))
    }

    /// [`open`](Self::open), waiting out another process's probe: a write lease (does
    /// anyone else have the file open?) held for microseconds makes the open `EWOULDBLOCK`,
    /// so it is tried again, a little later each time, for up to [`PROBE_PATIENCE`]. A
    /// lease held longer (only the file's owner or root can take one) is `EWOULDBLOCK` then.
    pub(crate) fn open_past_probes(
        path: &CStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<NamedFile> {
        let deadline = Instant::now() + PROBE_PATIENCE;
        let mut pause = Duration::from_micros(50);
        loop {
            match NamedFile::open(path, flags, mode) {
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// A file opened by other means (an `O_TMPFILE` given its name later).
    pub(crate) fn from_parts(fd: OwnedFd, stat: FileStat, path: CString) -> NamedFile {
        NamedFile {
            fd,
            stat,
            path,
            locked: AtomicU8::new(UNLOCKED),
            fork_epoch: super::fork::epoch_watched(),
        }
    }

    /// The descriptor alone, for a file kept open for longer (an exclusive lock taken
    /// through it is released first; a shared one stays, and its new owner's).
    pub(crate) fn into_fd(self) -> OwnedFd {
        let this = std::mem::ManuallyDrop::new(self);
        if this.locked.load(Ordering::Relaxed) == EXCLUSIVE {
            this.unlock_if_taken();
        }
        // SAFETY: `this` is never used or dropped again; each field is read out once and
        // `path` is dropped in place.
        unsafe {
            std::ptr::drop_in_place(std::ptr::addr_of!(this.path).cast_mut());
            std::ptr::read(&this.fd)
        }
    }

    fn unlock_if_taken(&self) {
        if self.locked.load(Ordering::Relaxed) != UNLOCKED && super::fork::epoch() == self.fork_epoch {
            let _ = os::flock(&self.fd, libc::LOCK_UN);
        }
    }

    /// `flock(lock | LOCK_NB)`, remembering the lock for `Drop`.
    fn flock_now(&self, lock: FileLock) -> io::Result<bool> {
        let taken = os::flock(&self.fd, lock.op() | libc::LOCK_NB)?;
        if taken {
            let state = match lock {
                FileLock::Shared => SHARED,
                FileLock::Exclusive => EXCLUSIVE,
            };
            self.locked.store(state, Ordering::Relaxed);
        }
        Ok(taken)
    }

    /// Take `lock`, waiting until `deadline` at most (then `ErrorKind::TimedOut`).
    pub(crate) fn lock_until(&self, lock: FileLock, deadline: Instant) -> io::Result<()> {
        let mut pause = Duration::from_micros(50);
        loop {
            if self.flock_now(lock)? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(lock_wait_timeout(&self.path));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Try `lock` once; `Ok(false)` when someone else holds a conflicting lock.
    pub(crate) fn try_lock(&self, lock: FileLock) -> io::Result<bool> {
        self.flock_now(lock)
    }

    /// True while `path` still names this very file.
    pub(crate) fn still_named(&self) -> bool {
        matches!(os::lstat(&self.path), Ok(now) if now.same_file(&self.stat))
    }

    /// Unlink the name if it still names this file (never someone else's new file).
    pub(crate) fn unlink_if_still_named(&self) -> io::Result<bool> {
        if !self.still_named() {
            return Ok(false);
        }
        match os::unlink(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when no other open file description of this file exists, anywhere (a write
    /// lease probe); `None` when the kernel cannot tell us (not the owner, leases off).
    /// While `Some(true)` is acted upon, the lease is held: call [`release`](Self::release).
    pub(crate) fn alone(&self) -> Option<bool> {
        if !leases_see_readers() {
            return None;
        }
        os::take_write_lease(&self.fd).ok()
    }

    /// Give back the lease [`alone`](Self::alone) took.
    pub(crate) fn release(&self) {
        os::release_lease(&self.fd);
    }
}

impl Drop for NamedFile {
    fn drop(&mut self) {
        self.unlock_if_taken();
    }
}

/// Whether write leases see read-only openers too (Linux 5.3 and later count them): checked
/// once per process on a scratch file, so an older kernel falls back to `/proc` scans.
pub(crate) fn leases_see_readers() -> bool {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHECKED.get_or_init(|| {
        let Ok(dir) = os::cstring(super::SHM_DIR) else {
            return false;
        };
        let Ok(file) = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, 0o600) else {
            return false;
        };
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let Ok(reader) = os::cstring(&proc_path).and_then(|p| os::open(&p, libc::O_RDONLY, 0)) else {
            return false;
        };
        let seen = matches!(os::take_write_lease(&file), Ok(false));
        os::release_lease(&file);
        drop(reader);
        seen
    })
}
