//! Is a POSIX segment file still in use? The stale-segment probe of `create` (and of
//! `qshm rm --stale`) and the last detacher's check, without a cost that grows with the
//! number of processes in the common case.

use std::ffi::CString;
use std::time::Instant;

use super::id_of;
use crate::error::Failure;
use crate::os::{self, FileStat};
use crate::sys::lock_state::LockState;
use crate::sys::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use crate::sys::procfs::{self, Mapped};

/// What a look at an existing segment name found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// In use, or not ours to remove (`owner`: whose it is).
    Live { owner: u32 },
    /// It was removed (by us, because it was stale and ours, or by someone else).
    Gone,
}

/// Look at the segment file named `c_path`: remove it (with its lock state) if it is ours
/// and stale, else report it live.
pub(crate) fn probe_existing(c_path: &CString) -> Result<Probe, Failure> {
    let file = match NamedFile::open(c_path, libc::O_RDONLY, 0) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Probe::Gone),
        // not ours to inspect (another user's, or not a regular file): in use
        Err(_) => {
            let owner = os::lstat(c_path).map(|st| st.uid).unwrap_or(u32::MAX);
            return Ok(Probe::Live { owner });
        }
    };
    let owner = file.stat.uid;
    if owner != os::euid() {
        return Ok(Probe::Live { owner });
    }
    if !file.try_lock(FileLock::Exclusive)? {
        // A shared lock means a live user; an exclusive one a destroyer, who always
        // unlinks: wait for it, then see if the name survived.
        file.lock_until(FileLock::Shared, Instant::now() + FILE_LOCK_WAIT)?;
        return Ok(if file.still_named() {
            Probe::Live { owner }
        } else {
            Probe::Gone
        });
    }
    if !file.still_named() {
        return Ok(Probe::Gone);
    }
    if !unused_by_others(&file) {
        return Ok(Probe::Live { owner });
    }
    LockState::remove(id_of(&file.path, &file.stat));
    let removed = file.unlink_if_still_named();
    file.release();
    removed?;
    Ok(Probe::Gone)
}

/// Whether, holding the segment file's exclusive `flock` (so no qshm attachment exists),
/// no other process can still be using it. Asked first of the kernel (a lease probe,
/// cheap whatever the number of processes): nobody else has the file open at all. If
/// someone has, it may be a qshm process coming or going, which holds the file open for a
/// moment but maps nothing while we hold the lock; a program that is not qshm (Qt) maps
/// the file while attached, and that is what `/proc` is asked then. (A Qt attach in
/// progress, between `shm_open` and `mmap`, holds Qt's semaphore, which a Qt-compatible
/// destroyer holds meanwhile.) On `true` a lease may be held: [`NamedFile::release`] it.
pub(crate) fn unused_by_others(file: &NamedFile) -> bool {
    match file.alone() {
        Some(true) => true,
        Some(false) | None => !mapped_by_others(&file.stat),
    }
}

/// The `/proc` fallback where no lease can be taken: does any other process map the file?
/// Processes we may not inspect count as mapping it if they could open it.
pub(super) fn mapped_by_others(st: &FileStat) -> bool {
    let census = procfs::census(&[Mapped::File {
        dev: st.dev,
        ino: st.ino,
    }]);
    !census.mapping.is_empty()
        || census
            .hidden
            .iter()
            .any(|&(_, uid)| uid == 0 || uid == st.uid || st.mode & 0o066 != 0)
}
