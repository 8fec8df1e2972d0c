//! [`KeyType`]: Qt's `QNativeIpcKey::Type`, System V keys with any `ftok` project id
//! included.

use std::fmt;
use std::num::NonZeroU8;
use std::str::FromStr;

use crate::error::{Error, Result, SharedMemoryError};

/// The `ftok` project id Qt uses for System V keys: the value of
/// `QNativeIpcKey::Type::SystemV`, `'Q'`.
pub(crate) const SYSV_PROJECT_ID: u8 = b'Q';

/// Which operating-system API a native key names (Qt's `QNativeIpcKey::Type`).
///
/// Qt's System V key types are the `ftok` project ids 1 to 255: `QNativeIpcKey::Type::SystemV`
/// is `'Q'` (81), and `QNativeIpcKey::Type(n)` for any other `n` from 1 to 255 is a System
/// V key whose numeric key is `ftok(path, n)`, written `systemv-n:` in the string form
/// (Qt's own tests use `'T'`). Two keys of one path and two ids are two different
/// segments (or semaphores). Make such a type with [`KeyType::system_v`]:
///
/// ```
/// use qshm::KeyType;
/// let t = KeyType::system_v(b'T').unwrap(); // QNativeIpcKey::Type('T')
/// assert_eq!(t.ftok_project_id(), Some(84));
/// assert_eq!(t.as_str(), "systemv-84");
/// assert_eq!(KeyType::system_v(b'Q'), Some(KeyType::SystemV)); // one value per Qt type
/// assert_eq!(KeyType::system_v(0), None);
/// assert_eq!(KeyType::from_qt_value(0x100), Some(KeyType::PosixRealtime));
/// ```
///
/// Qt's third type, `Windows`, does not exist on Linux; its string form is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[doc(alias = "QNativeIpcKey::Type")]
pub enum KeyType {
    /// System V IPC (`shmget`/`semget`) with Qt's project id `'Q'`: the native key is the
    /// path of a file that `ftok(path, 'Q')` turns into the numeric key.
    SystemV,
    /// POSIX realtime IPC: `shm_open`/`sem_open`; the native key is a name like `/name`.
    PosixRealtime,
    /// System V IPC with another `ftok` project id (Qt's `QNativeIpcKey::Type(id)`):
    /// `ftok(path, id)`. Made with [`KeyType::system_v`], which gives
    /// [`KeyType::SystemV`] for `'Q'`, so each Qt type has one value.
    SystemVWithId(SystemVId),
}

/// An `ftok` project id other than Qt's default `'Q'` (1 to 255 without 81): the id of a
/// [`KeyType::SystemVWithId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemVId(NonZeroU8);

impl SystemVId {
    /// The id, or `None` for 0 (no project id) and for `'Q'` (that is [`KeyType::SystemV`]).
    pub const fn new(id: u8) -> Option<SystemVId> {
        match NonZeroU8::new(id) {
            Some(id) if id.get() != SYSV_PROJECT_ID => Some(SystemVId(id)),
            _ => None,
        }
    }

    /// The project id, 1 to 255.
    pub const fn get(self) -> u8 {
        self.0.get()
    }
}

/// `systemv-1` to `systemv-255`, each in 11 bytes or fewer, made at compile time so that
/// [`KeyType::as_str`] can hand out a `&'static str` for every type.
static SYSTEM_V_NAMES: [([u8; 11], usize); 256] = system_v_names();

const fn system_v_names() -> [([u8; 11], usize); 256] {
    let mut names = [([0u8; 11], 0usize); 256];
    let prefix = b"systemv-";
    let mut id = 1;
    while id < 256 {
        let mut name = [0u8; 11];
        let mut len = 0;
        while len < prefix.len() {
            name[len] = prefix[len];
            len += 1;
        }
        let digits = if id >= 100 {
            3
        } else if id >= 10 {
            2
        } else {
            1
        };
        let mut rest = id;
        let mut i = digits;
        while i > 0 {
            name[len + i - 1] = b'0' + (rest % 10) as u8;
            rest /= 10;
            i -= 1;
        }
        names[id] = (name, len + digits);
        id += 1;
    }
    names
}

impl KeyType {
    /// What Qt before 6.6 used, and what legacy string keys still map to on Linux
    /// (`QNativeIpcKey::legacyDefaultTypeForOs()`): System V.
    pub const fn legacy_default() -> KeyType {
        KeyType::SystemV
    }

    /// Qt 6.6's `QNativeIpcKey::DefaultTypeForOs` on Linux: POSIX realtime.
    pub const fn default_for_os() -> KeyType {
        KeyType::PosixRealtime
    }

