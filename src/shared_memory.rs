//! [`SharedMemory`]: Qt's `QSharedMemory` with a Rust face.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Failure, Result, SharedMemoryError};
use crate::guard::{LockGuard, ReadGuard};
use crate::key::{self, IpcType, KeyType, NativeIpcKey};
use crate::lock::{self, Locker};
use crate::sys::mapping::Mapping;
use crate::sys::{self, AttachRequest, CreateRequest, LockMode, SegmentBackend, fork, os};

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

/// A named shared-memory segment, shared by threads and processes.
///
/// One handle [`create`](Self::create)s the segment (choosing its size and lock mode);
/// others [`attach`](Self::attach) to it. The segment is destroyed when the last handle,
/// in any process, detaches; dropping a handle detaches it. Locking returns a guard that
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
/// assert_eq!(reader.size(), 100); // exactly what create asked, as in Qt
/// # Ok::<(), qshm::Error>(())
/// ```
///
/// # Soundness
///
/// The guards hand out `&[u8]` and `&mut [u8]` to memory other processes can change.
/// That is sound only under this contract, which qshm cannot enforce across processes:
///
/// * every process that writes the segment takes its lock for the write (qshm
///   processes through the guards, Qt programs with `QSharedMemory::lock()`; in
///   [`LockMode::Fast`] only qshm processes can take it, so no Qt program may write);
/// * nobody shrinks the segment file (`ftruncate` of a POSIX segment; qshm and Qt never
///   do), which would turn reads into `SIGBUS`;
/// * a process that writes without the lock uses the raw pointers ([`as_mut_ptr`]) and
///   atomic or volatile accesses, never the guards.
///
/// The raw pointers ([`as_ptr`], [`as_mut_ptr`]) are for experts: dereferencing them is
/// `unsafe` and subject to the same contract.
///
/// [`as_ptr`]: Self::as_ptr
/// [`as_mut_ptr`]: Self::as_mut_ptr
pub struct SharedMemory {
    key: NativeIpcKey,
    perms: u32,
    /// The mode asked for with `with_lock_mode`/`set_lock_mode`: used by `create`, and
    /// required (rather than adopted) by `attach`.
    requested_mode: Option<LockMode>,
    attached: Option<Attachment>,
    last_error: LastError,
}

/// Qt-style "last error" of a handle. The success path (every lock) only reads one
/// atomic flag; the mutex is touched when an error is recorded or cleared.
#[derive(Default)]
struct LastError {
    set: AtomicBool,
    error: Mutex<Option<(SharedMemoryError, String)>>,
}

/// An attached segment: its bytes, its lock, and the backend that detaches it.
struct Attachment {
    mapping: Mapping,
    locker: Locker,
    segment: Box<dyn SegmentBackend>,
    access: AccessMode,
    fork_epoch: u64,
}

impl SharedMemory {
    /// A handle for the legacy key `key` (what `QSharedMemory(key)` does): the native
    /// key is derived as Qt 6 derives it, for [`KeyType::legacy_default`] (System V).
    #[doc(alias = "QSharedMemory")]
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
            requested_mode: None,
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
    #[doc(alias = "legacyNativeKey")]
    pub fn legacy_native_key(key: &str, kind: KeyType) -> NativeIpcKey {
        key::legacy_platform_safe_key(key, IpcType::SharedMemory, kind)
    }

