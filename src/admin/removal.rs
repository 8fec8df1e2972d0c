//! [`remove_stale`](super::remove_stale): stale segments, dead holders' locks, orphans.

use std::time::Duration;

use super::look::{self, Draft, Look};
use super::{LockStatus, Maker, OsId, Removal, orphans};
use crate::error::{Error, Result};
use crate::lock::DEAD_HOLDER_LOOK;
use crate::os;
use crate::sys::{self, posix};
use crate::{AccessMode, SharedMemory};

/// How long a repair waits for the lock: the library's two looks for a living holder,
/// a second apart, and room for a slow `/proc`.
const REPAIR_WAIT: Duration = Duration::from_secs(2 * DEAD_HOLDER_LOOK.as_secs() + 3);

pub(super) fn remove_stale(include_foreign: bool) -> Result<Removal> {
    let look = Look::take().map_err(|e| Error::os("remove stale", "/dev/shm", e))?;
    let mut drafts = look.segments();
    look::settle(&mut drafts);
    let mut out = Removal::default();
    for draft in drafts {
        let segment = &draft.segment;
        if segment.is_stale() && segment.is_foreign() && !include_foreign {
            out.kept_foreign.push(draft.segment);
        } else if segment.is_stale() && remove_segment(&draft) {
            out.segments.push(draft.segment);
        } else if segment.lock == LockStatus::HolderDied {
            match repair(&draft) {
                Some(true) => out.repaired.push(draft.segment),
                Some(false) => {} // its holder came back and let go: nothing to repair
                None => out.unrepaired.push(draft.segment),
            }
        }
    }
    // a fresh look: removing segments also removed their companions
    let look = Look::take().map_err(|e| Error::os("remove stale", "/dev/shm", e))?;
    // a new one may be work in progress (its maker between two steps): left alone
    let (foreign, ours) = orphans::find(&look)
        .into_iter()
        .filter(|o| !o.is_new())
        .partition(|o| o.is_foreign() && !include_foreign);
    out.kept_foreign_orphans = foreign;
    out.orphans = ours.into_iter().filter(orphans::remove).collect();
    Ok(out)
}

/// Remove a stale segment if it still is one (and ours), with its lock state, and with
/// Qt's semaphore unless another program made it. Returns whether it was removed.
fn remove_segment(draft: &Draft) -> bool {
    let segment = &draft.segment;
    let semaphore = draft.semaphore.as_ref().filter(|_| segment.maker != Maker::Other);
    match &segment.os_id {
        OsId::SystemV { shmid, .. } => {
            let key_file = segment.native_key.as_ref().map(|k| k.native());
            sys::sysv::remove_if_stale(*shmid, key_file, semaphore)
        }
        OsId::Posix { path, .. } => {
            let gone = path
                .to_str()
                .and_then(|p| os::cstring(p).ok())
                .is_some_and(|c| matches!(posix::probe_existing(&c), Ok(posix::Probe::Gone)));
            if gone && let Some(sem) = semaphore {
                posix::remove_semaphore_if_unused(sem, None);
            }
            gone
        }
    }
}

/// Give back the lock a dead process held, the way any locker does: attach, lock (the
/// library recovers the unit), unlock, detach. The next holder is told that its previous
/// holder died (`previous_owner_died`), as if it had recovered the lock itself.
/// `Some(died)`: got the lock, `died` when its holder had died; `None`: could not attach
/// or lock.
fn repair(draft: &Draft) -> Option<bool> {
    let (key, semaphore) = (draft.segment.native_key.as_ref()?, draft.semaphore.as_ref()?);
    let mut shm = SharedMemory::with_native_key(key.clone());
    shm.attach_with_semaphore(AccessMode::ReadOnly, semaphore.clone())
        .ok()?;
    let guard = shm.lock_read_timeout(REPAIR_WAIT).ok().flatten()?;
    let died = guard.previous_owner_died();
    if died {
        // the next holder, who uses the data, is told its previous holder died
        shm.pass_on_owner_death();
    }
    drop(guard);
    Some(died)
}
