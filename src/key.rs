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
//!    [`KeyType::SystemV`] Qt's temporary directory and a `/` in front (a file path that
//!    is then turned into a System V key with `ftok(path, 'Q')`).
//!
//! Qt's temporary directory is `$TMPDIR` when set and non-empty, else `/tmp`, cleaned
//! (`QDir::cleanPath`) and made canonical (`QDir::canonicalPath`, empty when it does
//! not exist), exactly as `QStandardPaths::writableLocation(TempLocation)` on Linux.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

use crate::error::{Error, Result, SharedMemoryError};

/// The `ftok` project id Qt uses for System V keys: the value of
/// `QNativeIpcKey::Type::SystemV`, `'Q'`.
pub(crate) const SYSV_PROJECT_ID: i32 = 0x51;

/// Which operating-system API a native key names (Qt's `QNativeIpcKey::Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// System V IPC: `shmget`/`semget`; the native key is the path of a file that
    /// `ftok(path, 'Q')` turns into the numeric key.
    SystemV,
    /// POSIX realtime IPC: `shm_open`/`sem_open`; the native key is a name like `/name`.
    PosixRealtime,
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

    /// The scheme of the key's string form: `"systemv"` or `"posix"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyType::SystemV => "systemv",
            KeyType::PosixRealtime => "posix",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<KeyType> {
        match s {
            "systemv" | "sysv" => Ok(KeyType::SystemV),
            "posix" | "posixrealtime" => Ok(KeyType::PosixRealtime),
            _ => Err(Error::new(SharedMemoryError::KeyError, "parse key type", s)
                .with_detail("unknown key type: expected \"systemv\" or \"posix\"")),
        }
    }
}

/// A native key plus its type: what the OS uses to find a segment or semaphore
/// (Qt's `QNativeIpcKey`). It remembers the legacy key it was derived from, if any,
/// and its string form (`systemv:/tmp/qipc_...?legacyKey=market`) round-trips through
/// [`Display`](fmt::Display) and [`FromStr`], compatibly with Qt's `toString`/`fromString`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NativeIpcKey {
    kind: KeyType,
    native: String,
    legacy: Option<String>,
}

impl NativeIpcKey {
    /// A native key used as is (no derivation).
    pub fn new(native: impl Into<String>, kind: KeyType) -> NativeIpcKey {
        NativeIpcKey {
            kind,
            native: native.into(),
            legacy: None,
        }
    }

    /// The key type.
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The native key string: a file path (System V) or a `/name` (POSIX).
    pub fn native(&self) -> &str {
        &self.native
    }

    /// The legacy key this native key was derived from, if any.
    pub fn legacy_key(&self) -> Option<&str> {
        self.legacy.as_deref()
    }

    /// True when the native key is empty (Qt derives an empty key from an empty string).
    pub fn is_empty(&self) -> bool {
        self.native.is_empty()
    }

    /// The name to show the user: the legacy key if there is one, else the native key.
    pub(crate) fn display_name(&self) -> &str {
        self.legacy.as_deref().unwrap_or(&self.native)
    }
}

/// What an IPC key names; Qt derives different native keys for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpcType {
    SharedMemory,
    SystemSemaphore,
}

/// Qt's `QtIpcCommon::legacyPlatformSafeKey` (compatible with Qt 4.4 to 6.x).
pub(crate) fn legacy_platform_safe_key(key: &str, ipc: IpcType, kind: KeyType) -> NativeIpcKey {
    if key.is_empty() {
        return NativeIpcKey::new(String::new(), kind);
    }
    let prefix = match ipc {
        IpcType::SharedMemory => "qipc_sharedmemory_",
        IpcType::SystemSemaphore => "qipc_systemsem_",
    };
    let letters = key.chars().filter(char::is_ascii_alphabetic);
    let digest = Sha1::digest(key.as_bytes());
    let mut name = String::with_capacity(1 + prefix.len() + key.len() + 40);
    name.push_str(prefix);
    name.extend(letters);
    for byte in digest {
        name.push_str(&format!("{byte:02x}"));
    }
    let native = match kind {
        KeyType::PosixRealtime => format!("/{name}"),
        KeyType::SystemV => format!("{}/{name}", qt_temp_dir()),
    };
    NativeIpcKey {
        kind,
        native,
        legacy: Some(key.to_owned()),
    }
}