    /// Qt 6.6's portable native key (`QSharedMemory::platformSafeKey`).
    #[doc(alias = "platformSafeKey")]
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
        self.requested_mode = Some(mode);
        self
    }

    /// Permission bits for segments this handle creates (default 0600). The lock state and
    /// Qt's semaphore get the matching bits, read bits bringing write bits (readers lock).
    pub fn set_permissions(&mut self, mode: u32) {
        self.perms = mode & 0o777;
    }

    /// Ask for lock mode `mode`: `create` makes the segment with it; `attach` then fails
    /// with `LockError` if the segment has the other mode (without a request, `attach`
    /// adopts the segment's mode). The lock mode belongs to the segment: while attached,
    /// only the segment's own mode is accepted (another one is a `LockError`).
    pub fn set_lock_mode(&mut self, mode: LockMode) -> Result<()> {
        if let Some(attached) = &self.attached
            && attached.locker.mode() != mode
        {
            let error = Error::new(
                SharedMemoryError::LockError,
                "set lock mode",
                self.key.display_name(),
            )
            .with_detail(format!(
                "the segment's lock mode is {}; it cannot change while attached",
                attached.locker.mode().name()
            ));
            return self.record(Err(error));
        }
        self.requested_mode = Some(mode);
        Ok(())
    }

    /// The lock mode: the segment's while attached, else the one asked for (or the
    /// default, [`LockMode::QtCompatible`]).
    pub fn lock_mode(&self) -> LockMode {
        match &self.attached {
            Some(attached) => attached.locker.mode(),
            None => self.requested_mode.unwrap_or_default(),
        }
    }

    /// The legacy key, if the handle was made from one (Qt's `key()`).
    pub fn key(&self) -> Option<&str> {
        self.key.legacy_key()
    }

    /// The native key string (Qt's `nativeKey()`).
    #[doc(alias = "nativeKey")]
    pub fn native_key(&self) -> &str {
        self.key.native()
    }

    /// The native key with its type (Qt's `nativeIpcKey()`).
    #[doc(alias = "nativeIpcKey")]
    pub fn native_ipc_key(&self) -> &NativeIpcKey {
        &self.key
    }

    /// Use legacy key `key` from now on (Qt's `setKey`): derived, as in Qt, for
    /// [`KeyType::legacy_default`] (System V) whatever the current key's type. Detaches
    /// first if the key changes.
    #[doc(alias = "setKey")]
    pub fn set_key(&mut self, key: &str) -> Result<()> {
        self.set_native_key(Self::legacy_native_key(key, KeyType::legacy_default()))
    }

    /// Use native key `key` from now on (Qt's `setNativeKey`); detaches first if it changes.
    #[doc(alias = "setNativeKey")]
    pub fn set_native_key(&mut self, key: NativeIpcKey) -> Result<()> {
        if key == self.key {
            return Ok(());
        }
        let detached = if self.is_attached() { self.detach() } else { Ok(()) };
        self.key = key;
        detached
    }

    /// Create a segment of exactly `size` bytes and attach to it with `mode`.
    ///
    /// The segment gets this handle's lock mode (default [`LockMode::QtCompatible`]) and
    /// permissions. Its pages are reserved now, so a full `/dev/shm` is `OutOfResources`
    /// here rather than a `SIGBUS` later. Fails with `AlreadyExists` if a live segment has
    /// this key (a stale one of ours, whose users all died, is replaced; another user's
    /// object is never taken over), `InvalidSize` for 0 or absurd sizes, `KeyError` for an
    /// empty or unusable key.
    pub fn create(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        let result = self.create_inner(size, mode);
        self.record(result)
    }

    fn create_inner(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        const OP: &str = "create";
        if self.attached.is_some() {
            return Err(self.error_of(
                OP,
                SharedMemoryError::AlreadyExists,
                "this handle is already attached; detach first",
            ));
        }
        checked_size(size).map_err(|why| self.error_of(OP, SharedMemoryError::InvalidSize, why))?;
        let limit = os::memory_limit();
        if size as u64 > limit {
            return Err(self.error_of(
                OP,
                SharedMemoryError::OutOfResources,
                format!("{size} bytes is more than this machine's memory and swap ({limit} bytes)"),
            ));
        }
        let req = CreateRequest {
            size,
            perms: self.perms,
            writable: mode == AccessMode::ReadWrite,
            mode: self.requested_mode.unwrap_or_default(),
            semaphore: lock::semaphore_key(&self.key),
        };
        let attached = sys::create(&self.key, &req).map_err(|f| self.fail(OP, f))?;
        self.attached = Some(Attachment::new(attached, mode));
        Ok(())
    }

    /// Attach to the existing segment (`NotFound` if there is none), adopting its lock mode
    /// (or failing with `LockError` if this handle asked for the other one).
    pub fn attach(&mut self, mode: AccessMode) -> Result<()> {
        let result = self.attach_inner(mode);
        self.record(result)
    }

    fn attach_inner(&mut self, mode: AccessMode) -> Result<()> {
        const OP: &str = "attach";
        if self.attached.is_some() {
            return Err(self.error_of(
                OP,
                SharedMemoryError::AlreadyExists,
                "this handle is already attached; detach first",
            ));
        }
        let req = AttachRequest {
            writable: mode == AccessMode::ReadWrite,
            mode: self.requested_mode,
            semaphore: lock::semaphore_key(&self.key),
        };
        let attached = sys::attach(&self.key, &req).map_err(|f| self.fail(OP, f))?;
        self.attached = Some(Attachment::new(attached, mode));
        Ok(())
    }

    /// Detach from the segment; the last detach (in any process) destroys it.
    ///
    /// Fails with `NotFound` when the handle is not attached; as in Qt, that failure is
    /// not recorded in [`error`](Self::error).
    pub fn detach(&mut self) -> Result<()> {
        let Some(attached) = self.attached.take() else {
            return Err(
                Error::new(SharedMemoryError::NotFound, "detach", self.key.display_name())
                    .with_detail("not attached"),
            );
        };
        let result = attached.detach().map_err(|f| self.fail("detach", f));
        self.record(result)
    }

    /// True while attached (Qt's `isAttached()`).
    #[doc(alias = "isAttached")]
    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// The access mode of the attachment, if attached.
    pub fn access_mode(&self) -> Option<AccessMode> {
        self.attached.as_ref().map(|a| a.access)
    }

    /// Size of the attached segment in bytes, 0 when not attached: exactly what its
    /// creator asked for (what Qt's `size()` reports too).
    pub fn size(&self) -> usize {
        self.attached.as_ref().map_or(0, |a| a.mapping.len())
    }

    /// Start of the segment (Qt's `constData()`), null when not attached.
    ///
    /// The pointer stays valid until `detach`. Reading through it while another process
    /// writes is a data race unless you hold the lock or use atomics (see `## Soundness`).
    #[doc(alias = "constData")]
    pub fn as_ptr(&self) -> *const u8 {
        self.attached
            .as_ref()
            .map_or(std::ptr::null(), |a| a.mapping.ptr())
    }

    /// Start of the segment for writing (Qt's `data()`), null when not attached or
    /// attached [`ReadOnly`](AccessMode::ReadOnly).
    #[doc(alias = "data")]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        match &self.attached {
            Some(a) if a.access == AccessMode::ReadWrite => a.mapping.ptr(),
            _ => std::ptr::null_mut(),
        }
    }

    /// Lock the segment for reading and writing, waiting as long as it takes.
    ///
    /// `LockError` when not attached (or a second lock from the thread holding it: Qt
    /// would return at once, but two guards would be two `&mut` to the same bytes),
    /// `PermissionDenied` when attached read-only (use [`lock_read`](Self::lock_read)).
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        let (a, died) = self.take(None, true)?.ok_or_else(|| self.never_empty())?;
        Ok(LockGuard::new(self, &a.locker, &a.mapping, died))
    }

    /// Lock for writing if nobody holds the lock now; `Ok(None)` if it is busy.
    #[inline]
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Some(Duration::ZERO), true)?
            .map(|(a, died)| LockGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Lock for writing, waiting at most `timeout`; `Ok(None)` on timeout.
    /// (`Duration::MAX` waits for ever.)
    #[inline]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        Ok(self
            .take(Some(timeout), true)?
            .map(|(a, died)| LockGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Lock the segment for reading (works for both access modes).
    #[inline]
    pub fn lock_read(&self) -> Result<ReadGuard<'_>> {
        let (a, died) = self.take(None, false)?.ok_or_else(|| self.never_empty())?;
        Ok(ReadGuard::new(self, &a.locker, &a.mapping, died))
    }

    /// [`lock_read`](Self::lock_read) without waiting; `Ok(None)` if busy.
    #[inline]
    pub fn try_lock_read(&self) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Some(Duration::ZERO), false)?
            .map(|(a, died)| ReadGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// [`lock_read`](Self::lock_read), waiting at most `timeout`; `Ok(None)` on timeout.
    #[inline]
    pub fn lock_read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard<'_>>> {
        Ok(self
            .take(Some(timeout), false)?
            .map(|(a, died)| ReadGuard::new(self, &a.locker, &a.mapping, died)))
    }

    /// Take the lock: the inlined uncontended Fast-mode path first, else the general one.
    #[inline]
    fn take(&self, timeout: Option<Duration>, write: bool) -> Result<Option<(&Attachment, bool)>> {
        if let Some(a) = &self.attached
            && (!write || a.access == AccessMode::ReadWrite)
            && let Some(fast) = a.locker.try_fast()
        {
            let result = fast.map(|died| Some((a, died))).map_err(|e| self.lock_error(e));
            return self.record(result);
        }
        let result = self.take_slow(timeout, write);
        self.record(result)
    }

    #[inline(never)]
    fn take_slow(&self, timeout: Option<Duration>, write: bool) -> Result<Option<(&Attachment, bool)>> {
        const OP: &str = "lock";
        let Some(a) = &self.attached else {
            return Err(self.error_of(
                OP,
                SharedMemoryError::LockError,
                "not attached: create or attach first",
            ));
        };
        if write && a.access == AccessMode::ReadOnly {
            return Err(self.error_of(
                OP,
                SharedMemoryError::PermissionDenied,
                "attached read-only: use lock_read()",
            ));
        }
        match a.locker.acquire(timeout) {
            Ok(Some(died)) => Ok(Some((a, died))),
            Ok(None) => Ok(None),
            Err(e) => Err(self.lock_error(e)),
        }
    }

    /// A blocking acquire cannot come back empty; if it ever did, say so instead of panicking.
    #[cold]
    fn never_empty(&self) -> Error {
        self.error_of(
            "lock",
            SharedMemoryError::LockError,
            "the lock wait ended without the lock",
        )
    }

    #[cold]
    fn lock_error(&self, e: std::io::Error) -> Error {
        if e.raw_os_error() == Some(libc::EDEADLK) {
            return self.error_of(
                "lock",
                SharedMemoryError::LockError,
                "this thread already holds the lock",
            );
        }
        Error::new(SharedMemoryError::LockError, "lock", self.key.display_name())
            .with_detail("unable to lock")
            .with_os(e)
    }

    #[cold]
    pub(crate) fn unlock_error(&self, e: std::io::Error) -> Error {
        Error::new(SharedMemoryError::LockError, "unlock", self.key.display_name())
            .with_detail("unable to unlock")
            .with_os(e)
    }

    #[cold]
    fn error_of(&self, op: &'static str, kind: SharedMemoryError, detail: impl Into<String>) -> Error {
        Error::new(kind, op, self.key.display_name()).with_detail(detail)
    }

    #[cold]
    fn fail(&self, op: &'static str, failure: Failure) -> Error {
        Error::from_failure(op, self.key.display_name(), failure)
    }

    /// The last error of this handle (Qt's `error()`); `NoError` after a success.
    pub fn error(&self) -> SharedMemoryError {
        self.last_error_entry()
            .map_or(SharedMemoryError::NoError, |e| e.0)
    }

    /// Text of the last error (Qt's `errorString()`); empty after a success.
    #[doc(alias = "errorString")]
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
    pub(crate) fn record<T>(&self, result: Result<T>) -> Result<T> {
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

    /// Destroy the segment of `key`, with qshm's lock state and Qt's semaphore, even if
    /// processes are still attached (they keep their mapping until they detach). For tools
    /// and tests cleaning up after crashes. Returns whether a segment existed. Never
    /// deletes a file that is not a segment or a key file qshm or Qt would make.
    pub fn force_remove(key: &NativeIpcKey) -> Result<bool> {
        sys::remove(key, &lock::semaphore_key(key))
            .map_err(|f| Error::from_failure("remove", key.display_name(), f))
    }

    /// The key of the semaphore [`LockMode::QtCompatible`] locks: what Qt's
    /// `QSharedMemory::lock()` uses for this handle's key.
    pub fn semaphore_key(&self) -> NativeIpcKey {
        lock::semaphore_key(&self.key)
    }

    /// The file holding qshm's lock state for the attached segment, if it has one.
    pub fn lock_state_path(&self) -> Option<std::path::PathBuf> {
        let attached = self.attached.as_ref()?;
        attached
            .locker
            .state()
            .map(|s| s.segment().lock_state_path().into())
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
    /// (System V only), permissions, owner, creation time, lock.
    pub fn info(&self) -> Result<SegmentInfo> {
        let Some(attached) = &self.attached else {
            return Err(self.error_of("stat", SharedMemoryError::NotFound, "not attached"));
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
            created_unix: st.created_secs,
            os_id: st.os_id,
            lock_mode: attached.locker.mode(),
            lock_state_file: self.lock_state_path(),
            made_by_qshm: attached
                .locker
                .state()
                .is_some_and(|s| s.origin() == sys::lock_state::Origin::Qshm),
        })
    }
}

