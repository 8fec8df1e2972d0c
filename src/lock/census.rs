//! Who could hold an unlabelled unit of a POSIX semaphore: the `/proc` census a waiter
//! (and `qshm ls`) uses to tell a dead Qt holder from a living one.
//!
//! A unit a qshm process with a lock state holds is always labelled (`qt_posix.rs`), so an
//! unlabelled one is held by a process without one: Qt, another program, or qshm without
//! a lock state. When the kernel cannot say that nobody else has the semaphore open (the
//! waiter's lease probe), `/proc` may show that nobody could hold it: no other process
//! maps the semaphore writable (except qshm processes that also map the segment's lock
//! state, whose holds are labelled), and no process qshm may not inspect could open the
//! semaphore for writing. That last rule keeps a waiter waiting when a process it cannot
//! see (another user's, or a non-dumpable one, even root's) might hold the unit: the
//! absence of evidence is not evidence of a dead holder.

use crate::sys::procfs::{self, Mapped};

/// True when no process but this one could hold an unlabelled unit of the semaphore file
/// `sem` (device, inode) with `owner` (uid, gid, mode bits), as `/proc` shows it;
/// `lock_state`: the segment's lock state (its mappers hold labelled units only).
pub(crate) fn nobody_could_hold(
    sem: (u64, u64),
    owner: (u32, u32, u32),
    lock_state: Option<(u64, u64)>,
) -> bool {
    let (dev, ino) = sem;
    let mut targets = vec![Mapped::File { dev, ino }];
    if let Some((dev, ino)) = lock_state {
        targets.push(Mapped::File { dev, ino });
    }
    let census = procfs::census(&targets);
    // processes /proc cannot list (other PID namespaces) could hold it
    if !census.complete {
        return false;
    }
    let labelled_only = |mapper: &procfs::Mapper| lock_state.is_some() && mapper.maps & 0b10 != 0;
    if census
        .mapping
        .iter()
        .any(|m| m.writable & 0b01 != 0 && !labelled_only(m))
    {
        return false;
    }
    !census.hidden.iter().any(|h| could_write(h, owner))
}

/// Whether a process we may not inspect could open a file of (uid, gid, mode) for
/// writing (root could open anything).
fn could_write(hidden: &procfs::Hidden, (uid, gid, mode): (u32, u32, u32)) -> bool {
    hidden.uid == 0
        || hidden.uid == uid
        || mode & 0o002 != 0
        || (mode & 0o020 != 0 && hidden.gids.contains(&gid))
}
