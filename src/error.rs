//! One error type for every operation, carrying Qt's error category.

use std::fmt;
use std::io;

/// Qt's `QSharedMemory::SharedMemoryError`, with the same variants and meanings.
///
/// [`Error::kind`] never returns [`NoError`](SharedMemoryError::NoError); that value
/// only appears in [`SharedMemory::error`](crate::SharedMemory::error), the Qt-style
/// "last error" accessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[doc(alias = "QSharedMemory::SharedMemoryError")]
pub enum SharedMemoryError {
    /// No error occurred.
    NoError,
    /// The caller lacks the permissions the operation needs.
    PermissionDenied,
    /// A create operation failed because the requested size was invalid.
    InvalidSize,
    /// The operation failed because of an invalid (or empty) key.
    KeyError,
    /// A create operation failed because a segment with this key already exists.
    AlreadyExists,
    /// An attach (or lookup) failed because no segment with this key exists.
    NotFound,
    /// Locking failed: not attached, or the lock primitive reported a system error.
    LockError,
    /// Not enough memory or system resources to fill the request.
    OutOfResources,
    /// Something else happened, and it was bad.
    UnknownError,
    /// qshm only (no Qt equivalent): the other side of a message queue ([`Producer`](crate::Producer), [`Consumer`](crate::Consumer))
    /// is gone — it died (its process slot's byte lock is gone) or left — and the queue
    /// is drained. A new peer may take its place: the queue is reusable.
    Disconnected,
    /// qshm only (no Qt equivalent): the shared words of a frame channel or message
    /// queue contradict what qshm writes there — a user who may write the segment
    /// garbled them, the segment holds something else, or (frames) a writer kept
    /// overwriting the frame while it was being copied for longer than a reader waits.
    /// Nothing was read out of bounds; recreate the segment to start afresh.
    Inconsistent,
}

impl SharedMemoryError {
    /// Short lowercase description, used in [`Error`]'s `Display`.
    pub fn describe(self) -> &'static str {
        match self {
            SharedMemoryError::NoError => "no error",
            SharedMemoryError::PermissionDenied => "permission denied",
            SharedMemoryError::InvalidSize => "invalid size",
            SharedMemoryError::KeyError => "invalid key",
            SharedMemoryError::AlreadyExists => "already exists",
            SharedMemoryError::NotFound => "doesn't exist",
            SharedMemoryError::LockError => "lock error",
            SharedMemoryError::OutOfResources => "out of resources",
            SharedMemoryError::UnknownError => "unknown error",
            SharedMemoryError::Disconnected => "the peer is gone",
            SharedMemoryError::Inconsistent => "inconsistent shared words",
        }
    }

    /// The category an OS error number falls into (as Qt's `setUnixErrorString`).
    pub(crate) fn from_errno(errno: i32) -> SharedMemoryError {
        match errno {
            libc::EACCES | libc::EPERM | libc::EROFS => SharedMemoryError::PermissionDenied,
            libc::EEXIST => SharedMemoryError::AlreadyExists,
            libc::ENOENT | libc::EIDRM => SharedMemoryError::NotFound,
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOSPC | libc::ERANGE => {
                SharedMemoryError::OutOfResources
            }
            libc::ENAMETOOLONG => SharedMemoryError::KeyError,
            _ => SharedMemoryError::UnknownError,
        }
    }
}

/// The error of every fallible qshm operation.
///
/// It names the operation and the key it was for, keeps the OS error when there was
/// one ([`os_error`](Error::os_error)), and maps to Qt's [`SharedMemoryError`] category
/// through [`kind`](Error::kind). `Display` is one line that says it all, OS error
/// included, like `create "market": already exists` or
/// `attach "market": doesn't exist (No such file or directory (os error 2))`; so
/// [`source`](std::error::Error::source) is `None`, and an error chain (anyhow, eyre)
/// prints the OS error once. `Debug` (what `main` prints when it returns the error)
/// adds the category: `attach "market": doesn't exist (...) [NotFound]`.
///
/// ```
/// use qshm::{AccessMode, SharedMemory, SharedMemoryError};
/// let err = SharedMemory::new("qshm-doc-no-such-key").attach(AccessMode::ReadOnly).unwrap_err();
/// assert_eq!(err.kind(), SharedMemoryError::NotFound);
/// assert!(err.to_string().starts_with(r#"attach "qshm-doc-no-such-key": "#));
/// assert!(format!("{err:?}").ends_with("[NotFound]"));
/// ```
pub struct Error(Box<ErrorInner>);