impl Attachment {
    fn new(attached: sys::Attached, access: AccessMode) -> Attachment {
        let fork_epoch = fork::epoch_watched();
        Attachment {
            locker: Locker::new(attached.mode, attached.lock_state, attached.semaphore, fork_epoch),
            mapping: attached.mapping,
            segment: attached.segment,
            access,
            fork_epoch,
        }
    }

    fn detach(self) -> std::result::Result<(), Failure> {
        let Attachment {
            mapping,
            locker,
            segment,
            fork_epoch,
            ..
        } = self;
        // Unmap in the reverse order of attach: the segment, then Qt's semaphore, and the
        // lock state last. Whoever looks at this process in /proc meanwhile (a Fast-mode
        // attacher, a waiter looking for a dead holder) never sees it map the segment or
        // the semaphore without the lock state, which would make it look like Qt.
        drop(mapping);
        let lock_state = locker.into_state();
        let result = if fork::epoch() != fork_epoch {
            segment.forget();
            Ok(())
        } else {
            segment.detach().map(drop)
        };
        drop(lock_state);
        result
    }
}

/// Facts about an attached segment ([`SharedMemory::info`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Size in bytes.
    pub size: u64,
    /// Attachments counted by the kernel (System V); `None` for POSIX segments.
    pub attachments: Option<u64>,
    /// Permission bits.
    pub permissions: u32,
    /// Owner's user id.
    pub owner_uid: u32,
    /// Creation time (POSIX: the file's birth time), seconds since the epoch.
    pub created_unix: i64,
    /// The OS's name for it (`shmid …` or the `/dev/shm` path).
    pub os_id: String,
    /// The segment's lock mode.
    pub lock_mode: LockMode,
    /// Where qshm keeps the lock state (`None`: a segment another program made, where
    /// this user may not add one).
    pub lock_state_file: Option<std::path::PathBuf>,
    /// True when qshm created the segment (false: Qt or another program did).
    pub made_by_qshm: bool,
}

