//! `LockGuard`: a held segment lock, and the only way to the segment's bytes from Python.
//!
//! The guard exports the mapping through the buffer protocol; `with shm.lock() as buf`
//! hands out a `memoryview` of it. At the end of the block the guard releases that view
//! (using it afterwards raises `ValueError`), then unlocks. A view derived from it that is
//! still alive then (a slice, `memoryview(buf)`, a numpy array) cannot be revoked by
//! anyone: the guard counts every export, keeps the handle (and so the mapping) alive
//! until the last one is released, and raises `BufferError` at the end of the block to say
//! so. No view ever points at unmapped memory: the handle cannot detach while pinned.
//!
//! The library's guard borrows its handle and is `!Send`: it lives in a [`Held`] (the
//! handle's `Arc` and the guard that borrows it), wrapped in an [`OnThread`] that only
//! lets the locking thread unlock it.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyBufferError, PyRuntimeWarning};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyWeakrefReference};
use qshm::SharedMemoryError;

use crate::errors;
use crate::generation::Generation;
use crate::handle::{Core, Handle};
use crate::held::{self, Held};
use crate::on_thread::OnThread;

/// Lock the handle of `core` ([`held::hold`]; `once`: one try only; `Ok(None)`: busy or
/// timed out). The guard is the parked one when nobody else refers to it (re-armed),
/// else a new one.
pub(crate) fn take(
    py: Python<'_>,
    core: &Arc<Core>,
    op: &str,
    write: bool,
    timeout: Option<Duration>,
    once: bool,
) -> PyResult<Option<Py<LockGuard>>> {
    let (handle, spare) = core.for_lock(op)?;
    let Some(held) = held::hold(py, handle, write, timeout, once)? else {
        return Ok(None);
    };
    let guard = match spare {
        Some(guard) => guard,
        None => Py::new(py, LockGuard::new(core.clone()))?,
    };
    guard.get().arm(held);
    Ok(Some(guard))
}

/// A held lock on a ``SharedMemory`` segment; returned by ``lock()``, ``lock_read()``,
/// ``try_lock()`` and ``try_lock_read()``.
///
/// Use it in a ``with`` block: ``with shm.lock() as buf:`` gives ``buf``, a ``memoryview``
/// of the whole segment (writable from ``lock()``, read-only from ``lock_read()``), valid
/// only inside the block. At the end of the block the view is released (using it raises
/// ``ValueError``) and the lock unlocked. Keep data past the block by copying it
/// (``bytes(buf[a:b])``, ``arr.copy()``). ``numpy.frombuffer(buf, ...)`` shares the bytes
/// without a copy; such an array, a slice of ``buf`` or another ``memoryview(buf)`` must be
/// gone (``del arr``) before the block ends: one still alive there is reported with
/// ``BufferError`` (after unlocking; it stays readable, no longer protected by the lock).
///
/// Without ``with``: the lock is held from ``lock()`` until ``unlock()`` or until the
/// guard is garbage-collected, and ``memoryview(guard)`` is a view of the segment. A
/// guard must be unlocked by the thread that locked it.
#[pyclass(frozen, module = "qshm")]
pub(crate) struct LockGuard {
    /// Its handle's key for messages, count of views, and place to park once unlocked.
    core: Arc<Core>,
    /// Buffers exported and not yet released.
    exports: std::sync::atomic::AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The lock (with the handle it borrows, and so the mapping), until it is unlocked.
    held: Option<OnThread<Held>>,
    /// The mapping, as the lock gave it.
    data: usize,
    len: usize,
    writable: bool,
    previous_owner_died: bool,
    /// The view `__enter__` handed out (weakly: it holds the guard, not the reverse).
    view: Option<Py<PyWeakrefReference>>,
    /// The handle, after unlocking, while views of the mapping are still alive.
    pin: Option<Arc<Handle>>,
}

