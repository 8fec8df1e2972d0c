//! System V semaphores, as `QSystemSemaphore` uses them.

use std::ffi::CString;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::key_file::{
    ftok_key, key_file_failure, key_path, lock_key_file, open_existing, project_id, remove_key_file_if_ours,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os;
use crate::sys::lock_state;
use crate::sys::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use crate::sys::{SemaphoreBackend, SemaphoreMode};

/// A System V semaphore set of one semaphore, opened the way `QSystemSemaphore` does;
/// every operation uses `SEM_UNDO`, so a dead process's units come back.
pub(crate) struct Semaphore {
    id: AtomicI32,
    path: CString,
    /// The `ftok` project id of the key's type.
    project_id: u8,
    perms: u32,
    initial: u32,
    /// This handle made the semaphore (or took it over in `Create` mode, or made it
    /// again after it was removed): it removes it, as Qt's `createdSemaphore`.
    created: AtomicBool,
    /// The key file this handle made, as `lock_state::file_words` (its identity): the
    /// creator removes it with the semaphore, as Qt does (`createdFile`).
    made_file: Mutex<Option<[u64; 3]>>,
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
    pub(super) fn open_holding(
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
        let project_id = project_id(key);
        let got =
            Self::get(&path, project_id, initial, mode, perms, held).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::EINVAL | libc::ENOENT) => key_file_failure(&path, e),
                _ => Failure::from(e),
            })?;
        Ok(Semaphore {
            id: AtomicI32::new(got.id),
            path,
            project_id,
            perms,
            initial,
            created: AtomicBool::new(got.created),
            made_file: Mutex::new(got.made_file),
        })
    }

    /// The semaphore of `key` if it exists, for a user who may not make it (one who may
    /// only read the segment, and so never locks it): `Ok(None)` when there is no key file
    /// or no set at its key, or this user may not open the set. It makes nothing.
    pub(super) fn open_if_there(key: &NativeIpcKey, perms: u32) -> Result<Option<Semaphore>, Failure> {
        let path = key_path(key)?;
        let project_id = project_id(key);
        let sysv_key = match ftok_key(&path, project_id) {
            Ok(k) => k,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(key_file_failure(&path, e)),
        };
        let id = match os::semget(sysv_key, (perms & 0o777) as libc::c_int) {
            Ok(id) => id,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EACCES)) => return Ok(None),
            Err(e) => return Err(Failure::from(e)),
        };
        Ok(Some(Semaphore {
            id: AtomicI32::new(id),
            path,
            project_id,
            perms,
            initial: 1,
            created: AtomicBool::new(false),
            made_file: Mutex::new(None),
        }))
    }

    /// Find or make the semaphore at `path`'s `ftok` key, under the key file's lock (so a
    /// destroyer removing it and its key file never interleaves). `held`: a key file the
    /// caller has locked already (for a native key, the segment's and the semaphore's
    /// key file are one file).
    fn get(
        path: &CString,
        project_id: u8,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
        held: Option<&NamedFile>,
    ) -> io::Result<Got> {
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
                let key = ftok_key(path, project_id)?;
                let perms = (perms & 0o777) as libc::c_int;
                let (id, created) = open_or_make(key, perms)?;
                if created || mode == SemaphoreMode::Create {
                    // initial <= SEMVMX was checked
                    os::sem_setval(id, initial as libc::c_int)?;
                }
                let made_file = file
                    .as_ref()
                    .filter(|_| made_file)
                    .map(|f| lock_state::file_words(&f.stat));
                Ok(Got {
                    id,
                    created: created || mode == SemaphoreMode::Create,
                    made_file,
                })
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
                let got = Self::get(
                    &self.path,
                    self.project_id,
                    self.initial,
                    SemaphoreMode::Open,
                    self.perms,
                    None,
                )?;
                self.id.store(got.id, Ordering::Release);
                // made anew by us: ours to remove, with the key file if we made that too
                if got.created {
                    self.created.store(true, Ordering::Release);
                    if let Ok(mut made) = self.made_file.lock()
                        && got.made_file.is_some()
                    {
                        *made = got.made_file;
                    }
                }
                op(got.id)
            }
            other => other,
        }
    }
}

