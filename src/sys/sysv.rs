//! System V backend: `shmget`/`shmat` segments and `semget`/`semop` semaphores, keyed
//! like Qt: the native key is a file path, the numeric key is `ftok(path, 'Q')`.
//!
//! # Lifetime
//!
//! The kernel counts attachments (`shm_nattch`) and drops them when a process dies, so
//! the count is crash-safe by itself. qshm removes the segment (`IPC_RMID`) and its key
//! file when a detach leaves `shm_nattch == 0`, as Qt does.
//!
//! create, attach and detach each hold an exclusive `flock` on the key file while they
//! run, so "check the count, then remove" can never interleave with another qshm
//! process's "find, then attach". (Qt serialises the same steps with its semaphore;
//! qshm in Qt-compatible lock mode takes that semaphore as well.) A segment whose
//! users were all killed keeps `shm_nattch == 0`: the next `create` removes it and
//! creates a fresh one.
//!
//! Key files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` (never through a
//! symlink) and mode 0640, like Qt's `createUnixKeyFile`; an existing key file must be
//! a regular file.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::os::{self, FileStat};
use super::{CreateRequest, SegmentBackend, SegmentId, SegmentStat, SemaphoreBackend, SemaphoreMode};
use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{NativeIpcKey, SYSV_PROJECT_ID};

/// An exclusive `flock` on a key file, held while a segment changes hands.
struct KeyFileLock {
    _fd: Option<OwnedFd>,
    created: bool,
}

/// Open (optionally create) the key file at `path` and lock it exclusively.
///
/// `Ok(None)` when the file does not exist and `create` is false.
fn lock_key_file(path: &CString, create: bool) -> io::Result<Option<KeyFileLock>> {
    for _ in 0..32 {
        let mut created = false;
        let opened = if create {
            match os::open(
                path,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o640,
            ) {
                Ok(fd) => {
                    created = true;
                    Ok(fd)
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => open_existing(path),
                Err(e) => Err(e),
            }
        } else {
            open_existing(path)
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if create {
                    continue; // removed between our two opens: try again
                }
                return Ok(None);
            }
            // Another user's key file we may not open: go on without the lock; the
            // System V permissions still decide what we may do with the segment.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) && !create => {
                return Ok(Some(KeyFileLock {
                    _fd: None,
                    created: false,
                }));
            }
            Err(e) => return Err(e),
        };
        let file = os::fstat(&fd)?;
        if file.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        os::flock(&fd, libc::LOCK_EX)?;
        if matches!(os::lstat(path), Ok(now) if now.same_file(&file)) {
            return Ok(Some(KeyFileLock {
                _fd: Some(fd),
                created,
            }));
        }
        // the file was removed (and maybe re-created) while we waited: start over
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

fn open_existing(path: &CString) -> io::Result<OwnedFd> {
    match os::open(path, libc::O_RDWR | libc::O_NOFOLLOW, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            os::open(path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        }
        other => other,
    }
}

fn key_path(op: &'static str, key: &NativeIpcKey) -> Result<CString> {
    os::cstring(key.native()).map_err(|e| Error::os(op, key.display_name(), e))
}

fn key_file_error(op: &'static str, key: &NativeIpcKey, e: io::Error) -> Error {
    let detail = match e.raw_os_error() {
        Some(libc::ELOOP) => "the key file is a symbolic link; refusing to follow it".to_owned(),
        Some(libc::EINVAL) => "the key file is not a regular file".to_owned(),
        _ => format!("unable to make key file {}", key.native()),
    };
    let kind = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => SharedMemoryError::PermissionDenied,
        Some(libc::ENOSPC | libc::EMFILE | libc::ENFILE) => SharedMemoryError::OutOfResources,
        _ => SharedMemoryError::KeyError,
    };
    Error::new(kind, op, key.display_name())
        .with_detail(detail)
        .with_os(e)
}

/// `ftok(path, 'Q')`, the numeric key Qt uses.
pub(crate) fn ftok_key(path: &CString) -> io::Result<libc::key_t> {
    os::ftok(path, SYSV_PROJECT_ID)
}

/// An attached System V segment.
pub(crate) struct Segment {
    id: libc::c_int,
    ptr: *mut u8,
    len: usize,
    ctime: i64,
    path: CString,
    display: String,
}

// SAFETY: the mapping is process-wide memory; the raw pointer is only an address.
unsafe impl Send for Segment {}
// SAFETY: Segment has no interior mutability; &Segment only reads plain fields.
unsafe impl Sync for Segment {}

