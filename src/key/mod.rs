//! Native IPC keys and the exact key derivations of Qt 6 (`QNativeIpcKey`,
//! `QSharedMemory::legacyNativeKey`, `QSharedMemory::platformSafeKey`).
//!
//! A legacy (string) key becomes a native key the way Qt 6's
//! `QtIpcCommon::legacyPlatformSafeKey` does it on Linux:
//!
//! 1. a prefix: `qipc_sharedmemory_` for shared memory, `qipc_systemsem_` for semaphores;
//! 2. the key's ASCII letters `a-z` and `A-Z`, in order; every other character is dropped;
//! 3. the lowercase hex SHA-1 of the key's UTF-8 bytes (40 characters);
//! 4. for [`KeyType::PosixRealtime`] a leading `/` (a `shm_open`/`sem_open` name); for
//!    every System V type ([`KeyType::SystemV`] and [`KeyType::SystemVWithId`]) Qt's
//!    temporary directory and a `/` in front (a file path that is then turned into a
//!    System V key with `ftok(path, id)`, `id` being `'Q'` or the type's project id).
//!
//! Qt's temporary directory is what `QStandardPaths::writableLocation(TempLocation)`
//! returns on Linux in Qt 6.11 (see [`temp_dir_from`]): `/tmp` when `$TMPDIR` is unset or
//! empty, else `$TMPDIR` made absolute and cleaned *without* resolving symbolic links and
//! without checking that it exists. Checked against real Qt 6.11 (PyQt6) by the tests.

use sha1::{Digest, Sha1};

use crate::error::{Failure, SharedMemoryError};

mod key_type;
pub use key_type::{KeyType, SystemVId};
pub(crate) use key_type::{SYSV_PROJECT_ID, is_supported};

/// A native key plus its type: what the OS uses to find a segment or semaphore
/// (Qt's `QNativeIpcKey`). It remembers the legacy key it was derived from, if any,
/// and its string form (`systemv:/tmp/qipc_...?legacyKey=market`) round-trips through
/// [`Display`](std::fmt::Display) and [`FromStr`](std::str::FromStr), compatibly with Qt's `toString`/`fromString`.
#[derive(Clone, Debug)]
#[doc(alias = "QNativeIpcKey")]
pub struct NativeIpcKey {
    kind: KeyType,
    native: String,
    legacy: Option<String>,
    /// Why this key must not be used although Qt derives it: Qt's directory for it is
    /// unusable, so Qt would put its System V key file where nobody meant it (`/` or the
    /// working directory). Qt's string is kept; [`check_usable`](Self::check_usable)
    /// turns this into a `KeyError` wherever the key is used.
    unusable: Option<String>,
}

/// Equal when Qt's `QNativeIpcKey` objects would be: type, native key and legacy key.
impl PartialEq for NativeIpcKey {
    fn eq(&self, other: &NativeIpcKey) -> bool {
        (self.kind, &self.native, &self.legacy) == (other.kind, &other.native, &other.legacy)
    }
}

impl Eq for NativeIpcKey {}

impl std::hash::Hash for NativeIpcKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.kind, &self.native, &self.legacy).hash(state);
    }
}

impl NativeIpcKey {
    /// A native key used as is (no derivation).
    pub fn new(native: impl Into<String>, kind: KeyType) -> NativeIpcKey {
        NativeIpcKey {
            kind,
            native: native.into(),
            legacy: None,
            unusable: None,
        }
    }

    /// The key type.
    #[doc(alias = "type")]
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The native key string: a file path (System V) or a `/name` (POSIX).
    #[doc(alias = "nativeKey")]
    pub fn native(&self) -> &str {
        &self.native
    }

    /// The legacy key this native key was derived from, if any.
    pub fn legacy_key(&self) -> Option<&str> {
        self.legacy.as_deref()
    }

    /// True when the native key is empty (Qt derives an empty key from an empty string).
    #[doc(alias = "isEmpty")]
    pub fn is_empty(&self) -> bool {
        self.native.is_empty()
    }

