//! System V backend: `shmget`/`shmat` segments and `semget`/`semop` semaphores, keyed
//! like Qt: the native key is a file path, the numeric key is `ftok(path, 'Q')`.
//!
//! # Lifetime
//!
//! The kernel counts attachments (`shm_nattch`) and drops them when a process dies, so
//! the count is crash-safe by itself. qshm removes the segment (`IPC_RMID`) with its lock
//! state, Qt's semaphore and the key file qshm made when a detach leaves
//! `shm_nattch == 0`, as Qt does.
//!
//! create, attach and detach each hold an exclusive `flock` on the key file while they
//! run (waiting a bounded time for it), so "check the count, then remove" never
//! interleaves with another qshm process's "find, then attach", and a create that loses a
//! race never touches the winner's key file. (Qt serialises the same steps with its
//! semaphore; in Qt-compatible mode qshm's last detacher takes that semaphore as well.) A
//! segment whose users were all killed keeps `shm_nattch == 0`: the next `create` of its
//! owner removes it and creates a fresh one; another user's is `AlreadyExists`.
//!
//! Key files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0640, like Qt's
//! `createUnixKeyFile`; an existing key file must be a regular file. A key file is only
//! ever removed if qshm made it for this segment (recorded in the lock state) or it is
//! Qt-named (`qipc_…`) — and then only if it is empty and no segment uses it: a native key
//! such as `systemv:/etc/passwd` never loses its file.

use std::ffi::CString;
use std::io;
use std::sync::Arc;
use std::time::Duration;

mod cleanup;
mod key_file;
mod semaphore;

use cleanup::{Stale, reclaim_if_stale, table_owner};
#[cfg(feature = "admin")]
pub(crate) use cleanup::{lock_state_orphaned, remove_if_stale};
pub(crate) use cleanup::{numeric_key, remove, sweep_orphaned_lock_states};

#[cfg(feature = "admin")]
pub(crate) use key_file::used_under_any_id;
pub(crate) use key_file::{ftok_key, project_id};
use key_file::{
    key_file_failure, key_path, lock_key_file, lock_key_file_for_create, remove_companions,
    remove_semaphore_of_vanished_key, segment_uses,
};
pub(crate) use semaphore::{Semaphore, remove_recorded};

