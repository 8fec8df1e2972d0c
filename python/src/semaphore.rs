//! `SystemSemaphore`: the library's `qshm::SystemSemaphore` (Qt's `QSystemSemaphore`).

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors;
use crate::keys::{self, KeyArg, NativeIpcKey};
use crate::wait;

/// A counting semaphore shared between processes, keyed like Qt's ``QSystemSemaphore``:
/// the same key gives the same semaphore as in a Qt program.
///
/// ``SystemSemaphore(key, initial=0, mode=SemaphoreMode.Open)`` takes a legacy key
/// (System V, as Qt); ``SystemSemaphore.native(name, ...)`` a native key. The handle that
/// created the semaphore (or opened it with ``SemaphoreMode.Create``) removes it from the
/// system when it is closed or garbage-collected, as in Qt. System V units a process took
/// are given back by the kernel if it dies; POSIX ones are not.
///
/// ``with sem:`` acquires a unit and releases it at the end of the block, as
/// ``threading.Semaphore`` does.
#[pyclass(frozen, module = "qshm")]
pub(crate) struct SystemSemaphore {
    /// `None` once closed or removed.
    slot: Mutex<Option<Arc<qshm::SystemSemaphore>>>,
    key: qshm::NativeIpcKey,
}

fn opened(
    py: Python<'_>,
    key: qshm::NativeIpcKey,
    initial: u32,
    mode: Option<&Bound<'_, PyAny>>,
) -> PyResult<SystemSemaphore> {
    let mode = match mode {
        Some(mode) => keys::semaphore_mode_arg(mode)?,
        None => qshm::SemaphoreMode::Open,
    };
    let for_open = key.clone();
    let sem = py
        .detach(|| qshm::SystemSemaphore::with_native_key(for_open, initial, mode))
        .map_err(errors::to_py)?;
    Ok(SystemSemaphore {
        slot: Mutex::new(Some(Arc::new(sem))),
        key,
    })
}

impl SystemSemaphore {
    fn slot(&self) -> MutexGuard<'_, Option<Arc<qshm::SystemSemaphore>>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, op: &str) -> PyResult<Arc<qshm::SystemSemaphore>> {
        self.slot().clone().ok_or_else(|| {
            PyValueError::new_err(format!(
                "{op} {:?}: this SystemSemaphore was closed",
                keys::display_name(&self.key)
            ))
        })
    }
}

#[pymethods]
impl SystemSemaphore {
    #[new]
    #[pyo3(signature = (key, initial = 0, mode = None, *, r#type = None))]
    fn new(
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        initial: u32,
        mode: Option<&Bound<'_, PyAny>>,
        r#type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let key = match (keys::key_arg(key)?, r#type) {
            (KeyArg::Legacy(key), kind) => {
                let kind = match kind {
                    Some(kind) => keys::key_type_arg(kind)?,
                    None => qshm::KeyType::legacy_default(),
                };
                qshm::SystemSemaphore::legacy_native_key(&key, kind)
            }
            (KeyArg::Native(key), None) => key,
            (KeyArg::Native(_), Some(_)) => {
                return Err(PyTypeError::new_err(
                    "type= is for legacy (string) keys: a NativeIpcKey carries its own type",
                ));
            }
        };
        opened(py, key, initial, mode)
    }

    /// A semaphore of a native key used as is (POSIX ``/name`` unless ``type`` says
    /// otherwise), or of a ``NativeIpcKey``.
    #[classmethod]
    #[pyo3(signature = (native, initial = 0, mode = None, *, r#type = None))]
    fn native(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        native: &Bound<'_, PyAny>,
        initial: u32,
        mode: Option<&Bound<'_, PyAny>>,
        r#type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let key = match keys::key_arg(native)? {
            KeyArg::Native(key) if r#type.is_none() => key,
            KeyArg::Native(_) => {
                return Err(PyTypeError::new_err("type= is for a native key given as a str"));
            }
            KeyArg::Legacy(text) => {
                let kind = match r#type {
                    Some(kind) => keys::key_type_arg(kind)?,
                    None => qshm::KeyType::default_for_os(),
                };
                qshm::NativeIpcKey::new(text, kind)
            }
        };
        opened(py, key, initial, mode)
    }

    /// Take one unit: wait as long as it takes (``timeout=None``) or at most ``timeout``
    /// seconds, with the GIL released. True when taken, False on timeout.
    #[pyo3(signature = (timeout = None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let wait = wait::timeout_arg(timeout)?;
        let sem = self.open("acquire")?;
        let taken = wait::in_slices(py, wait, |slice| {
            sem.acquire_timeout(slice).map(|ok| ok.then_some(()))
        })?;
        Ok(taken.is_some())
    }

    /// Take one unit if one is free now; never waits.
    fn try_acquire(&self) -> PyResult<bool> {
        self.open("acquire")?.try_acquire().map_err(errors::to_py)
    }

    /// Give back ``n`` units (0 does nothing).
    #[pyo3(signature = (n = 1))]
    fn release(&self, n: i64) -> PyResult<()> {
        let n = u32::try_from(n).map_err(|_| {
            PyValueError::new_err(format!(
                "n must be a number of units from 0 to {}, not {n}",
                u32::MAX
            ))
        })?;
        self.open("release")?.release(n).map_err(errors::to_py)
    }

    /// The current count.
    fn value(&self) -> PyResult<i32> {
        self.open("value")?.value().map_err(errors::to_py)
    }

    /// Remove the semaphore from the system now (whoever created it), and close this
    /// handle. ``LockError`` while another thread waits on it.
    fn remove(&self) -> PyResult<()> {
        let Some(sem) = self.slot().take() else {
            return Ok(());
        };
        match Arc::try_unwrap(sem) {
            Ok(sem) => sem.remove().map_err(errors::to_py),
            Err(sem) => {
                *self.slot() = Some(sem);
                Err(errors::own(
                    qshm::SharedMemoryError::LockError,
                    "remove",
                    keys::display_name(&self.key),
                    "another thread waits on this semaphore",
                ))
            }
        }
    }

    /// Close this handle (the creator's close removes the semaphore, as in Qt).
    fn close(&self) {
        let sem = self.slot().take();
        drop(sem);
    }

    /// The legacy key, or ``None`` for a semaphore made from a native key.
    #[getter]
    fn key(&self) -> Option<&str> {
        self.key.legacy_key()
    }

    /// The native key.
    #[getter]
    fn native_key(&self) -> &str {
        self.key.native()
    }

    /// The native key with its type.
    #[getter]
    fn native_ipc_key(&self) -> NativeIpcKey {
        NativeIpcKey {
            key: self.key.clone(),
        }
    }

    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        slf.get().acquire(slf.py(), None)?;
        Ok(slf.clone().unbind())
    }

    #[pyo3(signature = (_exc_type = None, _exc_value = None, _traceback = None))]
    fn __exit__(
        &self,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.release(1)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<qshm.SystemSemaphore {:?} native={:?}{}>",
            keys::display_name(&self.key),
            self.key.to_string(),
            if self.slot().is_some() { "" } else { " closed" }
        )
    }
}