impl Segment {
    pub(crate) fn create(
        key: &NativeIpcKey,
        req: CreateRequest,
        on_stale: &mut dyn FnMut(),
    ) -> Result<Segment> {
        const OP: &str = "create";
        let name = key.display_name();
        let path = key_path(OP, key)?;
        let lock = lock_key_file(&path, true)
            .map_err(|e| key_file_error(OP, key, e))?
            .expect("create mode always yields a lock");
        let result = Self::create_locked(key, &path, req, on_stale);
        if result.is_err() && lock.created {
            // keep no key file behind for a segment we did not make
            let _ = os::unlink(&path);
        }
        drop(lock);
        result.map_err(|e| {
            if e.key().is_empty() {
                Error::new(e.kind(), OP, name)
            } else {
                e
            }
        })
    }

    fn create_locked(
        key: &NativeIpcKey,
        path: &CString,
        req: CreateRequest,
        on_stale: &mut dyn FnMut(),
    ) -> Result<Segment> {
        const OP: &str = "create";
        let name = key.display_name();
        let shm_key =
            ftok_key(path).map_err(|e| Error::os(OP, name, e).with_kind(SharedMemoryError::KeyError))?;
        let perms = (req.perms & 0o777) as libc::c_int;
        let mut id = None;
        for _ in 0..4 {
            match os::shmget(shm_key, req.size, perms | libc::IPC_CREAT | libc::IPC_EXCL) {
                Ok(new) => {
                    id = Some(new);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Stale (every user died)? Then nobody is attached: reclaim it.
                    let old = os::shmget(shm_key, 0, 0).ok();
                    let stale =
                        old.and_then(|old| os::shm_stat(old).ok().map(|ds| (old, ds.shm_nattch == 0)));
                    match stale {
                        Some((old, true)) => {
                            on_stale();
                            match os::shm_remove(old) {
                                // removed meanwhile by its last detacher: fine, retry
                                Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => {
                                    return Err(Error::os(OP, name, e));
                                }
                                _ => {}
                            }
                        }
                        _ => return Err(Error::new(SharedMemoryError::AlreadyExists, OP, name)),
                    }
                }
                Err(e) => {
                    let errno = e.raw_os_error();
                    return Err(match errno {
                        Some(libc::EINVAL) => Error::new(SharedMemoryError::InvalidSize, OP, name)
                            .with_detail(format!(
                                "{} bytes is outside the system's limits (SHMMIN/SHMMAX)",
                                req.size
                            ))
                            .with_os(e),
                        _ => Error::os(OP, name, e),
                    });
                }
            }
        }
        let id = id.ok_or_else(|| Error::new(SharedMemoryError::AlreadyExists, OP, name))?;
        match Self::map(id, req.writable, path, name) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                let _ = os::shm_remove(id);
                Err(e)
            }
        }
    }

    pub(crate) fn attach(key: &NativeIpcKey, writable: bool) -> Result<Segment> {
        const OP: &str = "attach";
        let name = key.display_name();
        let path = key_path(OP, key)?;
        let _lock = match lock_key_file(&path, false) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(Error::new(SharedMemoryError::NotFound, OP, name)),
            Err(e) => return Err(key_file_error(OP, key, e)),
        };
        let shm_key = ftok_key(&path).map_err(|e| Error::os(OP, name, e))?;
        let id = os::shmget(shm_key, 0, if writable { 0o600 } else { 0o400 })
            .map_err(|e| Error::os(OP, name, e))?;
        let ds = os::shm_stat(id).map_err(|e| Error::os(OP, name, e))?;
        if ds.shm_perm.mode & os::SHM_DEST != 0 {
            // being destroyed by a peer that does not take our key-file lock
            return Err(Error::new(SharedMemoryError::NotFound, OP, name));
        }
        Self::map(id, writable, &path, name)
    }

    fn map(id: libc::c_int, writable: bool, path: &CString, name: &str) -> Result<Segment> {
        let ptr = os::shmat(id, !writable).map_err(|e| Error::os("attach", name, e))?;
        match os::shm_stat(id) {
            Ok(ds) => Ok(Segment {
                id,
                ptr,
                len: ds.shm_segsz,
                ctime: ds.shm_ctime,
                path: path.clone(),
                display: name.to_owned(),
            }),
            Err(e) => {
                // SAFETY: ptr was just attached and nobody else has it.
                let _ = unsafe { os::shmdt(ptr) };
                Err(Error::os("attach", name, e))
            }
        }
    }
}

impl SegmentBackend for Segment {
    fn base(&self) -> *mut u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn id(&self) -> SegmentId {
        SegmentId([self.id as u64, self.ctime as u64, 0])
    }

    fn stat(&self) -> io::Result<SegmentStat> {
        let ds = os::shm_stat(self.id)?;
        Ok(SegmentStat {
            size: ds.shm_segsz as u64,
            attachments: Some(ds.shm_nattch),
            perms: u32::from(ds.shm_perm.mode) & 0o777,
            uid: ds.shm_perm.uid,
            ctime_secs: ds.shm_ctime,
            os_id: format!("shmid {} key {:#010x}", self.id, ds.shm_perm.__key),
        })
    }