use super::exec_watch;
use super::lock_state::{self, CreateError, LockState, NewLockState, Origin, SegmentId};
use super::mapping::Mapping;
use super::named_file::NamedFile;
use super::procfs::{self, Mapped};
use super::{
    AttachRequest, Attached, CreateRequest, Detached, IfMissing, LockMode, LockParts, Opened, Owner, Removal,
    SegmentBackend, SegmentStat, SemaphoreMode, fork, not_ours, owner_label,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os;

/// How long a destroyer waits for Qt's semaphore (see `posix.rs`).
const DESTROY_SEMAPHORE_WAIT: Duration = Duration::from_millis(100);

pub(super) fn id_of(shmid: libc::c_int, ds: &libc::shmid_ds) -> SegmentId {
    SegmentId::SystemV {
        key: ds.shm_perm.__key,
        shmid,
    }
}

/// Whose a segment is, for the lock state's trust checks.
pub(super) fn owner_of(ds: &libc::shmid_ds) -> Owner {
    Owner {
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        creator_uid: ds.shm_perm.cuid,
        perms: u32::from(ds.shm_perm.mode) & 0o777,
    }
}

/// An attached System V segment.
pub(crate) struct Segment {
    id: libc::c_int,
    segment_id: SegmentId,
    path: CString,
    /// The `ftok` project id of the key's type.
    project_id: u8,
    mode: LockMode,
    semaphore: Option<Arc<Semaphore>>,
    /// The set's identity when attached (removed by id if its key file is gone).
    semaphore_record: Option<[u64; 3]>,
    semaphore_key: NativeIpcKey,
    /// The key file qshm made for this segment (from the lock state).
    key_file: Option<[u64; 3]>,
    fork_epoch: u64,
    /// Forks before the segment was attached: children forked after inherit the
    /// attachment (counted in `shm_nattch`) until they `exec` (see `exec_watch`).
    forks_before: u64,
}

pub(crate) fn create(key: &NativeIpcKey, req: &CreateRequest) -> Result<Attached, Failure> {
    let path = key_path(key)?;
    let project_id = project_id(key);
    let fork_epoch = fork::epoch_watched();
    sweep_orphaned_lock_states();
    let (key_file, created) = lock_key_file_for_create(&path)?;
    let result = match create_locked(&key_file, project_id, created, req, fork_epoch) {
        Ok(Made::Segment(attached)) => Ok(attached),
        Ok(Made::Taken(failure)) | Err(failure) => Err(failure),
    };
    if result.is_err() && created && !segment_uses(&path, project_id) {
        // keep no key file behind for a segment we did not make (and never one a live
        // segment uses: we hold its lock, so nobody made one since we looked)
        let _ = key_file.unlink_if_still_named();
    }
    result
}

/// Attach to the live segment of `key`, or create it (see [`super::open_or_create`]), all
/// under the key file's lock, which every qshm create, attach and destroy of the key
/// takes: nothing of qshm's can make or destroy the segment between the look and the act.
/// Only a program that does not take that lock (Qt) can destroy it in between; the next
/// round then creates it.
pub(crate) fn open_or_create(
    key: &NativeIpcKey,
    create: &CreateRequest,
    attach_req: &AttachRequest,
) -> Result<(Attached, Opened), Failure> {
    let path = key_path(key)?;
    let project_id = project_id(key);
    let fork_epoch = fork::epoch_watched();
    let (key_file, created) = match lock_key_file_for_create(&path) {
        Ok(held) => held,
        // another user's key file: the key is theirs to create; attach if they let us
        Err(failure) if failure.kind == SharedMemoryError::AlreadyExists => {
            return match attach(key, attach_req) {
                Ok(attached) => Ok((attached, Opened::Attached)),
                Err(f) if f.kind == SharedMemoryError::NotFound => Err(failure),
                Err(f) => Err(f),
            };
        }
        Err(failure) => return Err(failure),
    };
    let result = (|| {
        let mut swept = false;
        for _ in 0..super::OPEN_OR_CREATE_ROUNDS {
            // a live segment: attach, without the creator's work (even under a key file
            // this call made: a racer may have taken its lock first and made the segment)
            if live_segment_at(&path, project_id) {
                match attach_locked(key, attach_req, &path, Some(&key_file), fork_epoch) {
                    Ok(attached) => return Ok((attached, Opened::Attached)),
                    // destroyed meanwhile by a program that does not take the key file's
                    // lock (Qt): create it
                    Err(f) if f.kind == SharedMemoryError::NotFound => {}
                    Err(f) => return Err(f),
                }
            }
            if !swept {
                sweep_orphaned_lock_states();
                swept = true;
            }
            match create_locked(&key_file, project_id, created, create, fork_epoch)? {
                Made::Segment(attached) => return Ok((attached, Opened::Created)),
                // made since our look by a program that does not take the lock: attach
                Made::Taken(_) => {}
            }
            match attach_locked(key, attach_req, &path, Some(&key_file), fork_epoch) {
                Ok(attached) => return Ok((attached, Opened::Attached)),
                Err(f) if f.kind == SharedMemoryError::NotFound => {}
                Err(f) => return Err(f),
            }
        }
        Err(super::kept_changing())
    })();
    if result.is_err() && created && !segment_uses(&path, project_id) {
        let _ = key_file.unlink_if_still_named();
    }
    result
}

/// Whether the key file `path` (held locked) finds a segment that is not stale: someone is
/// attached, or it is not ours to judge (another user's, or one we may not look at).
/// A stale one of ours is left to `create_locked`, which replaces it.
fn live_segment_at(path: &CString, project_id: u8) -> bool {
    let Ok(id) = ftok_key(path, project_id).and_then(|k| os::shmget(k, 0, 0)) else {
        return false;
    };
    match os::shm_stat(id) {
        Ok(ds) => ds.shm_nattch > 0 || ds.shm_perm.uid != os::euid(),
        Err(e) => e.raw_os_error() == Some(libc::EACCES),
    }
}

/// What [`create_locked`] came to.
enum Made {
    /// The segment, made and attached.
    Segment(Attached),
    /// A live segment has the key (the failure `create` reports: whose it is).
    Taken(Failure),
}

fn create_locked(
    key_file: &NamedFile,
    project_id: u8,
    created: bool,
    req: &CreateRequest,
    fork_epoch: u64,
) -> Result<Made, Failure> {
    let path = &key_file.path;
    let shm_key = ftok_key(path, project_id).map_err(|e| key_file_failure(path, e))?;
    let this_file = lock_state::file_words(&key_file.stat);
    let perms = req.perms & 0o777;
    let lock_perms = lock_state::lock_permissions(perms);
    let mut inherited = None;
    for _ in 0..8 {
        let id = match os::shmget(
            shm_key,
            req.size,
            perms as libc::c_int | libc::IPC_CREAT | libc::IPC_EXCL,
        ) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                match reclaim_if_stale(shm_key, this_file)? {
                    Stale::Removed(record) => inherited = inherited.or(record),
                    Stale::Live(failure) => return Ok(Made::Taken(failure)),
                }
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(Failure::from(e)
                    .with_kind(SharedMemoryError::InvalidSize)
                    .with_detail(format!(
                        "{} bytes is outside the system's limits (SHMMIN/SHMMAX)",
                        req.size
                    )));
            }
            Err(e) => return Err(e.into()),
        };
        let ds = match os::shm_stat(id) {
            Ok(ds) => ds,
            Err(e) => {
                let _ = os::shm_remove(id);
                return Err(e.into());
            }
        };
        let segment_id = id_of(id, &ds);
        let recorded_key_file = (created || inherited == Some(this_file)).then_some(this_file);
        let semaphore = match req.mode {
            LockMode::QtCompatible => {
                match open_owned_semaphore(&req.semaphore, lock_state::locker_permissions(perms), key_file) {
                    Ok(sem) => Some(sem),
                    Err(e) => {
                        let _ = os::shm_remove(id);
                        return Err(e);
                    }
                }
            }
            LockMode::Fast => None,
        };
        let state = match LockState::create(NewLockState {
            id: segment_id,
            mode: req.mode,
            origin: Origin::Qshm,
            perms: lock_perms,
            owner: None,
            key_file: recorded_key_file,
            semaphore: semaphore
                .as_ref()
                .filter(|s| super::SemaphoreBackend::created(s.as_ref()))
                .and_then(|s| s.record()),
        }) {
            Ok(state) => state,
            Err(CreateError::Taken) => {
                // someone squats on this identity's name: a new segment gets a new id
                let _ = os::shm_remove(id);
                continue;
            }
            Err(CreateError::Io(e)) => {
                let _ = os::shm_remove(id);
                if let Some(sem) = semaphore
                    .as_ref()
                    .filter(|s| super::SemaphoreBackend::created(s.as_ref()))
                {
                    sem.remove_made(key_file);
                }
                return Err(super::posix::lock_state_failure(e));
            }
        };

        let forks_before = exec_watch::forks_before_now();
        let mapping = match Mapping::attach_system_v(id, ds.shm_segsz, req.writable) {
            Ok(mapping) => mapping,
            Err(e) => {
                drop(state);
                let _ = os::shm_remove(id);
                LockState::remove(segment_id);
                return Err(e.into());
            }
        };
        let semaphore_record = semaphore.as_ref().and_then(|s| s.record());
        let lock = match &semaphore {
            Some(sem) => LockParts::QtSystemV {
                semaphore: sem.clone(),
                state: Some(state),
            },
            None => LockParts::Fast { state },
        };
        let segment = Segment {
            id,
            segment_id,
            path: path.clone(),
            project_id,
            mode: req.mode,
            semaphore,
            semaphore_record,
            semaphore_key: req.semaphore.clone(),
            key_file: recorded_key_file,
            fork_epoch,
            forks_before,
        };
        return Ok(Made::Segment(Attached {
            segment: Box::new(segment),
            mapping,
            lock,
        }));
    }
    Err(Failure::new(SharedMemoryError::AlreadyExists))
}

