//! [`SystemSemaphore`]: Qt's `QSystemSemaphore`.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, LastError, Result, SharedMemoryError};
use crate::key::{self, IpcType, KeyType, NativeIpcKey};
use crate::sys::{self, SemaphoreBackend, SemaphoreMode};

/// A counting semaphore shared between processes, keyed like Qt's `QSystemSemaphore`.
///
/// System V semaphores are operated with `SEM_UNDO`: units a process took are given
/// back by the kernel if it dies. POSIX named semaphores have no such safety net.
///
/// Like Qt, the handle that created the semaphore (or opened it in
/// [`SemaphoreMode::Create`]) removes it from the system when dropped or given another
/// key, with (System V) the key file it made. A handle whose semaphore was removed
/// meanwhile makes it again at its next [`acquire`](Self::acquire) or
/// [`release`](Self::release) (System V, as Qt: the new one starts at the handle's
/// initial value, and this handle now removes it when dropped).
///
/// Every call returns a `Result`, and [`error`](Self::error) and
/// [`error_string`](Self::error_string) keep the last call's outcome, as Qt's `error()`
/// and `errorString()` (Qt's `SystemSemaphoreError` values are the
/// [`SharedMemoryError`] variants of the same names).
///
/// An empty key is allowed, as in Qt: the handle is made (no error), and every
/// operation fails with [`SharedMemoryError::KeyError`] until a key is set.
///
/// ```
/// use qshm::{SemaphoreMode, SystemSemaphore};
/// # let key = format!("sem-doc-{}", std::process::id());
/// let sem = SystemSemaphore::new(&key, 2, SemaphoreMode::Create)?;
/// sem.acquire()?;
/// sem.acquire()?;
/// assert!(!sem.try_acquire()?); // both units taken
/// sem.release(2)?;
/// # Ok::<(), qshm::Error>(())
/// ```
#[doc(alias = "QSystemSemaphore")]
pub struct SystemSemaphore {
    key: NativeIpcKey,
    /// The count a semaphore this handle makes starts at (Qt's `initialValue`).
    initial: u32,
    /// The opened semaphore: empty for an empty key, after a failed open (the next
    /// operation tries again, as Qt's `handle()`), and once [`remove`](Self::remove)
    /// took it.
    backend: OnceLock<Arc<dyn SemaphoreBackend>>,
    /// Held while a thread opens the semaphore after construction.
    opening: Mutex<()>,
    last_error: LastError,
}

/// "the key is empty": what Qt's `QSystemSemaphore::handle` says.
const EMPTY_KEY: &str = "the key is empty";

impl SystemSemaphore {
    /// Open the semaphore of legacy key `key` (System V, as Qt's legacy default):
    /// `QSystemSemaphore(key, initial, mode)`. An empty key makes a handle without a
    /// semaphore (see [`SystemSemaphore`]).
    #[doc(alias = "QSystemSemaphore")]
    pub fn new(key: &str, initial: u32, mode: SemaphoreMode) -> Result<SystemSemaphore> {
        Self::with_native_key(
            Self::legacy_native_key(key, KeyType::legacy_default()),
            initial,
            mode,
        )
    }

    /// Open the semaphore of a native key: `QSystemSemaphore(QNativeIpcKey, initial,
    /// mode)`. An empty key makes a handle without a semaphore (see [`SystemSemaphore`]).
    #[doc(alias = "setNativeKey")]
    pub fn with_native_key(key: NativeIpcKey, initial: u32, mode: SemaphoreMode) -> Result<SystemSemaphore> {
        let sem = SystemSemaphore {
            key,
            initial,
            backend: OnceLock::new(),
            opening: Mutex::new(()),
            last_error: LastError::default(),
        };
        if !sem.key.is_empty() {
            sem.open(mode)?;
        }
        Ok(sem)
    }

    /// Use legacy key `key` from now on (Qt's `setKey`), as a new handle would:
    /// [`set_native_key`](Self::set_native_key) with the native key Qt derives (System V).
    #[doc(alias = "setKey")]
    pub fn set_key(&mut self, key: &str, initial: u32, mode: SemaphoreMode) -> Result<()> {
        self.set_native_key(
            Self::legacy_native_key(key, KeyType::legacy_default()),
            initial,
            mode,
        )
    }

    /// Use native key `key` from now on (Qt's `setNativeKey`): as dropping this handle and
    /// making a new one, except that nothing happens for the same key in
    /// [`SemaphoreMode::Open`]. The old semaphore is removed if this handle made it. On
    /// failure the handle keeps the new key, without a semaphore: the next operation tries
    /// to open it again (as Qt).
    #[doc(alias = "setNativeKey")]
    pub fn set_native_key(&mut self, key: NativeIpcKey, initial: u32, mode: SemaphoreMode) -> Result<()> {
        if key == self.key && mode == SemaphoreMode::Open {
            return Ok(());
        }
        self.close();
        self.key = key;
        self.initial = initial;
        self.last_error.record(&Ok::<(), Error>(()));
        if self.key.is_empty() {
            return Ok(());
        }
        self.open(mode).map(drop)
    }

