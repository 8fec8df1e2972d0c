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
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::lock_state::{self, CreateError, LockState, NewLockState, Origin, SegmentId};
use super::mapping::Mapping;
use super::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use super::os;
use super::procfs::Mapped;
use super::{
    AttachRequest, Attached, CreateRequest, Detached, LockMode, Owner, SegmentBackend, SegmentStat,
    SemaphoreBackend, SemaphoreMode, fork, not_ours, owner_label,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::{NativeIpcKey, SYSV_PROJECT_ID};

/// How long a destroyer waits for Qt's semaphore (see `posix.rs`).
const DESTROY_SEMAPHORE_WAIT: Duration = Duration::from_millis(100);

/// `ftok(path, 'Q')`, the numeric key Qt uses.
pub(crate) fn ftok_key(path: &CString) -> io::Result<libc::key_t> {
    os::ftok(path, SYSV_PROJECT_ID)
}

fn key_path(key: &NativeIpcKey) -> Result<CString, Failure> {
    Ok(os::cstring(key.native())?)
}

/// A failure about the key file `path` (a symbolic link, not a regular file, a missing
/// directory, no room).
fn key_file_failure(path: &CString, e: io::Error) -> Failure {
    let shown = path.to_string_lossy();
    let detail = match e.raw_os_error() {
        Some(libc::ELOOP) => format!("the key file {shown} is a symbolic link; refusing to follow it"),
        Some(libc::EINVAL) => format!("the key file {shown} is not a regular file"),
        Some(libc::ENOENT) => format!("the directory of the key file {shown} does not exist"),
        _ if e.kind() == io::ErrorKind::TimedOut => e.to_string(),
        _ => format!("unable to make the key file {shown}"),
    };
    let kind = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => SharedMemoryError::PermissionDenied,
        Some(libc::ENOSPC | libc::EMFILE | libc::ENFILE) => SharedMemoryError::OutOfResources,
        _ if e.kind() == io::ErrorKind::TimedOut => SharedMemoryError::LockError,
        _ => SharedMemoryError::KeyError,
    };
    Failure::from(e).with_kind(kind).with_detail(detail)
}

/// The key file, created if missing, locked exclusively. Returns it and whether we made it.
fn lock_key_file_for_create(path: &CString) -> Result<(NamedFile, bool), Failure> {
    let deadline = Instant::now() + FILE_LOCK_WAIT;
    loop {
        let (file, created) = match NamedFile::open(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o640)
        {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match open_existing(path) {
                Ok(file) => (file, false),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(key_file_failure(path, e)),
            },
            Err(e) => return Err(key_file_failure(path, e)),
        };
        if file.stat.uid != os::euid() {
            return Err(not_ours(
                &format!("the key file {}", path.to_string_lossy()),
                file.stat.uid,
            ));
        }
        file.lock_until(FileLock::Exclusive, deadline)
            .map_err(|e| key_file_failure(path, e))?;
        if file.still_named() {
            return Ok((file, created));
        }
    }
}

fn open_existing(path: &CString) -> io::Result<NamedFile> {
    match NamedFile::open(path, libc::O_RDWR, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => NamedFile::open(path, libc::O_RDONLY, 0),
        other => other,
    }
}

/// The key file, locked exclusively, for attach and detach: `Ok(None)` when it does not
/// exist; an unreadable key file of another user is skipped (`Ok(Some(None))`).
fn lock_key_file(path: &CString) -> Result<Option<Option<NamedFile>>, Failure> {
    let deadline = Instant::now() + FILE_LOCK_WAIT;
    loop {
        let file = match open_existing(path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(Some(None)),
            Err(e) => return Err(key_file_failure(path, e)),
        };
        file.lock_until(FileLock::Exclusive, deadline)
            .map_err(|e| key_file_failure(path, e))?;
        if file.still_named() {
            return Ok(Some(Some(file)));
        }
    }
}

fn id_of(shmid: libc::c_int, ds: &libc::shmid_ds) -> SegmentId {
    SegmentId::SystemV {
        key: ds.shm_perm.__key,
        shmid,
        cpid: ds.shm_cpid,
    }
}