/// Whether Qt's System V semaphore `key` exists (its key file, and a set at its key).
fn qt_semaphore_exists(key: &NativeIpcKey) -> bool {
    match key_path(key).and_then(|p| Ok(ftok_key(&p, project_id(key))?)) {
        Ok(k) => os::semget(k, 0).is_ok(),
        Err(_) => false,
    }
}

/// Qt's semaphore for a segment being created: ours (another user's is refused: they
/// could set it to 0, a hang, or to 5, no exclusion), set back to 1 as Qt's create does.
fn open_owned_semaphore(key: &NativeIpcKey, perms: u32, held: &NamedFile) -> Result<Arc<Semaphore>, Failure> {
    // its key file too: whoever owns that file could delete it, and the next opener would
    // make a second semaphore under another ftok key
    if let Ok(st) = key_path(key).and_then(|p| Ok(os::lstat(&p)?))
        && st.uid != os::euid()
    {
        return Err(not_ours(
            &format!("the lock's semaphore key file {}", key.native()),
            st.uid,
        ));
    }
    let sem = Semaphore::open_holding(key, 1, SemaphoreMode::Open, perms, Some(held))?;
    match os::sem_owner(sem.id()) {
        Ok(uid) if uid != os::euid() => Err(not_ours("the lock's semaphore", uid)),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(not_ours("the lock's semaphore", u32::MAX)),
        _ => {
            // Like Qt's create (QSystemSemaphore::Create): a semaphore of ours that
            // survived a crash is set back to 1. SEM_UNDO already returns a dead
            // holder's unit; this heals one made but never initialised.
            let _ = os::sem_setval(sem.id(), 1);
            // One made before the segment (a Qt process's attach makes it, 0600) lets in
            // whoever may lock the new segment: its other writers (bits are only added)
            if let Ok(ds) = os::sem_stat(sem.id()) {
                let mode = u32::from(ds.sem_perm.mode) & 0o777;
                if mode | (perms & 0o777) != mode {
                    let _ = os::sem_set_mode(sem.id(), mode | (perms & 0o777));
                }
            }
            Ok(Arc::new(sem))
        }
    }
}

