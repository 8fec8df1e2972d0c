//! POSIX named semaphores (`sem_open` and friends).

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::{cvt, fchmod, fstat, link_fd, lstat, open, realtime_deadline, retry};

/// glibc's `SEM_VALUE_MAX`: a POSIX semaphore never counts higher.
pub(crate) const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// An open POSIX named semaphore.
pub(crate) struct NamedSemaphore(*mut libc::sem_t);

// SAFETY: a sem_t handle may be used from any thread; the semaphore is process-shared.
unsafe impl Send for NamedSemaphore {}
// SAFETY: sem_wait/sem_post are thread-safe.
unsafe impl Sync for NamedSemaphore {}

impl NamedSemaphore {
    pub(crate) fn open(name: &CStr, flags: libc::c_int, mode: libc::mode_t, value: u32) -> io::Result<Self> {
        retry(|| {
            // SAFETY: name is NUL-terminated; the variadic mode and value are passed as
            // the C ABI expects (mode_t promoted to unsigned int, value unsigned int).
            let sem = unsafe { libc::sem_open(name.as_ptr(), flags, mode as libc::c_uint, value) };
            if sem == libc::SEM_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(NamedSemaphore(sem))
            }
        })
    }

    /// Make a new semaphore `name` (its file `path` in `dir`) with `value`, the way
    /// `sem_open(O_CREAT | O_EXCL)` does, but atomically: glibc writes it into a
    /// temporary `sem.XXXXXX` it links and then unlinks, which a creator killed in
    /// between leaves behind for ever. Here the file has no name until it is complete
    /// (`O_TMPFILE`), so a killed creator leaves nothing. The bytes are glibc's own
    /// (`sem_init` with `pshared`), so every `sem_open` of the name, Qt's included, opens
    /// it as if glibc had made it. Fails with `EEXIST` when the name is taken (also when
    /// it was replaced between linking and opening it).
    pub(crate) fn create_new(
        dir: &CStr,
        path: &CStr,
        name: &CStr,
        mode: libc::mode_t,
        value: u32,
    ) -> io::Result<Self> {
        use std::os::unix::fs::FileExt;
        let fd = open(dir, libc::O_TMPFILE | libc::O_RDWR, mode)?;
        fchmod(&fd, mode)?;
        let mut sem = std::mem::MaybeUninit::<libc::sem_t>::zeroed();
        // SAFETY: sem points to a zeroed sem_t we own; pshared = 1 makes it usable
        // between processes, as sem_open makes it.
        cvt(unsafe { libc::sem_init(sem.as_mut_ptr(), 1, value) })?;
        // SAFETY: every byte of sem is initialised (zeroed, then set by sem_init) and the
        // slice covers exactly the sem_t, which lives until the end of this function.
        let bytes = unsafe {
            std::slice::from_raw_parts(sem.as_ptr().cast::<u8>(), std::mem::size_of::<libc::sem_t>())
        };
        let file = std::fs::File::from(fd);
        file.write_all_at(bytes, 0)?;
        let fd = OwnedFd::from(file);
        link_fd(&fd, path)?;
        let opened = NamedSemaphore::open(name, 0, 0, 0)?;
        // The name may have been unlinked and reused between link and open: ours only if
        // it still names our file (a file, once unlinked, never gets that name back).
        match (lstat(path), fstat(&fd)) {
            (Ok(named), Ok(ours)) if named.same_file(&ours) => Ok(opened),
            _ => Err(io::Error::from_raw_os_error(libc::EEXIST)),
        }
    }

    pub(crate) fn unlink(name: &CStr) -> io::Result<()> {
        // SAFETY: name is NUL-terminated.
        cvt(unsafe { libc::sem_unlink(name.as_ptr()) }).map(drop)
    }

    /// Wait; `None` blocks, `Some(0)` tries once. `Ok(false)` on busy or timeout.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let rc = retry(|| match timeout {
            // SAFETY: self.0 is a live semaphore handle.
            None => cvt(unsafe { libc::sem_wait(self.0) }),
            // SAFETY: self.0 is a live semaphore handle.
            Some(t) if t.is_zero() => cvt(unsafe { libc::sem_trywait(self.0) }),
            Some(t) => {
                let deadline = realtime_deadline(t);
                // SAFETY: self.0 is live and deadline is a valid timespec.
                cvt(unsafe { libc::sem_timedwait(self.0, &deadline) })
            }
        });
        match rc {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ETIMEDOUT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the semaphore is mapped (to find its file in `/proc/self/maps`).
    pub(crate) fn addr(&self) -> usize {
        self.0 as usize
    }

    pub(crate) fn post(&self) -> io::Result<()> {
        // SAFETY: self.0 is a live semaphore handle.
        cvt(unsafe { libc::sem_post(self.0) }).map(drop)
    }

    pub(crate) fn value(&self) -> io::Result<i32> {
        let mut v = 0;
        // SAFETY: self.0 is live and v is a valid int to write.
        cvt(unsafe { libc::sem_getvalue(self.0, &mut v) })?;
        Ok(v)
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        // SAFETY: self.0 came from sem_open and is closed exactly once.
        unsafe { libc::sem_close(self.0) };
    }
}
