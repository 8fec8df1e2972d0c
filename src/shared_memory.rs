//! [`SharedMemory`]: Qt's `QSharedMemory` with a Rust face.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{self, IpcType, KeyType, NativeIpcKey};
use crate::lock::{self, LockMode, Locker};
use crate::sys::{self, CreateRequest, SegmentBackend, SemaphoreBackend, SemaphoreMode, os};

/// How a segment is mapped (Qt's `QSharedMemory::AccessMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// Mapped `PROT_READ` / `SHM_RDONLY`: a write through a raw pointer faults.
    /// Only read guards are handed out.
    ReadOnly,
    /// Reading and writing are allowed.
    #[default]
    ReadWrite,
}

/// The mode new segments get unless [`SharedMemory::set_permissions`] says otherwise.
pub const DEFAULT_PERMISSIONS: u32 = 0o600;

/// How long a Qt-compatible `detach` waits for Qt's semaphore (which Qt holds around
/// its own create/attach/detach) before detaching without it. Keeps `Drop` from
/// blocking forever behind a peer that holds the lock.
const DETACH_LOCK_WAIT: Duration = Duration::from_secs(2);

/// A named shared-memory segment, shared by threads and processes.
///
/// One handle [`create`](Self::create)s the segment (choosing its size); others
/// [`attach`](Self::attach) to it. The segment is destroyed when the last handle, in
/// any process, detaches; dropping a handle detaches it. Locking returns a guard that
/// gives the bytes as a slice and unlocks when dropped.
///
/// ```
/// use qshm::{AccessMode, SharedMemory};
/// # let key = format!("doc-example-{}", std::process::id());
/// let mut writer = SharedMemory::new(&key);
/// writer.create(100, AccessMode::ReadWrite)?;
/// writer.lock()?[..5].copy_from_slice(b"hello");
///
/// let mut reader = SharedMemory::new(&key); // e.g. in another process
/// reader.attach(AccessMode::ReadOnly)?;
/// assert_eq!(&reader.lock_read()?[..5], b"hello");
/// assert!(reader.size() >= 100); // whole pages
/// # Ok::<(), qshm::Error>(())
/// ```
pub struct SharedMemory {
    key: NativeIpcKey,
    perms: u32,
    lock_mode: LockMode,
    attached: Option<Attached>,
    last_error: LastError,
}

/// Qt-style "last error" of a handle. The success path (every lock) only reads one
/// atomic flag; the mutex is touched when an error is recorded or cleared.
#[derive(Default)]
struct LastError {
    set: AtomicBool,
    error: Mutex<Option<(SharedMemoryError, String)>>,
}

struct Attached {
    segment: Box<dyn SegmentBackend>,
    /// `segment.base()` and `segment.len()`, kept here for the lock fast path.
    base: *mut u8,
    len: usize,
    access: AccessMode,
    /// Qt's semaphore, in QtCompatible mode (opened at create/attach, as Qt does).
    semaphore: Option<std::sync::Arc<dyn SemaphoreBackend>>,
    /// Opened on first lock.
    locker: OnceLock<Locker>,
}

// SAFETY: base/len describe the process-wide mapping owned by `segment` (Send + Sync);
// the pointer is only an address, accessed through guards or by callers of as_ptr.
unsafe impl Send for Attached {}
// SAFETY: as above; every &Attached method only reads.
unsafe impl Sync for Attached {}

impl Attached {
    fn new(
        segment: Box<dyn SegmentBackend>,
        access: AccessMode,
        semaphore: Option<std::sync::Arc<dyn SemaphoreBackend>>,
    ) -> Attached {
        Attached {
            base: segment.base(),
            len: segment.len(),
            segment,
            access,
            semaphore,
            locker: OnceLock::new(),
        }
    }
}

impl SharedMemory {
    /// A handle for the legacy key `key` (what `QSharedMemory(key)` does): the native
    /// key is derived as Qt 6 derives it, for [`KeyType::legacy_default`] (System V).
    pub fn new(key: &str) -> SharedMemory {
        SharedMemory::with_native_key(Self::legacy_native_key(key, KeyType::legacy_default()))
    }

    /// A handle for the legacy key `key`, derived for the key type `kind`.
    pub fn with_key_type(key: &str, kind: KeyType) -> SharedMemory {
        SharedMemory::with_native_key(Self::legacy_native_key(key, kind))
    }