/// A System V segment nobody is attached to, whose creator is dead: if it has no lock
/// state, its qshm creator died between `shmget` and making the lock state (or a Qt
/// program's users all died): stale, not a segment to attach to.
fn owner_of(ds: &libc::shmid_ds) -> Owner {
    let creator_gone =
        ds.shm_nattch == 0 && !std::path::Path::new(&format!("/proc/{}", ds.shm_cpid)).exists();
    Owner {
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        creator_uid: ds.shm_perm.cuid,
        perms: u32::from(ds.shm_perm.mode) & 0o777,
        unfinished_if_bare: creator_gone,
    }
}

/// An attached System V segment.
pub(crate) struct Segment {
    id: libc::c_int,
    segment_id: SegmentId,
    path: CString,
    mode: LockMode,
    semaphore: Option<Arc<dyn SemaphoreBackend>>,
    semaphore_key: NativeIpcKey,
    /// The key file qshm made for this segment (from the lock state).
    key_file: Option<[u64; 3]>,
    fork_epoch: u64,
}

pub(crate) fn create(key: &NativeIpcKey, req: &CreateRequest) -> Result<Attached, Failure> {
    let path = key_path(key)?;
    let fork_epoch = fork::epoch_watched();
    sweep_orphaned_lock_states();
    let (key_file, created) = lock_key_file_for_create(&path)?;
    let result = create_locked(&key_file, created, req, fork_epoch);
    if result.is_err() && created && !segment_uses(&path) {
        // keep no key file behind for a segment we did not make (and never one a live
        // segment uses: we hold its lock, so nobody made one since we looked)
        let _ = key_file.unlink_if_still_named();
    }
    result
}

/// Remove our System V lock states whose segment is gone. Qt removes a segment (and its
/// key file) when a Qt process detaches last, and cannot know qshm's lock state; the
/// next qshm create of any key removes it. A System V lock state is made while its
/// segment exists and removed before it, so one whose segment id is gone (or now names a
/// segment of another creator) is an orphan, never work in progress.
pub(crate) fn sweep_orphaned_lock_states() {
    let Ok(dir) = std::fs::read_dir(super::posix::SHM_DIR) else {
        return;
    };
    let me = os::euid();
    for entry in dir.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(id @ SegmentId::SystemV { shmid, cpid, .. }) = SegmentId::from_lock_state_name(&name) else {
            continue;
        };
        let gone = match os::shm_stat(shmid) {
            Ok(ds) => ds.shm_cpid != cpid,
            Err(e) => matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)),
        };
        use std::os::unix::fs::MetadataExt;
        if gone && entry.metadata().is_ok_and(|m| m.uid() == me) {
            LockState::remove(id);
        }
    }
}

/// Whether a segment exists at the `ftok` key of `path`.
fn segment_uses(path: &CString) -> bool {
    ftok_key(path).is_ok_and(|k| os::shmget(k, 0, 0).is_ok() || os::semget(k, 0).is_ok())
}

fn create_locked(
    key_file: &NamedFile,
    created: bool,
    req: &CreateRequest,
    fork_epoch: u64,
) -> Result<Attached, Failure> {
    let path = &key_file.path;
    let shm_key = ftok_key(path).map_err(|e| key_file_failure(path, e))?;
    let perms = req.perms & 0o777;
    let lock_perms = lock_state::lock_permissions(perms);
    for _ in 0..8 {
        let id = match os::shmget(
            shm_key,
            req.size,
            perms as libc::c_int | libc::IPC_CREAT | libc::IPC_EXCL,
        ) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                reclaim_if_stale(shm_key)?;
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
        let recorded_key_file = created.then(|| lock_state::file_words(&key_file.stat));
        let lock_state = match LockState::create(NewLockState {
            id: segment_id,
            mode: req.mode,
            origin: Origin::Qshm,
            perms: lock_perms,
            owner: None,
            key_file: recorded_key_file,
        }) {
            Ok(state) => state,
            Err(CreateError::Taken) => {
                // someone squats on this identity's name: a new segment gets a new id
                let _ = os::shm_remove(id);
                continue;
            }
            Err(CreateError::Io(e)) => {
                let _ = os::shm_remove(id);
                return Err(super::posix::lock_state_failure(e));
            }
        };
        let undo = |state: LockState| {
            drop(state);
            LockState::remove(segment_id);
            let _ = os::shm_remove(id);
        };
        let semaphore: Option<Arc<dyn SemaphoreBackend>> = match req.mode {
            LockMode::QtCompatible => match open_owned_semaphore(&req.semaphore, lock_perms, key_file) {
                Ok(sem) => Some(sem),
                Err(e) => {
                    undo(lock_state);
                    return Err(e);
                }
            },
            LockMode::Fast => None,
        };
        let mapping = match Mapping::attach_system_v(id, ds.shm_segsz, req.writable) {
            Ok(mapping) => mapping,
            Err(e) => {
                undo(lock_state);
                return Err(e.into());
            }
        };
        let segment = Segment {
            id,
            segment_id,
            path: path.clone(),
            mode: req.mode,
            semaphore: semaphore.clone(),
            semaphore_key: req.semaphore.clone(),
            key_file: recorded_key_file,
            fork_epoch,
        };
        return Ok(Attached {
            segment: Box::new(segment),
            mapping,
            lock_state: Some(lock_state),
            semaphore,
            mode: req.mode,
        });
    }
    Err(Failure::new(SharedMemoryError::AlreadyExists))
}

