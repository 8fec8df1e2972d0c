//! System V key files: the file a native key names, whose `ftok` key finds the segment
//! and the semaphore. Opened, locked and removed here only (see the lifetime rules in
//! `mod.rs`).

use std::ffi::CString;
use std::io;
use std::time::Instant;

use crate::error::{Failure, SharedMemoryError};
use crate::key::{LegacyName, NativeIpcKey, SYSV_PROJECT_ID};
use crate::os;
use crate::sys::lock_state;
use crate::sys::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use crate::sys::{not_ours, procfs};

/// `ftok(path, project_id)`, the numeric key Qt uses (`'Q'` for `KeyType::SystemV`, the
/// type's id for `QNativeIpcKey::Type(id)`).
pub(crate) fn ftok_key(path: &CString, project_id: u8) -> io::Result<libc::key_t> {
    os::ftok(path, i32::from(project_id))
}

/// The `ftok` project id of a System V key.
pub(crate) fn project_id(key: &NativeIpcKey) -> u8 {
    key.kind().ftok_project_id().unwrap_or(SYSV_PROJECT_ID)
}

pub(super) fn key_path(key: &NativeIpcKey) -> Result<CString, Failure> {
    Ok(os::cstring(key.native())?)
}

/// A failure about the key file `path` (a symbolic link, not a regular file, a missing
/// directory, no room).
pub(super) fn key_file_failure(path: &CString, e: io::Error) -> Failure {
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
pub(super) fn lock_key_file_for_create(path: &CString) -> Result<(NamedFile, bool), Failure> {
    let deadline = Instant::now() + FILE_LOCK_WAIT;
    loop {
        let (file, created) = match NamedFile::open(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o640)
        {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match open_existing(path) {
                Ok(file) => (file, false),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                // another user's key file we may not even read: their key, as Qt says
                // (its create ends in AlreadyExists there too)
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => match os::lstat(path) {
                    Ok(st) if st.uid != os::euid() => {
                        return Err(not_ours(
                            &format!("the key file {}", path.to_string_lossy()),
                            st.uid,
                        ));
                    }
                    _ => return Err(key_file_failure(path, e)),
                },
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

pub(super) fn open_existing(path: &CString) -> io::Result<NamedFile> {
    match NamedFile::open(path, libc::O_RDWR, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => NamedFile::open(path, libc::O_RDONLY, 0),
        other => other,
    }
}

/// The key file, locked exclusively, for attach and detach: `Ok(None)` when it does not
/// exist; an unreadable key file of another user is skipped (`Ok(Some(None))`).
pub(super) fn lock_key_file(path: &CString) -> Result<Option<Option<NamedFile>>, Failure> {
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

/// Whether a segment or semaphore exists at the `ftok` key of `path` and `project_id`.
pub(super) fn segment_uses(path: &CString, project_id: u8) -> bool {
    ftok_key(path, project_id).is_ok_and(|k| os::shmget(k, 0, 0).is_ok() || os::semget(k, 0).is_ok())
}

/// Whether a segment or semaphore uses the key file `path` under any `ftok` project id
/// (1 to 255): a row of `/proc/sysvipc/shm` or `/proc/sysvipc/sem` whose numeric key is
/// the file's but for the top byte, where `ftok` puts the id. True when `path` cannot be
/// looked at (then it is no file of ours to remove).
#[cfg(feature = "admin")]
pub(crate) fn used_under_any_id(path: &CString) -> bool {
    SystemVKeys::default().use_file(path)
}

/// The numeric keys of every System V segment and semaphore set, read from `/proc` at the
/// first question (about 13 us for the two tables): one clean-up asks about two key files
/// (the segment's and its semaphore's) for the price of one read.
#[derive(Default)]
pub(super) struct SystemVKeys(std::cell::OnceCell<Vec<i32>>);

impl SystemVKeys {
    /// Whether a segment or semaphore uses the key file `path` under any project id (see
    /// [`used_under_any_id`]).
    pub(super) fn use_file(&self, path: &CString) -> bool {
        let Ok(file_key) = ftok_key(path, SYSV_PROJECT_ID) else {
            return true;
        };
        let keys = self.0.get_or_init(|| {
            let shm = procfs::shm_table().into_iter().map(|row| row.key);
            shm.chain(procfs::sem_table().into_iter().map(|row| row.key))
                .collect()
        });
        keys.iter()
            .any(|&key| key != 0 && (key ^ file_key) & 0x00ff_ffff == 0)
    }
}

/// Remove the key file `file` (which we hold locked) if qshm made it for this segment
/// (`recorded`) or it is Qt-named, it is empty, and no segment or semaphore uses it
/// under `project_id`.
pub(super) fn remove_key_file_if_ours(
    file: &NamedFile,
    recorded: Option<[u64; 3]>,
    project_id: u8,
    tables: &SystemVKeys,
) {
    let made_by_qshm = recorded == Some(lock_state::file_words(&file.stat));
    let qt_named = file
        .path
        .to_str()
        .ok()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|name| LegacyName::parse(name).is_some());
    let empty = os::fstat(&file.fd).is_ok_and(|st| st.size == 0);
    // another project id's segment or semaphore may share the file: looked for last, as
    // it costs a read of the System V tables
    if (made_by_qshm || qt_named)
        && empty
        && !segment_uses(&file.path, project_id)
        && !tables.use_file(&file.path)
    {
        let _ = file.unlink_if_still_named();
    }
}

/// Qt's semaphore `semaphore` of a key whose segment key file `segment_path` was found
/// missing (removed behind qshm's back): removed, with its key file, under that key
/// file's lock, and only if the segment's key file is still missing then. A creator of
/// the key makes (and locks) the segment's key file before it opens the semaphore under
/// the semaphore key file's lock, so a semaphore that a new segment shares is never
/// removed. (Looked at once, before the lock, it was: a creator in between shared the
/// semaphore and lost it, and the next attacher made another one. Two locks.)
pub(super) fn remove_semaphore_of_vanished_key(segment_path: &CString, semaphore: &NativeIpcKey) {
    let Ok(sem_path) = os::cstring(semaphore.native()) else {
        return;
    };
    if sem_path == *segment_path {
        return; // one key file for both (a native key): gone, so nothing finds the set by it
    }
    let Ok(Some(Some(sem_file))) = lock_key_file(&sem_path) else {
        return;
    };
    if os::lstat(segment_path).is_ok() {
        return; // a creator is at work: the semaphore may be its segment's already
    }
    if let Ok(skey) = ftok_key(&sem_path, project_id(semaphore))
        && let Ok(id) = os::semget(skey, 0)
        && os::sem_owner(id).is_ok_and(|uid| uid == os::euid() || os::euid() == 0)
    {
        let _ = os::sem_remove(id);
    }
    remove_key_file_if_ours(&sem_file, None, project_id(semaphore), &SystemVKeys::default());
}

/// Remove what belongs to a destroyed segment: Qt's semaphore `semaphore` if it is ours
/// (with its key file, which for a native key is the segment's own), then the segment's
/// key file `key_file` (held locked, `ftok` project id `project_id`) if qshm made it
/// (`recorded`) or Qt named it.
pub(super) fn remove_companions(
    key_file: Option<&NamedFile>,
    project_id: u8,
    recorded: Option<[u64; 3]>,
    semaphore: Option<&NativeIpcKey>,
) {
    let tables = SystemVKeys::default();
    if let Some(sem) = semaphore
        && let Ok(sem_path) = os::cstring(sem.native())
    {
        let shared = key_file.is_some_and(|f| f.path == sem_path);
        let sem_file = if shared {
            None
        } else {
            lock_key_file(&sem_path).ok().flatten().flatten()
        };
        if let Ok(skey) = ftok_key(&sem_path, self::project_id(sem))
            && let Ok(id) = os::semget(skey, 0)
            && os::sem_owner(id).is_ok_and(|uid| uid == os::euid() || os::euid() == 0)
        {
            let _ = os::sem_remove(id);
        }
        if let Some(file) = &sem_file {
            remove_key_file_if_ours(file, None, self::project_id(sem), &tables);
        }
    }
    if let Some(file) = key_file {
        remove_key_file_if_ours(file, recorded, project_id, &tables);
    }
}