    fn detach(self: Box<Self>, on_last: &mut dyn FnMut()) -> Result<bool> {
        let lock = lock_key_file(&self.path, false).ok().flatten();
        // SAFETY: ptr is our attachment; SharedMemory guarantees no borrow outlives it.
        unsafe { os::shmdt(self.ptr) }.map_err(|e| Error::os("detach", &self.display, e))?;
        let last = matches!(os::shm_stat(self.id), Ok(ds) if ds.shm_nattch == 0);
        if last {
            on_last();
            match os::shm_remove(self.id) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => return Ok(false),
                Err(e) => return Err(Error::os("detach", &self.display, e)),
            }
            if lock.is_some() {
                let _ = os::unlink(&self.path);
            }
        }
        drop(lock);
        Ok(last)
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
    ) -> Result<Semaphore> {
        const OP: &str = "open semaphore";
        let path = key_path(OP, key)?;
        let (id, created) = Self::get(&path, initial, mode, perms).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::EINVAL) => key_file_error(OP, key, e),
            _ => Error::os(OP, key.display_name(), e),
        })?;
        Ok(Semaphore {
            id: AtomicI32::new(id),
            path,
            perms,
            initial,
            created,
        })
    }

    fn get(path: &CString, initial: u32, mode: SemaphoreMode, perms: u32) -> io::Result<(libc::c_int, bool)> {
        // ftok needs a file: make it if missing (never through a symlink)
        match os::open(
            path,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o640,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let st: FileStat = os::lstat(path)?;
                if st.mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(io::Error::from_raw_os_error(
                        if st.mode & libc::S_IFMT == libc::S_IFLNK {
                            libc::ELOOP
                        } else {
                            libc::EINVAL
                        },
                    ));
                }
            }
            Err(e) => return Err(e),
        }
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
            let value =
                libc::c_int::try_from(initial).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
            os::sem_setval(id, value)?;
        }
        Ok((id, created || mode == SemaphoreMode::Create))
    }

    fn with_reopen<T>(&self, mut op: impl FnMut(libc::c_int) -> io::Result<T>) -> io::Result<T> {
        match op(self.id.load(Ordering::Acquire)) {
            // Removed under us (Qt removes it when its creator goes away): like Qt,
            // be nice and make it again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => {
                let (id, _) = Self::get(&self.path, self.initial, SemaphoreMode::Open, self.perms)?;
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

    fn acquire_if_exists(&self, timeout: Option<Duration>) -> io::Result<bool> {
        match os::semop_undo(self.id.load(Ordering::Acquire), -1, timeout) {
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
        let _ = os::unlink(&self.path);
        removed
    }

    fn needs_dead_holder_repair(&self) -> bool {
        false
    }

    fn created(&self) -> bool {
        self.created
    }
}

pub(crate) fn remove_segment(key: &NativeIpcKey) -> Result<bool> {
    const OP: &str = "remove";
    let path = key_path(OP, key)?;
    let Some(_lock) = lock_key_file(&path, false).map_err(|e| key_file_error(OP, key, e))? else {
        return Ok(false);
    };
    let mut existed = false;
    if let Ok(skey) = ftok_key(&path)
        && let Ok(id) = os::shmget(skey, 0, 0)
    {
        os::shm_remove(id).map_err(|e| Error::os(OP, key.display_name(), e))?;
        existed = true;
    }
    let _ = os::unlink(&path);
    Ok(existed)
}

/// The numeric System V key of a native key, if its key file exists.
pub(crate) fn numeric_key(key: &NativeIpcKey) -> Option<libc::key_t> {
    let path = os::cstring(key.native()).ok()?;
    ftok_key(&path).ok()
}

pub(crate) fn remove_semaphore_if_exists(key: &NativeIpcKey) {
    let Ok(path) = os::cstring(key.native()) else {
        return;
    };
    let Ok(file) = os::lstat(&path) else { return };
    if file.mode & libc::S_IFMT != libc::S_IFREG {
        return;
    }
    if let Ok(skey) = ftok_key(&path)
        && let Ok(id) = os::semget(skey, 0)
    {
        let _ = os::sem_remove(id);
    }
    let _ = os::unlink(&path);
}

/// Remove System V segment `id` if nobody is attached (its users all died), with its key
/// file `key_file` when known, running `on_stale` first. Returns whether it was removed.
pub(crate) fn remove_if_stale(id: libc::c_int, key_file: Option<&str>, on_stale: &mut dyn FnMut()) -> bool {
    let path = key_file.and_then(|p| os::cstring(p).ok());
    let _lock = path.as_ref().and_then(|p| lock_key_file(p, false).ok().flatten());
    match os::shm_stat(id) {
        Ok(ds) if ds.shm_nattch == 0 => {}
        _ => return false,
    }
    on_stale();
    if os::shm_remove(id).is_err() {
        return false;
    }
    if let Some(path) = &path {
        let _ = os::unlink(path);
    }
    true
}
