//! Removing System V segments for tools and for `create`: stale ones (every user died),
//! orphaned lock states, and removal whatever the users think.

use super::id_of;
use super::key_file::{ftok_key, key_path, lock_key_file, project_id, remove_companions};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os;
use crate::sys::lock_state::{LockState, SegmentId};
use crate::sys::{not_ours, procfs};

/// Remove our System V lock states whose segment is gone. Qt removes a segment (and its
/// key file) when a Qt process detaches last, and cannot know qshm's lock state; the
/// next qshm create of any key removes it. A System V lock state is made while its
/// segment exists and removed before it, so one whose segment id is gone (or now names a
/// segment of another creator) is an orphan, never work in progress.
pub(crate) fn sweep_orphaned_lock_states() {
    // (without an allocation per name: see the POSIX sweep)
    let mut ids = Vec::new();
    let scanned = os::for_each_name(crate::sys::SHM_DIR_C, |name| {
        if let Ok(name) = name.to_str()
            && let Some(id @ SegmentId::SystemV { .. }) = SegmentId::from_lock_state_name(name)
        {
            ids.push(id);
        }
    });
    if scanned.is_err() {
        return;
    }
    let me = os::euid();
    for id in ids {
        let ours = || {
            os::cstring(&id.lock_state_path())
                .and_then(|p| os::lstat(&p))
                .is_ok_and(|st| st.uid == me || me == 0)
        };
        if lock_state_orphaned(id) && ours() {
            remove_orphaned_lock_state(id);
        }
    }
}

/// Remove an orphaned System V lock state and Qt's semaphore set qshm made with its
/// segment, unless something else uses the set now (by the id it recorded, if it is still
/// that set and no segment uses its key; a Qt process that detached last leaves it). A key
/// file qshm made is left to `qshm rm --stale` (`qshm ls` lists it as an orphan).
pub(crate) fn remove_orphaned_lock_state(id: SegmentId) {
    let recorded = LockState::recorded(id).unwrap_or_default();
    LockState::remove(id);
    if let Some(sem) = recorded.semaphore {
        let key = sem[1] as u32 as libc::key_t;
        if key != 0 && os::shmget(key, 0, 0).is_err() {
            super::remove_recorded(sem);
        }
    }
}

/// Whether the System V segment a lock state was made for is gone: its id names no
/// segment, or one of another key (the kernel gave the id out again; the lock state is
/// made while its segment exists and removed before it, so such a lock state is an
/// orphan, never work in progress). A segment removed while attached (`IPC_RMID`) shows
/// key 0 and is still the one; a segment we may not look at counts as there. Nothing
/// here depends on the PID namespace it runs in.
pub(crate) fn lock_state_orphaned(id: SegmentId) -> bool {
    let SegmentId::SystemV { key, shmid } = id else {
        return false;
    };
    match os::shm_stat(shmid) {
        Ok(ds) => ds.shm_perm.__key != key && ds.shm_perm.mode & os::SHM_DEST == 0,
        Err(e) => matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)),
    }
}

/// What [`reclaim_if_stale`] found at a key.
pub(super) enum Stale {
    /// Nothing is there any more (we removed a stale segment, or it went meanwhile); the
    /// removed segment's record of the key file qshm made for it, if any.
    Removed(Option<[u64; 3]>),
    /// A segment that stays: in use, or another user's. The failure says which.
    Live(Failure),
}

/// A segment exists at `shm_key`, the numeric key of `key_file` (its device, inode and birth
/// time): remove it if it is ours and nobody is attached (every user died), else report it.
/// Runs under the key file's lock.
/// A removed one's record of the key file qshm made for it is returned: the new segment
/// inherits it (else a key file qshm made would be left when the reclaimer is last).
pub(super) fn reclaim_if_stale(shm_key: libc::key_t, key_file: [u64; 3]) -> Result<Stale, Failure> {
    let not_ours_at_key = || {
        Stale::Live(not_ours(
            "a segment of this key",
            table_owner(shm_key).unwrap_or(u32::MAX),
        ))
    };
    let old = match os::shmget(shm_key, 0, 0) {
        Ok(old) => old,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Stale::Removed(None)), // gone meanwhile
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(not_ours_at_key()),
        Err(e) => return Err(e.into()),
    };
    let ds = match os::shm_stat(old) {
        Ok(ds) => ds,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(not_ours_at_key()),
        Err(_) => return Ok(Stale::Removed(None)), // removed meanwhile: try again
    };
    if ds.shm_perm.uid != os::euid() {
        return Ok(Stale::Live(not_ours("a segment of this key", ds.shm_perm.uid)));
    }
    let old_id = id_of(old, &ds);
    let record = LockState::recorded(old_id).and_then(|r| r.key_file);
    if ds.shm_nattch > 0 {
        return Ok(Stale::Live(in_use(shm_key, &ds, record, key_file)));
    }
    // the segment, then its lock state (see the last detach)
    match os::shm_remove(old) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Err(e.into()),
        _ => {
            LockState::remove(old_id);
            Ok(Stale::Removed(record))
        }
    }
}

