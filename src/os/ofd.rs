//! Open-file-description byte-range locks (`F_OFD_SETLK`, `F_OFD_GETLK`): locks the kernel
//! keeps for an open file description, drops when its last descriptor closes (so also when
//! the process dies or `exec`s), and shows to every process that may open the file, in any
//! PID namespace, without privileges. qshm uses one byte of a lock-state file per process
//! as that process's proof of life (see `sys/lock_state/slots.rs`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::retry;

fn flock_at(kind: libc::c_short, offset: u64) -> io::Result<libc::flock> {
    let start = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        // F_OFD_* requires 0
        l_pid: 0,
    })
}

/// Take an exclusive lock on byte `offset` of `fd`'s file for `fd`'s open file description,
/// without waiting: `Ok(false)` when another open file description holds it. The file
/// must be open for writing. The byte may lie past the end of the file.
#[doc(alias = "F_OFD_SETLK")]
pub(crate) fn ofd_try_lock_byte(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let lock = flock_at(libc::F_WRLCK as libc::c_short, offset)?;
    // SAFETY: lock is a valid flock for the duration of the call.
    match retry(|| super::cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) })) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an open file description other than `fd`'s holds a lock on byte `offset` of
/// the file (`F_OFD_GETLK`: the file may be open read-only; a lock held through `fd`
/// itself is not seen).
#[doc(alias = "F_OFD_GETLK")]
pub(crate) fn ofd_byte_locked(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut lock = flock_at(libc::F_WRLCK as libc::c_short, offset)?;
    // SAFETY: lock is a valid flock the kernel fills in.
    retry(|| super::cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) }))?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_byte_lock_is_seen_by_other_descriptions_until_closed() {
        let dir = std::ffi::CString::new("/dev/shm").unwrap();
        let file = super::super::open(&dir, libc::O_TMPFILE | libc::O_RDWR, 0o600).unwrap();
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        let other = super::super::open(&path, libc::O_RDONLY, 0).unwrap();
        let third = super::super::open(&path, libc::O_RDWR, 0).unwrap();
        assert!(
            !ofd_byte_locked(other.as_fd(), 1 << 30).unwrap(),
            "nobody holds it yet"
        );
        assert!(
            ofd_try_lock_byte(file.as_fd(), 1 << 30).unwrap(),
            "past the end of the file"
        );
        assert!(
            ofd_byte_locked(other.as_fd(), 1 << 30).unwrap(),
            "seen through a read-only description"
        );
        assert!(
            !ofd_byte_locked(file.as_fd(), 1 << 30).unwrap(),
            "its own lock does not conflict"
        );
        assert!(!ofd_try_lock_byte(third.as_fd(), 1 << 30).unwrap(), "exclusive");
        assert!(
            ofd_try_lock_byte(third.as_fd(), (1 << 30) + 1).unwrap(),
            "the next byte is free"
        );
        drop(file);
        assert!(
            !ofd_byte_locked(other.as_fd(), 1 << 30).unwrap(),
            "gone with its description"
        );
    }
}
