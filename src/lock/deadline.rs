//! [`Deadline`]: how long a lock attempt may wait, in one form from the facade down. Every
//! wait is cut into slices, so that a waiter looks again for a dead holder (or a lost
//! wake-up) while it honours the caller's timeout.

use std::time::{Duration, Instant};

/// How long to wait for the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Try once, never sleep.
    Now,
    /// Until this instant.
    At(Instant),
    /// For ever.
    Never,
}

impl Deadline {
    /// The deadline `timeout` from now: `None` and timeouts too long to express are
    /// [`Never`](Deadline::Never), zero is [`Now`](Deadline::Now).
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        match timeout {
            Some(t) if t.is_zero() => Deadline::Now,
            Some(t) => Instant::now()
                .checked_add(t)
                .map_or(Deadline::Never, Deadline::At),
            None => Deadline::Never,
        }
    }

    /// Whether waiting is over.
    pub(crate) fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::At(at) => Instant::now() >= at,
            Deadline::Never => false,
        }
    }

    /// How long the next sleep may last: what is left, at most `cap`.
    pub(crate) fn slice(self, cap: Duration) -> Duration {
        match self {
            Deadline::Now => Duration::ZERO,
            Deadline::At(at) => at.saturating_duration_since(Instant::now()).min(cap),
            Deadline::Never => cap,
        }
    }

    /// What is left, `None` for ever (for waits the kernel ends by itself).
    pub(crate) fn left(self) -> Option<Duration> {
        match self {
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
            Deadline::Never => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_in_one_form() {
        assert_eq!(Deadline::after(None), Deadline::Never);
        assert_eq!(Deadline::after(Some(Duration::ZERO)), Deadline::Now);
        assert_eq!(
            Deadline::after(Some(Duration::MAX)),
            Deadline::Never,
            "too far to express"
        );
        let soon = Deadline::after(Some(Duration::from_millis(50)));
        assert!(!soon.passed());
        assert!(soon.slice(Duration::from_millis(10)) <= Duration::from_millis(10));
        assert!(soon.left().unwrap() <= Duration::from_millis(50));
        assert!(Deadline::Now.passed());
        assert_eq!(Deadline::Now.slice(Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(Deadline::Never.left(), None);
    }
}