/// Qt's `QtIpcCommon::platformSafeKey` (the Qt 6.6+ cross-platform key).
pub(crate) fn platform_safe_key(key: &str, kind: KeyType) -> NativeIpcKey {
    if key.is_empty() {
        return NativeIpcKey::new(String::new(), kind);
    }
    let native = match kind {
        KeyType::PosixRealtime => format!("/{key}"),
        KeyType::SystemV if key.starts_with('/') => key.to_owned(),
        KeyType::SystemV => format!("{}/{key}", qt_runtime_dir()),
    };
    NativeIpcKey::new(native, kind)
}

/// `QStandardPaths::writableLocation(TempLocation)` on Linux.
pub(crate) fn qt_temp_dir() -> String {
    temp_dir_from(std::env::var("TMPDIR").ok().as_deref())
}

/// Qt's temporary directory for a given value of `$TMPDIR`.
fn temp_dir_from(tmpdir: Option<&str>) -> String {
    let dir = tmpdir.filter(|d| !d.is_empty()).unwrap_or("/tmp");
    canonical(&clean_path(dir))
}

/// `QStandardPaths::writableLocation(RuntimeLocation)` on Linux: `$XDG_RUNTIME_DIR` when
/// it is a directory owned by us with mode 0700, else `<temp>/runtime-<user>`.
pub(crate) fn qt_runtime_dir() -> String {
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR")
        && !dir.is_empty()
        && runtime_dir_is_private(&dir)
    {
        return dir;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let user = crate::sys::os::user_name(uid).unwrap_or_else(|| uid.to_string());
    format!("{}/runtime-{user}", qt_temp_dir())
}

fn runtime_dir_is_private(dir: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(m) => m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o777 == 0o700,
        Err(_) => false,
    }
}

