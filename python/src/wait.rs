//! Waits from Python: timeouts in seconds, and blocking calls made with the GIL released,
//! in slices, so that other Python threads run meanwhile and Ctrl-C (or any signal whose
//! Python handler raises) ends the wait within a slice.
//!
//! Slicing is the library's own advice ("to stay responsive to a signal, wait in slices"),
//! and its lock keeps what a waiter learned about a dead holder across calls, so a sliced
//! wait recovers a dead holder as one long wait does.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors;

/// The longest stretch spent without looking at pending signals.
const SLICE: Duration = Duration::from_millis(100);

/// A `timeout` argument in seconds: `None` (or infinity) waits for ever; otherwise a
/// number >= 0. A timeout too long to represent waits for ever too.
pub(crate) fn timeout_arg(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be a number of seconds >= 0, or None to wait for ever; got {s}"
        ))),
        Some(s) => Ok(Duration::try_from_secs_f64(s).ok()),
    }
}

/// Call `attempt(longest wait)` with the GIL released until it returns `Some`, the
/// `timeout` passes (`Ok(None)`; `None`: never), or a signal handler raises. An error of
/// the library ends the wait as the matching Python exception.
pub(crate) fn in_slices<T, F>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: F,
) -> PyResult<Option<T>>
where
    T: Send,
    F: FnMut(Duration) -> Result<Option<T>, qshm::Error> + Send,
{
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let once = timeout == Some(Duration::ZERO);
    loop {
        let wait = match deadline {
            _ if once => Duration::ZERO,
            None => SLICE,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        };
        if let Some(done) = py.detach(|| attempt(wait)).map_err(errors::to_py)? {
            return Ok(Some(done));
        }
        if once || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
