//! `qshm._qshm`: the native half of the `qshm` Python package, a thin layer over the qshm
//! Rust library. Keys, locks and lifetime are the library's; this crate only turns them
//! into Python objects, exceptions and buffers.
//!
//! * [`shared_memory`]: `SharedMemory`, whose library handle lives in a [`handle::Core`]
//!   behind an `Arc`, so that a lock guard, a view or a wait in another thread keeps the
//!   mapping alive and `detach` refuses while they exist.
//! * [`guard`]: `LockGuard`, a held lock ([`held`]) that exports the segment through the
//!   buffer protocol (a `memoryview`, numpy arrays) and releases its views when it
//!   unlocks; [`on_thread`]: only the locking thread unlocks.
//! * [`semaphore`]: `SystemSemaphore`; [`keys`]: `NativeIpcKey` and the enums;
//!   [`generation`]: `Generation`; [`args`]: sizes and options;
//!   [`errors`]: the library's errors as the exceptions of `qshm/_errors.py`;
//!   [`wait`]: timeouts, and waits that release the GIL and still see Ctrl-C.

use pyo3::prelude::*;

mod args;
mod errors;
mod generation;
mod guard;
mod handle;
mod held;
mod keys;
mod on_thread;
mod semaphore;
mod shared_memory;
mod wait;

/// `gil_used = true`: the bindings rely on the GIL (a parked guard is re-armed only when
/// its reference count, read with the GIL held, says nobody else has it; a guard's
/// unlock and its views' release are ordered by it), so a free-threaded interpreter keeps
/// its GIL while qshm is loaded. (PyO3 0.30 declares the opposite unless told.)
#[pymodule(gil_used = true)]
fn _qshm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<shared_memory::SharedMemory>()?;
    m.add_class::<guard::LockGuard>()?;
    m.add_class::<generation::Generation>()?;
    m.add_class::<semaphore::SystemSemaphore>()?;
    m.add_class::<keys::NativeIpcKey>()?;
    m.add_class::<keys::KeyType>()?;
    m.add_class::<keys::LockMode>()?;
    m.add_class::<keys::SemaphoreMode>()?;
    Ok(())
}