    /// A handle for a native key, used as is.
    pub fn with_native_key(key: NativeIpcKey) -> SharedMemory {
        SharedMemory {
            key,
            perms: DEFAULT_PERMISSIONS,
            lock_mode: LockMode::default(),
            attached: None,
            last_error: LastError::default(),
        }
    }

    /// The native key Qt 6 derives from a legacy key (`QSharedMemory::legacyNativeKey`).
    ///
    /// ```
    /// use qshm::{KeyType, SharedMemory};
    /// let key = SharedMemory::legacy_native_key("market", KeyType::PosixRealtime);
    /// assert_eq!(key.native(), "/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3");
    /// ```
    pub fn legacy_native_key(key: &str, kind: KeyType) -> NativeIpcKey {
        key::legacy_platform_safe_key(key, IpcType::SharedMemory, kind)
    }

    /// Qt 6.6's portable native key (`QSharedMemory::platformSafeKey`).
    pub fn platform_safe_key(key: &str, kind: KeyType) -> NativeIpcKey {
        key::platform_safe_key(key, kind)
    }

    /// Builder form of [`set_permissions`](Self::set_permissions).
    pub fn with_permissions(mut self, mode: u32) -> SharedMemory {
        self.perms = mode & 0o777;
        self
    }

    /// Builder form of [`set_lock_mode`](Self::set_lock_mode).
    pub fn with_lock_mode(mut self, mode: LockMode) -> SharedMemory {
        self.lock_mode = mode;
        self
    }

    /// Permission bits for segments this handle creates (default 0600); the lock
    /// state and semaphore get matching bits.
    pub fn set_permissions(&mut self, mode: u32) {
        self.perms = mode & 0o777;
    }

    /// Which lock [`lock`](Self::lock) takes; applies from the next create/attach.
    pub fn set_lock_mode(&mut self, mode: LockMode) {
        self.lock_mode = mode;
    }

    /// The lock mode in use.
    pub fn lock_mode(&self) -> LockMode {
        self.lock_mode
    }

    /// The legacy key, if the handle was made from one (Qt's `key()`).
    pub fn key(&self) -> Option<&str> {
        self.key.legacy_key()
    }

    /// The native key string (Qt's `nativeKey()`).
    pub fn native_key(&self) -> &str {
        self.key.native()
    }

    /// The native key with its type (Qt's `nativeIpcKey()`).
    pub fn native_ipc_key(&self) -> &NativeIpcKey {
        &self.key
    }

    /// Use legacy key `key` from now on (Qt's `setKey`); detaches first if the key changes.
    pub fn set_key(&mut self, key: &str) -> Result<()> {
        self.set_native_key(Self::legacy_native_key(key, self.key.kind()))
    }

    /// Use native key `key` from now on (Qt's `setNativeKey`); detaches first if it changes.
    pub fn set_native_key(&mut self, key: NativeIpcKey) -> Result<()> {
        if key == self.key {
            return Ok(());
        }
        let detached = if self.is_attached() { self.detach() } else { Ok(()) };
        self.key = key;
        detached
    }

    /// Create a segment of at least `size` bytes and attach to it with `mode`.
    ///
    /// The size is rounded up to whole pages; [`size`](Self::size) tells the real size.
    /// Fails with `AlreadyExists` if a live segment has this key (a stale one, whose
    /// users all died, is removed and replaced), `InvalidSize` for 0 or absurd sizes,
    /// `OutOfResources` when the system cannot hold it, `KeyError` for an empty key.
    pub fn create(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        let result = self.create_inner(size, mode);
        self.record(result)
    }

