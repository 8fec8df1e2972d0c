//! [`remove_stale`](super::remove_stale): stale segments and orphans; locks whose holder
//! died are reported (their next locker takes them over), never taken here.

use super::look::{self, Draft, Look};
use super::{LockStatus, Maker, OsId, Removal, orphans};
use crate::error::{Error, Result};
use crate::os;
use crate::sys::lock_state::LockState;
use crate::sys::{self, posix};

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
            out.held_by_dead.push(draft.segment);
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

/// Remove a stale segment if it still is one, with its lock state, and with Qt's
/// semaphore unless another program made it (and nobody has it open). Returns whether it
/// was removed.
fn remove_segment(draft: &Draft) -> bool {
    let segment = &draft.segment;
    let semaphore = draft.semaphore.as_ref().filter(|_| segment.maker != Maker::Other);
    match &segment.os_id {
        OsId::SystemV { shmid, .. } => {
            let key_file = segment.native_key.as_ref().map(|k| k.native());
            sys::sysv::remove_if_stale(*shmid, key_file, semaphore)
        }
        OsId::Posix { path, inode } => {
            let Some(c_path) = path.to_str().and_then(|p| os::cstring(p).ok()) else {
                return false;
            };
            // what its lock state records, read before the probe removes it
            let made_semaphore = os::lstat(&c_path)
                .ok()
                .filter(|st| st.ino == *inode)
                .and_then(|st| LockState::recorded(posix::id_of(&c_path, &st)))
                .and_then(|r| r.semaphore);
            let gone = matches!(
                posix::probe_existing(&c_path, posix::Reclaim::AnyoneWeMay),
                Ok(posix::Probe::Gone)
            );
            if gone && let Some(sem) = semaphore {
                posix::remove_semaphore_if_unused(sem, made_semaphore);
            }
            gone
        }
    }
}
