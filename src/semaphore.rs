//! [`SystemSemaphore`]: Qt's `QSystemSemaphore`.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::{self, IpcType, KeyType, NativeIpcKey};
use crate::sys::{self, SemaphoreBackend, SemaphoreMode};

/// A counting semaphore shared between processes, keyed like Qt's `QSystemSemaphore`.
///
/// System V semaphores are operated with `SEM_UNDO`: units a process took are given
/// back by the kernel if it dies. POSIX named semaphores have no such safety net.
///
/// Like Qt, the handle that created the semaphore (or opened it in
/// [`SemaphoreMode::Create`]) removes it from the system when dropped.
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
    /// `None` once [`remove`](Self::remove) took it.
    backend: Option<Box<dyn SemaphoreBackend>>,
}

impl SystemSemaphore {
    /// Open the semaphore of legacy key `key` (System V, as Qt's legacy default).
    #[doc(alias = "QSystemSemaphore")]
    pub fn new(key: &str, initial: u32, mode: SemaphoreMode) -> Result<SystemSemaphore> {
        Self::with_native_key(
            Self::legacy_native_key(key, KeyType::legacy_default()),
            initial,
            mode,
        )
    }

    /// Open the semaphore of a native key.
    #[doc(alias = "setNativeKey")]
    pub fn with_native_key(key: NativeIpcKey, initial: u32, mode: SemaphoreMode) -> Result<SystemSemaphore> {
        let backend = sys::open_semaphore(&key, initial, mode, crate::sys::DEFAULT_PERMISSIONS)
            .map_err(|f| Error::from_failure("open semaphore", key.display_name(), f))?;
        Ok(SystemSemaphore {
            key,
            backend: Some(backend),
        })
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

    /// The legacy key, if any.
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

    fn backend(&self) -> &dyn SemaphoreBackend {
        // Some from construction until remove(self), which consumes the handle
        self.backend
            .as_deref()
            .expect("a SystemSemaphore keeps its backend until remove")
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // a timeout too far away to express is no timeout
        let timeout = timeout.filter(|t| std::time::Instant::now().checked_add(*t).is_some());
        self.backend()
            .acquire(timeout)
            .map_err(|e| Error::os("acquire", self.key.display_name(), e))
    }

    /// Give back `n` units (0 does nothing).
    pub fn release(&self, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.backend()
            .release(n)
            .map_err(|e| Error::os("release", self.key.display_name(), e))
    }

    /// The current count.
    pub fn value(&self) -> Result<i32> {
        self.backend()
            .value()
            .map_err(|e| Error::os("value", self.key.display_name(), e))
    }

    /// Remove the semaphore from the system now (whoever created it), and close it.
    pub fn remove(mut self) -> Result<()> {
        let backend = self.backend.take();
        match backend {
            Some(backend) => backend
                .remove()
                .map_err(|e| Error::os("remove", self.key.display_name(), e)),
            None => Ok(()),
        }
    }
}

impl Drop for SystemSemaphore {
    fn drop(&mut self) {
        if let Some(backend) = &self.backend
            && backend.created()
        {
            let _ = backend.remove();
        }
    }
}

impl fmt::Debug for SystemSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemSemaphore").field("key", &self.key).finish()
    }
}