/// Boxed so that `Result<T, Error>` stays one pointer wider than `T` on hot paths.
struct ErrorInner {
    kind: SharedMemoryError,
    op: &'static str,
    key: String,
    detail: Option<String>,
    os: Option<io::Error>,
    size_mismatch: Option<SizeMismatch>,
}

/// The two sizes of an [`open_or_create`](crate::SharedMemory::open_or_create) that found
/// the key's segment with another size than it asked for ([`Error::size_mismatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SizeMismatch {
    /// The size the call asked for.
    pub asked: usize,
    /// The size of the segment the key names: exactly what its creator asked for.
    pub found: usize,
}

impl Error {
    /// An error of `kind` in operation `op` on `key`, with an optional explanation.
    #[cold]
    pub(crate) fn new(kind: SharedMemoryError, op: &'static str, key: &str) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            op,
            key: key.to_owned(),
            detail: None,
            os: None,
            size_mismatch: None,
        }))
    }

    /// An error built from an OS error; the category follows the errno.
    pub(crate) fn os(op: &'static str, key: &str, err: io::Error) -> Error {
        let kind = SharedMemoryError::from_errno(err.raw_os_error().unwrap_or(0));
        Error::new(kind, op, key).with_os(err)
    }

    /// The error of operation `op` on `key` that `failure` describes.
    #[cold]
    pub(crate) fn from_failure(op: &'static str, key: &str, failure: Failure) -> Error {
        let mut error = Error::new(failure.kind, op, key);
        error.0.detail = failure.detail;
        error.0.os = failure.os;
        error
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Error {
        self.0.detail = Some(detail.into());
        self
    }

    pub(crate) fn with_os(mut self, err: io::Error) -> Error {
        self.0.os = Some(err);
        self
    }

    pub(crate) fn with_size_mismatch(mut self, sizes: SizeMismatch) -> Error {
        self.0.size_mismatch = Some(sizes);
        self
    }

    /// Qt's error category.
    pub fn kind(&self) -> SharedMemoryError {
        self.0.kind
    }

    /// The operation that failed, e.g. `"create"`, `"attach"`, `"lock"`.
    pub fn operation(&self) -> &'static str {
        self.0.op
    }

    /// The key (legacy key when there is one, else the native key) it failed for.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The OS error behind this error, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.0.os.as_ref()
    }

    /// Both sizes, when an [`open_or_create`](crate::SharedMemory::open_or_create) found
    /// the key's segment with another size than it asked for (an
    /// [`InvalidSize`](SharedMemoryError::InvalidSize) error, whose message names them too).
    pub fn size_mismatch(&self) -> Option<SizeMismatch> {
        self.0.size_mismatch
    }
}

/// Keys and words of details up to this many characters are shown whole by `Display`:
/// `PATH_MAX`, so every path the kernel could take is shown whole (a newcomer needs the
/// whole path to act on an error); only absurd keys (a megabyte of key text) are cut.
const LONGEST_SHOWN: usize = libc::PATH_MAX as usize;
/// How many characters of a longer one are shown.
const SHOWN: usize = 60;

/// The first [`SHOWN`] characters of `text` and its length in characters, when it has
/// more than [`LONGEST_SHOWN`].
fn shortened(text: &str) -> Option<(&str, usize)> {
    let (end, _) = text.char_indices().nth(LONGEST_SHOWN)?;
    let head_end = text.char_indices().nth(SHOWN).map_or(end, |(i, _)| i);
    let count = LONGEST_SHOWN + text[end..].chars().count();
    Some((&text[..head_end], count))
}