    fn create_inner(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        const OP: &str = "create";
        let name = self.key.display_name().to_owned();
        if self.attached.is_some() {
            return Err(Error::new(SharedMemoryError::AlreadyExists, OP, &name)
                .with_detail("this handle is already attached; detach first"));
        }
        let size = checked_size(size)
            .map_err(|why| Error::new(SharedMemoryError::InvalidSize, OP, &name).with_detail(why))?;
        let limit = os::memory_limit();
        if size as u64 > limit {
            return Err(
                Error::new(SharedMemoryError::OutOfResources, OP, &name).with_detail(format!(
                    "{size} bytes is more than this machine's memory and swap ({limit} bytes)"
                )),
            );
        }
        let req = CreateRequest {
            size,
            perms: self.perms,
            writable: mode == AccessMode::ReadWrite,
            foreign_peers: self.lock_mode == LockMode::QtCompatible,
        };
        let key = self.key.clone();
        let segment = sys::create_segment(&self.key, req, &mut || destroy_companions(&key))?;
        // Like Qt's create (QSystemSemaphore::Create): take over a System V semaphore that
        // may have survived a crash (reset in place). Unlike Qt, only once the segment is
        // really ours, and a POSIX semaphore is opened, never replaced: an attacher may
        // already use it, and replacing it would split the lock in two. (Leftovers of a
        // dead segment were removed with it, as stale.)
        let sem_mode = match self.key.kind() {
            KeyType::SystemV => SemaphoreMode::Create,
            KeyType::PosixRealtime => SemaphoreMode::Open,
        };
        let semaphore = match self.open_semaphore(sem_mode) {
            Ok(sem) => sem,
            Err(e) => {
                let _ = segment.detach(&mut || destroy_companions(&key));
                return Err(e);
            }
        };
        self.attached = Some(Attached::new(segment, mode, semaphore));
        Ok(())
    }

    /// Attach to the existing segment (`NotFound` if there is none).
    pub fn attach(&mut self, mode: AccessMode) -> Result<()> {
        let result = self.attach_inner(mode);
        self.record(result)
    }

    fn attach_inner(&mut self, mode: AccessMode) -> Result<()> {
        if self.attached.is_some() {
            return Err(Error::new(
                SharedMemoryError::AlreadyExists,
                "attach",
                self.key.display_name(),
            )
            .with_detail("this handle is already attached; detach first"));
        }
        let foreign_peers = self.lock_mode == LockMode::QtCompatible;
        let segment = sys::attach_segment(&self.key, mode == AccessMode::ReadWrite, foreign_peers)?;
        let semaphore = match self.open_semaphore(SemaphoreMode::Open) {
            Ok(sem) => sem,
            Err(e) => {
                let key = self.key.clone();
                let _ = segment.detach(&mut || destroy_companions(&key));
                return Err(e);
            }
        };
        self.attached = Some(Attached::new(segment, mode, semaphore));
        Ok(())
    }

    fn open_semaphore(&self, mode: SemaphoreMode) -> Result<Option<std::sync::Arc<dyn SemaphoreBackend>>> {
        if self.lock_mode != LockMode::QtCompatible {
            return Ok(None);
        }
        let sem_key = lock::semaphore_key(&self.key);
        let sem =
            sys::open_semaphore(&sem_key, 1, mode, lock::lock_permissions(self.perms)).map_err(|e| {
                Error::new(e.kind(), "lock", self.key.display_name())
                    .with_detail(format!("unable to set key on lock ({e})"))
            })?;
        Ok(Some(std::sync::Arc::from(sem)))
    }

    /// Detach from the segment; the last detach (in any process) destroys it.
    ///
    /// Fails with `NotFound` when the handle is not attached.
    pub fn detach(&mut self) -> Result<()> {
        let result = self.detach_inner();
        self.record(result)
    }

    fn detach_inner(&mut self) -> Result<()> {
        let Some(attached) = self.attached.take() else {
            return Err(
                Error::new(SharedMemoryError::NotFound, "detach", self.key.display_name())
                    .with_detail("not attached"),
            );
        };
        let Attached {
            segment,
            semaphore,
            locker,
            ..
        } = attached;
        drop(locker);
        // Qt serialises detach with its semaphore: do the same so a Qt attach cannot
        // slip between our "last one?" check and the removal. Only where a holder's death
        // gives the semaphore back (System V, SEM_UNDO): a POSIX semaphore held here by a
        // process killed mid-detach would stay taken for good, with no marker for waiters
        // to repair it. (Qt never removes POSIX segments, so no Qt attach races with that.)
        let held = semaphore.as_ref().is_some_and(|sem| {
            !sem.needs_dead_holder_repair() && sem.acquire_if_exists(Some(DETACH_LOCK_WAIT)).unwrap_or(false)
        });
        let key = self.key.clone();
        let destroyed = segment.detach(&mut || destroy_companions(&key));
        // a destroyed segment took its semaphore with it: nothing to release
        if held
            && !matches!(destroyed, Ok(true))
            && let Some(sem) = &semaphore
        {
            let _ = sem.release(1);
        }
        destroyed.map(drop)
    }

