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
//! Qt's temporary directory is what `QStandardPaths::writableLocation(TempLocation)`
//! returns on Linux in Qt 6.11 (see [`temp_dir_from`]): `/tmp` when `$TMPDIR` is unset or
//! empty, else `$TMPDIR` made absolute and cleaned *without* resolving symbolic links and
//! without checking that it exists. Checked against real Qt 6.11 (PyQt6) by the tests.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

use crate::error::{Error, Failure, Result, SharedMemoryError};

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
#[derive(Clone, Debug)]
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

    /// Fails with a [`SharedMemoryError::KeyError`] where Qt fails to make the key's
    /// file (`QSharedMemory::create`/`attach` and `QSystemSemaphore` report "unable to
    /// make key"), before anything is made: a System V key whose directory is missing or
    /// not a directory, or a key derived from an unusable Qt directory. The message
    /// names the directory. Other problems (e.g. no permission) are left to the system
    /// call that meets them.
    pub(crate) fn check_usable(&self) -> std::result::Result<(), Failure> {
        let fail = |detail: String| Err(Failure::because(SharedMemoryError::KeyError, detail));
        if let Some(why) = &self.unusable {
            return fail(why.clone());
        }
        if self.kind != KeyType::SystemV {
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
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => fail(format!(
                "{dir}, the directory of the System V key file, is not a directory{hint}"
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::from(e)
                .with_kind(SharedMemoryError::KeyError)
                .with_detail(format!(
                    "{dir}, the directory of the System V key file, does not exist{hint}"
                ))),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => fail(format!(
                "{dir}, the directory of the System V key file, is not a directory{hint}"
            )),
            Err(_) => Ok(()),
        }
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
    let mut unusable = None;
    let native = match kind {
        KeyType::PosixRealtime => format!("/{name}"),
        KeyType::SystemV => {
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
        KeyType::SystemV if key.starts_with('/') => NativeIpcKey::new(key, kind),
        KeyType::SystemV => match runtime_dir() {
            Ok(dir) => NativeIpcKey::new(format!("{dir}/{key}"), kind),
            Err(why) => NativeIpcKey {
                unusable: Some(why),
                ..NativeIpcKey::new(format!("/{key}"), kind)
            },
        },
    }
}

/// `QStandardPaths::writableLocation(TempLocation)` on Linux, as Qt 6.11 computes it from
/// `$TMPDIR` and the working directory (see [`temp_dir_from`]).
pub(crate) fn qt_temp_dir() -> String {
    let tmpdir = std::env::var_os("TMPDIR");
    temp_dir_from(tmpdir.as_deref().map(decode_env).as_deref(), || {
        std::env::current_dir().ok().map(|d| decode_env(d.as_os_str()))
    })
}

/// An environment value or path as Qt sees it: UTF-8, invalid bytes replaced by U+FFFD
/// (Qt 6.11 prints `/tmp/a\u{fffd}b` for `TMPDIR=$'/tmp/a\xffb'`).
fn decode_env(value: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Qt 6.11's `QFileSystemEngine::tempPath()` on Linux for `$TMPDIR` = `tmpdir`; `cwd`
/// gives the working directory (`None` when it is unknown, e.g. removed).
///
/// * unset or empty: `/tmp`;
/// * else one trailing `/` is dropped, and the result is made absolute the way
///   `QFileSystemEngine::absoluteName` does it: an absolute path that is already clean
///   (no `//`, `./`, `../`, no trailing `.` or `..` segment) is kept as is, even with a
///   trailing `/` (`/tmp//` gives `/tmp/`); any other path is put after the working
///   directory, cleaned with `QDir::cleanPath` ([`clean_path`]), and gets back a
///   trailing `/` if it had one (`/tmp/..//` gives `//`).
///
/// Symbolic links are not resolved and the directory need not exist: Qt uses the string
/// as it is, and so does qshm.
fn temp_dir_from(tmpdir: Option<&str>, cwd: impl FnOnce() -> Option<String>) -> String {
    let mut temp = match tmpdir {
        None | Some("") => return "/tmp".to_owned(),
        Some(dir) => dir.to_owned(),
    };
    if temp.len() > 1 && temp.ends_with('/') {
        temp.pop();
    }
    if temp.starts_with('/') && is_clean(&temp) {
        return temp;
    }
    let mut joined = if temp.starts_with('/') {
        String::new()
    } else {
        cwd().unwrap_or_default()
    };
    if temp != "." {
        if !joined.is_empty() && !joined.ends_with('/') {
            joined.push('/');
        }
        joined.push_str(&temp);
    }
    if joined == "/" {
        return joined;
    }
    let mut cleaned = clean_path(&joined);
    if joined.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// `QFileSystemEntry::isClean`: no empty segment (`//`), no `.` or `..` segment.
/// A single trailing `/` is clean.
fn is_clean(path: &str) -> bool {
    let mut segments = path.split('/');
    if path.starts_with('/') {
        segments.next(); // the empty segment before the root
    }
    let mut segments = segments.peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." | ".." => return false,
            "" if !last => return false,
            _ => {}
        }
    }
    true
}

/// `QStandardPaths::writableLocation(RuntimeLocation)` on Linux as Qt 6.11 decides it,
/// making the directory when Qt would ([`runtime_dir_from`] has the rules). `Err` says
/// why no directory is usable (Qt then returns an empty string).
pub(crate) fn qt_runtime_dir() -> std::result::Result<String, String> {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(|v| decode_env(&v));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    runtime_dir_from(xdg.as_deref(), uid, || {
        // Qt's resolveUserName: the passwd name, or "" without an entry
        let user = crate::sys::os::user_name(uid).unwrap_or_default();
        format!("{}/runtime-{user}", qt_temp_dir())
    })
}

/// Qt 6.11's runtime directory for `$XDG_RUNTIME_DIR` = `xdg` and effective user `uid`,
/// with `fallback` giving `<temp>/runtime-<user name>` (Qt's temporary directory as
/// [`qt_temp_dir`], the user name empty when `uid` has no passwd entry).
///
/// Qt's decisions, in order (`qstandardpaths_unix.cpp`, checked with real Qt 6.11):
///
/// 1. `$XDG_RUNTIME_DIR` counts only when it starts with `/`; empty or relative is as
///    unset (Qt warns "XDG_RUNTIME_DIR not set, defaulting to ..." and uses the fallback).
/// 2. A candidate is checked by [`check_runtime_dir`]: made with mode 0700 if missing;
///    an existing one must be a real directory (not a symlink, even to a directory),
///    owned by `uid`, with permissions exactly 0700 (Qt 6.11 does not repair them).
///    The string is used as given (a trailing `/` stays).
/// 3. An unusable `$XDG_RUNTIME_DIR` falls back (Qt warns why, not "not set").
/// 4. The fallback is checked the same way; if it is unusable too, Qt returns "" (and
///    `platformSafeKey` then gives `/<key>`); here `Err` with both reasons.
///
/// qshm does not print Qt's warnings; the reasons end up in the `KeyError` when no
/// directory is usable.
fn runtime_dir_from(
    xdg: Option<&str>,
    uid: u32,
    fallback: impl FnOnce() -> String,
) -> std::result::Result<String, String> {
    let mut reasons = Vec::new();
    match xdg.filter(|dir| dir.starts_with('/')) {
        Some(dir) => match check_runtime_dir(dir, uid) {
            Ok(()) => return Ok(dir.to_owned()),
            Err(why) => reasons.push(format!("XDG_RUNTIME_DIR {why}")),
        },
        None => reasons.push("XDG_RUNTIME_DIR is not set to an absolute path".to_owned()),
    }
    let dir = fallback();
    match check_runtime_dir(&dir, uid) {
        Ok(()) => Ok(dir),
        Err(why) => {
            reasons.push(format!("the fallback {why}"));
            Err(format!("no usable Qt runtime directory: {}", reasons.join("; ")))
        }
    }
}

/// Qt's check of a runtime directory candidate (`checkXdgRuntimeDir`): `mkdir(dir, 0700)`
/// — made now means usable; else it must exist as a directory (not a symlink) owned by
/// `uid` with permissions 0700. `Err` says what is wrong, starting with `dir`.
fn check_runtime_dir(dir: &str, uid: u32) -> std::result::Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{dir} cannot be created ({e})")),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{dir} cannot be examined ({e})"))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{dir} is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(format!("{dir} is not a directory"));
    }
    if meta.uid() != uid {
        return Err(format!("{dir} is owned by UID {}, not {uid}", meta.uid()));
    }
    let perms = meta.mode() & 0o777;
    if perms != 0o700 {
        return Err(format!("{dir} has permissions {perms:04o}, not 0700"));
    }
    Ok(())
}