/// A segment exists at `shm_key`: remove it if it is ours and nobody is attached (every
/// user died), else report it. Runs under the key file's lock.
fn reclaim_if_stale(shm_key: libc::key_t) -> Result<(), Failure> {
    let old = match os::shmget(shm_key, 0, 0) {
        Ok(old) => old,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()), // gone meanwhile
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let owner = table_owner(shm_key).unwrap_or(u32::MAX);
            return Err(not_ours("a segment of this key", owner));
        }
        Err(e) => return Err(e.into()),
    };
    let ds = match os::shm_stat(old) {
        Ok(ds) => ds,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let owner = table_owner(shm_key).unwrap_or(u32::MAX);
            return Err(not_ours("a segment of this key", owner));
        }
        Err(_) => return Ok(()), // removed meanwhile: try again
    };
    if ds.shm_perm.uid != os::euid() {
        return Err(not_ours("a segment of this key", ds.shm_perm.uid));
    }
    if ds.shm_nattch > 0 {
        return Err(Failure::new(SharedMemoryError::AlreadyExists));
    }
    LockState::remove(id_of(old, &ds));
    match os::shm_remove(old) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// The owner of the segment with numeric key `key`, from `/proc/sysvipc/shm` (readable
/// by everyone, unlike `IPC_STAT` of a segment we may not read).
fn table_owner(key: libc::key_t) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()?.parse::<i32>().ok()? == key).then(|| f.get(7)?.parse().ok())?
    })
}

/// Qt's semaphore for a segment being created (see `posix::open_owned_semaphore`).
fn open_owned_semaphore(
    key: &NativeIpcKey,
    perms: u32,
    held: &NamedFile,
) -> Result<Arc<dyn SemaphoreBackend>, Failure> {
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
    match os::sem_owner(sem.id.load(Ordering::Acquire)) {
        Ok(uid) if uid != os::euid() => Err(not_ours("the lock's semaphore", uid)),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(not_ours("the lock's semaphore", u32::MAX)),
        _ => {
            // Like Qt's create (QSystemSemaphore::Create): a semaphore of ours that
            // survived a crash is set back to 1. SEM_UNDO already returns a dead
            // holder's unit; this heals one made but never initialised.
            let _ = os::sem_setval(sem.id.load(Ordering::Acquire), 1);
            Ok(Arc::new(sem))
        }
    }
}