    /// True while attached (Qt's `isAttached()`).
    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// The access mode of the attachment, if attached.
    pub fn access_mode(&self) -> Option<AccessMode> {
        self.attached.as_ref().map(|a| a.access)
    }

    /// Size of the attached segment in bytes, 0 when not attached. After `create` it is
    /// the requested size rounded up to whole pages; after `attach` the segment's size.
    pub fn size(&self) -> usize {
        self.attached.as_ref().map_or(0, |a| a.len)
    }

    /// Start of the segment (Qt's `constData()`), null when not attached.
    ///
    /// The pointer stays valid until `detach`. Reading through it while another
    /// process writes is a data race unless you hold the lock or use atomics.
    pub fn as_ptr(&self) -> *const u8 {
        self.attached.as_ref().map_or(std::ptr::null(), |a| a.base)
    }

    /// Start of the segment for writing (Qt's `data()`), null when not attached or
    /// attached [`ReadOnly`](AccessMode::ReadOnly).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        match &self.attached {
            Some(a) if a.access == AccessMode::ReadWrite => a.base,
            _ => std::ptr::null_mut(),
        }
    }

    /// Lock the segment for reading and writing, waiting as long as it takes.
    ///
    /// `LockError` when not attached, `PermissionDenied` when attached read-only
    /// (use [`lock_read`](Self::lock_read)).
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        if let Some(fast) = self.fast_lock(true) {
            return fast.map(|raw| LockGuard { raw });
        }
        self.acquire(None, true)
            .and_then(|raw| self.blocking(raw))
            .map(|raw| LockGuard { raw })
    }

    /// Lock for writing if nobody holds the lock now; `Ok(None)` if it is busy.
    #[inline]
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .acquire(Some(Duration::ZERO), true)?
            .map(|raw| LockGuard { raw }))
    }

    /// Lock for writing, waiting at most `timeout`; `Ok(None)` on timeout.
    #[inline]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        Ok(self.acquire(Some(timeout), true)?.map(|raw| LockGuard { raw }))
    }

    /// Lock the segment for reading (works for both access modes).
    #[inline]
    pub fn lock_read(&self) -> Result<ReadGuard<'_>> {
        if let Some(fast) = self.fast_lock(false) {
            return fast.map(|raw| ReadGuard { raw });
        }
        self.acquire(None, false)
            .and_then(|raw| self.blocking(raw))
            .map(|raw| ReadGuard { raw })
    }

    /// [`lock_read`](Self::lock_read) without waiting; `Ok(None)` if busy.
    #[inline]
    pub fn try_lock_read(&self) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .acquire(Some(Duration::ZERO), false)?
            .map(|raw| ReadGuard { raw }))
    }

    /// [`lock_read`](Self::lock_read), waiting at most `timeout`; `Ok(None)` on timeout.
    #[inline]
    pub fn lock_read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard<'_>>> {
        Ok(self.acquire(Some(timeout), false)?.map(|raw| ReadGuard { raw }))
    }

    /// The Fast-mode path once the lock state is open: straight to the mutex, with no
    /// system call when uncontended. `None` means "take the general path" (also when
    /// the lock is busy).
    #[inline]
    fn fast_lock(&self, write: bool) -> Option<Result<RawGuard<'_>>> {
        let attached = self.attached.as_ref()?;
        if write && attached.access != AccessMode::ReadWrite {
            return None;
        }
        let locker = attached.locker.get()?;
        let mutex = locker.fast_mutex()?;
        // Try, never wait here: waiting happens in bounded slices in Locker::acquire.
        // SAFETY: mutex points into the lock-state mapping owned by locker, which lives
        // as long as the attachment; it was initialised as a robust pshared mutex.
        let rc = unsafe { libc::pthread_mutex_trylock(mutex) };
        let previous_owner_died = match rc {
            0 => false,
            libc::EBUSY => return None, // contended: the general path waits
            _ => match self.fast_lock_failed(rc, mutex) {
                Ok(died) => died,
                Err(e) => return Some(Err(e)),
            },
        };
        if self.last_error.set.load(Ordering::Relaxed) {
            self.record_slow(None);
        }
        Some(Ok(RawGuard {
            shm: self,
            locker,
            ptr: attached.base,
            len: attached.len,
            previous_owner_died,
            _not_send: PhantomData,
        }))
    }

    /// `pthread_mutex_lock` returned `rc` != 0: a dead previous owner (we hold the lock
    /// now) or an error.
    #[cold]
    fn fast_lock_failed(&self, rc: i32, mutex: *mut libc::pthread_mutex_t) -> Result<bool> {
        let error = match rc {
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD hands us the mutex; mark it usable again.
                match unsafe { libc::pthread_mutex_consistent(mutex) } {
                    0 => return Ok(true),
                    rc => std::io::Error::from_raw_os_error(rc),
                }
            }
            rc => std::io::Error::from_raw_os_error(rc),
        };
        self.record(Err(self.lock_error(error)))
    }

    /// A blocking acquire cannot come back empty; if it ever did, say so instead of panicking.
    fn blocking<'a>(&self, raw: Option<RawGuard<'a>>) -> Result<RawGuard<'a>> {
        raw.ok_or_else(|| {
            Error::new(SharedMemoryError::LockError, "lock", self.key.display_name())
                .with_detail("the lock wait ended without the lock")
        })
    }

    fn lock_error(&self, e: std::io::Error) -> Error {
        const OP: &str = "lock";
        if e.raw_os_error() == Some(libc::EDEADLK) {
            return Error::new(SharedMemoryError::LockError, OP, self.key.display_name())
                .with_detail("this thread already holds the lock");
        }
        Error::new(SharedMemoryError::LockError, OP, self.key.display_name())
            .with_detail("unable to lock")
            .with_os(e)
    }

    #[inline]
    fn acquire(&self, timeout: Option<Duration>, write: bool) -> Result<Option<RawGuard<'_>>> {
        let result = self.acquire_inner(timeout, write);
        self.record(result)
    }

    #[inline]
    fn acquire_inner(&self, timeout: Option<Duration>, write: bool) -> Result<Option<RawGuard<'_>>> {
        const OP: &str = "lock";
        let Some(attached) = &self.attached else {
            return Err(
                Error::new(SharedMemoryError::LockError, OP, self.key.display_name())
                    .with_detail("not attached: create or attach first"),
            );
        };
        if write && attached.access == AccessMode::ReadOnly {
            return Err(
                Error::new(SharedMemoryError::PermissionDenied, OP, self.key.display_name())
                    .with_detail("attached read-only: use lock_read()"),
            );
        }
        let locker = self.locker(attached)?;
        match locker.acquire(timeout) {
            Ok(Some(died)) => Ok(Some(RawGuard {
                shm: self,
                locker,
                ptr: attached.base,
                len: attached.len,
                previous_owner_died: died,
                _not_send: PhantomData,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(self.lock_error(e)),
        }
    }

    #[inline]
    fn locker<'a>(&self, attached: &'a Attached) -> Result<&'a Locker> {
        if let Some(locker) = attached.locker.get() {
            return Ok(locker);
        }
        let locker = Locker::new(
            &self.key,
            attached.segment.id(),
            self.lock_mode,
            self.perms,
            attached.semaphore.clone(),
        )?;
        // Another thread may have won the race; its locker is as good as ours.
        let _ = attached.locker.set(locker);
        Ok(attached.locker.get().expect("just set"))
    }

    /// The last error of this handle (Qt's `error()`); `NoError` after a success.
    pub fn error(&self) -> SharedMemoryError {
        self.last_error_entry()
            .map_or(SharedMemoryError::NoError, |e| e.0)
    }

    /// Text of the last error (Qt's `errorString()`); empty after a success.
    pub fn error_string(&self) -> String {
        self.last_error_entry().map(|e| e.1).unwrap_or_default()
    }

    fn last_error_entry(&self) -> Option<(SharedMemoryError, String)> {
        if !self.last_error.set.load(Ordering::Relaxed) {
            return None;
        }
        self.last_error.error.lock().ok().and_then(|e| e.clone())
    }

    #[inline]
    fn record<T>(&self, result: Result<T>) -> Result<T> {
        // The success path (every lock and unlock) costs one relaxed load.
        if result.is_err() || self.last_error.set.load(Ordering::Relaxed) {
            self.record_slow(result.as_ref().err());
        }
        result
    }

    #[cold]
    fn record_slow(&self, error: Option<&Error>) {
        if let Ok(mut last) = self.last_error.error.lock() {
            let entry = error.map(|e| (e.kind(), e.to_string()));
            self.last_error.set.store(entry.is_some(), Ordering::Relaxed);
            *last = entry;
        }
    }

    /// Destroy the segment of `key`, with qshm's lock state and Qt's semaphore, even
    /// if processes are still attached (they keep their mapping until they detach).
    /// For tools and tests cleaning up after crashes. Returns whether a segment existed.
    pub fn force_remove(key: &NativeIpcKey) -> Result<bool> {
        let existed = sys::remove_segment(key)?;
        destroy_companions(key);
        Ok(existed)
    }

    /// The key of the semaphore [`LockMode::QtCompatible`] locks: what Qt's
    /// `QSharedMemory::lock()` uses for this handle's key.
    pub fn semaphore_key(&self) -> NativeIpcKey {
        lock::semaphore_key(&self.key)
    }

    /// The file holding qshm's lock state for this key (exists once someone locked).
    pub fn lock_state_path(&self) -> std::path::PathBuf {
        format!("{}/{}", sys::posix::SHM_DIR, lock::companion_name(&self.key)).into()
    }

    /// The numeric System V key (`ftok(path, 'Q')`) of a System V native key, if its
    /// key file exists.
    pub fn system_v_key(key: &NativeIpcKey) -> Option<i32> {
        match key.kind() {
            KeyType::SystemV => sys::sysv::numeric_key(key),
            KeyType::PosixRealtime => None,
        }
    }

    /// Facts about the attached segment, for tools: native id, attachment count
    /// (System V only), permissions, owner, creation time.
    pub fn info(&self) -> Result<SegmentInfo> {
        let Some(attached) = &self.attached else {
            return Err(
                Error::new(SharedMemoryError::NotFound, "stat", self.key.display_name())
                    .with_detail("not attached"),
            );
        };
        let st = attached
            .segment
            .stat()
            .map_err(|e| Error::os("stat", self.key.display_name(), e))?;
        Ok(SegmentInfo {
            size: st.size,
            attachments: st.attachments,
            permissions: st.perms,
            owner_uid: st.uid,
            created_unix: st.ctime_secs,
            os_id: st.os_id,
            lock_state_file: self.lock_state_path(),
        })
    }
}