impl fmt::Display for Error {
    /// `op "key": detail (os error)` on one line. Keys and paths are shown whole; only a
    /// key or a word of the detail longer than `PATH_MAX` (4096) characters, which no
    /// path can be, shows its first 60, `…` and its length, e.g.
    /// `create "xxx…xxx"… (100000 characters): ...`, so that a huge key still gives a
    /// short line. [`Error::key`] keeps the whole key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        match shortened(&e.key) {
            None => write!(f, "{} {:?}: ", e.op, e.key)?,
            Some((head, count)) => write!(f, "{} {head:?}… ({count} characters): ", e.op)?,
        }
        match &e.detail {
            Some(detail) => {
                for (i, word) in detail.split(' ').enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    match shortened(word) {
                        None => f.write_str(word)?,
                        Some((head, count)) => write!(f, "{head}… ({count} characters)")?,
                    }
                }
            }
            None => f.write_str(e.kind.describe())?,
        }
        if let Some(os) = &e.os {
            write!(f, " ({os})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    /// The `Display` line and the category (`{:#?}`: every field).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            let e = &self.0;
            f.debug_struct("Error")
                .field("kind", &e.kind)
                .field("operation", &e.op)
                .field("key", &e.key)
                .field("detail", &e.detail)
                .field("os", &e.os)
                .field("size_mismatch", &e.size_mismatch)
                .finish()
        } else {
            write!(f, "{self} [{:?}]", self.0.kind)
        }
    }
}

/// The OS error is part of the `Display` line, so `source` is `None` (see [`Error`]).
impl std::error::Error for Error {}

/// Qt-style "last error" of a handle (`error()`, `errorString()`), kept beside the
/// `Result`s. The success path only reads one atomic flag; the mutex is touched when an
/// error is recorded or cleared.
#[derive(Default)]
pub(crate) struct LastError {
    set: std::sync::atomic::AtomicBool,
    error: std::sync::Mutex<Option<(SharedMemoryError, String)>>,
}

impl LastError {
    /// The last error's category and text, `None` after a success.
    pub(crate) fn get(&self) -> Option<(SharedMemoryError, String)> {
        if !self.set.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Record the outcome of a call: its error, or none.
    #[inline]
    pub(crate) fn record<T>(&self, result: &Result<T>) {
        // The success path (every lock and unlock) costs one relaxed load.
        if result.is_err() || self.set.load(std::sync::atomic::Ordering::Relaxed) {
            self.record_slow(result.as_ref().err());
        }
    }

    #[cold]
    fn record_slow(&self, error: Option<&Error>) {
        if let Ok(mut last) = self.error.lock() {
            let entry = error.map(|e| (e.kind(), e.to_string()));
            self.set
                .store(entry.is_some(), std::sync::atomic::Ordering::Relaxed);
            *last = entry;
        }
    }
}

/// A failure inside the library, before it is tied to an operation and a key: the
/// backends return it, the facade turns it into an [`Error`] once ([`Error::from_failure`]).
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: SharedMemoryError,
    pub detail: Option<String>,
    pub os: Option<io::Error>,
}

impl Failure {
    /// A failure of category `kind`.
    #[cold]
    pub(crate) fn new(kind: SharedMemoryError) -> Failure {
        Failure {
            kind,
            detail: None,
            os: None,
        }
    }