    /// The System V type with `ftok` project id `id` (Qt's `QNativeIpcKey::Type(id)`):
    /// [`KeyType::SystemV`] for `'Q'`, [`KeyType::SystemVWithId`] for any other id from 1
    /// to 255, `None` for 0.
    pub const fn system_v(id: u8) -> Option<KeyType> {
        if id == SYSV_PROJECT_ID {
            return Some(KeyType::SystemV);
        }
        match SystemVId::new(id) {
            Some(id) => Some(KeyType::SystemVWithId(id)),
            None => None,
        }
    }

    /// The `ftok` project id of a System V type (`'Q'` for [`KeyType::SystemV`]); `None`
    /// for POSIX.
    pub const fn ftok_project_id(self) -> Option<u8> {
        match self {
            KeyType::SystemV => Some(SYSV_PROJECT_ID),
            KeyType::SystemVWithId(id) => Some(id.get()),
            KeyType::PosixRealtime => None,
        }
    }

    /// True for every System V type, whatever its project id.
    pub const fn is_system_v(self) -> bool {
        matches!(self, KeyType::SystemV | KeyType::SystemVWithId(_))
    }

    /// The value of Qt's `QNativeIpcKey::Type` enumerator: the project id for System V
    /// types (`SystemV` is `0x51`), `0x100` for `PosixRealtime`.
    pub const fn qt_value(self) -> u16 {
        match self {
            KeyType::PosixRealtime => 0x100,
            KeyType::SystemV => SYSV_PROJECT_ID as u16,
            KeyType::SystemVWithId(id) => id.get() as u16,
        }
    }

    /// The type of Qt's `QNativeIpcKey::Type(value)`; `None` for the invalid type (0),
    /// for `Windows` (`0x101`) and for values Qt does not define.
    pub const fn from_qt_value(value: u16) -> Option<KeyType> {
        match value {
            0x100 => Some(KeyType::PosixRealtime),
            1..=0xff => KeyType::system_v(value as u8),
            _ => None,
        }
    }

    /// The scheme of the key's string form, as Qt's `QNativeIpcKey::toString` writes it:
    /// `"systemv"`, `"posix"`, or `"systemv-84"` for project id 84.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::SystemV => "systemv",
            KeyType::PosixRealtime => "posix",
            KeyType::SystemVWithId(id) => {
                let (bytes, len) = &SYSTEM_V_NAMES[usize::from(id.get())];
                // ASCII by construction
                std::str::from_utf8(&bytes[..*len]).unwrap_or("systemv")
            }
        }
    }

    /// Parses a key type's name as Qt's `stringToType` does (after `QUrl` lowercased it);
    /// `None` for no key type at all. `Err(())` for Qt's `windows`, which Linux lacks.
    pub(crate) fn from_scheme(scheme: &str) -> Option<std::result::Result<KeyType, ()>> {
        match scheme {
            "systemv" => return Some(Ok(KeyType::SystemV)),
            "posix" => return Some(Ok(KeyType::PosixRealtime)),
            "windows" => return Some(Err(())),
            _ => {}
        }
        // Qt: -toInt(rest) in 1..=255, so rest is "-" and decimal digits
        let id = scheme
            .strip_prefix("systemv-")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u32>().ok())
            .and_then(|id| u8::try_from(id).ok())?;
        KeyType::system_v(id).map(Ok)
    }
}

/// Whether this machine has the IPC of key type `kind` (Qt's `isKeyTypeSupported` on
/// Linux): System V IPC in the kernel (every project id alike), or the `/dev/shm`
/// directory that glibc's `shm_open` and `sem_open` use. Looked at once per process.
pub(crate) fn is_supported(kind: KeyType) -> bool {
    use std::sync::OnceLock;
    static SYSTEM_V: OnceLock<bool> = OnceLock::new();
    static POSIX: OnceLock<bool> = OnceLock::new();
    if kind.is_system_v() {
        *SYSTEM_V.get_or_init(crate::os::system_v_ipc_available)
    } else {
        *POSIX.get_or_init(|| std::path::Path::new("/dev/shm").is_dir())
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = Error;

    /// The names of [`as_str`](KeyType::as_str), case-insensitive (`systemv-007` is
    /// `systemv-7`, as in Qt), plus `sysv` and `posixrealtime`.
    fn from_str(s: &str) -> Result<KeyType> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "sysv" => Some(KeyType::SystemV),
            "posixrealtime" => Some(KeyType::PosixRealtime),
            _ => None,
        };
        match alias.map(Ok).or_else(|| KeyType::from_scheme(&lower)) {
            Some(Ok(kind)) => Ok(kind),
            _ => Err(Error::new(SharedMemoryError::KeyError, "parse key type", s).with_detail(
                "unknown key type: expected \"systemv\", \"posix\" or \"systemv-N\" (N: an ftok project id, 1 to 255)",
            )),
        }
    }
}
