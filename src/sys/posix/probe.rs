//! Is a POSIX segment file still in use? The stale-segment probe of `create` (and of
//! `qshm rm --stale`) and the last detacher's check.
//!
//! The rule: qshm's own attachments hold a shared `flock` (the kernel's count). A file
//! nobody holds a `flock` on may still be mapped by a program that is not qshm (Qt):
//! only the kernel's answer "nobody else has this file open or mapped" (a write-lease
//! probe, whatever the user, PID namespace or number of processes) lets it be destroyed.
//! Processes that open it for a moment (a qshm attach retrying while the destroyer holds
//! the file, a tool looking at it) are let go by a few probes a few milliseconds apart.
//! Where the kernel cannot answer, `/proc` is asked, and a process that could open the
//! file but whose mappings may not be read counts as a user: absence of evidence never
//! destroys a segment.

use std::ffi::CString;
use std::time::{Duration, Instant};

use super::id_of;
use crate::error::Failure;
use crate::os::{self, FileStat};
use crate::sys::SHM_DIR;
use crate::sys::lock_state::{LockState, SegmentId, name_tag};
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

/// How long a probe waits for a lease on the segment file to go (a destroyer's lasts
/// microseconds; one that stays is someone's who uses the file).
const LEASE_PATIENCE: Duration = Duration::from_millis(50);

/// How long apart the destroyer's lease probes are (about 6 ms in all).
const PROBE_PAUSES: [Duration; 3] = [
    Duration::from_micros(200),
    Duration::from_millis(1),
    Duration::from_millis(5),
];

/// Whose stale segments a probe may remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Only this user's (`create`: another user's stale segment is theirs to reclaim).
    Ours,
    /// Anyone's this user may judge (root's `qshm rm --stale`).
    AnyoneWeMay,
}

/// Look at the segment file named `c_path`: remove it (with its lock state) if it is
/// stale and `reclaim` allows, else report it live.
pub(crate) fn probe_existing(c_path: &CString, reclaim: Reclaim) -> Result<Probe, Failure> {
    let started = Instant::now();
    let deadline = started + FILE_LOCK_WAIT;
    loop {
        let file = match NamedFile::open(c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Probe::Gone),
            // someone holds a lease: a destroyer for microseconds (look again in a moment),
            // or a program for ever (then it is in use)
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if started.elapsed() < LEASE_PATIENCE {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let owner = os::lstat(c_path).map(|st| st.uid).unwrap_or(u32::MAX);
                return Ok(Probe::Live { owner });
            }
            // not ours to inspect (another user's, or not a regular file): in use
            Err(_) => {
                let owner = os::lstat(c_path).map(|st| st.uid).unwrap_or(u32::MAX);
                return Ok(Probe::Live { owner });
            }
        };
        let owner = file.stat.uid;
        // another user's segment: only root's clean-up judges it (its lease probe works on
        // any file)
        if owner != os::euid() && !(reclaim == Reclaim::AnyoneWeMay && os::euid() == 0) {
            return Ok(Probe::Live { owner });
        }
        if !file.try_lock(FileLock::Exclusive)? {
            // Shared locks are live users; an exclusive one a destroyer (or a reclaimer),
            // who unlinks or lets go in a moment: wait for that without keeping the file
            // open (which would look like a user to its lease probe).
            if file.try_lock(FileLock::Shared)? || Instant::now() >= deadline {
                return Ok(Probe::Live { owner });
            }
            drop(file);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if !file.still_named() {
            return Ok(Probe::Gone);
        }
        if !unused_by_others(&file) {
            return Ok(Probe::Live { owner });
        }
        // the name first, then the lock state (see the last detach in mod.rs)
        let removed = file.unlink_if_still_named();
        LockState::remove(id_of(&file.path, &file.stat));
        file.release();
        removed?;
        return Ok(Probe::Gone);
    }
}