/// Facts about an attached segment ([`SharedMemory::info`]).
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// Size in bytes.
    pub size: u64,
    /// Attachments counted by the kernel (System V); `None` for POSIX segments.
    pub attachments: Option<u64>,
    /// Permission bits.
    pub permissions: u32,
    /// Owner's user id.
    pub owner_uid: u32,
    /// Creation (or last change) time, seconds since the epoch.
    pub created_unix: i64,
    /// The OS's name for it (`shmid …` or the `/dev/shm` path).
    pub os_id: String,
    /// Where qshm keeps the lock state.
    pub lock_state_file: std::path::PathBuf,
}

/// The segment is going away: remove qshm's lock state and Qt's semaphore with it.
fn destroy_companions(key: &NativeIpcKey) {
    lock::remove_companion(key);
    sys::remove_semaphore_if_exists(&lock::semaphore_key(key));
}

/// Round `size` up to whole pages, or say why it cannot be a segment size.
fn checked_size(size: usize) -> std::result::Result<usize, String> {
    if size == 0 {
        return Err("size must be at least 1 byte".to_owned());
    }
    if size > isize::MAX as usize {
        return Err(format!(
            "{size} bytes is more than any segment can have (a negative size?)"
        ));
    }
    let page = os::page_size();
    size.checked_next_multiple_of(page)
        .filter(|&s| s <= isize::MAX as usize)
        .ok_or_else(|| format!("{size} bytes is more than any segment can have"))
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.attached.is_some() {
            let _ = self.detach_inner();
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("key", &self.key)
            .field("attached", &self.access_mode())
            .field("size", &self.size())
            .field("lock_mode", &self.lock_mode)
            .finish()
    }
}