    /// Qt's `isValid()`: whether the key has a type Qt knows. Always true here: a
    /// [`KeyType`] has no invalid value, and where Qt's `fromString` returns an invalid
    /// key, parsing a `NativeIpcKey` is an error. Kept so that code ported from Qt reads
    /// the same; whether the key can be used at all is decided where it is used
    /// (`KeyError`).
    #[doc(alias = "isValid")]
    pub fn is_valid(&self) -> bool {
        true
    }

    /// Use `native` as the native key from now on (Qt's `setNativeKey`): like Qt, the key
    /// no longer remembers a legacy key (it is now a plain native key).
    #[doc(alias = "setNativeKey")]
    pub fn set_native(&mut self, native: impl Into<String>) {
        self.native = native.into();
        self.legacy = None;
        self.unusable = None;
    }

    /// Change the key type (Qt's `setType`), keeping the native and legacy keys.
    ///
    /// ```
    /// use qshm::{KeyType, NativeIpcKey};
    /// let mut key = NativeIpcKey::new("/tmp/app.key", KeyType::SystemV);
    /// key.set_kind(KeyType::system_v(b'T').unwrap());
    /// assert_eq!(key.to_string(), "systemv-84:/tmp/app.key");
    /// ```
    #[doc(alias = "setType")]
    pub fn set_kind(&mut self, kind: KeyType) {
        // an unusable directory makes every System V type unusable, and no POSIX one
        if !kind.is_system_v() {
            self.unusable = None;
        }
        self.kind = kind;
    }

    /// The name to show the user: the legacy key if there is one, else the native key.
    pub(crate) fn display_name(&self) -> &str {
        self.legacy.as_deref().unwrap_or(&self.native)
    }

    /// Fails with a [`SharedMemoryError::KeyError`] where Qt fails to make the key's
    /// file or its semaphore (`QSharedMemory::create`/`attach` and `QSystemSemaphore`
    /// report "unable to make key" or "key too long"), before anything is made: a System V
    /// key whose directory is missing or not a directory, a key derived from an unusable
    /// Qt directory, or a POSIX key whose semaphore name is too long for `sem_open` (for
    /// a segment: the semaphore of its lock, which Qt opens at `create` and `attach`,
    /// and refuses then). The message names the directory or the name. Other problems
    /// (e.g. no permission) are left to the system call that meets them.
    pub(crate) fn check_usable(&self) -> std::result::Result<(), Failure> {
        let fail = |detail: String| Err(Failure::because(SharedMemoryError::KeyError, detail));
        if let Some(why) = &self.unusable {
            return fail(why.clone());
        }
        if self.kind == KeyType::PosixRealtime {
            let name_len = self.posix_semaphore_name_len();
            if name_len > POSIX_SEMAPHORE_NAME_MAX {
                let whose = if self.legacy.is_some() {
                    "Qt's semaphore name for this legacy key"
                } else {
                    "the semaphore name (the native key itself)"
                };
                return fail(format!(
                    "{whose} would be {name_len} bytes, and sem_open takes at most \
                     {POSIX_SEMAPHORE_NAME_MAX} (key too long: Qt refuses it too)"
                ));
            }
            return Ok(());
        }
        let dir = match self.native.rfind('/') {
            Some(0) => "/",
            Some(end) => &self.native[..end],
            None => return Ok(()), // in the working directory
        };
        let hint = if self.legacy.is_some() {
            " (Qt's temporary directory: $TMPDIR, else /tmp)"
        } else {
            ""
        };
        // Qt 5 falls back to "/" for a TMPDIR that does not exist; qshm does not
        let qt5 = if self.legacy.is_some() {
            "; Qt 5 would put its key file in / instead, which qshm refuses"
        } else {
            ""
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => fail(format!(
                "{dir}, the directory of the System V key file, is not a directory{hint}"
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::from(e)
                .with_kind(SharedMemoryError::KeyError)
                .with_detail(format!(
                    "{dir}, the directory of the System V key file, does not exist{hint}{qt5}"
                ))),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => fail(format!(
                "{dir}, the directory of the System V key file, is not a directory{hint}"
            )),
            Err(_) => Ok(()),
        }
    }

    /// The length of the name `sem_open` gets for this key's semaphore (glibc drops the
    /// leading slashes): derived from the legacy key if there is one (Qt's semaphore of a
    /// legacy key, or the key of a legacy semaphore), else the native key itself.
    fn posix_semaphore_name_len(&self) -> usize {
        match self.legacy.as_deref().filter(|l| !l.is_empty()) {
            Some(legacy) => {
                let letters = legacy.chars().filter(char::is_ascii_alphabetic).count();
                SYSTEM_SEMAPHORE_PREFIX.len() + letters + 40
            }
            None => self.native.trim_start_matches('/').len(),
        }
    }
}

/// The longest name `sem_open` takes on Linux: glibc keeps the semaphore in the file
/// `/dev/shm/sem.<name>`, and a file name has at most `NAME_MAX` (255) bytes. (Qt's
/// 197-letter legacy keys are the first whose semaphore name is longer.)
pub(crate) const POSIX_SEMAPHORE_NAME_MAX: usize = 255 - "sem.".len();

/// Qt's `QNativeIpcKey()`: an empty key of [`KeyType::default_for_os`] (POSIX).
impl Default for NativeIpcKey {
    fn default() -> NativeIpcKey {
        NativeIpcKey::new(String::new(), KeyType::default_for_os())
    }
}

/// What an IPC key names; Qt derives different native keys for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpcType {
    SharedMemory,
    SystemSemaphore,
}