pub(crate) fn attach(key: &NativeIpcKey, req: &AttachRequest) -> Result<Attached, Failure> {
    let path = key_path(key)?;
    let fork_epoch = fork::epoch_watched();
    let _key_file = match lock_key_file(&path)? {
        Some(file) => file,
        None => return Err(Failure::new(SharedMemoryError::NotFound)),
    };
    let shm_key = ftok_key(&path).map_err(|e| key_file_failure(&path, e))?;
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
    let (lock_state, mode) = super::adopt_lock_state(segment_id, owner_of(&ds), req.mode)?;
    if mode == LockMode::Fast && ds.shm_nattch > 0 {
        super::refuse_fast_next_to_foreign_mapper(Mapped::SystemV { shmid: id }, lock_state.as_ref())?;
    }
    let mapping = Mapping::attach_system_v(id, ds.shm_segsz, req.writable)?;
    if os::shm_stat(id).is_ok_and(|ds| ds.shm_perm.mode & os::SHM_DEST != 0) {
        return Err(Failure::new(SharedMemoryError::NotFound));
    }
    let semaphore: Option<Arc<dyn SemaphoreBackend>> = match mode {
        LockMode::QtCompatible => Some(Arc::new(Semaphore::open_holding(
            &req.semaphore,
            1,
            SemaphoreMode::Open,
            lock_state::lock_permissions(owner_of(&ds).perms),
            _key_file.as_ref(),
        )?)),
        LockMode::Fast => None,
    };
    let key_file = lock_state.as_ref().and_then(LockState::key_file);
    let segment = Segment {
        id,
        segment_id,
        path,
        mode,
        semaphore: semaphore.clone(),
        semaphore_key: req.semaphore.clone(),
        key_file,
        fork_epoch,
    };
    Ok(Attached {
        segment: Box::new(segment),
        mapping,
        lock_state,
        semaphore,
        mode,
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

    fn detach(self: Box<Self>) -> Result<Detached, Failure> {
        let Segment {
            id,
            segment_id,
            path,
            mode,
            semaphore,
            semaphore_key,
            key_file,
            fork_epoch,
        } = *self;
        if fork::epoch() != fork_epoch {
            return Ok(Detached::Kept);
        }
        // Never destroy without the key file's lock; if another process holds it past
        // the bound, only detach (the segment is reclaimed later, as a stale one).
        let lock = lock_key_file(&path);
        let may_destroy = lock.is_ok();
        let nattch = match os::shm_stat(id) {
            Ok(ds) => Some(ds.shm_nattch),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => None,
            Err(_) => return Ok(Detached::Kept),
        };
        match nattch {
            Some(n) if n > 0 || !may_destroy => Ok(Detached::Kept),
            Some(_) => {
                // Keep Qt's attach out (Qt holds its semaphore around attach), then look again.
                let held = mode == LockMode::QtCompatible
                    && semaphore
                        .as_ref()
                        .is_some_and(|sem| sem.acquire_existing(DESTROY_SEMAPHORE_WAIT).unwrap_or(false));
                let me = os::euid();
                let last = matches!(os::shm_stat(id), Ok(ds) if ds.shm_nattch == 0
                    && (me == 0 || me == ds.shm_perm.uid || me == ds.shm_perm.cuid));
                // the lock state first: killed after it, we leave a stale segment that
                // the next create reclaims, never an orphaned lock state
                if last {
                    LockState::remove(segment_id);
                }
                let removed = last
                    && match os::shm_remove(id) {
                        Ok(()) => true,
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => true,
                        Err(_) => false,
                    };
                if held && let Some(sem) = &semaphore {
                    let _ = sem.release(1);
                }
                if !removed {
                    return Ok(Detached::Kept);
                }
                drop(semaphore);
                let held_file = lock
                    .as_ref()
                    .ok()
                    .and_then(|l| l.as_ref())
                    .and_then(|f| f.as_ref());
                let sem = (mode == LockMode::QtCompatible).then_some(&semaphore_key);
                remove_companions(held_file, key_file, sem);
                Ok(Detached::Destroyed)
            }
            None => {
                // Removed behind our back (or by another detacher of it) and now freed:
                // our incarnation's lock state is ours to remove. The key file and Qt's
                // semaphore belong to the key, not the incarnation: only while we hold
                // the key file's lock and no segment uses it (a missing key file means
                // the remover cleaned up, and a new creator may be at work).
                LockState::remove(segment_id);
                let sem = (mode == LockMode::QtCompatible).then_some(&semaphore_key);
                drop(semaphore);
                match &lock {
                    Ok(Some(Some(file))) if !ftok_key(&path).is_ok_and(|k| os::shmget(k, 0, 0).is_ok()) => {
                        remove_companions(Some(file), key_file, sem);
                    }
                    // no key file: no segment can be found under this key; Qt's semaphore
                    // is removed under its own key file's lock, which every opener takes
                    Ok(None) => remove_companions(None, None, sem),
                    _ => {}
                }
                Ok(Detached::WasGone)
            }
        }
    }

    fn forget(self: Box<Self>) {
        // shmdt (the facade dropped the mapping) lowered the count fork() had raised
        drop(self);
    }
}

/// Remove the key file `file` (which we hold locked) if qshm made it for this segment
/// (`recorded`) or it is Qt-named, it is empty, and no segment or semaphore uses it.
fn remove_key_file_if_ours(file: &NamedFile, recorded: Option<[u64; 3]>) {
    let made_by_qshm = recorded == Some(lock_state::file_words(&file.stat));
    let qt_named = file
        .path
        .to_str()
        .ok()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|name| name.starts_with("qipc_"));
    let empty = os::fstat(&file.fd).is_ok_and(|st| st.size == 0);
    if (made_by_qshm || qt_named) && empty && !segment_uses(&file.path) {
        let _ = file.unlink_if_still_named();
    }
}

/// Remove what belongs to a destroyed segment: Qt's semaphore `semaphore` if it is ours
/// (with its key file, which for a native key is the segment's own), then the segment's
/// key file `key_file` (held locked) if qshm made it (`recorded`) or Qt named it.
fn remove_companions(
    key_file: Option<&NamedFile>,
    recorded: Option<[u64; 3]>,
    semaphore: Option<&NativeIpcKey>,
) {
    if let Some(sem) = semaphore
        && let Ok(sem_path) = os::cstring(sem.native())
    {
        let shared = key_file.is_some_and(|f| f.path == sem_path);
        let sem_file = if shared {
            None
        } else {
            lock_key_file(&sem_path).ok().flatten().flatten()
        };
        if let Ok(skey) = ftok_key(&sem_path)
            && let Ok(id) = os::semget(skey, 0)
            && os::sem_owner(id).is_ok_and(|uid| uid == os::euid() || os::euid() == 0)
        {
            let _ = os::sem_remove(id);
        }
        if let Some(file) = &sem_file {
            remove_key_file_if_ours(file, None);
        }
    }
    if let Some(file) = key_file {
        remove_key_file_if_ours(file, recorded);
    }
}

/// A System V semaphore set of one semaphore, opened the way `QSystemSemaphore` does;
/// every operation uses `SEM_UNDO`, so a dead process's units come back.
pub(crate) struct Semaphore {
    id: AtomicI32,
    path: CString,
    perms: u32,
    initial: u32,
    created: bool,
}

impl Semaphore {
    pub(crate) fn open(
        key: &NativeIpcKey,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
    ) -> Result<Semaphore, Failure> {
        Self::open_holding(key, initial, mode, perms, None)
    }

    /// [`open`](Self::open) while the caller holds the lock of key file `held`.
    fn open_holding(
        key: &NativeIpcKey,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
        held: Option<&NamedFile>,
    ) -> Result<Semaphore, Failure> {
        if initial > os::SEMVMX {
            return Err(Failure::because(
                SharedMemoryError::InvalidSize,
                format!(
                    "initial value {initial} is above the system's maximum {} (SEMVMX)",
                    os::SEMVMX
                ),
            ));
        }
        let path = key_path(key)?;
        let (id, created) =
            Self::get(&path, initial, mode, perms, held).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::EINVAL | libc::ENOENT) => key_file_failure(&path, e),
                _ => Failure::from(e),
            })?;
        Ok(Semaphore {
            id: AtomicI32::new(id),
            path,
            perms,
            initial,
            created,
        })
    }

    /// Find or make the semaphore at `path`'s `ftok` key, under the key file's lock (so a
    /// destroyer removing it and its key file never interleaves). `held`: a key file the
    /// caller has locked already (for a native key, the segment's and the semaphore's
    /// key file are one file).
    fn get(
        path: &CString,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
        held: Option<&NamedFile>,
    ) -> io::Result<(libc::c_int, bool)> {
        let deadline = Instant::now() + FILE_LOCK_WAIT;
        loop {
            // ftok needs a file: make it if missing (never through a symlink)
            let (file, made_file) =
                match NamedFile::open(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o640) {
                    Ok(file) => (Some(file), true),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match open_existing(path) {
                        Ok(file) => (Some(file), false),
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                        // another user's key file we may not read: ftok only needs to stat it
                        Err(e) if e.raw_os_error() == Some(libc::EACCES) => (None, false),
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e),
                };
            if let Some(file) = &file
                && !held.is_some_and(|h| h.stat.same_file(&file.stat))
            {
                file.lock_until(FileLock::Exclusive, deadline)?;
                if !file.still_named() {
                    continue;
                }
            }
            let result = (|| {
                let key = ftok_key(path)?;
                let perms = (perms & 0o777) as libc::c_int;
                let (id, created) = match os::semget(key, perms | libc::IPC_CREAT | libc::IPC_EXCL) {
                    Ok(id) => (id, true),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        (os::semget(key, perms | libc::IPC_CREAT)?, false)
                    }
                    Err(e) => return Err(e),
                };
                if created || mode == SemaphoreMode::Create {
                    // initial <= SEMVMX was checked
                    os::sem_setval(id, initial as libc::c_int)?;
                }
                Ok((id, created || mode == SemaphoreMode::Create))
            })();
            if result.is_err()
                && made_file
                && let Some(file) = &file
            {
                let _ = file.unlink_if_still_named();
            }
            return result;
        }
    }

    fn with_reopen<T>(&self, mut op: impl FnMut(libc::c_int) -> io::Result<T>) -> io::Result<T> {
        match op(self.id.load(Ordering::Acquire)) {
            // Removed under us (Qt removes it when its creator goes away): like Qt,
            // be nice and make it again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => {
                let (id, _) = Self::get(&self.path, self.initial, SemaphoreMode::Open, self.perms, None)?;
                self.id.store(id, Ordering::Release);
                op(id)
            }
            other => other,
        }
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.with_reopen(|id| os::semop_undo(id, -1, timeout))
    }

    fn acquire_existing(&self, timeout: Duration) -> io::Result<bool> {
        match os::semop_undo(self.id.load(Ordering::Acquire), -1, Some(timeout)) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Ok(false),
            other => other,
        }
    }

    fn release(&self, n: u32) -> io::Result<()> {
        let n = i16::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // No re-creation here (unlike acquire): a removed semaphore has nobody to wake.
        match os::semop_undo(self.id.load(Ordering::Acquire), n, Some(Duration::ZERO)) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Ok(()),
            other => other.map(drop),
        }
    }

    fn value(&self) -> io::Result<i32> {
        os::sem_getval(self.id.load(Ordering::Acquire))
    }

    fn remove(&self) -> io::Result<()> {
        let removed = match os::sem_remove(self.id.load(Ordering::Acquire)) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Err(e),
            _ => Ok(()),
        };
        if let Ok(Some(Some(file))) = lock_key_file(&self.path) {
            remove_key_file_if_ours(&file, None);
        }
        removed
    }

    fn needs_dead_holder_repair(&self) -> bool {
        false
    }

    fn created(&self) -> bool {
        self.created
    }
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
    if let Ok(skey) = ftok_key(&path)
        && let Ok(id) = os::shmget(skey, 0, 0)
    {
        if let Ok(ds) = os::shm_stat(id) {
            let segment_id = id_of(id, &ds);
            if let Ok(Some(state)) =
                LockState::open(segment_id, ds.shm_perm.uid, ds.shm_perm.cuid, owner_of(&ds).perms)
            {
                recorded = state.key_file();
            }
            LockState::remove(segment_id);
        }
        os::shm_remove(id)?;
        existed = true;
    }
    remove_companions(lock.as_ref(), recorded, Some(semaphore));
    Ok(existed)
}

/// The numeric System V key of a native key, if its key file exists.
pub(crate) fn numeric_key(key: &NativeIpcKey) -> Option<libc::key_t> {
    let path = os::cstring(key.native()).ok()?;
    ftok_key(&path).ok()
}

/// Remove System V segment `id` if nobody is attached (its users all died), with its lock
/// state, its key file `key_file` when known and Qt's semaphore `semaphore` when given.
/// Returns whether it was removed.
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
    let recorded = LockState::open(segment_id, ds.shm_perm.uid, ds.shm_perm.cuid, owner_of(&ds).perms)
        .ok()
        .flatten()
        .and_then(|s| s.key_file());
    LockState::remove(segment_id);
    if os::shm_remove(id).is_err() {
        return false;
    }
    remove_companions(lock.as_ref(), recorded, semaphore);
    true
}