impl Default for SharedMemory {
    /// A handle without a key (Qt's `QSharedMemory()`): set one before create/attach.
    fn default() -> SharedMemory {
        SharedMemory::with_native_key(NativeIpcKey::new(String::new(), KeyType::legacy_default()))
    }
}

/// A held lock; common part of both guards.
struct RawGuard<'a> {
    shm: &'a SharedMemory,
    locker: &'a Locker,
    ptr: *mut u8,
    len: usize,
    previous_owner_died: bool,
    /// Unlocking must happen on the locking thread (pthread mutexes demand it).
    _not_send: PhantomData<*const ()>,
}

impl RawGuard<'_> {
    #[inline]
    fn unlock(&mut self) -> Result<()> {
        let released = match self.locker.fast_mutex() {
            // SAFETY: this thread locked the mutex when it made this guard.
            Some(mutex) => match unsafe { libc::pthread_mutex_unlock(mutex) } {
                0 => Ok(()),
                rc => Err(std::io::Error::from_raw_os_error(rc)),
            },
            None => self.locker.release(),
        };
        released.map_err(|e| self.unlock_error(e))
    }

    #[cold]
    fn unlock_error(&self, e: std::io::Error) -> Error {
        Error::new(
            SharedMemoryError::LockError,
            "unlock",
            self.shm.key.display_name(),
        )
        .with_detail("unable to unlock")
        .with_os(e)
    }
}