pub(crate) fn attach(key: &NativeIpcKey, req: &AttachRequest) -> Result<Attached, Failure> {
    let path = key_path(key)?;
    let fork_epoch = fork::epoch_watched();
    let key_file = match lock_key_file(&path)? {
        Some(file) => file,
        None => return Err(Failure::new(SharedMemoryError::NotFound)),
    };
    attach_locked(key, req, &path, key_file.as_ref(), fork_epoch)
}

/// [`attach`] while holding the key file `key_file` locked (`None`: another user's key
/// file we may not open).
fn attach_locked(
    key: &NativeIpcKey,
    req: &AttachRequest,
    path: &CString,
    key_file: Option<&NamedFile>,
    fork_epoch: u64,
) -> Result<Attached, Failure> {
    let path = path.clone();
    let project_id = project_id(key);
    let shm_key = ftok_key(&path, project_id).map_err(|e| key_file_failure(&path, e))?;
    let id = os::shmget(shm_key, 0, if req.writable { 0o600 } else { 0o400 }).map_err(|e| {
        let owner = table_owner(shm_key).map(owner_label).unwrap_or_default();
        Failure::from(e).with_detail(if owner.is_empty() {
            "no segment".to_owned()
        } else {
            format!("the segment belongs to {owner}")
        })
    })?;
    let ds = os::shm_stat(id)?;
    if ds.shm_perm.mode & os::SHM_DEST != 0 {
        // being destroyed by a peer that does not take our key-file lock
        return Err(Failure::new(SharedMemoryError::NotFound));
    }
    let segment_id = id_of(id, &ds);
    let owner = owner_of(&ds);
    // A missing lock state is made after Qt's semaphore, to record a set this attach
    // makes: a program that detaches last and removes the segment and its key file (Qt
    // 5.15, whose native keys have no semaphore) leaves the set's key unreachable by any
    // path, and only that record lets the next create's sweep remove it.
    let (state, mode) = super::lock_state_of(segment_id, owner, req.mode, IfMissing::Leave)?;
    // Others attached, and Qt's semaphore of this key exists (a Qt process makes it at
    // its first attach; qshm's Fast mode never does): ask /proc who maps the segment.
    if mode == LockMode::Fast && ds.shm_nattch > 0 && qt_semaphore_exists(&req.semaphore) {
        super::refuse_fast_next_to_foreign_mapper(Mapped::SystemV { shmid: id }, state.as_deref())?;
    }
    let forks_before = exec_watch::forks_before_now();
    let mapping = Mapping::attach_system_v(id, ds.shm_segsz, req.writable)?;
    if os::shm_stat(id).is_ok_and(|ds| ds.shm_perm.mode & os::SHM_DEST != 0) {
        return Err(Failure::new(SharedMemoryError::NotFound));
    }
    let locker_perms = lock_state::locker_permissions(owner.perms);
    let semaphore = match mode {
        // a user who may only read the segment never makes its set (nor its key file): a
        // set it made would be a second lock, and another user's to the owner
        LockMode::QtCompatible if !os::ipc_may_write(&ds.shm_perm) => {
            Semaphore::open_if_there(&req.semaphore, locker_perms)?.map(Arc::new)
        }
        LockMode::QtCompatible => {
            match Semaphore::open_holding(&req.semaphore, 1, SemaphoreMode::Open, locker_perms, key_file) {
                Ok(sem) => Some(Arc::new(sem)),
                // another user's set this user may not alter (readers went the other way)
                Err(f) if f.kind == SharedMemoryError::PermissionDenied => None,
                Err(f) => return Err(f),
            }
        }
        LockMode::Fast => None,
    };
    let state = match state {
        None if mode == LockMode::QtCompatible => {
            let made = semaphore
                .as_ref()
                .filter(|sem| super::SemaphoreBackend::created(sem.as_ref()))
                .and_then(|sem| sem.record());
            let (state, now) =
                super::lock_state_of(segment_id, owner, req.mode, IfMissing::Make { semaphore: made })?;
            if now != mode {
                // attach makes only Qt-compatible lock states, under the key file's lock
                return Err(super::mode_conflict(mode, now));
            }
            state
        }
        state => state,
    };
    let key_file = state.as_ref().and_then(|s| s.key_file());
    let lock = match (mode, &semaphore, state.clone()) {
        (LockMode::QtCompatible, Some(sem), state) => LockParts::QtSystemV {
            semaphore: sem.clone(),
            state,
        },
        (LockMode::Fast, _, Some(state)) => LockParts::Fast { state },
        (mode, _, state) => LockParts::Unlockable { state, mode },
    };
    let segment = Segment {
        id,
        segment_id,
        path,
        project_id,
        mode,
        semaphore_record: semaphore.as_ref().and_then(|s| s.record()),
        semaphore,
        semaphore_key: req.semaphore.clone(),
        key_file,
        fork_epoch,
        forks_before,
    };
    Ok(Attached {
        segment: Box::new(segment),
        mapping,
        lock,
    })
}

