//! [`Held`]: a lock of the library, held, with the handle it borrows; and how one is
//! taken (with the GIL released while it waits) and given back.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use self_cell::self_cell;

use crate::errors;
use crate::handle::Handle;
use crate::on_thread::OnThread;
use crate::wait;

/// The library's guard of either kind.
enum Taken<'a> {
    Write(qshm::LockGuard<'a>),
    Read(qshm::ReadGuard<'a>),
}

/// The guard while held (`Some`); taken out to unlock it with its `Result`.
type Guarded<'a> = Option<Taken<'a>>;

self_cell!(
    /// A handle and the held lock that borrows it.
    pub(crate) struct Held {
        owner: Arc<Handle>,
        #[covariant]
        dependent: Guarded,
    }
);

/// Why one attempt to lock did not give a guard.
enum Attempt {
    Busy,
    Failed(qshm::Error),
}

/// One attempt to lock `shm`, waiting at most `wait`.
fn attempt(shm: &qshm::SharedMemory, write: bool, wait: Duration) -> Result<Guarded<'_>, Attempt> {
    let got = if write {
        shm.lock_timeout(wait).map(|g| g.map(Taken::Write))
    } else {
        shm.lock_read_timeout(wait).map(|g| g.map(Taken::Read))
    };
    match got {
        Ok(Some(taken)) => Ok(Some(taken)),
        Ok(None) => Err(Attempt::Busy),
        Err(e) => Err(Attempt::Failed(e)),
    }
}

/// Lock `handle`: one try with the GIL held (the uncontended path costs no GIL release),
/// then waits with the GIL released ([`wait::in_slices`]). `once`: the try only.
/// `Ok(None)`: busy (`once`) or timed out.
pub(crate) fn hold(
    py: Python<'_>,
    handle: Arc<Handle>,
    write: bool,
    timeout: Option<Duration>,
    once: bool,
) -> PyResult<Option<Held>> {
    let held = match Held::try_new_or_recover(handle, |h| attempt(&h.shm, write, Duration::ZERO)) {
        Ok(held) => held,
        Err((_, Attempt::Failed(e))) => return Err(errors::to_py(e)),
        Err((_, Attempt::Busy)) if once || timeout == Some(Duration::ZERO) => return Ok(None),
        Err((handle, Attempt::Busy)) => {
            let waited = wait::in_slices(py, timeout, |slice| {
                match Held::try_new(handle.clone(), |h| attempt(&h.shm, write, slice)) {
                    // PyO3's `detach` runs this on the calling thread, where the
                    // wrapper is then taken apart
                    Ok(held) => Ok(Some(OnThread::new(held))),
                    Err(Attempt::Busy) => Ok(None),
                    Err(Attempt::Failed(e)) => Err(e),
                }
            })?;
            match waited.map(OnThread::take) {
                Some(Ok(held)) => held,
                Some(Err(_)) => unreachable!("a wait ran on another thread"),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(held))
}

/// Where the held lock gives the segment: (address, length, writable, previous owner died).
pub(crate) fn mapping(held: &mut Held) -> (usize, usize, bool, bool) {
    held.with_dependent_mut(|_, guarded| match guarded {
        Some(Taken::Write(g)) => (g.as_mut_ptr() as usize, g.len(), true, g.previous_owner_died()),
        Some(Taken::Read(g)) => (g.as_ptr() as usize, g.len(), false, g.previous_owner_died()),
        None => (0, 0, false, false),
    })
}

/// Unlock the library guard, reporting a failure; with `notify`, wake waiters too.
pub(crate) fn unlock(mut held: Held, notify: bool) -> Result<Option<qshm::Generation>, qshm::Error> {
    let result = held.with_dependent_mut(|owner, guarded| match guarded.take() {
        Some(Taken::Write(g)) if notify => g.unlock_and_notify().map(Some),
        Some(Taken::Write(g)) => g.unlock().map(|()| None),
        Some(Taken::Read(g)) => {
            let unlocked = g.unlock();
            let notified = if notify {
                owner.shm.notify_all().map(Some)
            } else {
                Ok(None)
            };
            unlocked.and(notified)
        }
        None => Ok(None),
    });
    drop(held);
    result
}
