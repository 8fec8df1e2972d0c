//! [`Core`]: what a `SharedMemory` shares with its guards, and the rules of access.
//!
//! The library's handle (`qshm::SharedMemory`) sits behind an `Arc`. Locks, views and
//! waits borrow it by holding a clone, so that it outlives them in any thread; `create`,
//! `attach` and `detach` need the only reference (`Arc::get_mut`) and refuse while any of
//! those exist, with an error that says which.
//!
//! A guard that is unlocked parks itself here; the next lock re-arms it if nobody else
//! refers to it, instead of making a new Python object (that was a quarter of the
//! instructions of a lock+unlock pair). A locked guard is never parked, so dropping one
//! still unlocks at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use qshm::SharedMemoryError;

use crate::errors;
use crate::guard::LockGuard;
use crate::keys;

/// A library handle, shared by the Python handle with its locks and waits.
pub(crate) struct Handle {
    pub(crate) shm: qshm::SharedMemory,
}

/// What a `SharedMemory` shares with its guards.
pub(crate) struct Core {
    slot: Mutex<Slot>,
    /// The key for messages (the legacy key if any, else the native key); also while
    /// another thread holds `slot`.
    pub(crate) name: Box<str>,
    /// Buffers of the segment exported by this handle's guards and not yet released.
    pub(crate) views: AtomicUsize,
}

pub(crate) struct Slot {
    /// `None` once the Python handle is gone (then guards stop parking).
    handle: Option<Arc<Handle>>,
    /// The guard unlocked last, for reuse (see [`Core::for_lock`]).
    spare: Option<Py<LockGuard>>,
}

impl Core {
    pub(crate) fn new(shm: qshm::SharedMemory) -> Arc<Core> {
        Arc::new(Core {
            name: keys::display_name(shm.native_ipc_key()).into(),
            views: AtomicUsize::new(0),
            slot: Mutex::new(Slot {
                handle: Some(Arc::new(Handle { shm })),
                spare: None,
            }),
        })
    }

    /// The Python handle is gone: let the library's handle go (it detaches once no lock,
    /// view or wait refers to it any more), and the parked guard, which refers to us.
    pub(crate) fn close(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (handle, spare) = (slot.handle.take(), slot.spare.take());
        drop(slot);
        drop((spare, handle));
    }

    /// Keep the unlocked `guard` for the next lock (not once the handle is gone).
    pub(crate) fn park(&self, guard: Py<LockGuard>) {
        let replaced = match self.slot.try_lock() {
            Ok(mut slot) if slot.handle.is_some() => slot.spare.replace(guard),
            _ => Some(guard),
        };
        drop(replaced); // may free a guard: not under the slot lock
    }
}

/// The slot's handle: there from construction until the Python handle's Drop, after
/// which none of its methods can run.
pub(crate) fn handle_of(slot: &Slot) -> &Arc<Handle> {
    slot.handle
        .as_ref()
        .expect("a SharedMemory keeps its handle until it is dropped")
}

pub(crate) fn handle_of_mut(slot: &mut Slot) -> &mut Arc<Handle> {
    slot.handle
        .as_mut()
        .expect("a SharedMemory keeps its handle until it is dropped")
}

impl Core {
    /// The handle's slot. Held only briefly, or by `create`/`attach`/`detach` while they
    /// run with the GIL released: another thread then gets a `LockError` (it must not
    /// block here holding the GIL, which that call needs back to finish).
    pub(crate) fn slot(&self, op: &str) -> PyResult<MutexGuard<'_, Slot>> {
        match self.slot.try_lock() {
            Ok(slot) => Ok(slot),
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(errors::own(
                SharedMemoryError::LockError,
                op,
                &self.name,
                "another thread is creating, attaching or detaching this handle right now",
            )),
        }
    }

    /// A reference to the handle for a lock, a view or a wait.
    pub(crate) fn shared(&self, op: &str) -> PyResult<Arc<Handle>> {
        Ok(handle_of(&*self.slot(op)?).clone())
    }

    /// The handle for a lock, and the parked guard if nobody else refers to it (to be
    /// re-armed; taken out of the slot, so no other thread takes it too).
    pub(crate) fn for_lock(&self, op: &str) -> PyResult<(Arc<Handle>, Option<Py<LockGuard>>)> {
        let (handle, spare) = {
            let mut slot = self.slot(op)?;
            (handle_of(&slot).clone(), slot.spare.take())
        };
        // SAFETY: a live object (`spare` holds a reference), read with the GIL held
        let reusable = spare.filter(|guard| unsafe { pyo3::ffi::Py_REFCNT(guard.as_ptr()) } == 1);
        Ok((handle, reusable))
    }

    /// Run `f` with the handle to itself (nothing borrows it), with the GIL released.
    pub(crate) fn exclusive<R: Send>(
        &self,
        py: Python<'_>,
        op: &str,
        f: impl FnOnce(&mut qshm::SharedMemory) -> qshm::Result<R> + Send,
    ) -> PyResult<R> {
        let mut slot = self.slot(op)?;
        let views = self.views.load(Ordering::Acquire);
        let Some(handle) = Arc::get_mut(handle_of_mut(&mut slot)) else {
            return Err(if views > 0 {
                errors::buffer_error(
                    op,
                    &self.name,
                    &format!(
                        "{views} view{} of the segment (a memoryview or a numpy array made inside a lock \
                         block) {} still alive; release {} first (del, or view.release())",
                        if views > 1 { "s" } else { "" },
                        if views > 1 { "are" } else { "is" },
                        if views > 1 { "them" } else { "it" },
                    ),
                )
            } else {
                errors::own(
                    SharedMemoryError::LockError,
                    op,
                    &self.name,
                    "this handle is locked (a LockGuard not yet unlocked), or another thread waits on \
                     it (lock(), wait_for_change()); unlock first",
                )
            });
        };
        let shm = &mut handle.shm;
        py.detach(|| f(shm)).map_err(errors::to_py)
    }
}