impl SegmentBackend for Segment {
    fn stat(&self) -> io::Result<SegmentStat> {
        let ds = os::shm_stat(self.id)?;
        Ok(SegmentStat {
            size: ds.shm_segsz as u64,
            attachments: Some(ds.shm_nattch),
            perms: u32::from(ds.shm_perm.mode) & 0o777,
            uid: ds.shm_perm.uid,
            created_secs: ds.shm_ctime,
            os_id: format!("shmid {} key {:#010x}", self.id, ds.shm_perm.__key),
        })
    }

    fn removal(&self) -> io::Result<Removal> {
        // IPC_RMID marks the segment SHM_DEST and sets its key to IPC_PRIVATE; it lives
        // on (its id is not reused) until its last attachment goes, ours among them.
        let removed = match os::shm_stat(self.id) {
            Ok(ds) => ds.shm_perm.mode & os::SHM_DEST != 0 || ds.shm_perm.__key == libc::IPC_PRIVATE,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => true,
            // its owner took our read permission away since (IPC_SET): the table is public
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                match procfs::shm_table().into_iter().find(|row| row.id == self.id) {
                    Some(row) => row.perms & u32::from(os::SHM_DEST) != 0 || row.key == libc::IPC_PRIVATE,
                    None => true,
                }
            }
            Err(e) => return Err(e),
        };
        if !removed {
            return Ok(Removal::Present);
        }
        let now = ftok_key(&self.path, self.project_id).and_then(|k| os::shmget(k, 0, 0));
        Ok(match now {
            Ok(id) if id != self.id => Removal::Replaced,
            _ => Removal::Removed,
        })
    }

    fn detach(self: Box<Self>) -> Result<Detached, Failure> {
        let Segment {
            id,
            segment_id,
            path,
            project_id,
            mode,
            semaphore,
            semaphore_record,
            semaphore_key,
            key_file,
            fork_epoch,
            forks_before,
        } = *self;
        if fork::epoch() != fork_epoch {
            return Ok(Detached::Kept);
        }
        // Never destroy without the key file's lock; if another process holds it past
        // the bound, only detach (the segment is reclaimed later, as a stale one).
        let lock = lock_key_file(&path);
        let may_destroy = lock.is_ok();
        let mut found = attachments(id);
        // children another thread forked meanwhile count until they exec: wait for them
        // (and only them), or the segment stays with nobody to destroy it. A segment
        // removed behind our back (`ipcrm`) is freed by the kernel as the last of them
        // goes: gone ends the wait too.
        if may_destroy
            && matches!(found, Attachments::Counted(n) if n > 0)
            && exec_watch::once_children_exec(forks_before, exec_watch::WAIT_FOR_CHILDREN, || {
                Ok(!matches!(attachments(id), Attachments::Counted(n) if n > 0))
            })?
        {
            found = attachments(id);
        }
        let leftovers = Leftovers {
            segment_id,
            path,
            project_id,
            key_file,
            semaphore_key,
            semaphore_record,
            mode,
        };
        match found {
            Attachments::Unknown => Ok(Detached::Kept),
            Attachments::Counted(n) if n > 0 || !may_destroy => Ok(Detached::Kept),
            Attachments::Counted(_) => {
                // Keep Qt's attach out (Qt holds its semaphore around attach), then look again.
                let held = mode == LockMode::QtCompatible
                    && semaphore.as_ref().is_some_and(|sem| {
                        os::semop_undo(sem.id(), -1, Some(DESTROY_SEMAPHORE_WAIT)).unwrap_or(false)
                    });
                let me = os::euid();
                let now = os::shm_stat(id);
                let last = matches!(&now, Ok(ds) if ds.shm_nattch == 0
                    && (me == 0 || me == ds.shm_perm.uid || me == ds.shm_perm.cuid));
                // the segment first, then its lock state: killed in between, we leave an
                // orphaned lock state (the next create of any key sweeps it), never the
                // key's segment without its lock state, which attachers would take for
                // another program's (the other order did)
                let removed = last
                    && match os::shm_remove(id) {
                        Ok(()) => true,
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => true,
                        Err(_) => false,
                    };
                if removed {
                    LockState::remove(segment_id);
                }
                if held && let Some(sem) = &semaphore {
                    let _ = sem.give(1);
                }
                if !removed {
                    // removed by someone else (and freed) since we counted: as below
                    if matches!(&now, Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)))
                    {
                        drop(semaphore);
                        return Ok(leftovers.of_vanished_segment(&lock));
                    }
                    return Ok(Detached::Kept);
                }
                drop(semaphore);
                let held_file = lock
                    .as_ref()
                    .ok()
                    .and_then(|l| l.as_ref())
                    .and_then(|f| f.as_ref());
                let sem = (mode == LockMode::QtCompatible).then_some(&leftovers.semaphore_key);
                remove_companions(held_file, project_id, leftovers.key_file, sem);
                remove_set_left_without_key_file(&leftovers.path, semaphore_record);
                Ok(Detached::Destroyed)
            }
            Attachments::Gone => {
                drop(semaphore);
                Ok(leftovers.of_vanished_segment(&lock))
            }
        }
    }

    fn forget(self: Box<Self>) {
        // shmdt (the facade dropped the mapping) lowered the count fork() had raised
        drop(self);
    }
}

