//! How long a [`Locker`](super::Locker) has waited for a POSIX semaphore, across calls.

use std::time::Instant;

use super::DEAD_HOLDER_LOOK;

/// How long this locker has been waiting for a POSIX semaphore, and what the looks for
/// a living holder found.
#[derive(Clone, Copy, Debug)]
pub(super) struct Watch {
    /// The wait began.
    pub since: Instant,
    /// The last call that did not get the semaphore ended.
    pub left: Instant,
    pub last_look: Option<Instant>,
    /// Looks in a row that found no living process that could hold it.
    pub nobody_seen: u32,
}

impl Watch {
    pub(super) fn new() -> Watch {
        let now = Instant::now();
        Watch {
            since: now,
            left: now,
            last_look: None,
            nobody_seen: 0,
        }
    }

    /// The watch of the previous call goes on if that call ended just now (the caller
    /// is polling), else a new one starts.
    pub(super) fn resume(previous: Option<Watch>) -> Watch {
        match previous {
            Some(w) if w.left.elapsed() < DEAD_HOLDER_LOOK => w,
            _ => Watch::new(),
        }
    }

    /// Time for a look: the wait has lasted [`DEAD_HOLDER_LOOK`], and so has the time
    /// since the last look.
    pub(super) fn look_due(&self) -> bool {
        self.since.elapsed() >= DEAD_HOLDER_LOOK
            && self.last_look.is_none_or(|t| t.elapsed() >= DEAD_HOLDER_LOOK)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_polling_caller_keeps_its_watch() {
        let long_ago = |secs| Instant::now().checked_sub(Duration::from_secs(secs)).unwrap();
        let mut polling = Watch::new();
        polling.since = long_ago(5);
        polling.nobody_seen = 1;
        let resumed = Watch::resume(Some(polling));
        assert_eq!(resumed.since, polling.since, "the previous call ended just now");
        assert_eq!(resumed.nobody_seen, 1);
        assert!(resumed.look_due(), "waiting for 5 s, never looked");

        let mut old = polling;
        old.left = long_ago(3);
        let fresh = Watch::resume(Some(old));
        assert!(fresh.since > old.since, "a call long ago starts a new watch");
        assert_eq!(fresh.nobody_seen, 0);
        assert!(!fresh.look_due(), "not before a second of waiting");

        let mut looked = polling;
        looked.last_look = Some(Instant::now());
        assert!(!looked.look_due(), "looks are a second apart");
    }
}
