//! The library's `qshm::Error` as the Python exceptions of `qshm/_errors.py`: one class per
//! Qt `SharedMemoryError` category, with the library's one-line message, the operation, the
//! key, and the OS error number where the category has one.

use pyo3::exceptions::{PyBufferError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use qshm::SharedMemoryError;

/// `qshm._errors`, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("qshm._errors").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// The exception class of a category, and the errno it stands for when the OS gave none
/// (`None`: the class is no `OSError`, or the category has no single errno).
fn class_of(kind: SharedMemoryError) -> (&'static str, Option<i32>) {
    match kind {
        SharedMemoryError::PermissionDenied => ("PermissionDenied", Some(libc_errno::EACCES)),
        SharedMemoryError::InvalidSize => ("InvalidSize", None),
        SharedMemoryError::KeyError => ("InvalidKey", None),
        SharedMemoryError::AlreadyExists => ("AlreadyExists", Some(libc_errno::EEXIST)),
        SharedMemoryError::NotFound => ("NotFound", Some(libc_errno::ENOENT)),
        SharedMemoryError::LockError => ("LockError", None),
        SharedMemoryError::OutOfResources => ("OutOfResources", Some(libc_errno::ENOMEM)),
        _ => ("UnknownError", None),
    }
}

/// The errno values used above (Linux), without a libc dependency for three numbers.
mod libc_errno {
    pub(super) const ENOENT: i32 = 2;
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EEXIST: i32 = 17;
}

/// A `qshm` exception of class `name` with `message`, `operation` and `key` set.
fn exception<'py>(
    py: Python<'py>,
    name: &str,
    message: &str,
    operation: &str,
    key: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let class = errors_module(py)?.getattr(name)?;
    let exc = class.call1((message,))?;
    exc.setattr("operation", operation)?;
    exc.setattr("key", key)?;
    Ok(exc)
}

/// The Python exception for a library error.
pub(crate) fn to_py(err: qshm::Error) -> PyErr {
    Python::attach(|py| match raise_value(py, &err) {
        Ok(exc) => PyErr::from_value(exc),
        Err(failed) => failed,
    })
}

fn raise_value<'py>(py: Python<'py>, err: &qshm::Error) -> PyResult<Bound<'py, PyAny>> {
    let (name, errno) = class_of(err.kind());
    let exc = exception(py, name, &err.to_string(), err.operation(), err.key())?;
    let os = err.os_error();
    let is_os_error = !matches!(name, "InvalidSize" | "InvalidKey");
    if is_os_error {
        if let Some(n) = os.and_then(std::io::Error::raw_os_error).or(errno) {
            exc.setattr("errno", n)?;
            exc.setattr("strerror", std::io::Error::from_raw_os_error(n).to_string())?;
        } else if let Some(os) = os {
            exc.setattr("strerror", os.to_string())?;
        }
    }
    Ok(exc)
}

/// A `qshm` exception made here rather than by the library (this layer's own checks).
pub(crate) fn own(kind: SharedMemoryError, operation: &str, key: &str, detail: &str) -> PyErr {
    Python::attach(|py| {
        let (name, _) = class_of(kind);
        let message = format!("{operation} {key:?}: {detail}");
        match exception(py, name, &message, operation, key) {
            Ok(exc) => PyErr::from_value(exc),
            Err(failed) => failed,
        }
    })
}

/// `BufferError` (Python's own, as `mmap.close()` raises with views alive).
pub(crate) fn buffer_error(operation: &str, key: &str, detail: &str) -> PyErr {
    PyBufferError::new_err(format!("{operation} {key:?}: {detail}"))
}

/// `TimeoutError` (Python's own): a lock or semaphore not obtained in time.
pub(crate) fn timed_out(operation: &str, key: &str, seconds: f64) -> PyErr {
    PyTimeoutError::new_err(format!("{operation} {key:?}: not obtained within {seconds} s"))
}