/// What a detach finds of its segment, by id.
enum Attachments {
    /// It exists, attached this many times (children forked with it included).
    Counted(u64),
    /// Removed and freed: no process is attached any more.
    Gone,
    /// We may not look (its owner took our read permission away).
    Unknown,
}

fn attachments(id: libc::c_int) -> Attachments {
    match os::shm_stat(id) {
        Ok(ds) => Attachments::Counted(ds.shm_nattch),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Attachments::Gone,
        Err(_) => Attachments::Unknown,
    }
}

/// What a detaching process may have to remove besides the segment.
struct Leftovers {
    segment_id: SegmentId,
    path: CString,
    project_id: u8,
    key_file: Option<[u64; 3]>,
    semaphore_key: NativeIpcKey,
    semaphore_record: Option<[u64; 3]>,
    mode: LockMode,
}

impl Leftovers {
    /// The segment was removed behind our back (or by another detacher of it) and is
    /// freed now: our incarnation's lock state is ours to remove. The key file and Qt's
    /// semaphore belong to the key, not the incarnation: only while we hold the key file's
    /// lock and no segment uses it (a missing key file means the remover cleaned up, and a
    /// new creator may be at work).
    fn of_vanished_segment(self, lock: &Result<Option<Option<NamedFile>>, Failure>) -> Detached {
        let Leftovers {
            segment_id,
            path,
            project_id,
            key_file,
            semaphore_key,
            semaphore_record,
            mode,
        } = self;
        LockState::remove(segment_id);
        let sem = (mode == LockMode::QtCompatible).then_some(&semaphore_key);
        match lock {
            Ok(Some(Some(file)))
                if !ftok_key(&path, project_id).is_ok_and(|k| os::shmget(k, 0, 0).is_ok()) =>
            {
                remove_companions(Some(file), project_id, key_file, sem);
            }
            // no key file: Qt's semaphore goes too, unless a creator makes the key anew
            // meanwhile (looked at again under the semaphore key file's lock)
            Ok(None) => {
                if let Some(sem) = sem {
                    remove_semaphore_of_vanished_key(&path, sem);
                }
            }
            _ => {}
        }
        if matches!(lock, Ok(None)) {
            remove_set_left_without_key_file(&path, semaphore_record);
        }
        Detached::WasGone
    }
}

