//! `SharedMemory`: the Python face of the library's handle, which lives in a [`Core`]
//! shared with its guards (`handle.rs`: how locks, views and waits borrow it).

use std::sync::{Arc, MutexGuard};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use qshm::AccessMode;

use crate::args::{configured, size_arg};
use crate::errors;
use crate::generation::Generation;
use crate::guard::{self, LockGuard};
use crate::handle::{self, Core, Slot};
use crate::keys::{self, KeyArg, KeyType, LockMode, NativeIpcKey};
use crate::wait;

/// A named shared-memory segment, shared by threads and processes, with a system-wide
/// lock: Qt's ``QSharedMemory``, compatible with Qt 5.15/6 programs and with Rust programs
/// using the qshm crate.
///
/// ``SharedMemory(key)`` takes a legacy key, as ``QSharedMemory(key)`` (System V, Qt's
/// default for string keys); ``type=KeyType.PosixRealtime`` derives the POSIX name from
/// it instead; ``SharedMemory.native(name)`` or ``SharedMemory(NativeIpcKey(...))`` uses a
/// native key as is. Nothing is opened until ``create(size)`` or ``attach()``.
///
/// The segment lives while any process is attached: the last ``detach()`` (or the
/// garbage collection of the last handle, or the end of its ``with`` block) destroys it,
/// and one whose users all died is reclaimed by the next ``create``. Nothing is
/// registered with ``multiprocessing``'s resource tracker. A handle inherited through
/// ``fork()`` is inert in the child: its locks raise ``LockError``; attach anew there.
///
/// Example::
///
///     with qshm.SharedMemory("market") as shm:
///         shm.create(4096)
///         with shm.lock() as buf:           # system-wide lock; buf: a memoryview
///             buf[:5] = b"hello"
///         # another process: shm.attach(read_only=True); shm.lock_read()
#[pyclass(frozen, module = "qshm")]
pub(crate) struct SharedMemory {
    core: Arc<Core>,
}

fn new_handle(shm: qshm::SharedMemory) -> SharedMemory {
    SharedMemory { core: Core::new(shm) }
}

impl Drop for SharedMemory {
    /// Let the handle go (it detaches once no lock, view or wait refers to it any more).
    fn drop(&mut self) {
        self.core.close();
    }
}

impl SharedMemory {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    fn slot(&self, op: &str) -> PyResult<MutexGuard<'_, Slot>> {
        self.core.slot(op)
    }

    fn exclusive<R: Send>(
        &self,
        py: Python<'_>,
        op: &str,
        f: impl FnOnce(&mut qshm::SharedMemory) -> qshm::Result<R> + Send,
    ) -> PyResult<R> {
        self.core.exclusive(py, op, f)
    }

    fn lock_with(slf: &Bound<'_, Self>, write: bool, timeout: Option<f64>) -> PyResult<Py<LockGuard>> {
        let op = if write { "lock" } else { "lock_read" };
        let wait = wait::timeout_arg(timeout)?;
        let this = slf.get();
        match guard::take(slf.py(), this.core(), op, write, wait, false)? {
            Some(guard) => Ok(guard),
            None => Err(errors::timed_out(
                op,
                &this.core.name,
                timeout.unwrap_or(f64::INFINITY),
            )),
        }
    }
}

#[pymethods]
impl SharedMemory {
    #[new]
    #[pyo3(signature = (key, *, r#type = None, lock_mode = None, permissions = None))]
    fn new(
        key: &Bound<'_, PyAny>,
        r#type: Option<&Bound<'_, PyAny>>,
        lock_mode: Option<&Bound<'_, PyAny>>,
        permissions: Option<u32>,
    ) -> PyResult<Self> {
        let shm = match (keys::key_arg(key)?, r#type) {
            (KeyArg::Legacy(key), None) => qshm::SharedMemory::new(&key),
            (KeyArg::Legacy(key), Some(kind)) => {
                qshm::SharedMemory::with_key_type(&key, keys::key_type_arg(kind)?)
            }
            (KeyArg::Native(key), None) => qshm::SharedMemory::with_native_key(key),
            (KeyArg::Native(_), Some(_)) => {
                return Err(PyTypeError::new_err(
                    "type= is for legacy (string) keys: a NativeIpcKey carries its own type",
                ));
            }
        };
        Ok(new_handle(configured(shm, lock_mode, permissions)?))
    }

    /// A handle for a native key used as is: ``SharedMemory.native("/name")`` is a POSIX
    /// segment named ``/name`` (Qt's ``setNativeKey``); ``type=KeyType.SystemV`` takes a
    /// file path. Also takes a ``NativeIpcKey``.
    #[classmethod]
    #[pyo3(signature = (native, r#type = None, *, lock_mode = None, permissions = None))]
    fn native(
        _cls: &Bound<'_, PyType>,
        native: &Bound<'_, PyAny>,
        r#type: Option<&Bound<'_, PyAny>>,
        lock_mode: Option<&Bound<'_, PyAny>>,
        permissions: Option<u32>,
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
        let shm = qshm::SharedMemory::with_native_key(key);
        Ok(new_handle(configured(shm, lock_mode, permissions)?))
    }

