//! Qt's temporary and runtime directories, as `QStandardPaths` on Linux computes them
//! (Qt 6.11), for System V key files.

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
pub(super) fn decode_env(value: &std::ffi::OsStr) -> String {
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
/// Symbolic links are not resolved and the directory need not exist: Qt 6 uses the
/// string as it is, and so does qshm.
///
/// Qt 5.15 differs (`QDir::tempPath()` is canonical there): it resolves symbolic links
/// (`TMPDIR=/tmp/link` gives `/tmp/real`), and for a `$TMPDIR` that does not exist, or a
/// relative one, it uses `""`, so its key files go to `/`. The first meets qshm anyway:
/// both paths name one key file, and `ftok` keys the file, not the path (tested with real
/// Qt 5.15 in `tests/qt_versions.rs`). The second qshm refuses on purpose: it would make
/// key files in `/` for any user whose `TMPDIR` is wrong; a missing directory is a
/// `KeyError` naming it ([`NativeIpcKey::check_usable`](super::NativeIpcKey)), and a Qt 5
/// program in that state is met only by giving qshm its native key (`/qipc_…`) as such.
pub(super) fn temp_dir_from(tmpdir: Option<&str>, cwd: impl FnOnce() -> Option<String>) -> String {
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
pub(super) fn is_clean(path: &str) -> bool {
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
        let user = crate::os::user_name(uid).unwrap_or_default();
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
pub(super) fn runtime_dir_from(
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
pub(super) fn check_runtime_dir(dir: &str, uid: u32) -> std::result::Result<(), String> {
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
pub(super) fn clean_path(path: &str) -> String {
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
