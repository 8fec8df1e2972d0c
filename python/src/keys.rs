//! Keys and modes: `NativeIpcKey` (Qt's `QNativeIpcKey`) and the enums `KeyType`,
//! `LockMode`, `SemaphoreMode`. Arguments take an enum member or its name as a string.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors;

/// Which operating-system API a native key names (Qt's ``QNativeIpcKey.Type``).
///
/// Arguments also take the strings ``"systemv"`` and ``"posix"``.
#[pyclass(eq, eq_int, frozen, hash, module = "qshm")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyType {
    /// System V IPC (``shmget``/``semget``): the native key is a file path. Legacy string
    /// keys use it, as in Qt.
    SystemV,
    /// POSIX IPC (``shm_open``/``sem_open``): the native key is a name like ``/name``.
    PosixRealtime,
}

impl From<KeyType> for qshm::KeyType {
    fn from(kind: KeyType) -> qshm::KeyType {
        match kind {
            KeyType::SystemV => qshm::KeyType::SystemV,
            KeyType::PosixRealtime => qshm::KeyType::PosixRealtime,
        }
    }
}

impl From<qshm::KeyType> for KeyType {
    /// Every System V type is `KeyType.SystemV` here, whatever its `ftok` project id
    /// (Qt's ``QNativeIpcKey.Type(id)``): ``NativeIpcKey.ftok_project_id`` tells which.
    fn from(kind: qshm::KeyType) -> KeyType {
        match kind {
            qshm::KeyType::PosixRealtime => KeyType::PosixRealtime,
            _ => KeyType::SystemV,
        }
    }
}

/// Which lock a segment's ``lock()`` takes; chosen by its creator, adopted by attachers.
///
/// Arguments also take the strings ``"qt"`` and ``"fast"``.
#[pyclass(eq, eq_int, frozen, hash, module = "qshm")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LockMode {
    /// The semaphore Qt's ``QSharedMemory::lock()`` takes: Qt programs are excluded too.
    QtCompatible,
    /// qshm's own lock, without a system call when uncontended; only qshm programs
    /// (Rust or Python) see it.
    Fast,
}

impl From<LockMode> for qshm::LockMode {
    fn from(mode: LockMode) -> qshm::LockMode {
        match mode {
            LockMode::QtCompatible => qshm::LockMode::QtCompatible,
            LockMode::Fast => qshm::LockMode::Fast,
        }
    }
}

impl From<qshm::LockMode> for LockMode {
    fn from(mode: qshm::LockMode) -> LockMode {
        match mode {
            qshm::LockMode::QtCompatible => LockMode::QtCompatible,
            qshm::LockMode::Fast => LockMode::Fast,
        }
    }
}

/// How a ``SystemSemaphore`` is opened (Qt's ``QSystemSemaphore.AccessMode``).
///
/// Arguments also take the strings ``"open"`` and ``"create"``.
#[pyclass(eq, eq_int, frozen, hash, module = "qshm")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SemaphoreMode {
    /// Use the semaphore as it is; make it with the initial value only if it does not exist.
    Open,
    /// Take ownership: set it to the initial value even if it survived a crash; this
    /// handle removes it when it is closed.
    Create,
}

impl From<SemaphoreMode> for qshm::SemaphoreMode {
    fn from(mode: SemaphoreMode) -> qshm::SemaphoreMode {
        match mode {
            SemaphoreMode::Open => qshm::SemaphoreMode::Open,
            SemaphoreMode::Create => qshm::SemaphoreMode::Create,
        }
    }
}

/// A `KeyType` member or its name.
pub(crate) fn key_type_arg(value: &Bound<'_, PyAny>) -> PyResult<qshm::KeyType> {
    if let Ok(kind) = value.cast::<KeyType>() {
        return Ok((*kind.get()).into());
    }
    let text = enum_text(value, "type", "KeyType")?;
    text.parse().map_err(errors::to_py)
}

/// A `LockMode` member or its name.
pub(crate) fn lock_mode_arg(value: &Bound<'_, PyAny>) -> PyResult<qshm::LockMode> {
    if let Ok(mode) = value.cast::<LockMode>() {
        return Ok((*mode.get()).into());
    }
    match enum_text(value, "lock_mode", "LockMode")?.as_str() {
        "qt" | "qtcompatible" | "qt-compatible" => Ok(qshm::LockMode::QtCompatible),
        "fast" => Ok(qshm::LockMode::Fast),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "lock_mode {other:?}: expected LockMode.QtCompatible, LockMode.Fast, \"qt\" or \"fast\""
        ))),
    }
}

