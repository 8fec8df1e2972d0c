//! How a [`SharedMemory`] handle is set up before it attaches: its key (Qt's derivations),
//! permissions and lock mode.

use super::SharedMemory;
use super::last_error::LastError;
use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{self, IpcType, KeyType, NativeIpcKey};
use crate::sys::{DEFAULT_PERMISSIONS, LockMode};

impl SharedMemory {
    /// A handle for the legacy key `key` (what `QSharedMemory(key)` does): the native
    /// key is derived as Qt 6 derives it, for [`KeyType::legacy_default`] (System V).
    #[doc(alias = "QSharedMemory")]
    pub fn new(key: &str) -> SharedMemory {
        SharedMemory::with_native_key(Self::legacy_native_key(key, KeyType::legacy_default()))
    }

    /// A handle for the legacy key `key`, derived for the key type `kind`.
    #[doc(alias = "QSharedMemory")]
    pub fn with_key_type(key: &str, kind: KeyType) -> SharedMemory {
        SharedMemory::with_native_key(Self::legacy_native_key(key, kind))
    }

    /// A handle for a native key, used as is.
    #[doc(alias = "setNativeKey")]
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

    /// Whether segments of key type `kind` work on this machine (Qt's
    /// `QSharedMemory::isKeyTypeSupported`): System V IPC in the kernel (every `ftok`
    /// project id alike), or `/dev/shm` for POSIX.
    #[doc(alias = "isKeyTypeSupported")]
    pub fn is_key_type_supported(kind: KeyType) -> bool {
        key::is_supported(kind)
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
            && attached.lock.mode() != mode
        {
            let error = Error::new(
                SharedMemoryError::LockError,
                "set lock mode",
                self.key.display_name(),
            )
            .with_detail(format!(
                "the segment's lock mode is {}; it cannot change while attached",
                attached.lock.mode().name()
            ));
            return self.record(Err(error));
        }
        self.requested_mode = Some(mode);
        Ok(())
    }

    /// The lock mode: the segment's while attached, else the one asked for (or the
    /// default, [`LockMode::QtCompatible`]).
    #[doc(alias = "QSharedMemory::lock")]
    pub fn lock_mode(&self) -> LockMode {
        match &self.attached {
            Some(attached) => attached.lock.mode(),
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
}