/// `QDir::cleanPath` for Unix paths as Qt 6.11 does it: no empty or `.` segments, `..`
/// removes the segment before it, no trailing slash. A `..` with nothing to remove stays,
/// in absolute paths too (Qt 6.11 prints `/..` for `/tmp/../..`); an empty relative
/// result is `.`, an empty input stays empty.
fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
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

/// Parses the type part of a key string as Qt's `stringToType` does (after `QUrl` has
/// lowercased it): `systemv`, `posix`, `windows`, or `systemv-N` with a decimal `N` from
/// 1 to 255, Qt's System V key whose `ftok` project id is `N` (`systemv-81` is plain
/// `systemv`, 81 being `'Q'`). Anything else is no key type at all.
fn parse_scheme(scheme: &str) -> Scheme {
    match scheme {
        "systemv" => return Scheme::Supported(KeyType::SystemV),
        "posix" => return Scheme::Supported(KeyType::PosixRealtime),
        "windows" => return Scheme::Windows,
        _ => {}
    }
    let id = scheme
        .strip_prefix("systemv-")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u32>().ok())
        .filter(|id| (1..=0xff).contains(id));
    match id {
        Some(id) if id == SYSV_PROJECT_ID as u32 => Scheme::Supported(KeyType::SystemV),
        Some(id) => Scheme::SystemVWithId(id),
        None => Scheme::Unknown,
    }
}

/// What [`parse_scheme`] found.
enum Scheme {
    Supported(KeyType),
    Windows,
    SystemVWithId(u32),
    Unknown,
}

impl FromStr for NativeIpcKey {
    type Err = Error;