/// A `SemaphoreMode` member or its name.
pub(crate) fn semaphore_mode_arg(value: &Bound<'_, PyAny>) -> PyResult<qshm::SemaphoreMode> {
    if let Ok(mode) = value.cast::<SemaphoreMode>() {
        return Ok((*mode.get()).into());
    }
    match enum_text(value, "mode", "SemaphoreMode")?.as_str() {
        "open" => Ok(qshm::SemaphoreMode::Open),
        "create" => Ok(qshm::SemaphoreMode::Create),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "mode {other:?}: expected SemaphoreMode.Open, SemaphoreMode.Create, \"open\" or \"create\""
        ))),
    }
}

/// The lower-cased string of an enum argument, or a `TypeError` naming what it takes.
fn enum_text(value: &Bound<'_, PyAny>, arg: &str, class: &str) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_ascii_lowercase()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{arg} must be a qshm.{class} or a string, not {}",
            value.get_type().name()?
        ))),
    }
}

/// A native key and its type: what the OS uses to find a segment or semaphore (Qt's
/// ``QNativeIpcKey``).
///
/// ``NativeIpcKey("/name")`` is a POSIX key used as is (Qt's default type on Linux);
/// ``NativeIpcKey("/tmp/file", KeyType.SystemV)`` a System V one. ``str(key)`` is Qt's
/// string form (``QNativeIpcKey::toString``, e.g. ``posix:/name``), which
/// ``NativeIpcKey.from_string`` reads back, as Qt's ``fromString`` does. Keys derived from
/// a legacy key (``SharedMemory.legacy_native_key``) remember it in ``legacy_key``.
#[pyclass(frozen, module = "qshm")]
#[derive(Clone)]
pub(crate) struct NativeIpcKey {
    pub(crate) key: qshm::NativeIpcKey,
}

#[pymethods]
impl NativeIpcKey {
    #[new]
    #[pyo3(signature = (native, r#type = None))]
    fn new(native: String, r#type: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let kind = match r#type {
            Some(kind) => key_type_arg(kind)?,
            None => qshm::KeyType::default_for_os(),
        };
        Ok(NativeIpcKey {
            key: qshm::NativeIpcKey::new(native, kind),
        })
    }

    /// Read Qt's string form (``QNativeIpcKey::fromString``); ``InvalidKey`` if it is not one.
    #[staticmethod]
    fn from_string(text: &str) -> PyResult<Self> {
        let key = text.parse().map_err(errors::to_py)?;
        Ok(NativeIpcKey { key })
    }

    /// The native key: a file path (System V) or a ``/name`` (POSIX).
    #[getter]
    fn native(&self) -> &str {
        self.key.native()
    }

    /// The key type.
    #[getter]
    fn r#type(&self) -> KeyType {
        self.key.kind().into()
    }

    /// The ``ftok`` project id of a System V key (81, ``'Q'``, unless its string form
    /// says ``systemv-N:``), or ``None`` for a POSIX key.
    #[getter]
    fn ftok_project_id(&self) -> Option<u8> {
        self.key.kind().ftok_project_id()
    }

    /// The legacy key this native key was derived from, or ``None``.
    #[getter]
    fn legacy_key(&self) -> Option<&str> {
        self.key.legacy_key()
    }

    /// Qt's string form (``QNativeIpcKey::toString``), as ``str(key)``.
    #[pyo3(name = "to_string")]
    fn qt_string(&self) -> String {
        self.key.to_string()
    }

    fn __str__(&self) -> String {
        self.key.to_string()
    }

    fn __repr__(&self) -> String {
        format!("qshm.NativeIpcKey.from_string({:?})", self.key.to_string())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<NativeIpcKey>()
            .is_ok_and(|o| o.get().key == self.key)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.key.hash(&mut hasher);
        hasher.finish()
    }

    /// Pickled as its string form.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let from_string = slf.get_type().getattr("from_string")?;
        Ok((from_string, (slf.get().key.to_string(),)))
    }
}

/// The key a library error names for `key` (its legacy key, else its native key).
pub(crate) fn display_name(key: &qshm::NativeIpcKey) -> &str {
    key.legacy_key().unwrap_or(key.native())
}

/// `TypeError` unless `value` is a `str` or a `NativeIpcKey`.
pub(crate) fn key_arg(value: &Bound<'_, PyAny>) -> PyResult<KeyArg> {
    if let Ok(key) = value.cast::<NativeIpcKey>() {
        return Ok(KeyArg::Native(key.get().key.clone()));
    }
    match value.cast::<PyString>() {
        Ok(text) => Ok(KeyArg::Legacy(text.to_str()?.to_owned())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "key must be a str (a legacy key, as QSharedMemory(key)) or a qshm.NativeIpcKey, not {}",
            value.get_type().name()?
        ))),
    }
}

/// A key argument: legacy (a string, from which Qt derives the native key) or native.
pub(crate) enum KeyArg {
    Legacy(String),
    Native(qshm::NativeIpcKey),
}