/// Remove the lock states of this key's segments that are not the named one and that
/// nobody has open: a creator killed after naming its lock state and before naming its
/// segment leaves one (its file is gone with it). Once a lock state is alone, its creator
/// is gone or done, so a look at the name under the lease settles whose it is. A creator at work, or a process still
/// attached to a segment removed by name, has its lock state open, and a lease tells
/// (the kernel's count, for every user); where a lease cannot be taken (another user's
/// file, an old kernel), the lock state stays for `qshm rm --stale`.
pub(crate) fn sweep_orphaned_lock_states(c_path: &CString) {
    let Some(file_name) = c_path.to_str().ok().and_then(|p| p.rsplit('/').next()) else {
        return;
    };
    let prefix = SegmentId::Posix {
        name_tag: name_tag(file_name),
        ino: 0,
        btime_ns: 0,
    }
    .lock_state_name();
    let Some(prefix) = prefix.strip_suffix("0.0") else {
        return;
    };
    // and the second names of their semaphores (`semaphore_keep.rs`)
    let Some(keep_prefix) = SegmentId::Posix {
        name_tag: name_tag(file_name),
        ino: 0,
        btime_ns: 0,
    }
    .semaphore_keep_path()
    .and_then(|path| Some(path.rsplit('/').next()?.strip_suffix("0.0")?.to_owned())) else {
        return;
    };
    // (a scan of the whole of /dev/shm at each create and destroy: without an
    // allocation per name, as other programs may keep thousands of files there)
    let mut ours = Vec::new();
    let mut second_names = Vec::new();
    let Ok(()) = os::for_each_name(crate::sys::SHM_DIR_C, |name| {
        let bytes = name.to_bytes();
        if let Ok(name) = name.to_str() {
            if bytes.starts_with(prefix.as_bytes()) {
                ours.push(name.to_owned());
            } else if bytes.starts_with(keep_prefix.as_bytes()) {
                second_names.push(name.to_owned());
            }
        }
    }) else {
        return;
    };
    let named = os::lstat(c_path).ok().map(|st| id_of(c_path, &st));
    let me = os::euid();
    for name in &second_names {
        sweep_lone_second_name(name, named, &ours, me);
    }
    for name in ours {
        let Some(id) = SegmentId::from_lock_state_name(&name) else {
            continue;
        };
        if Some(id) == named {
            continue;
        }
        let Ok(path) = os::cstring(&format!("{SHM_DIR}/{name}")) else {
            continue;
        };
        let Ok(file) = NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
            continue;
        };
        // Looked at again under the lease: the look above may predate a creator that named
        // its segment and was killed since (alone now), whose lock state this is.
        if (file.stat.uid == me || me == 0)
            && file.alone() == Some(true)
            && os::lstat(c_path).map_or(true, |st| id_of(c_path, &st) != id)
            && matches!(file.unlink_if_still_named(), Ok(true))
        {
            // and the second name of its semaphore (`semaphore_keep.rs`), if it has one
            LockState::remove_second_name(id);
        }
        file.release();
    }
}

/// Unlink `name`, the second name of a semaphore of a segment of the key whose lock state
/// never got its name (its creator was killed in between: the second name goes first), if
/// nobody has the semaphore open. (One with its lock state goes with that.)
fn sweep_lone_second_name(name: &str, named: Option<SegmentId>, lock_states: &[String], me: u32) {
    let Some(id) = SegmentId::from_semaphore_keep_name(name) else {
        return;
    };
    if Some(id) == named || lock_states.contains(&id.lock_state_name()) {
        return;
    }
    let Ok(path) = os::cstring(&format!("{SHM_DIR}/{name}")) else {
        return;
    };
    let Ok(file) = NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return;
    };
    // looked at again under the lease: a creator between the two names has it open
    if (file.stat.uid == me || me == 0) && file.alone() == Some(true) && LockState::missing(id) {
        let _ = file.unlink_if_still_named();
    }
    file.release();
}

/// Whether, holding the segment file's exclusive `flock` (so no qshm attachment exists),
/// no other process can be using it: a lease probe finds nobody else with the file open,
/// in up to four tries a few milliseconds apart. On `true` a lease may be held:
/// [`NamedFile::release`] it (closing the file does too). Where leases cannot tell (not
/// the owner, or a kernel before 5.3), `/proc` decides.
pub(crate) fn unused_by_others(file: &NamedFile) -> bool {
    for pause in PROBE_PAUSES.iter().map(Some).chain([None]) {
        match file.alone() {
            Some(true) => return true,
            Some(false) => {}
            None => return !mapped_by_others(&file.stat),
        }
        match pause {
            Some(pause) => std::thread::sleep(*pause),
            None => break,
        }
    }
    // someone stays: a user, whether /proc can show it or not
    false
}

/// The `/proc` fallback where no lease can be taken: does any other process map the file,
/// or could one that we may not inspect (it could open the file), or one that `/proc`
/// does not list (another PID namespace)?
pub(super) fn mapped_by_others(st: &FileStat) -> bool {
    let census = procfs::census(&[Mapped::File {
        dev: st.dev,
        ino: st.ino,
    }]);
    !census.complete
        || !census.mapping.is_empty()
        || census.hidden.iter().any(|h| {
            h.uid == 0
                || h.uid == st.uid
                || st.mode & 0o006 != 0
                || (st.mode & 0o060 != 0 && h.gids.contains(&st.gid))
        })
}
