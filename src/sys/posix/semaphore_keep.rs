//! A second name for Qt's POSIX semaphore of a qshm segment, so that the semaphore
//! survives the unlink of its Qt name by the Qt process that made it.
//!
//! A Qt 6 program that calls `attach()` before the segment exists (a consumer started
//! before its producer) makes the key's semaphore and keeps it, as its creator; a qshm
//! `create` then finds it in use and shares it. When that Qt process exits it unlinks the
//! semaphore's name (Qt's creator always does), while qshm's creator and attachers keep
//! using it, and the next attacher, finding the name free, would make another: two locks.
//! So the creator links the semaphore it made or shared under a second name beside the
//! lock state (`qshm-lock.k.…`, [`SegmentId::semaphore_keep_path`]), before it names the lock
//! state (so nobody who saw that name can take the second one first), and an attacher that finds the Qt
//! name missing gives the same semaphore its name back from there, if the second name is
//! still the semaphore the lock state records (device, inode, birth time). The second name
//! goes with the lock state ([`LockState::remove`](crate::sys::lock_state::LockState)).
//!
//! Not covered: a Qt process that comes to the key between that unlink and the next qshm
//! attach makes a new semaphore of its own, as it would beside another Qt process (Qt
//! alone does no better: its creator's `QSystemSemaphore::Create` replaces the semaphore
//! a failed `attach()` made, while that process keeps the old one open).

use std::ffi::CString;

use crate::os;
use crate::sys::lock_state::SegmentId;
use crate::sys::named_file::NamedFile;

use super::SemaphoreFile;

/// Give `sem` (the segment's semaphore, named now) its second name for segment `id`.
/// Best effort: without it, only the case this module is for goes unmended.
pub(super) fn keep(sem: &SemaphoreFile, id: SegmentId) {
    if let Some(Ok(path)) = id.semaphore_keep_path().map(|p| os::cstring(&p)) {
        let _ = sem.link_to(&path);
    }
}

/// The Qt name `sem_path` is missing: name the semaphore that `recorded` (the lock
/// state's record: device, inode, birth ns) says is segment `id`'s again, from its second
/// name. Whether it did (or someone else named one meanwhile: open that).
pub(super) fn restore(sem_path: &CString, id: SegmentId, recorded: [u64; 3]) -> bool {
    let Some(Ok(keep_path)) = id.semaphore_keep_path().map(|p| os::cstring(&p)) else {
        return false;
    };
    let Ok(keep) = NamedFile::open(&keep_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    // (device and inode: a link changes the ctime a filesystem without birth times
    // records instead; the second name keeps the inode from being reused)
    if [keep.stat.dev, keep.stat.ino] != recorded[..2] {
        return false; // not the semaphore the lock state records: never name another
    }
    match os::link_fd(&keep.fd, sem_path) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EEXIST),
    }
}