    /// A failure of category `kind`, explained.
    #[cold]
    pub(crate) fn because(kind: SharedMemoryError, detail: impl Into<String>) -> Failure {
        Failure::new(kind).with_detail(detail)
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn with_kind(mut self, kind: SharedMemoryError) -> Failure {
        self.kind = kind;
        self
    }

    pub(crate) fn with_os(mut self, err: io::Error) -> Failure {
        self.os = Some(err);
        self
    }
}

impl From<io::Error> for Failure {
    /// The category follows the errno (a bounded wait that ran out is a `LockError`).
    #[cold]
    fn from(err: io::Error) -> Failure {
        let kind = if err.kind() == io::ErrorKind::TimedOut {
            SharedMemoryError::LockError
        } else {
            SharedMemoryError::from_errno(err.raw_os_error().unwrap_or(0))
        };
        Failure {
            kind,
            detail: None,
            os: Some(err),
        }
    }
}

/// `Result` with qshm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_key_and_cause() {
        let e = Error::new(SharedMemoryError::AlreadyExists, "create", "market");
        assert_eq!(e.to_string(), r#"create "market": already exists"#);
        let e = Error::os("attach", "k", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.kind(), SharedMemoryError::NotFound);
        assert!(e.to_string().starts_with(r#"attach "k": doesn't exist ("#));
        assert!(
            std::error::Error::source(&e).is_none(),
            "the OS error is printed once, in Display"
        );
        assert!(e.os_error().is_some());
        assert_eq!(format!("{e:?}"), format!("{e} [NotFound]"));
        assert!(format!("{e:#?}").contains("kind: NotFound"));
    }

    #[test]
    fn long_keys_and_words_are_shortened_in_display_only() {
        let key = "k".repeat(100_000);
        let e = Error::new(SharedMemoryError::KeyError, "create", &key)
            .with_detail(format!("unable to make key file /tmp/{key}"));
        assert_eq!(e.key(), key, "the whole key stays available");
        let head = "k".repeat(60);
        let tail = "k".repeat(55);
        assert_eq!(
            e.to_string(),
            format!(
                "create \"{head}\"… (100000 characters): unable to make key file \
                 /tmp/{tail}… (100005 characters)"
            )
        );
        // up to PATH_MAX characters are shown whole; characters, not bytes, are counted
        let whole = "é".repeat(4096);
        let e = Error::new(SharedMemoryError::KeyError, "attach", &whole);
        assert_eq!(e.to_string(), format!("attach \"{whole}\": invalid key"));
        let long = "é".repeat(4097);
        let e = Error::new(SharedMemoryError::NotFound, "attach", &long)
            .with_os(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(
            e.to_string().starts_with(&format!(
                "attach \"{}\"… (4097 characters): doesn't exist (",
                "é".repeat(60)
            )),
            "{e}"
        );
    }

    #[test]
    fn long_paths_are_shown_whole() {
        // a TMPDIR of 100 characters makes key files of about 170: an error must name
        // the whole path, which is what the user has to look at or fix
        let dir = format!("/tmp/{}", "d".repeat(95));
        let path = format!("{dir}/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3");
        let e = Error::new(SharedMemoryError::PermissionDenied, "create", "market")
            .with_detail(format!("cannot make the key file {path}"));
        assert_eq!(
            e.to_string(),
            format!("create \"market\": cannot make the key file {path}")
        );
    }

    #[test]
    fn a_huge_key_gives_a_short_error_line() {
        use crate::{AccessMode, KeyType, SharedMemory};
        let key = "x".repeat(100_000);
        for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
            let err = SharedMemory::with_key_type(&key, kind)
                .create(4096, AccessMode::ReadWrite)
                .unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
            assert!(
                err.to_string().len() < 400,
                "{kind:?}: {} bytes: {err}",
                err.to_string().len()
            );
            assert_eq!(err.key(), key);
        }
    }

    #[test]
    fn errno_categories_follow_qt() {
        use SharedMemoryError::*;
        let cases = [
            (libc::EACCES, PermissionDenied),
            (libc::EEXIST, AlreadyExists),
            (libc::ENOENT, NotFound),
            (libc::ENOMEM, OutOfResources),
            (libc::ENOSPC, OutOfResources),
            (libc::EMFILE, OutOfResources),
            (libc::ENAMETOOLONG, KeyError),
            (libc::EIO, UnknownError),
        ];
        for (errno, kind) in cases {
            assert_eq!(SharedMemoryError::from_errno(errno), kind, "errno {errno}");
        }
    }
}