/// Check that `size` can be a segment size, or say why not.
fn checked_size(size: usize) -> std::result::Result<usize, String> {
    if size == 0 {
        return Err("size must be at least 1 byte".to_owned());
    }
    if size > isize::MAX as usize {
        return Err(format!(
            "{size} bytes is more than any segment can have (a negative size?)"
        ));
    }
    Ok(size)
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if let Some(attached) = self.attached.take() {
            let _ = attached.detach();
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("key", &self.key)
            .field("attached", &self.access_mode())
            .field("size", &self.size())
            .field("lock_mode", &self.lock_mode())
            .finish()
    }
}

impl Default for SharedMemory {
    /// A handle without a key (Qt's `QSharedMemory()`): an empty key of Qt's default type
    /// for the OS (`QNativeIpcKey::DefaultTypeForOs`, POSIX on Linux); set one before
    /// create/attach.
    fn default() -> SharedMemory {
        SharedMemory::with_native_key(NativeIpcKey::new(String::new(), KeyType::default_for_os()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_nonsense_is_refused() {
        assert_eq!(checked_size(1), Ok(1));
        assert_eq!(checked_size(100), Ok(100));
        assert!(checked_size(0).is_err());
        assert!(checked_size(usize::MAX).is_err());
        assert!(checked_size(isize::MAX as usize + 1).is_err());
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