/// The failure of a create that finds a live segment of ours at its numeric key. When the
/// segment's lock state records a key file that is not this one, the two files share the
/// numeric key only because `ftok` keeps 16 bits of the inode: say so, since the key's
/// name alone cannot explain it (Qt's create fails the same way there, without a word).
fn in_use(
    shm_key: libc::key_t,
    ds: &libc::shmid_ds,
    made_for: Option<[u64; 3]>,
    key_file: [u64; 3],
) -> Failure {
    let failure = Failure::new(SharedMemoryError::AlreadyExists);
    match made_for {
        Some(other) if other != key_file => failure.with_detail(format!(
            "a segment already exists at System V key {shm_key:#010x}, made for another key \
             file (inode {}; this one is inode {}): ftok keeps only 16 bits of the inode, so two \
             key files can share a numeric key; use another key",
            other[1], key_file[1]
        )),
        _ => failure.with_detail(format!(
            "a segment already exists at System V key {shm_key:#010x} ({} attached)",
            ds.shm_nattch
        )),
    }
}

/// The owner of the segment with numeric key `key`, from `/proc/sysvipc/shm` (readable
/// by everyone, unlike `IPC_STAT` of a segment we may not read).
pub(super) fn table_owner(key: libc::key_t) -> Option<u32> {
    procfs::shm_table()
        .into_iter()
        .find(|row| row.key == key)
        .map(|row| row.uid)
}

/// Destroy the segment of `key` whatever its users think (they keep their mapping until
/// they detach), with its lock state and Qt's semaphore. Never deletes a file that is not
/// a key file qshm or Qt would make.
pub(crate) fn remove(key: &NativeIpcKey, semaphore: &NativeIpcKey) -> Result<bool, Failure> {
    let path = key_path(key)?;
    let Some(lock) = lock_key_file(&path)? else {
        return Ok(false);
    };
    let mut existed = false;
    let mut recorded = None;
    let project_id = project_id(key);
    if let Ok(skey) = ftok_key(&path, project_id)
        && let Ok(id) = os::shmget(skey, 0, 0)
    {
        let segment_id = os::shm_stat(id).ok().map(|ds| id_of(id, &ds));
        if let Some(segment_id) = segment_id {
            recorded = LockState::recorded(segment_id).and_then(|r| r.key_file);
        }
        // the segment, then its lock state (see the last detach)
        os::shm_remove(id)?;
        if let Some(segment_id) = segment_id {
            LockState::remove(segment_id);
        }
        existed = true;
    }
    remove_companions(lock.as_ref(), project_id, recorded, Some(semaphore));
    Ok(existed)
}

/// The numeric System V key of a native key, if its key file exists.
pub(crate) fn numeric_key(key: &NativeIpcKey) -> Option<libc::key_t> {
    let path = os::cstring(key.native()).ok()?;
    ftok_key(&path, project_id(key)).ok()
}

/// Remove System V segment `id` if nobody is attached (its users all died), with its lock
/// state, its key file `key_file` when known and Qt's semaphore `semaphore` when given.
/// Returns whether it was removed.
#[cfg(feature = "admin")]
pub(crate) fn remove_if_stale(
    id: libc::c_int,
    key_file: Option<&str>,
    semaphore: Option<&NativeIpcKey>,
) -> bool {
    let path = key_file.and_then(|p| os::cstring(p).ok());
    let lock = match &path {
        Some(p) => match lock_key_file(p) {
            Ok(lock) => lock.flatten(),
            Err(_) => return false,
        },
        None => None,
    };
    let ds = match os::shm_stat(id) {
        Ok(ds) if ds.shm_nattch == 0 => ds,
        _ => return false,
    };
    let segment_id = id_of(id, &ds);
    let recorded = LockState::recorded(segment_id).and_then(|r| r.key_file);
    // the segment, then its lock state (see the last detach)
    if os::shm_remove(id).is_err() {
        return false;
    }
    LockState::remove(segment_id);
    // ftok puts the project id in the numeric key's top byte
    let project_id = (ds.shm_perm.__key as u32 >> 24) as u8;
    remove_companions(lock.as_ref(), project_id, recorded, semaphore);
    true
}