/// The prefix of the names Qt derives from a legacy key for shared memory.
pub(crate) const SHARED_MEMORY_PREFIX: &str = "qipc_sharedmemory_";
/// The prefix of the names Qt derives from a legacy key for semaphores.
pub(crate) const SYSTEM_SEMAPHORE_PREFIX: &str = "qipc_systemsem_";

impl IpcType {
    /// Qt's prefix of the names derived from a legacy key for this kind of object.
    pub(crate) const fn legacy_prefix(self) -> &'static str {
        match self {
            IpcType::SharedMemory => SHARED_MEMORY_PREFIX,
            IpcType::SystemSemaphore => SYSTEM_SEMAPHORE_PREFIX,
        }
    }
}

/// A file name Qt derived from a legacy key (step 1 to 3 of the derivation above): its
/// prefix, the key's ASCII letters and the hex SHA-1 of the key. The key itself is not
/// in it, but the names of the other objects of the same key are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LegacyName<'a> {
    pub ipc: IpcType,
    pub letters: &'a str,
    pub sha1: &'a str,
}

impl<'a> LegacyName<'a> {
    /// Read a file name (no directory, no leading `/`) back, if Qt could have derived it.
    pub(crate) fn parse(name: &'a str) -> Option<LegacyName<'a>> {
        let (ipc, rest) = [IpcType::SharedMemory, IpcType::SystemSemaphore]
            .into_iter()
            .find_map(|ipc| Some((ipc, name.strip_prefix(ipc.legacy_prefix())?)))?;
        let split = rest.len().checked_sub(40)?;
        let (letters, sha1) = (rest.get(..split)?, rest.get(split..)?);
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if !letters.bytes().all(|b| b.is_ascii_alphabetic()) || !sha1.bytes().all(lower_hex) {
            return None;
        }
        Some(LegacyName { ipc, letters, sha1 })
    }

    /// The name Qt derives from the same legacy key for an object of type `ipc`.
    #[cfg(feature = "admin")]
    pub(crate) fn for_ipc(&self, ipc: IpcType) -> String {
        format!("{}{}{}", ipc.legacy_prefix(), self.letters, self.sha1)
    }
}

/// Qt's `QtIpcCommon::legacyPlatformSafeKey` (compatible with Qt 4.4 to 6.x).
pub(crate) fn legacy_platform_safe_key(key: &str, ipc: IpcType, kind: KeyType) -> NativeIpcKey {
    legacy_key_in(key, ipc, kind, qt_temp_dir)
}

/// [`legacy_platform_safe_key`] with Qt's temporary directory given by `temp_dir`
/// (asked only for System V keys).
///
/// Like Qt, a temporary directory that is not an absolute path (empty, or relative when
/// the working directory is unknown) still gives Qt's string, e.g.
/// `/qipc_sharedmemory_...`; the key is marked unusable so that it fails with a
/// `KeyError` instead of putting key files in `/` or the working directory.
fn legacy_key_in(key: &str, ipc: IpcType, kind: KeyType, temp_dir: impl FnOnce() -> String) -> NativeIpcKey {
    if key.is_empty() {
        return NativeIpcKey::new(String::new(), kind);
    }
    let prefix = ipc.legacy_prefix();
    let letters = key.chars().filter(char::is_ascii_alphabetic);
    let digest = Sha1::digest(key.as_bytes());
    let mut name = String::with_capacity(1 + prefix.len() + key.len() + 40);
    name.push_str(prefix);
    name.extend(letters);
    // by hand: `format!` per byte made the key a tenth of a create+destroy cycle
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in digest {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    let mut unusable = None;
    let native = match kind {
        KeyType::PosixRealtime => format!("/{name}"),
        // every System V type, whatever its ftok id, as Qt does
        KeyType::SystemV | KeyType::SystemVWithId(_) => {
            let dir = temp_dir();
            if !dir.starts_with('/') {
                unusable = Some(format!(
                    "Qt's temporary directory {dir:?} is not an absolute path \
                     (TMPDIR is relative and the working directory is unknown)"
                ));
            }
            format!("{dir}/{name}")
        }
    };
    NativeIpcKey {
        kind,
        native,
        legacy: Some(key.to_owned()),
        unusable,
    }
}

/// Qt's `QtIpcCommon::platformSafeKey` (the Qt 6.6+ cross-platform key).
///
/// A System V key not starting with `/` goes into Qt's runtime directory, which is
/// made if needed, as Qt does ([`qt_runtime_dir`]).
pub(crate) fn platform_safe_key(key: &str, kind: KeyType) -> NativeIpcKey {
    platform_safe_key_in(key, kind, qt_runtime_dir)
}

/// [`platform_safe_key`] with Qt's runtime directory given by `runtime_dir` (asked
/// only for a System V key not starting with `/`).
///
/// When no runtime directory is usable, Qt uses an empty one: its key is `/<key>`, a
/// file in `/`. qshm keeps that string and marks the key unusable, so using it is a
/// `KeyError` that says why.
fn platform_safe_key_in(
    key: &str,
    kind: KeyType,
    runtime_dir: impl FnOnce() -> std::result::Result<String, String>,
) -> NativeIpcKey {
    if key.is_empty() {
        return NativeIpcKey::new(String::new(), kind);
    }
    match kind {
        KeyType::PosixRealtime => NativeIpcKey::new(format!("/{key}"), kind),
        // every System V type, whatever its ftok id, as Qt does
        KeyType::SystemV | KeyType::SystemVWithId(_) if key.starts_with('/') => NativeIpcKey::new(key, kind),
        KeyType::SystemV | KeyType::SystemVWithId(_) => match runtime_dir() {
            Ok(dir) => NativeIpcKey::new(format!("{dir}/{key}"), kind),
            Err(why) => NativeIpcKey {
                unusable: Some(why),
                ..NativeIpcKey::new(format!("/{key}"), kind)
            },
        },
    }
}

mod qt_dirs;
mod string_form;

pub(crate) use qt_dirs::{qt_runtime_dir, qt_temp_dir};

#[cfg(test)]
mod string_form_tests;
#[cfg(test)]
mod tests;

/// The segment's Qt semaphore key (`QSharedMemoryPrivate::initKey`): derived from the
/// legacy key when there is one, else the segment's own native key.
pub(crate) fn semaphore_key(key: &NativeIpcKey) -> NativeIpcKey {
    match key.legacy_key() {
        Some(legacy) if !legacy.is_empty() => {
            legacy_platform_safe_key(legacy, IpcType::SystemSemaphore, key.kind())
        }
        _ => key.clone(),
    }
}