    /// The native key Qt derives from a legacy key (``QSharedMemory::legacyNativeKey``;
    /// System V unless ``type`` says otherwise).
    #[staticmethod]
    #[pyo3(signature = (key, r#type = None))]
    fn legacy_native_key(key: &str, r#type: Option<&Bound<'_, PyAny>>) -> PyResult<NativeIpcKey> {
        let kind = match r#type {
            Some(kind) => keys::key_type_arg(kind)?,
            None => qshm::KeyType::legacy_default(),
        };
        Ok(NativeIpcKey {
            key: qshm::SharedMemory::legacy_native_key(key, kind),
        })
    }

    /// Qt 6.6's portable native key for a name (``QSharedMemory::platformSafeKey``; POSIX
    /// unless ``type`` says otherwise).
    #[staticmethod]
    #[pyo3(signature = (key, r#type = None))]
    fn platform_safe_key(key: &str, r#type: Option<&Bound<'_, PyAny>>) -> PyResult<NativeIpcKey> {
        let kind = match r#type {
            Some(kind) => keys::key_type_arg(kind)?,
            None => qshm::KeyType::default_for_os(),
        };
        Ok(NativeIpcKey {
            key: qshm::SharedMemory::platform_safe_key(key, kind),
        })
    }

    /// Create a segment of exactly ``size`` bytes (zeroed) and attach to it, read-write
    /// unless ``read_only``. ``AlreadyExists`` if a live segment has this key (a stale one
    /// whose users all died is replaced); ``InvalidSize`` for a size below 1 or beyond what
    /// a segment can have; ``OutOfResources`` for more than the machine (or ``/dev/shm``)
    /// holds; ``InvalidKey`` for an empty or unusable key.
    #[pyo3(signature = (size, read_only = false))]
    fn create(&self, py: Python<'_>, size: &Bound<'_, PyAny>, read_only: bool) -> PyResult<()> {
        let size = size_arg(size, &self.core.name)?;
        let mode = if read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        self.exclusive(py, "create", |shm| shm.create(size, mode))
    }

    /// Attach to the existing segment (``NotFound`` if there is none), read-write unless
    /// ``read_only`` (then only ``lock_read()`` gives views, all read-only).
    #[pyo3(signature = (read_only = false))]
    fn attach(&self, py: Python<'_>, read_only: bool) -> PyResult<()> {
        let mode = if read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        self.exclusive(py, "attach", |shm| shm.attach(mode))
    }

    /// Detach; the last detach in any process destroys the segment. ``NotFound`` if not
    /// attached; ``LockError`` while a guard of this handle is locked or another thread
    /// waits on it; ``BufferError`` while views of the segment are alive.
    fn detach(&self, py: Python<'_>) -> PyResult<()> {
        self.exclusive(py, "detach", qshm::SharedMemory::detach)
    }

    /// Lock the segment for reading and writing and return the ``LockGuard``; use it as
    /// ``with shm.lock() as buf:`` (``buf``: a writable ``memoryview``). Waits as long as it
    /// takes, or at most ``timeout`` seconds (then ``TimeoutError``), with the GIL
    /// released. ``LockError`` if not attached or this thread holds the lock already;
    /// ``PermissionDenied`` when attached read-only, or when this user may only read the
    /// segment.
    #[pyo3(signature = (timeout = None))]
    fn lock(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<LockGuard>> {
        Self::lock_with(slf, true, timeout)
    }

    /// ``lock()`` for reading: the guard's views are read-only; works on a read-only
    /// attachment.
    #[pyo3(signature = (timeout = None))]
    fn lock_read(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<LockGuard>> {
        Self::lock_with(slf, false, timeout)
    }

    /// ``lock()`` without waiting: the guard, or ``None`` if another holder has the lock.
    /// (It never waits, so it never finds out that a holder died; ``lock(timeout=...)``
    /// does.)
    fn try_lock(slf: &Bound<'_, Self>) -> PyResult<Option<Py<LockGuard>>> {
        guard::take(slf.py(), slf.get().core(), "lock", true, None, true)
    }

    /// ``lock_read()`` without waiting: the guard, or ``None`` if the lock is busy.
    fn try_lock_read(slf: &Bound<'_, Self>) -> PyResult<Option<Py<LockGuard>>> {
        guard::take(slf.py(), slf.get().core(), "lock_read", false, None, true)
    }

    /// The segment's current ``Generation`` (how many ``notify_all()`` it has seen), to
    /// pass to ``wait_for_change``. Read it before looking at the data.
    fn generation(&self) -> PyResult<Generation> {
        let handle = self.core.shared("generation")?;
        handle
            .shm
            .generation()
            .map(Generation::from)
            .map_err(errors::to_py)
    }

    /// Announce that the data changed: wake every thread and process (Python or Rust) in
    /// ``wait_for_change``. Returns the new ``Generation``. Qt programs do not see it.
    fn notify_all(&self) -> PyResult<Generation> {
        let handle = self.core.shared("notify")?;
        handle
            .shm
            .notify_all()
            .map(Generation::from)
            .map_err(errors::to_py)
    }

    /// Sleep, with the GIL released, until the segment's generation differs from
    /// ``seen`` (a ``notify_all()`` since ``seen`` was read), at most ``timeout`` seconds
    /// (``None``: for ever). Returns the current ``Generation``: equal to ``seen`` when the
    /// timeout passed.
    #[pyo3(signature = (seen, timeout = None))]
    fn wait_for_change(
        &self,
        py: Python<'_>,
        seen: &Generation,
        timeout: Option<f64>,
    ) -> PyResult<Generation> {
        let wait = wait::timeout_arg(timeout)?;
        let handle = self.core.shared("wait for change")?;
        let seen = seen.0;
        let changed = wait::in_slices(py, wait, |slice| {
            handle
                .shm
                .wait_for_change(seen, slice)
                .map(|now| (now != seen).then_some(now))
        })?;
        Ok(Generation(changed.unwrap_or(seen)))
    }

    /// The legacy key, or ``None`` for a handle made from a native key.
    #[getter]
    fn key(&self) -> PyResult<Option<String>> {
        Ok(handle::handle_of(&*self.slot("key")?)
            .shm
            .key()
            .map(str::to_owned))
    }

    /// The native key: a file path (System V) or a ``/name`` (POSIX).
    #[getter]
    fn native_key(&self) -> PyResult<String> {
        Ok(handle::handle_of(&*self.slot("native_key")?)
            .shm
            .native_key()
            .to_owned())
    }

    /// The native key with its type, as a ``NativeIpcKey``.
    #[getter]
    fn native_ipc_key(&self) -> PyResult<NativeIpcKey> {
        Ok(NativeIpcKey {
            key: handle::handle_of(&*self.slot("native_ipc_key")?)
                .shm
                .native_ipc_key()
                .clone(),
        })
    }

    /// The key type (``KeyType.SystemV`` or ``KeyType.PosixRealtime``).
    #[getter]
    fn r#type(&self) -> PyResult<KeyType> {
        Ok(handle::handle_of(&*self.slot("type")?)
            .shm
            .native_ipc_key()
            .kind()
            .into())
    }

    /// The size of the attached segment in bytes, exactly what its creator asked for;
    /// 0 when not attached.
    #[getter]
    fn size(&self) -> PyResult<usize> {
        Ok(handle::handle_of(&*self.slot("size")?).shm.size())
    }

    /// True while attached.
    #[getter]
    fn is_attached(&self) -> PyResult<bool> {
        Ok(handle::handle_of(&*self.slot("is_attached")?).shm.is_attached())
    }

    /// True when attached read-only.
    #[getter]
    fn read_only(&self) -> PyResult<bool> {
        Ok(handle::handle_of(&*self.slot("read_only")?).shm.access_mode() == Some(AccessMode::ReadOnly))
    }

    /// The lock mode: the segment's once attached (adopted from its creator), else the
    /// one asked for (``LockMode.QtCompatible`` by default).
    #[getter]
    fn lock_mode(&self) -> PyResult<LockMode> {
        Ok(handle::handle_of(&*self.slot("lock_mode")?)
            .shm
            .lock_mode()
            .into())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Detach if attached. If the block raised and the handle is still in use (a guard
    /// or view alive), the handle stays attached until those are gone, and the block's
    /// exception is not masked.
    #[pyo3(signature = (exc_type, _exc_value = None, _traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !handle::handle_of(&*self.slot("detach")?).shm.is_attached() {
            return Ok(false);
        }
        match self.detach(py) {
            Err(e) if exc_type.is_none() => Err(e),
            _ => Ok(false),
        }
    }

    fn __repr__(&self) -> String {
        match self.core.slot("repr") {
            Ok(slot) => {
                let shm = &handle::handle_of(&slot).shm;
                let state = match shm.access_mode() {
                    None => "not attached".to_owned(),
                    Some(mode) => format!(
                        "attached{} size={}",
                        if mode == AccessMode::ReadOnly {
                            " read-only"
                        } else {
                            ""
                        },
                        shm.size()
                    ),
                };
                format!(
                    "<qshm.SharedMemory {:?} native={:?} {state} lock_mode={:?}>",
                    self.core.name,
                    shm.native_ipc_key().to_string(),
                    shm.lock_mode()
                )
            }
            Err(_) => format!("<qshm.SharedMemory {:?} busy>", self.core.name),
        }
    }

    /// Not picklable: a handle is an attachment of this process.
    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(format!(
            "cannot pickle a qshm.SharedMemory ({:?}): an attachment belongs to its process; pass \
             shm.native_ipc_key (picklable) or the key to the other process and attach there",
            self.core.name
        )))
    }
}