/// The set at `key`: made now (`true`: its value is still to be set), or the one there.
/// The open never creates: a set removed between the two `semget`s (by Qt's creator or
/// `ipcrm`, which take no key-file lock) is made again by the exclusive one, so the
/// caller sets its value. (With `IPC_CREAT` on the open, as Qt's, such a set was made at
/// 0 and never set: every lock of it waited for ever.)
fn open_or_make(key: libc::key_t, perms: libc::c_int) -> io::Result<(libc::c_int, bool)> {
    let mut tries = 0;
    loop {
        match os::semget(key, perms | libc::IPC_CREAT | libc::IPC_EXCL) {
            Ok(id) => return Ok((id, true)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        // (the mode bits ask for the access the caller means to use, as before)
        match os::semget(key, perms) {
            Ok(id) => return Ok((id, false)),
            // removed in between: make it (a bounded number of times, as a create does)
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// What [`Semaphore::get`] found or made.
struct Got {
    id: libc::c_int,
    /// Made now (or taken over in `Create` mode).
    created: bool,
    /// The key file, if made now (its identity).
    made_file: Option<[u64; 3]>,
}

impl Semaphore {
    /// The semaphore set's id now (it changes if the set is made again).
    pub(crate) fn id(&self) -> libc::c_int {
        self.id.load(Ordering::Acquire)
    }

    /// Take a unit with `SEM_UNDO`, waiting at most `timeout` (`None`: for ever); a set
    /// removed meanwhile is made again, as Qt does. `Ok(false)`: timed out.
    pub(crate) fn take(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.with_reopen(|id| os::semop_undo(id, -1, timeout))
    }

    /// Give back `n` units (with `SEM_UNDO`, undoing the take's adjustment).
    pub(crate) fn give(&self, n: u32) -> io::Result<()> {
        let n = i16::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // No re-creation here (unlike take): a removed semaphore has nobody to wake.
        match os::semop_undo(self.id.load(Ordering::Acquire), n, Some(Duration::ZERO)) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => Ok(()),
            other => other.map(drop),
        }
    }

    /// What a lock state records of a set qshm made: (semid, numeric key, creation time),
    /// so that it is removed with its segment even once its key file is gone, and never
    /// another set that got the same id since.
    pub(crate) fn record(&self) -> Option<[u64; 3]> {
        let id = self.id();
        let ds = os::sem_stat(id).ok()?;
        Some([id as u64, ds.sem_perm.__key as u32 as u64, ds.sem_ctime as u64])
    }
}

impl Semaphore {
    /// Undo a set this handle made for a segment whose create failed: the set, and its key
    /// file unless it is `held` (the segment's own, for a native key: the create removes
    /// that one itself).
    pub(crate) fn remove_made(&self, held: &NamedFile) {
        if self.path == held.path {
            let _ = os::sem_remove(self.id());
        } else {
            let _ = SemaphoreBackend::remove(self);
        }
    }
}

/// Remove the semaphore set a lock state recorded (`record`), if it is still that set.
pub(crate) fn remove_recorded(record: [u64; 3]) {
    let id = record[0] as libc::c_int;
    if let Ok(ds) = os::sem_stat(id)
        && ds.sem_perm.__key as u32 as u64 == record[1]
        && ds.sem_ctime as u64 == record[2]
    {
        let _ = os::sem_remove(id);
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.take(timeout)
    }

    fn release(&self, n: u32) -> io::Result<()> {
        self.give(n)
    }

    /// Qt's `QSystemSemaphore::release`: a semaphore removed meanwhile (its creator went
    /// away) is made again, starting at this handle's initial value, and then posted.
    fn release_remaking(&self, n: u32) -> io::Result<()> {
        let n = i16::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        self.with_reopen(|id| os::semop_undo(id, n, Some(Duration::ZERO)).map(drop))
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
            // As Qt's creator (createdFile), the creator removes the key file: the one it
            // made, or, having made the semaphore, an empty one of its own user (a file
            // left by a crash, or made by a handle whose semaphore was removed). Never a
            // file with data, of another user, or in use (remove_key_file_if_ours).
            let made = self.made_file.lock().ok().and_then(|m| *m);
            let ours =
                (self.created() && file.stat.uid == os::euid()).then(|| lock_state::file_words(&file.stat));
            remove_key_file_if_ours(&file, made.or(ours), self.project_id, &Default::default());
        }
        removed
    }

    fn created(&self) -> bool {
        self.created.load(Ordering::Acquire)
    }
}
