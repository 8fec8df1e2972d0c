//! Deadlines of the lock waits: every wait is cut into slices, so that a waiter looks again
//! for a dead holder (or a lost wake-up) while it honours the caller's timeout.

use std::time::{Duration, Instant};

/// `now + timeout`, or `None` (wait for ever) when there is no timeout or it overflows.
pub(super) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// How long to wait next: what is left until `deadline` (once: `Duration::ZERO`), at
/// most `cap`.
pub(super) fn slice(deadline: Option<Instant>, cap: Duration) -> Duration {
    match deadline {
        None => cap,
        Some(d) => d.saturating_duration_since(Instant::now()).min(cap),
    }
}

pub(super) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}
