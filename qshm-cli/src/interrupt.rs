//! Ctrl-C (SIGINT), SIGTERM and SIGHUP for commands that hold a segment or a lock: the
//! first signal only sets a flag, so the command detaches (or unlocks) and exits
//! cleanly; a second one terminates the process the default way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::Failure;

/// How often waits look at the flag.
const POLL: Duration = Duration::from_millis(20);
/// A lock wait prints a note after this long.
const PATIENCE: Duration = Duration::from_secs(1);

/// The flag the signal handlers set.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

/// Install the handlers (call before creating or attaching anything).
pub fn install() -> Result<Interrupt, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // Order matters: on the first signal the conditional handler sees `false` and
        // does nothing, then the flag is set; on the second it restores the default.
        signal_hook::flag::register_conditional_default(signal, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
            .map_err(|e| Failure::other(format!("cannot install a signal handler: {e}")))?;
    }
    Ok(Interrupt(flag))
}

impl Interrupt {
    /// A signal arrived.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleep until a signal arrives or `limit` passes (`None`: until a signal).
    /// Returns whether a signal ended it.
    pub fn wait(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.and_then(|d| Instant::now().checked_add(d));
        loop {
            if self.raised() {
                return true;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => POLL,
            };
            if left.is_zero() && limit.is_some() {
                return false;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Take a lock with `attempt` (a `lock_timeout`-like call) in short slices, so a
    /// signal can end the wait; after a second, say on stderr that we are waiting.
    /// `on_error` turns a lock error into the failure to report.
    pub fn lock<G>(
        &self,
        key: &str,
        mut attempt: impl FnMut(Duration) -> qshm::Result<Option<G>>,
        on_error: impl FnOnce(qshm::Error) -> Failure,
    ) -> Result<G, Failure> {
        let start = Instant::now();
        let mut told = false;
        loop {
            match attempt(Duration::from_millis(100)) {
                Ok(Some(guard)) => return Ok(guard),
                Ok(None) => {}
                // a signal can end a semaphore wait with EINTR
                Err(_) if self.raised() => return Err(interrupted(key)),
                Err(e) => return Err(on_error(e)),
            }
            if self.raised() {
                return Err(interrupted(key));
            }
            if !told && start.elapsed() >= PATIENCE {
                eprintln!(
                    "qshm: waiting for the lock of {key:?}: another process holds it (Ctrl-C to give up)"
                );
                told = true;
            }
        }
    }
}

fn interrupted(key: &str) -> Failure {
    Failure::interrupted(format!("interrupted while waiting for the lock of {key:?}"))
}