impl LockGuard {
    /// A guard of `core`'s handle, not armed yet.
    fn new(core: Arc<Core>) -> LockGuard {
        LockGuard {
            core,
            exports: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Take `held` (a new guard, or a used one nobody else refers to any more: unlocked,
    /// without views).
    fn arm(&self, mut held: Held) {
        let (data, len, writable, died) = held::mapping(&mut held);
        let armed = State {
            held: Some(OnThread::new(held)),
            data,
            len,
            writable,
            previous_owner_died: died,
            view: None,
            pin: None,
        };
        let old = std::mem::replace(&mut *self.state(), armed);
        drop(old); // (its stale view reference: not under the state lock)
    }

    /// The key, for messages.
    fn name(&self) -> &str {
        &self.core.name
    }

    /// The state. Never held across a call into Python (a view's release calls
    /// `__releasebuffer__`, which takes it too; Python code may let another thread run).
    fn state(&self) -> MutexGuard<'_, State> {
        // a panic while it was held left nothing half-done that matters here
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End the lock: release the view of `__enter__`, unlock (and notify), drop the pin
    /// unless views remain. `strict`: an unlocked guard is an error (else nothing to do);
    /// `report_views`: views still alive are a `BufferError`, raised after unlocking.
    fn end(
        slf: &Bound<'_, Self>,
        strict: bool,
        report_views: bool,
        notify: bool,
    ) -> PyResult<Option<Generation>> {
        let this = slf.get();
        let py = slf.py();
        // (an exception is made after the state's lock: making one runs Python code, and
        // another thread could then want the state while holding the GIL)
        let taken = {
            let mut state = this.state();
            match state.held.take().map(OnThread::take) {
                None => Err("not locked: this guard was unlocked already"),
                Some(Err(elsewhere)) => {
                    state.held = Some(elsewhere);
                    Err("the lock belongs to the thread that locked it; unlock it there")
                }
                Some(Ok(held)) => Ok((held, state.view.take())),
            }
        };
        let (held, view) = match taken {
            Ok(taken) => taken,
            Err(_) if !strict => return Ok(None),
            Err(why) => {
                return Err(errors::own(
                    SharedMemoryError::LockError,
                    "unlock",
                    this.name(),
                    why,
                ));
            }
        };
        // Still locked (`held`), but no new view can be made. Outside the state lock:
        // releasing the view calls __releasebuffer__.
        let mut kept_by_export = false;
        if let Some(view) = view.and_then(|weak| weak.bind(py).upgrade())
            && let Err(e) = view.call_method0(intern!(py, "release"))
        {
            if !e.is_instance_of::<PyBufferError>(py) {
                // (not expected from memoryview.release(); unlock all the same)
                let _ = held::unlock(held, false);
                return Err(e);
            }
            kept_by_export = true; // something holds a buffer of the view itself
        }
        // Views that outlive the lock keep the handle (the GIL is held throughout, so no
        // __releasebuffer__ runs between this look and the pin)
        let left = this.exports.load(Ordering::Acquire);
        if left > 0 {
            this.state().pin = Some(held.borrow_owner().clone());
        }
        let unlocked = held::unlock(held, notify); // may detach (the handle's last reference)
        if left == 0 {
            this.core.park(slf.clone().unbind());
        }
        let generation = unlocked.map_err(errors::to_py)?;
        if report_views && (left > 0 || kept_by_export) {
            return Err(errors::buffer_error(
                "unlock",
                this.name(),
                &format!(
                    "unlocked, but {} of the segment made while it was locked {} still alive (a slice \
                     of the view, memoryview(view), or a numpy array); it stays readable but is no \
                     longer protected by the lock. Release views before the lock block ends (del \
                     them, or view.release()), or copy what you keep (bytes(view[a:b]), arr.copy())",
                    if left > 1 {
                        format!("{left} views")
                    } else {
                        "a view".to_owned()
                    },
                    if left > 1 { "are" } else { "is" },
                ),
            ));
        }
        Ok(generation.map(Generation::from))
    }
}

#[pymethods]
impl LockGuard {
    /// A view of the segment for the ``with`` block: a ``memoryview`` (format ``B``),
    /// writable if this guard came from ``lock()``.
    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        let this = slf.get();
        if this.state().held.is_none() {
            return Err(errors::own(
                SharedMemoryError::LockError,
                "lock",
                this.name(),
                "this guard was unlocked already; lock again",
            ));
        }
        // (not under the state lock: making the view calls __getbuffer__)
        let view = PyMemoryView::from(slf.as_any())?;
        let weak = PyWeakrefReference::new(&view)?;
        this.state().view = Some(weak.unbind());
        Ok(view)
    }

    /// Release the view and unlock; views still alive are reported with ``BufferError``
    /// unless the block already raised.
    #[pyo3(signature = (exc_type, _exc_value = None, _traceback = None))]
    fn __exit__(
        slf: &Bound<'_, Self>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        Self::end(slf, false, exc_type.is_none(), false)?;
        Ok(false)
    }

    /// Unlock now (Qt's ``unlock()``), releasing the view of the ``with`` block.
    /// ``LockError`` if it was unlocked already, or from another thread than the locking
    /// one; ``BufferError`` (after unlocking) if views of the segment are still alive.
    fn unlock(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::end(slf, true, true, false).map(drop)
    }

    /// Unlock, then wake every process and thread in ``wait_for_change`` (as
    /// ``SharedMemory.notify_all()``); returns the new ``Generation``.
    fn unlock_and_notify(slf: &Bound<'_, Self>) -> PyResult<Option<Generation>> {
        Self::end(slf, true, true, true)
    }

    /// True when the previous holder died while holding the lock: the data may be
    /// half-written; check or repair it.
    #[getter]
    fn previous_owner_died(&self) -> bool {
        self.state().previous_owner_died
    }

    /// True until the guard is unlocked.
    #[getter]
    fn locked(&self) -> bool {
        self.state().held.is_some()
    }

    /// True for a guard from ``lock_read()``/``try_lock_read()``: its views are read-only.
    #[getter]
    fn read_only(&self) -> bool {
        !self.state().writable
    }

    /// The number of bytes of the segment.
    fn __len__(&self) -> usize {
        self.state().len
    }

    fn __repr__(&self) -> String {
        let state = self.state();
        format!(
            "<qshm.LockGuard {:?} {} {} bytes{}{}>",
            self.name(),
            if state.held.is_some() {
                "locked"
            } else {
                "unlocked"
            },
            state.len,
            if state.writable { "" } else { " read-only" },
            if state.previous_owner_died {
                " previous_owner_died"
            } else {
                ""
            },
        )
    }

    /// The segment's bytes, while the lock is held.
    ///
    /// # Safety
    ///
    /// `view` is the `Py_buffer` CPython passes to `bf_getbuffer`.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let this = slf.get();
        let state = this.state();
        if state.held.is_none() {
            return Err(errors::buffer_error(
                "view",
                this.name(),
                "the lock is no longer held: views of the segment exist only while it is locked",
            ));
        };
        if flags & ffi::PyBUF_WRITABLE != 0 && !state.writable {
            return Err(errors::buffer_error(
                "view",
                this.name(),
                "read-only: this guard is from lock_read() (or the segment is attached read-only)",
            ));
        }
        // SAFETY: `view` is CPython's (the caller's contract). `data` and `len` are the
        // mapping of the handle that `held` keeps (and after unlocking `pin`, until every
        // export is released: `end`, `__releasebuffer__`), which cannot detach while
        // referenced; the view is marked read-only unless the guard is a write guard
        // (read-only mappings only give read guards).
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                state.data as *mut c_void,
                state.len as ffi::Py_ssize_t,
                c_int::from(!state.writable),
                flags,
            )
        };
        if filled != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.exports.fetch_add(1, Ordering::AcqRel);
        this.core.views.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// One export fewer; the last one after unlocking lets the handle go.
    ///
    /// # Safety
    ///
    /// `view` was filled by `__getbuffer__` (it is not read).
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.core.views.fetch_sub(1, Ordering::AcqRel);
        if self.exports.fetch_sub(1, Ordering::AcqRel) == 1 {
            // the last one: after unlocking, nothing needs the handle any more
            let pin = self.state().pin.take();
            drop(pin); // may detach (the handle's last reference): not under the state lock
        }
    }
}

impl Drop for LockGuard {
    /// Unlock a guard nobody unlocked. On another thread than the locking one the
    /// library's guard cannot be dropped: it is leaked (the lock stays held until its
    /// holder, that thread or this process, ends; the next locker then takes it over and
    /// is told), and a warning says so.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = state.held.take() {
            if held.here() {
                drop(held);
            } else {
                drop(held); // leaks the library's guard (OnThread)
                Python::attach(|py| {
                    PyErr::new::<PyRuntimeWarning, _>(format!(
                        "qshm: the lock of {:?} was dropped by another thread than the one that \
                         locked it, and stays held until that thread or this process ends; unlock \
                         guards on their own thread",
                        self.name()
                    ))
                    .write_unraisable(py, None);
                });
            }
        }
    }
}