    /// Qt's `QNativeIpcKey::fromString()`; invalid text is a [`SharedMemoryError::KeyError`].
    ///
    /// Qt also accepts `windows:` keys (useless on Linux) and `systemv-N:` keys: System V
    /// keys whose `ftok` project id is `N` instead of Qt's default `'Q'` (81). Both are
    /// rejected with a `KeyError` that says so. Decision for `systemv-N`: not supported.
    /// Supporting it would mean a key type carrying the id (a breaking change of the
    /// public [`KeyType`]), the id in every `ftok` of segments and semaphores, in qshm's
    /// lock-state name (else `systemv-82:/f` and `systemv:/f`, different segments, would
    /// share one lock) and in `qshm ls`; Qt itself only makes such keys when asked, and
    /// no legacy or platform-safe key uses them. `systemv-81` is Qt's default id spelled
    /// out, so it is plain `systemv`, as in Qt.
    fn from_str(text: &str) -> Result<NativeIpcKey> {
        let invalid = |why: &str| {
            Error::new(SharedMemoryError::KeyError, "parse key", text)
                .with_detail(format!("not a native key string: {why}"))
        };
        let (scheme, rest) = text.split_once(':').ok_or_else(|| invalid("no type"))?;
        // URL schemes are case-insensitive (QUrl lowercases them)
        let scheme = scheme.to_ascii_lowercase();
        let kind = match parse_scheme(&scheme) {
            Scheme::Supported(kind) => kind,
            Scheme::Windows => return Err(invalid("Qt's \"windows\" keys do not exist on Linux")),
            Scheme::SystemVWithId(id) => {
                let shown = char::from_u32(id)
                    .filter(char::is_ascii_graphic)
                    .map(|c| format!(" ({c:?})"))
                    .unwrap_or_default();
                return Err(invalid(&format!(
                    "{scheme:?} is Qt's System V key type with ftok project id {id}{shown}; \
                     qshm supports only Qt's default System V id {SYSV_PROJECT_ID} ('Q')"
                )));
            }
            Scheme::Unknown => {
                return Err(invalid(&format!(
                    "unknown key type {scheme:?}: expected \"systemv\" or \"posix\""
                )));
            }
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
            // an empty legacy key is no legacy key (the string form never prints one)
            key.legacy = (!value.is_empty()).then_some(value);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_matches_qdir() {
        // What Qt 6.11's QDir::cleanPath prints (PyQt6)
        let pinned = [
            ("/tmp/", "/tmp"),
            ("//tmp//x/./y/../z", "/tmp/x/z"),
            ("/..", "/.."),
            ("/tmp/../..", "/.."),
            ("/a/./../../b/./c/..", "/../b"),
            ("/tmp/...", "/tmp/..."),
            ("///", "/"),
            ("a/../..", ".."),
            ("a/b/../..", "."),
            ("./", "."),
            ("", ""),
        ];
        for (path, qt) in pinned {
            assert_eq!(clean_path(path), qt, "cleanPath({path:?})");
        }
    }

    #[test]
    fn clean_paths_are_recognised_like_qfilesystementry() {
        for clean in ["/", "/tmp", "/tmp/", "/tmp/...", "/a/.b/..c"] {
            assert!(is_clean(clean), "{clean:?}");
        }
        for unclean in ["//", "/tmp//", "//tmp", "/tmp/.", "/tmp/..", "/./tmp", "/a/../b"] {
            assert!(!is_clean(unclean), "{unclean:?}");
        }
    }

    #[test]
    fn temp_dir_follows_tmpdir_like_qt() {
        // What Qt 6.11 prints for QStandardPaths::writableLocation(TempLocation) with
        // TMPDIR set to the first value and /work as the working directory (PyQt6).
        let pinned = [
            (None, "/tmp"),
            (Some(""), "/tmp"),
            (Some("/tmp"), "/tmp"),
            (Some("/tmp/"), "/tmp"),
            (Some("/tmp//"), "/tmp/"),
            (Some("/tmp///"), "/tmp/"),
            (Some("//tmp"), "/tmp"),
            (Some("/tmp/./"), "/tmp"),
            (Some("/tmp/."), "/tmp"),
            (Some("/tmp/.."), "/"),
            (Some("/tmp/../tmp//"), "/tmp/"),
            (Some("/tmp/..//"), "//"),
            (Some("/tmp/a/../../.."), "/.."),
            (Some("/"), "/"),
            (Some("//"), "/"),
            (Some("rel"), "/work/rel"),
            (Some("rel/"), "/work/rel"),
            (Some("rel//"), "/work/rel/"),
            (Some("./rel/../x"), "/work/x"),
            (Some("."), "/work"),
            (Some("./"), "/work"),
            (Some(".."), "/"),
            // neither checked for existence nor resolved
            (Some("/nonexistent-qshm"), "/nonexistent-qshm"),
            (Some("/tmp/link-to-dir"), "/tmp/link-to-dir"),
        ];
        for (tmpdir, qt) in pinned {
            let ours = temp_dir_from(tmpdir, || Some("/work".to_owned()));
            assert_eq!(ours, qt, "TMPDIR={tmpdir:?}");
        }
        // working directory "/"
        assert_eq!(temp_dir_from(Some("."), || Some("/".to_owned())), "/");
        assert_eq!(temp_dir_from(Some("x"), || Some("/".to_owned())), "/x");
        // working directory removed: Qt 6.11 prints "x" and ""
        assert_eq!(temp_dir_from(Some("rel/../x/"), || None), "x");
        assert_eq!(temp_dir_from(Some("."), || None), "");
    }

    #[test]
    fn tmpdir_that_is_not_utf8_is_decoded_like_qt() {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"/tmp/a\xffb");
        // Qt 6.11 prints '/tmp/a\ufffdb'
        assert_eq!(decode_env(raw), "/tmp/a\u{fffd}b");
    }

    /// A directory for one test, removed with everything in it when dropped.
    struct TestDir(std::path::PathBuf);

    impl TestDir {
        fn new(tag: &str) -> TestDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("qshm-keytest-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TestDir(dir)
        }

        fn path(&self, rel: &str) -> String {
            self.0.join(rel).to_str().unwrap().to_owned()
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A Python that imports PyQt6 (`QSHM_QT_PEER`, else the venv `interop/setup.sh`
    /// makes), or None after a loud SKIP line.
    fn qt_python(test: &str) -> Option<std::path::PathBuf> {
        let candidates = std::env::var_os("QSHM_QT_PEER")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain([concat!(env!("CARGO_MANIFEST_DIR"), "/target/qt-venv/bin/python").into()]);
        for python in candidates {
            let ok = std::process::Command::new(&python)
                .args(["-c", "import PyQt6.QtCore"])
                .output()
                .is_ok_and(|out| out.status.success());
            if ok {
                return Some(python);
            }
        }
        skip(&format!(
            "{test}: no Python with PyQt6 (set QSHM_QT_PEER or run interop/setup.sh)"
        ));
        None
    }

    /// Prints a SKIP line straight to stderr, past libtest's output capture, so that it
    /// shows even when the test passes.
    fn skip(what: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n*** SKIP: {what} ***\n");
    }

    /// One environment for [`qt_locations`]: variables to set (`None`: unset) and the
    /// working directory.
    struct QtEnv {
        vars: Vec<(&'static str, Option<String>)>,
        cwd: String,
    }

    /// `QStandardPaths::writableLocation(location)` as real Qt prints it in each
    /// environment, in one child process (Qt reads the variables and the working
    /// directory at every call; this process's environment is not touched).
    fn qt_locations(python: &std::path::Path, location: &str, envs: &[QtEnv]) -> Vec<String> {
        use std::io::Write;
        const SCRIPT: &str = r#"
import json, os, sys
from PyQt6.QtCore import QStandardPaths
where = getattr(QStandardPaths.StandardLocation, sys.argv[1])
out = []
for env in json.load(sys.stdin):
    for name, value in env["vars"]:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(env["cwd"])
    out.append(QStandardPaths.writableLocation(where))
print(json.dumps(out))
"#;
        let input: Vec<serde_json::Value> = envs
            .iter()
            .map(|e| serde_json::json!({ "vars": e.vars, "cwd": e.cwd }))
            .collect();
        let mut child = std::process::Command::new(python)
            .args(["-c", SCRIPT, location])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = serde_json::to_vec(&input).unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed.len(), envs.len());
        printed
    }

    #[test]
    fn temp_dir_matches_real_qt() {
        let Some(python) = qt_python("temp_dir_matches_real_qt") else {
            return;
        };
        let dir = TestDir::new("temp");
        std::fs::create_dir(dir.path("real")).unwrap();
        std::os::unix::fs::symlink(dir.path("real"), dir.path("link")).unwrap();
        let root = dir.path("");
        let root = root.trim_end_matches('/');
        let tmpdirs: Vec<Option<String>> = [
            None,
            Some(String::new()),
            Some("/tmp".to_owned()),
            Some(format!("{root}/link")),
            Some(format!("{root}/link/")),
            Some(format!("{root}/link//")),
            Some(format!("{root}/./real/../link")),
            Some(format!("{root}//real")),
            Some(format!("{root}/missing")),
            Some(format!("{root}/real/../..//")),
            Some("link".to_owned()),
            Some("./link/../real//".to_owned()),
            Some(".".to_owned()),
            Some("..".to_owned()),
            Some("/".to_owned()),
        ]
        .into();
        let envs: Vec<QtEnv> = tmpdirs
            .iter()
            .map(|t| QtEnv {
                vars: vec![("TMPDIR", t.clone())],
                cwd: dir.path("real"),
            })
            .collect();
        let qt = qt_locations(&python, "TempLocation", &envs);
        for (tmpdir, qt) in tmpdirs.iter().zip(qt) {
            let ours = temp_dir_from(tmpdir.as_deref(), || Some(dir.path("real")));
            assert_eq!(ours, qt, "TMPDIR={tmpdir:?}");
        }
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
    fn system_v_key_in_a_missing_directory_is_a_key_error_naming_it() {
        use crate::{AccessMode, SemaphoreMode, SharedMemory, SystemSemaphore};
        let dir = TestDir::new("missing");
        let missing = dir.path("missing");
        let key = NativeIpcKey::new(format!("{missing}/qipc_x"), KeyType::SystemV);
        let mut shm = SharedMemory::with_native_key(key.clone());
        let sem = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Create).map(drop);
        for result in [
            shm.create(4096, AccessMode::ReadWrite),
            shm.attach(AccessMode::ReadOnly),
            sem,
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
            let want = format!("{missing}, the directory of the System V key file, does not exist");
            assert!(err.to_string().contains(&want), "{err}");
        }
        // a file where the directory should be
        std::fs::write(&missing, b"").unwrap();
        let err = shm.create(4096, AccessMode::ReadWrite).unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "{missing}, the directory of the System V key file, is not a directory"
            )),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path("")).unwrap().count(),
            1,
            "nothing else made"
        );
    }