    /// The native key Qt derives for a semaphore from a legacy key
    /// (`QSystemSemaphore::legacyNativeKey`): prefix `qipc_systemsem_`.
    #[doc(alias = "legacyNativeKey")]
    pub fn legacy_native_key(key: &str, kind: KeyType) -> NativeIpcKey {
        key::legacy_platform_safe_key(key, IpcType::SystemSemaphore, kind)
    }

    /// Qt 6.6's portable key (`QSystemSemaphore::platformSafeKey`).
    #[doc(alias = "platformSafeKey")]
    pub fn platform_safe_key(key: &str, kind: KeyType) -> NativeIpcKey {
        key::platform_safe_key(key, kind)
    }

    /// Whether semaphores of key type `kind` work on this machine (Qt's
    /// `isKeyTypeSupported`): System V IPC in the kernel, or `/dev/shm` for POSIX.
    #[doc(alias = "isKeyTypeSupported")]
    pub fn is_key_type_supported(kind: KeyType) -> bool {
        key::is_supported(kind)
    }

    /// The legacy key, if the key was derived from one (Qt's `key()`; `None` is Qt's
    /// null string).
    pub fn key(&self) -> Option<&str> {
        self.key.legacy_key()
    }

    /// The native key string.
    #[doc(alias = "nativeKey")]
    pub fn native_key(&self) -> &str {
        self.key.native()
    }

    /// The native key with its type.
    #[doc(alias = "nativeIpcKey")]
    pub fn native_ipc_key(&self) -> &NativeIpcKey {
        &self.key
    }

    /// The last call's error (Qt's `error()`); `NoError` after a success.
    pub fn error(&self) -> SharedMemoryError {
        self.last_error.get().map_or(SharedMemoryError::NoError, |e| e.0)
    }

    /// Text of the last call's error (Qt's `errorString()`); empty after a success.
    #[doc(alias = "errorString")]
    pub fn error_string(&self) -> String {
        self.last_error.get().map(|e| e.1).unwrap_or_default()
    }

    /// Take one unit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<()> {
        self.wait(None).map(drop)
    }

    /// Take one unit if one is free now.
    #[doc(alias = "acquire")]
    pub fn try_acquire(&self) -> Result<bool> {
        self.wait(Some(Duration::ZERO))
    }

    /// Take one unit, waiting at most `timeout`; `Ok(false)` on timeout.
    #[doc(alias = "acquire")]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait(Some(timeout))
    }

    /// Give back `n` units (0 does nothing, and records nothing, as in Qt). A System V
    /// semaphore removed meanwhile is made again and then given the units, as Qt does.
    pub fn release(&self, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let result = self.backend("release").and_then(|backend| {
            backend
                .release_remaking(n)
                .map_err(|e| Error::os("release", self.key.display_name(), e))
        });
        self.record(result)
    }

    /// The current count.
    pub fn value(&self) -> Result<i32> {
        let result = self.backend("value").and_then(|backend| {
            backend
                .value()
                .map_err(|e| Error::os("value", self.key.display_name(), e))
        });
        self.record(result)
    }

    /// Remove the semaphore from the system now (whoever created it), and close it.
    pub fn remove(mut self) -> Result<()> {
        match self.backend.take() {
            Some(backend) => backend
                .remove()
                .map_err(|e| Error::os("remove", self.key.display_name(), e)),
            None => Ok(()),
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // a timeout too far away to express is no timeout
        let timeout = timeout.filter(|t| std::time::Instant::now().checked_add(*t).is_some());
        let result = self.backend("acquire").and_then(|backend| {
            backend
                .acquire(timeout)
                .map_err(|e| Error::os("acquire", self.key.display_name(), e))
        });
        self.record(result)
    }

    /// The semaphore, opened now if the handle has none yet (Qt's `handle(Open)` at every
    /// operation); an empty key is a `KeyError`.
    fn backend(&self, op: &'static str) -> Result<Arc<dyn SemaphoreBackend>> {
        if let Some(backend) = self.backend.get() {
            return Ok(Arc::clone(backend));
        }
        if self.key.is_empty() {
            return Err(Error::new(SharedMemoryError::KeyError, op, "").with_detail(EMPTY_KEY));
        }
        // one thread opens; the others find its semaphore
        let _opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = self.backend.get() {
            return Ok(Arc::clone(backend));
        }
        self.open(SemaphoreMode::Open)
    }

    /// Open (or make) the semaphore of the key in `mode`, record the outcome and keep it.
    fn open(&self, mode: SemaphoreMode) -> Result<Arc<dyn SemaphoreBackend>> {
        let opened = sys::open_semaphore(&self.key, self.initial, mode, sys::DEFAULT_PERMISSIONS)
            .map(Arc::from)
            .map_err(|f| Error::from_failure("open semaphore", self.key.display_name(), f));
        let opened = self.record(opened)?;
        // empty: opened under `opening` (or in the constructor), where nobody else opens
        let _ = self.backend.set(Arc::clone(&opened));
        Ok(opened)
    }

    fn record<T>(&self, result: Result<T>) -> Result<T> {
        self.last_error.record(&result);
        result
    }

    /// Let go of the semaphore as Qt's `cleanHandle`: removed if this handle made it.
    fn close(&mut self) {
        if let Some(backend) = self.backend.take()
            && backend.created()
        {
            let _ = backend.remove();
        }
    }
}

impl Drop for SystemSemaphore {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for SystemSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemSemaphore").field("key", &self.key).finish()
    }
}