/// `QDir::canonicalPath`: the resolved path, or empty when it does not exist.
fn canonical(path: &str) -> String {
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `QDir::cleanPath` for Unix paths: no empty or `.` segments, `..` resolved
/// lexically, no trailing slash.
fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Characters that must be percent-encoded in the path of the string form.
fn escape_path_char(c: char) -> bool {
    matches!(c, '%' | '?' | '#') || c.is_ascii_control()
}

/// Characters that must be percent-encoded in the `legacyKey` query value (as Qt's
/// `QUrlQuery` does: `+`, `?`, `/`, spaces and non-ASCII stay as they are).
fn escape_query_char(c: char) -> bool {
    matches!(c, '%' | '#' | '&' | '=') || c.is_ascii_control()
}

fn percent_encode(s: &str, escape: fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        if escape(c) {
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for NativeIpcKey {
    /// Qt's `QNativeIpcKey::toString()`: `type:percent-encoded-native[?legacyKey=...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = percent_encode(&self.native, escape_path_char);
        if path.starts_with("//") {
            // keep it a URL path, not an authority
            path.replace_range(0..2, "/%2F");
        }
        write!(f, "{}:{path}", self.kind)?;
        if let Some(legacy) = self.legacy.as_deref().filter(|l| !l.is_empty()) {
            write!(f, "?legacyKey={}", percent_encode(legacy, escape_query_char))?;
        }
        Ok(())
    }
}

impl FromStr for NativeIpcKey {
    type Err = Error;

    /// Qt's `QNativeIpcKey::fromString()`; invalid text is a [`SharedMemoryError::KeyError`].
    fn from_str(text: &str) -> Result<NativeIpcKey> {
        let invalid = |why: &str| {
            Error::new(SharedMemoryError::KeyError, "parse key", text)
                .with_detail(format!("not a native key string: {why}"))
        };
        let (scheme, rest) = text.split_once(':').ok_or_else(|| invalid("no type"))?;
        // URL schemes are case-insensitive (QUrl lowercases them). Qt's "systemv-N"
        // (a System V key with an ftok id other than 'Q') is not supported.
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "systemv" => KeyType::SystemV,
            "posix" => KeyType::PosixRealtime,
            _ => return Err(invalid("unknown or unsupported key type")),
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (mut path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(after) = path.strip_prefix("//") {
            // an authority: it must be empty (no host, user or port)
            let end = after.find('/').unwrap_or(after.len());
            if end != 0 {
                return Err(invalid("a host is not allowed"));
            }
            path = &after[end..];
        }
        let native = percent_decode(path).ok_or_else(|| invalid("bad percent-encoding"))?;
        let mut key = NativeIpcKey::new(native, kind);
        for item in query.into_iter().flat_map(|q| q.split('&')) {
            if item.is_empty() {
                continue;
            }
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            if name != "legacyKey" {
                return Err(invalid("unknown query item"));
            }
            let value = percent_decode(value).ok_or_else(|| invalid("bad percent-encoding"))?;
            key.legacy = Some(value);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_matches_qdir() {
        assert_eq!(clean_path("/tmp/"), "/tmp");
        assert_eq!(clean_path("//tmp//x/./y/../z"), "/tmp/x/z");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(clean_path("a/../.."), "..");
    }

    #[test]
    fn posix_legacy_keys_are_pinned_to_qt() {
        // Values printed by Qt 6.11 (PyQt6): QSharedMemory.legacyNativeKey(key, PosixRealtime)
        let pinned = [
            (
                "market",
                "/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3",
            ),
            (
                "a",
                "/qipc_sharedmemory_a86f7e437faa5a7fce15d1ddcb9eaeaea377667b8",
            ),
            (
                "a/b",
                "/qipc_sharedmemory_ab3ec69c85a4ff96830024afeef2d4e512181c8f7b",
            ),
            (
                "héllo wörld",
                "/qipc_sharedmemory_hllowrld24e9f5c07847ff8a2a9fa77456655792f5bc7f9f",
            ),
        ];
        for (legacy, native) in pinned {
            let k = legacy_platform_safe_key(legacy, IpcType::SharedMemory, KeyType::PosixRealtime);
            assert_eq!(k.native(), native, "key {legacy:?}");
            assert_eq!(k.legacy_key(), Some(legacy));
        }
    }

    #[test]
    fn temp_dir_follows_tmpdir_like_qt() {
        assert_eq!(temp_dir_from(None), canonical("/tmp"));
        assert_eq!(temp_dir_from(Some("")), canonical("/tmp"));
        assert_eq!(temp_dir_from(Some("/tmp/./")), canonical("/tmp"));
        assert_eq!(temp_dir_from(Some("/tmp/../tmp//")), canonical("/tmp"));
        // QDir::canonicalPath of a missing directory is empty
        assert_eq!(temp_dir_from(Some("/nonexistent-qshm-dir")), "");
    }

    #[test]
    fn system_v_legacy_keys_are_pinned_to_qt() {
        // Qt 6.11 (PyQt6), TMPDIR unset, prints /tmp/<name>; the directory part follows
        // the temp dir (tested above), the name part is pinned.
        let tmp = qt_temp_dir();
        let k = legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::SystemV);
        let name = "qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3";
        assert_eq!(k.native(), format!("{tmp}/{name}"));
        assert_eq!(k.to_string(), format!("systemv:{tmp}/{name}?legacyKey=market"));
        let k = legacy_platform_safe_key("a/b", IpcType::SharedMemory, KeyType::SystemV);
        assert_eq!(
            k.native(),
            format!("{tmp}/qipc_sharedmemory_ab3ec69c85a4ff96830024afeef2d4e512181c8f7b")
        );
    }

    #[test]
    fn empty_key_gives_empty_native_key() {
        for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
            let k = legacy_platform_safe_key("", IpcType::SharedMemory, kind);
            assert!(k.is_empty());
            assert_eq!(k.kind(), kind);
        }
    }

    #[test]
    fn very_long_key_keeps_all_letters() {
        let key = "x".repeat(300);
        let k = legacy_platform_safe_key(&key, IpcType::SharedMemory, KeyType::PosixRealtime);
        assert_eq!(k.native().len(), 1 + 18 + 300 + 40);
        assert!(k.native().starts_with("/qipc_sharedmemory_xxxx"));
    }

    #[test]
    fn semaphore_keys_use_their_own_prefix() {
        let k = legacy_platform_safe_key("market", IpcType::SystemSemaphore, KeyType::PosixRealtime);
        assert_eq!(
            k.native(),
            "/qipc_systemsem_market5c9f73af73334ffe350c60ec076e5744db0ecda3"
        );
    }

    #[test]
    fn string_form_round_trips() {
        let keys = [
            NativeIpcKey::new("/tmp/a b%c?d#e", KeyType::SystemV),
            NativeIpcKey::new("//x", KeyType::PosixRealtime),
            NativeIpcKey::new("/plain", KeyType::PosixRealtime),
            legacy_platform_safe_key("a/b c:é%&=+#", IpcType::SharedMemory, KeyType::SystemV),
            legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::PosixRealtime),
        ];
        for k in keys {
            let text = k.to_string();
            let back: NativeIpcKey = text.parse().unwrap();
            assert_eq!(back, k, "via {text:?}");
        }
    }

    #[test]
    fn string_form_matches_qt_for_plain_keys() {
        let k = legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::PosixRealtime);
        assert_eq!(
            k.to_string(),
            "posix:/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3?legacyKey=market"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_key_derives_and_round_trips(key in "\\PC{0,80}", posix in proptest::bool::ANY) {
            let kind = if posix { KeyType::PosixRealtime } else { KeyType::SystemV };
            let k = legacy_platform_safe_key(&key, IpcType::SharedMemory, kind);
            if key.is_empty() {
                proptest::prop_assert!(k.is_empty());
            } else {
                let name = k.native().rsplit('/').next().unwrap();
                proptest::prop_assert!(name.starts_with("qipc_sharedmemory_"));
                proptest::prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                let back: NativeIpcKey = k.to_string().parse().unwrap();
                proptest::prop_assert_eq!(back, k);
            }
        }

        #[test]
        fn any_native_string_round_trips(native in "\\PC{0,60}", posix in proptest::bool::ANY) {
            let kind = if posix { KeyType::PosixRealtime } else { KeyType::SystemV };
            let k = NativeIpcKey::new(native, kind);
            let back: NativeIpcKey = k.to_string().parse().unwrap();
            proptest::prop_assert_eq!(back, k);
        }

        #[test]
        fn parsing_garbage_never_panics(text in "\\PC{0,60}") {
            let _ = text.parse::<NativeIpcKey>();
        }
    }

    #[test]
    fn string_forms_match_qt_escaping() {
        // What Qt 6.11's QNativeIpcKey::toString() prints (PyQt6)
        let k = NativeIpcKey::new("/tmp/a b%c?d#e", KeyType::SystemV);
        assert_eq!(k.to_string(), "systemv:/tmp/a b%25c%3Fd%23e");
        assert_eq!(
            NativeIpcKey::new("//x", KeyType::PosixRealtime).to_string(),
            "posix:/%2Fx"
        );
        let k = legacy_platform_safe_key("a/b c:é%", IpcType::SharedMemory, KeyType::PosixRealtime);
        assert_eq!(
            k.to_string(),
            "posix:/qipc_sharedmemory_abc8cd40d65376172d4221f778233c4d8329103da1c?legacyKey=a/b c:é%25"
        );
        let mut k = NativeIpcKey::new("/x", KeyType::PosixRealtime);
        k.legacy = Some("q?&=#+%20".to_owned());
        assert_eq!(k.to_string(), "posix:/x?legacyKey=q?%26%3D%23+%2520");
        assert_eq!(
            "SYSTEMV:/tmp/x".parse::<NativeIpcKey>().unwrap().kind(),
            KeyType::SystemV
        );
    }

    #[test]
    fn bad_string_forms_are_key_errors() {
        for text in [
            "",
            "nokind",
            "windows:x",
            "posix://host/x",
            "posix:/a%zz",
            "posix:/a?x=1",
        ] {
            let err = text.parse::<NativeIpcKey>().unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError, "{text:?}");
        }
    }
}