/// Exclusive access to a segment attached [`ReadWrite`](AccessMode::ReadWrite):
/// derefs to `[u8]` and `mut [u8]`; unlocks when dropped.
///
/// A guard stays on the thread that locked (the lock belongs to that thread):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let shm = qshm::SharedMemory::new("guard-is-not-send");
/// send(shm.lock().unwrap());
/// ```
pub struct LockGuard<'a> {
    raw: RawGuard<'a>,
}

/// Exclusive access for reading: derefs to `[u8]`; unlocks when dropped.
pub struct ReadGuard<'a> {
    raw: RawGuard<'a>,
}

macro_rules! guard_common {
    ($guard:ident) => {
        impl $guard<'_> {
            /// True when the previous holder died while holding the lock: the data
            /// may be half-written; check or repair it.
            pub fn previous_owner_died(&self) -> bool {
                self.raw.previous_owner_died
            }

            /// Unlock now and report a failure (Qt's `unlock()`); dropping the guard
            /// unlocks too, but silently.
            pub fn unlock(self) -> Result<()> {
                let mut this = std::mem::ManuallyDrop::new(self);
                let result = this.raw.unlock();
                this.raw.shm.record(result)
            }
        }

        impl Deref for $guard<'_> {
            type Target = [u8];
            #[inline]
            fn deref(&self) -> &[u8] {
                // SAFETY: ptr/len is the live mapping (the guard borrows the handle, so
                // it cannot detach), and we hold the segment lock.
                unsafe { std::slice::from_raw_parts(self.raw.ptr, self.raw.len) }
            }
        }

        impl Drop for $guard<'_> {
            #[inline]
            fn drop(&mut self) {
                let result = self.raw.unlock();
                let _ = self.raw.shm.record(result);
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("len", &self.raw.len)
                    .field("previous_owner_died", &self.raw.previous_owner_died)
                    .finish()
            }
        }
    };
}

guard_common!(LockGuard);
guard_common!(ReadGuard);

impl DerefMut for LockGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; the attachment is ReadWrite (checked in lock()), and the
        // &mut borrow of the guard makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.raw.ptr, self.raw.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_pages_and_reject_nonsense() {
        let page = os::page_size();
        assert_eq!(checked_size(1), Ok(page));
        assert_eq!(checked_size(page), Ok(page));
        assert_eq!(checked_size(page + 1), Ok(2 * page));
        assert!(checked_size(0).is_err());
        assert!(checked_size(usize::MAX).is_err());
        assert!(checked_size(isize::MAX as usize).is_err());
    }

    #[test]
    fn lock_when_not_attached_is_a_lock_error() {
        let shm = SharedMemory::new("never-attached");
        let err = shm.lock().unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::LockError);
        assert_eq!(shm.error(), SharedMemoryError::LockError);
        assert!(shm.try_lock_read().is_err());
    }

    #[test]
    fn empty_key_is_a_key_error() {
        let mut shm = SharedMemory::default();
        assert_eq!(
            shm.create(10, AccessMode::ReadWrite).unwrap_err().kind(),
            SharedMemoryError::KeyError
        );
        assert_eq!(
            shm.attach(AccessMode::ReadOnly).unwrap_err().kind(),
            SharedMemoryError::KeyError
        );
        assert!(!shm.is_attached());
        assert!(shm.as_ptr().is_null());
    }
}