    #[test]
    fn legacy_key_in_a_missing_temp_dir_fails_naming_it() {
        use crate::{AccessMode, SharedMemory};
        let dir = TestDir::new("missingtmp");
        let missing = dir.path("missing");
        let key = legacy_key_in("market", IpcType::SharedMemory, KeyType::SystemV, || {
            missing.clone()
        });
        // Qt's string: the directory is used as it is
        assert_eq!(
            key.native(),
            format!("{missing}/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3")
        );
        let err = SharedMemory::with_native_key(key)
            .create(4096, AccessMode::ReadWrite)
            .unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError);
        assert_eq!(
            err.to_string(),
            format!(
                "create \"market\": {missing}, the directory of the System V key file, does not \
                 exist (Qt's temporary directory: $TMPDIR, else /tmp) (No such file or directory (os error 2))"
            )
        );
    }

    #[test]
    fn legacy_key_in_a_relative_temp_dir_keeps_qts_string_but_is_unusable() {
        use crate::{AccessMode, SharedMemory};
        // Qt 6.11 gives "" for TMPDIR=. and "x" for TMPDIR=x when the working directory
        // is gone; its key files would then land in / or in the working directory.
        for temp in ["", ".", "x"] {
            let key = legacy_key_in("market", IpcType::SharedMemory, KeyType::SystemV, || {
                temp.to_owned()
            });
            assert_eq!(
                key.native(),
                format!("{temp}/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3")
            );
            let mut shm = SharedMemory::with_native_key(key);
            for result in [
                shm.create(4096, AccessMode::ReadWrite),
                shm.attach(AccessMode::ReadWrite),
            ] {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), SharedMemoryError::KeyError);
                assert!(err.to_string().contains("is not an absolute path"), "{err}");
            }
        }
        let posix = legacy_key_in("market", IpcType::SharedMemory, KeyType::PosixRealtime, || {
            unreachable!("POSIX keys need no directory")
        });
        assert!(posix.check_usable().is_ok());
    }

    /// True in the child process [`run_child`] starts for test `name`.
    fn in_child(name: &str) -> bool {
        std::env::var("QSHM_KEYTEST_CHILD").is_ok_and(|n| n == name)
    }

    /// Runs test `name` (full path) of this test binary again in a child process with
    /// `vars` set (this process's environment is never changed) and returns what it
    /// printed after `child: ` on each line (libtest may print before it on a line).
    fn run_child(name: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("QSHM_KEYTEST_CHILD", name)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| l.split_once("child: ").map(|(_, line)| line))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn missing_tmpdir_gives_key_errors_end_to_end() {
        use crate::{AccessMode, SemaphoreMode, SharedMemory, SystemSemaphore};
        const NAME: &str = "key::tests::missing_tmpdir_gives_key_errors_end_to_end";
        if in_child(NAME) {
            let mut shm = SharedMemory::new("qshm-keytest-e2e");
            println!("child: {}", shm.native_key());
            let sem = SystemSemaphore::new("qshm-keytest-e2e", 1, SemaphoreMode::Create).map(drop);
            for result in [
                shm.create(4096, AccessMode::ReadWrite),
                shm.attach(AccessMode::ReadWrite),
                sem,
            ] {
                match result {
                    Ok(()) => println!("child: ok"),
                    Err(e) => println!("child: {:?}: {e}", e.kind()),
                }
            }
            return;
        }
        let dir = TestDir::new("e2e");
        let missing = dir.path("missing");
        let lines = run_child(NAME, &[("TMPDIR", &missing)]);
        assert_eq!(lines.len(), 4, "{lines:?}");
        // TMPDIR reaches the derivation as it reaches Qt's
        let expected = legacy_key_in(
            "qshm-keytest-e2e",
            IpcType::SharedMemory,
            KeyType::SystemV,
            || missing.clone(),
        );
        assert_eq!(lines[0], expected.native());
        for line in &lines[1..] {
            assert!(line.starts_with("KeyError: "), "{line}");
            assert!(
                line.contains(&format!(
                    "{missing}, the directory of the System V key file, does not exist"
                )),
                "{line}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path("")).unwrap().count(),
            0,
            "nothing made"
        );
    }

    /// What is at `path`, for comparing side effects: `missing`, `link`, `file` or
    /// `dir <mode> uid <uid>`.
    fn describe(path: &str) -> String {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(path) {
            Err(_) => "missing".to_owned(),
            Ok(m) if m.file_type().is_symlink() => "link".to_owned(),
            Ok(m) if m.is_dir() => format!("dir {:04o} uid {}", m.mode() & 0o7777, m.uid()),
            Ok(_) => "file".to_owned(),
        }
    }

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn make_dir(path: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn runtime_dir_is_made_0700_when_missing() {
        let dir = TestDir::new("rtmake");
        let xdg = dir.path("run");
        let got = runtime_dir_from(Some(&xdg), euid(), || unreachable!("XDG_RUNTIME_DIR is usable"));
        assert_eq!(got, Ok(xdg.clone()));
        assert_eq!(describe(&xdg), format!("dir 0700 uid {}", euid()));
        // again: now it exists and passes the checks
        assert_eq!(
            runtime_dir_from(Some(&xdg), euid(), || unreachable!()),
            Ok(xdg.clone())
        );
        // a trailing slash stays in Qt's string
        let slash = format!("{xdg}/");
        assert_eq!(
            runtime_dir_from(Some(&slash), euid(), || unreachable!()),
            Ok(slash)
        );
        // the sticky bit is not part of Qt's permissions
        make_dir(&dir.path("sticky"), 0o1700);
        let sticky = dir.path("sticky");
        assert_eq!(
            runtime_dir_from(Some(&sticky), euid(), || unreachable!()),
            Ok(sticky)
        );
    }

    #[test]
    fn unusable_xdg_runtime_dir_falls_back_and_is_left_alone() {
        let dir = TestDir::new("rtbad");
        make_dir(&dir.path("real"), 0o700);
        make_dir(&dir.path("open"), 0o755);
        make_dir(&dir.path("noexec"), 0o600);
        std::os::unix::fs::symlink(dir.path("real"), dir.path("link")).unwrap();
        std::os::unix::fs::symlink(dir.path("nowhere"), dir.path("broken")).unwrap();
        std::fs::write(dir.path("file"), b"").unwrap();
        let cases = [
            ("open", "has permissions 0755, not 0700"),
            ("noexec", "has permissions 0600, not 0700"),
            ("link", "is a symbolic link"),
            ("broken", "is a symbolic link"),
            ("file", "is not a directory"),
            ("missing/sub", "cannot be created"),
        ];
        for (name, why) in cases {
            let xdg = dir.path(name);
            let before = describe(&xdg);
            let fallback = dir.path(&format!("fallback-{}", name.replace('/', "-")));
            let got = runtime_dir_from(Some(&xdg), euid(), || fallback.clone());
            assert_eq!(got, Ok(fallback.clone()), "{name}");
            assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()), "{name}");
            assert_eq!(describe(&xdg), before, "{name} must not be changed");
            // why, as the error says when the fallback fails too
            let got = runtime_dir_from(Some(&xdg), euid(), || dir.path("missing/fallback"));
            let err = got.unwrap_err();
            assert!(err.contains(&format!("XDG_RUNTIME_DIR {xdg} {why}")), "{err}");
            assert!(
                err.contains(&format!(
                    "the fallback {} cannot be created",
                    dir.path("missing/fallback")
                )),
                "{err}"
            );
        }
        // owned by someone else (simulated: another uid asks)
        let real = dir.path("real");
        let err = check_runtime_dir(&real, euid() + 1).unwrap_err();
        assert_eq!(
            err,
            format!("{real} is owned by UID {}, not {}", euid(), euid() + 1)
        );
    }

    #[test]
    fn unset_empty_or_relative_xdg_runtime_dir_uses_the_fallback() {
        let dir = TestDir::new("rtunset");
        for (i, xdg) in [None, Some(""), Some("relative")].into_iter().enumerate() {
            let fallback = dir.path(&format!("runtime-{i}"));
            assert_eq!(
                runtime_dir_from(xdg, euid(), || fallback.clone()),
                Ok(fallback.clone())
            );
            assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()));
        }
        assert_eq!(describe(&dir.path("relative")), "missing");
        // a fallback that exists but is wrong is not repaired: no directory at all
        make_dir(&dir.path("open"), 0o755);
        let err = runtime_dir_from(None, euid(), || dir.path("open")).unwrap_err();
        assert_eq!(
            err,
            format!(
                "no usable Qt runtime directory: XDG_RUNTIME_DIR is not set to an absolute path; \
                 the fallback {} has permissions 0755, not 0700",
                dir.path("open")
            )
        );
        assert_eq!(describe(&dir.path("open")), format!("dir 0755 uid {}", euid()));
    }

    #[test]
    fn no_usable_runtime_dir_keeps_qts_key_but_fails_when_used() {
        use crate::{AccessMode, SharedMemory};
        let why = || Err("no usable Qt runtime directory: because".to_owned());
        let key = platform_safe_key_in("qshm-keytest-nort", KeyType::SystemV, why);
        // Qt 6.11 prints "/k" for platformSafeKey("k", SystemV) when it has no runtime directory
        assert_eq!(key.native(), "/qshm-keytest-nort");
        let mut shm = SharedMemory::with_native_key(key);
        for result in [
            shm.create(4096, AccessMode::ReadWrite),
            shm.attach(AccessMode::ReadWrite),
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError);
            assert_eq!(
                err.to_string()[err.operation().len()..],
                *r#" "/qshm-keytest-nort": no usable Qt runtime directory: because"#
            );
        }
        assert_eq!(describe("/qshm-keytest-nort"), "missing");
        // keys that need no runtime directory never ask for it
        let never = || -> std::result::Result<String, String> { unreachable!() };
        assert_eq!(
            platform_safe_key_in("/abs", KeyType::SystemV, never).native(),
            "/abs"
        );
        assert_eq!(
            platform_safe_key_in("k", KeyType::PosixRealtime, never).native(),
            "/k"
        );
        assert!(platform_safe_key_in("", KeyType::SystemV, never).is_empty());
    }

    #[test]
    fn runtime_dir_matches_real_qt() {
        let Some(python) = qt_python("runtime_dir_matches_real_qt") else {
            return;
        };
        let user = crate::sys::os::user_name(euid()).unwrap_or_default();
        // (what XDG_RUNTIME_DIR is, whether TMPDIR exists, what the fallback is)
        #[derive(Clone, Copy)]
        enum Made {
            Nothing,
            Dir(u32),
            Link,
            Broken,
            File,
            Foreign,
        }
        #[derive(Clone, Copy)]
        enum Xdg {
            Unset,
            Empty,
            Relative,
            At(Made),
            Slash(Made),
            MissingParent,
        }
        let mut cases = vec![
            (Xdg::Unset, true, Made::Nothing),
            (Xdg::Unset, true, Made::Dir(0o700)),
            (Xdg::Empty, true, Made::Nothing),
            (Xdg::Relative, true, Made::Nothing),
            (Xdg::At(Made::Nothing), true, Made::Nothing),
            (Xdg::At(Made::Dir(0o700)), true, Made::Nothing),
            (Xdg::At(Made::Dir(0o1700)), true, Made::Nothing),
            (Xdg::At(Made::Dir(0o755)), true, Made::Nothing),
            (Xdg::At(Made::Dir(0o600)), true, Made::Nothing),
            (Xdg::At(Made::Link), true, Made::Nothing),
            (Xdg::At(Made::Broken), true, Made::Nothing),
            (Xdg::At(Made::File), true, Made::Nothing),
            (Xdg::Slash(Made::Dir(0o700)), true, Made::Nothing),
            (Xdg::Slash(Made::Link), true, Made::Nothing),
            (Xdg::Slash(Made::Broken), true, Made::Nothing),
            (Xdg::MissingParent, true, Made::Nothing),
            (Xdg::Unset, false, Made::Nothing),
            (Xdg::At(Made::Dir(0o755)), false, Made::Nothing),
            (Xdg::Unset, true, Made::Dir(0o755)),
            (Xdg::Unset, true, Made::Link),
            (Xdg::Unset, true, Made::File),
        ];
        if euid() == 0 {
            cases.push((Xdg::At(Made::Foreign), true, Made::Nothing));
            cases.push((Xdg::Unset, true, Made::Foreign));
        } else {
            skip("runtime_dir_matches_real_qt: directories of another owner need root");
        }
        let make = |path: &str, what: Made, case: &str| match what {
            Made::Nothing => {}
            Made::Dir(mode) => make_dir(path, mode),
            Made::Link => {
                make_dir(&format!("{case}/target"), 0o700);
                std::os::unix::fs::symlink(format!("{case}/target"), path).unwrap();
            }
            Made::Broken => std::os::unix::fs::symlink(format!("{case}/nowhere"), path).unwrap(),
            Made::File => std::fs::write(path, b"").unwrap(),
            Made::Foreign => {
                make_dir(path, 0o700);
                std::os::unix::fs::chown(path, Some(65534), None).unwrap();
            }
        };
        // Builds every case afresh under `base`; returns the environments and, per
        // case, the paths whose state is compared.
        let build = |base: &str| -> (Vec<QtEnv>, Vec<[String; 2]>) {
            let _ = std::fs::remove_dir_all(base);
            make_dir(base, 0o755);
            let mut envs = Vec::new();
            let mut watched = Vec::new();
            for (i, &(xdg, tmp_exists, fallback)) in cases.iter().enumerate() {
                let case = format!("{base}/c{i}");
                make_dir(&case, 0o755);
                let tmp = format!("{case}/tmp");
                if tmp_exists {
                    make_dir(&tmp, 0o755);
                }
                let fallback_path = format!("{tmp}/runtime-{user}");
                make(&fallback_path, fallback, &case);
                let xdg_path = format!("{case}/xdg");
                let xdg_value = match xdg {
                    Xdg::Unset => None,
                    Xdg::Empty => Some(String::new()),
                    Xdg::Relative => Some("xdg".to_owned()),
                    Xdg::At(made) => {
                        make(&xdg_path, made, &case);
                        Some(xdg_path.clone())
                    }
                    Xdg::Slash(made) => {
                        make(&xdg_path, made, &case);
                        Some(format!("{xdg_path}/"))
                    }
                    Xdg::MissingParent => Some(format!("{case}/missing/xdg")),
                };
                envs.push(QtEnv {
                    vars: vec![("XDG_RUNTIME_DIR", xdg_value), ("TMPDIR", Some(tmp))],
                    cwd: case,
                });
                watched.push([xdg_path, fallback_path]);
            }
            (envs, watched)
        };
        // Qt first, then qshm on the same paths built again
        let root = TestDir::new("rtqt");
        let base = root.path("cases");
        let (envs, watched) = build(&base);
        let qt = qt_locations(&python, "RuntimeLocation", &envs);
        let qt_after: Vec<Vec<String>> = watched
            .iter()
            .map(|w| w.iter().map(|p| describe(p)).collect())
            .collect();
        let (envs, watched) = build(&base);
        for (i, env) in envs.iter().enumerate() {
            let xdg = env.vars[0].1.as_deref();
            let tmpdir = env.vars[1].1.clone();
            let ours = runtime_dir_from(xdg, euid(), || {
                format!("{}/runtime-{user}", temp_dir_from(tmpdir.as_deref(), || None))
            });
            let after: Vec<String> = watched[i].iter().map(|p| describe(p)).collect();
            let label = format!("case {i}: XDG_RUNTIME_DIR={xdg:?} TMPDIR={tmpdir:?}");
            match ours {
                Ok(dir) => assert_eq!(dir, qt[i], "{label}"),
                Err(why) => assert_eq!(qt[i], "", "{label}: ours failed: {why}"),
            }
            assert_eq!(after, qt_after[i], "{label}: side effects");
        }
    }

    #[test]
    fn missing_runtime_dir_is_made_and_create_works_end_to_end() {
        use crate::{AccessMode, SharedMemory};
        const NAME: &str = "key::tests::missing_runtime_dir_is_made_and_create_works_end_to_end";
        if in_child(NAME) {
            let key = SharedMemory::platform_safe_key("qshm-keytest-rt", KeyType::SystemV);
            println!("child: {}", key.native());
            let mut shm = SharedMemory::with_native_key(key);
            match shm.create(4096, AccessMode::ReadWrite) {
                Ok(()) => println!("child: created {} bytes", shm.size()),
                Err(e) => println!("child: {:?}: {e}", e.kind()),
            }
            return;
        }
        let dir = TestDir::new("rte2e");
        let run = dir.path("run");
        let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", &run)]);
        assert_eq!(lines[0], format!("{run}/qshm-keytest-rt"));
        assert!(lines[1].starts_with("created "), "{lines:?}");
        assert_eq!(describe(&run), format!("dir 0700 uid {}", euid()));
        // the child's segment and key file went with it
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);

        // XDG_RUNTIME_DIR unset and no <temp>/runtime-<user> yet: Qt makes the fallback
        let tmp = dir.path("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", &tmp)]);
        let user = crate::sys::os::user_name(euid()).unwrap_or_default();
        let fallback = format!("{tmp}/runtime-{user}");
        assert_eq!(lines[0], format!("{fallback}/qshm-keytest-rt"));
        assert!(lines[1].starts_with("created "), "{lines:?}");
        assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()));

        // no usable directory at all: Qt's "/<key>", a KeyError, nothing made in /
        let missing = dir.path("missing");
        let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", &missing)]);
        assert_eq!(lines[0], "/qshm-keytest-rt");
        assert!(lines[1].starts_with("KeyError: "), "{lines:?}");
        let why = format!("the fallback {missing}/runtime-");
        assert!(lines[1].contains(&why), "{lines:?}");
        assert_eq!(describe("/qshm-keytest-rt"), "missing");
        assert_eq!(describe(&missing), "missing");
    }

    #[test]
    fn every_legacy_derivation_keeps_qts_pinned_values() {
        use crate::{SharedMemory, SystemSemaphore};
        // (key, letters + SHA-1) as Qt 6.11 derives them (PyQt6, TMPDIR unset):
        // QSharedMemory/QSystemSemaphore.legacyNativeKey(key, SystemV / PosixRealtime)
        let pinned = [
            ("market", "market5c9f73af73334ffe350c60ec076e5744db0ecda3"),
            ("a", "a86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"),
            ("a/b", "ab3ec69c85a4ff96830024afeef2d4e512181c8f7b"),
            ("xxx", "xxxb60d121b438a380c343d5ec3c2037564b82ffef3"),
            ("héllo wörld", "hllowrld24e9f5c07847ff8a2a9fa77456655792f5bc7f9f"),
            ("Qt 6: ключ/😀", "Qtba816c08f3d84f166bc4a6f93e27f0b9ca0c8d6e"),
        ];
        let types = [
            (IpcType::SharedMemory, "qipc_sharedmemory_"),
            (IpcType::SystemSemaphore, "qipc_systemsem_"),
        ];
        for (key, tail) in pinned {
            for (ipc, prefix) in types {
                let posix = format!("/{prefix}{tail}");
                let sysv = format!("/tmp/{prefix}{tail}");
                let k = legacy_key_in(key, ipc, KeyType::PosixRealtime, || unreachable!());
                assert_eq!(k.native(), posix);
                assert_eq!(k.to_string(), format!("posix:{posix}?legacyKey={key}"));
                let k = legacy_key_in(key, ipc, KeyType::SystemV, || "/tmp".to_owned());
                assert_eq!(k.native(), sysv);
                assert_eq!(k.to_string(), format!("systemv:{sysv}?legacyKey={key}"));
                assert_eq!(k.legacy_key(), Some(key));
                assert!(k.check_usable().is_ok());
                // the public entry points, with this process's temporary directory
                let public = match ipc {
                    IpcType::SharedMemory => [
                        SharedMemory::legacy_native_key(key, KeyType::PosixRealtime),
                        SharedMemory::legacy_native_key(key, KeyType::SystemV),
                    ],
                    IpcType::SystemSemaphore => [
                        SystemSemaphore::legacy_native_key(key, KeyType::PosixRealtime),
                        SystemSemaphore::legacy_native_key(key, KeyType::SystemV),
                    ],
                };
                assert_eq!(public[0].native(), posix);
                assert_eq!(public[1].native(), format!("{}/{prefix}{tail}", qt_temp_dir()));
            }
        }
        // the empty key derives an empty key of the asked type, without a directory
        for (ipc, _) in types {
            for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
                let k = legacy_key_in("", ipc, kind, || unreachable!());
                assert!(k.is_empty() && k.kind() == kind && k.legacy_key().is_none());
            }
        }
    }

    #[test]
    fn legacy_derivations_match_real_qt() {
        let Some(python) = qt_python("legacy_derivations_match_real_qt") else {
            return;
        };
        let dir = TestDir::new("legacy");
        let keys = [
            "market",
            "a/b c:é%&=+#?",
            "tab\there",
            "日本語のキー",
            "MiXeD-Case_123",
            "😀 emoji",
            &"long".repeat(80),
        ];
        const SCRIPT: &str = r#"
import json, sys
from PyQt6.QtCore import QSharedMemory, QSystemSemaphore, QNativeIpcKey
T = QNativeIpcKey.Type
out = []
for key in json.loads(sys.argv[1]):
    for cls in (QSharedMemory, QSystemSemaphore):
        for t in (T.SystemV, T.PosixRealtime):
            k = cls.legacyNativeKey(key, t)
            out.append([k.nativeKey(), k.toString()])
print(json.dumps(out))
"#;
        let out = std::process::Command::new(&python)
            .args(["-c", SCRIPT, &serde_json::to_string(&keys).unwrap()])
            .env("TMPDIR", dir.path(""))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let qt: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
        let temp = temp_dir_from(Some(&dir.path("")), || None);
        let mut qt = qt.into_iter();
        for key in keys {
            for ipc in [IpcType::SharedMemory, IpcType::SystemSemaphore] {
                for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
                    let ours = legacy_key_in(key, ipc, kind, || temp.clone());
                    let (native, string) = qt.next().unwrap();
                    assert_eq!(ours.native(), native, "{key:?} {ipc:?} {kind:?}");
                    assert_eq!(ours.to_string(), string, "{key:?} {ipc:?} {kind:?}");
                }
            }
        }
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
    fn system_v_keys_with_another_ftok_id_are_clear_key_errors() {
        // Qt 6.11 parses these as System V keys with ftok id 82 ('R') and 1
        for (text, id) in [
            ("systemv-82:/tmp/x", "82 ('R')"),
            ("SystemV-082:/tmp/x", "82 ('R')"),
            ("systemv-1:/x", "1"),
        ] {
            let err = text.parse::<NativeIpcKey>().unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError);
            let scheme = text.split(':').next().unwrap().to_ascii_lowercase();
            assert_eq!(
                err.to_string(),
                format!(
                    "parse key {text:?}: not a native key string: {scheme:?} is Qt's System V key \
                     type with ftok project id {id}; qshm supports only Qt's default System V id \
                     81 ('Q')"
                )
            );
        }
        // Qt 6.11 reads systemv-81 as SystemV and prints it back as "systemv:/tmp/x"
        let k: NativeIpcKey = "systemv-81:/tmp/x".parse().unwrap();
        assert_eq!(k, NativeIpcKey::new("/tmp/x", KeyType::SystemV));
        assert_eq!(k.to_string(), "systemv:/tmp/x");
        // no key type at all for Qt 6.11
        for text in [
            "systemv-0:/x",
            "systemv-256:/x",
            "systemv+5:/x",
            "systemv-+5:/x",
            "systemv--5:/x",
            "systemvx:/x",
            "systemv-:/x",
            "systemv-8a:/x",
        ] {
            let err = text.parse::<NativeIpcKey>().unwrap_err();
            assert!(err.to_string().contains("unknown key type"), "{err}");
        }
        let err = "windows:x".parse::<NativeIpcKey>().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("Qt's \"windows\" keys do not exist on Linux"),
            "{err}"
        );
    }

    #[test]
    fn key_types_are_parsed_like_real_qt() {
        let Some(python) = qt_python("key_types_are_parsed_like_real_qt") else {
            return;
        };
        let mut texts: Vec<String> = [
            "systemv",
            "posix",
            "windows",
            "SYSTEMV",
            "Posix",
            "systemvx",
            "systemv-",
            "systemv+5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [
            "0",
            "1",
            "81",
            "081",
            "82",
            "255",
            "256",
            "-5",
            "+5",
            "8a",
            "99999999999",
        ] {
            texts.push(format!("systemv-{n}"));
        }
        let texts: Vec<String> = texts.into_iter().map(|t| format!("{t}:/tmp/x")).collect();
        const SCRIPT: &str = r#"
import json, sys
from PyQt6.QtCore import QNativeIpcKey
out = []
for text in json.loads(sys.argv[1]):
    k = QNativeIpcKey.fromString(text)
    out.append(k.type().value if k.isValid() else 0)
print(json.dumps(out))
"#;
        let out = std::process::Command::new(&python)
            .args(["-c", SCRIPT, &serde_json::to_string(&texts).unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let qt_types: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        for (text, qt) in texts.iter().zip(qt_types) {
            let ours = text.parse::<NativeIpcKey>();
            let why = ours.as_ref().err().map(ToString::to_string).unwrap_or_default();
            match qt {
                0 => assert!(
                    why.contains("unknown key type"),
                    "{text}: Qt: invalid; ours: {ours:?}"
                ),
                0x51 => assert_eq!(ours.unwrap().kind(), KeyType::SystemV, "{text}"),
                0x100 => assert_eq!(ours.unwrap().kind(), KeyType::PosixRealtime, "{text}"),
                0x101 => assert!(why.contains("windows"), "{text}: {why}"),
                id => assert!(
                    why.contains(&format!("ftok project id {id}")),
                    "{text}: Qt: {id}; ours: {why}"
                ),
            }
        }
    }

    #[test]
    fn an_empty_legacy_key_round_trips_as_none() {
        // found by fuzz/fuzz_targets/native_key_parser (fuzz/regressions/native_key_parser)
        for text in [
            "posix:?legacyKey",
            "posix:/x?legacyKey=",
            "systemv:/tmp/x?legacyKey=",
        ] {
            let key: NativeIpcKey = text.parse().unwrap();
            assert_eq!(key.legacy_key(), None, "{text}");
            let back: NativeIpcKey = key.to_string().parse().unwrap();
            assert_eq!(back, key, "{text}");
        }
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