/// Qt's semaphore set of a segment that is gone, when its key file is gone too (removed
/// behind qshm's back, as Qt's own test fixture does): `ftok` cannot find the set any
/// more, so remove it by the id it had when attached, if it is still that set and ours
/// (Qt keeps the id for the same reason). The key's path is held meanwhile (a key file
/// made here, locked, and removed again): a creator of the key waits for it and then makes
/// its own; one that came first made the file, and then nothing is removed (its segment
/// may share the set).
fn remove_set_left_without_key_file(path: &CString, record: Option<[u64; 3]>) {
    let Some(record) = record else {
        return;
    };
    if !os::sem_stat(record[0] as libc::c_int).is_ok_and(|ds| ds.sem_perm.__key as u32 as u64 == record[1]) {
        return; // gone already (the usual case: removed with its key file)
    }
    let Ok(claim) = NamedFile::open(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600) else {
        return;
    };
    if claim
        .try_lock(super::named_file::FileLock::Exclusive)
        .is_ok_and(|locked| locked)
    {
        let id = record[0] as libc::c_int;
        let me = os::euid();
        if os::sem_owner(id).is_ok_and(|uid| uid == me || me == 0)
            && !ftok_exists_for(record[1] as u32 as libc::key_t)
        {
            remove_recorded(record);
        }
    }
    let _ = claim.unlink_if_still_named();
}

/// Whether a segment of numeric key `key` exists (then its set is still in use).
fn ftok_exists_for(key: libc::key_t) -> bool {
    key != 0 && os::shmget(key, 0, 0).is_ok()
}
