//! Ctrl-C (SIGINT), SIGTERM and SIGHUP for commands that hold a segment or a lock, or
//! wait for one. The first signal sets a flag: the command detaches (or unlocks) and
//! exits cleanly, as it polls the flag. If it has not finished within [`GRACE`] (it may
//! be waiting inside a library call, e.g. for another process's file lock), or a second
//! signal comes, the process exits at once with 130. That is always safe: everything
//! qshm makes survives a process that dies anywhere (flocks, `SEM_UNDO`, robust
//! mutexes), which is also what happens after `kill -9`, but the next locker is then
//! told that the holder died.
//!
//! A signal that comes within [`ECHO`] of the first is not a second one: `timeout -s INT`
//! signals the command and then its whole process group, and a terminal's Ctrl-C reaches
//! every process of the foreground group, so one interruption often arrives twice at
//! once. Taken as a second signal, it abandoned a lock that was being released cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use qshm::NativeIpcKey;
use qshm::admin::{self, LockStatus};

use crate::Failure;

/// How often waits look at the flag.
const POLL: Duration = Duration::from_millis(20);
/// A lock wait prints a note after this long.
const PATIENCE: Duration = Duration::from_secs(1);
/// How long a command may take to finish cleanly after the first signal.
pub const GRACE: Duration = Duration::from_secs(1);
/// Signals this soon after the first are copies of it (a person's second Ctrl-C comes
/// later than this).
const ECHO: Duration = Duration::from_millis(250);

/// The flag the first signal sets.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

/// Install the handlers (call before creating or attaching anything, once).
pub fn install() -> Result<Interrupt, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    let cannot = |e: std::io::Error| Failure::other(format!("cannot install a signal handler: {e}"));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // Set in the handler itself, so a system call the signal interrupts with EINTR
        // already sees the flag when it returns (the thread below may run later).
        signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(cannot)?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(cannot)?;
    let raised = Arc::clone(&flag);
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            let Some(first) = signals.forever().next() else {
                return;
            };
            raised.store(true, Ordering::SeqCst);
            let start = Instant::now();
            while start.elapsed() < GRACE {
                let second = signals.pending().next();
                if let Some(second) = second.filter(|_| start.elapsed() >= ECHO) {
                    exit_interrupted(second);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            exit_interrupted(first);
        })
        .map_err(|e| Failure::other(format!("cannot start the signal thread: {e}")))?;
    Ok(Interrupt(flag))
}

/// Exit now with 130: the main thread did not finish in time (or a second signal came).
fn exit_interrupted(signal: i32) -> ! {
    let name = signal_hook::low_level::signal_name(signal).unwrap_or("a signal");
    tell(&format!("interrupted by {name}"));
    std::process::exit(130)
}

/// Print the one line that says why qshm stops after a signal: the first caller's,
/// at once (the clean-up that follows may be cut short by the exit above).
pub fn tell(line: &str) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::SeqCst) {
        eprintln!("qshm: {line}");
    }
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

    /// Take the lock of segment `native` (shown as `key`) with `attempt` (a
    /// `lock_timeout`-like call) in short slices, so a signal can end the wait; after a
    /// second, say on stderr who holds it. `on_error` turns a lock error into the failure
    /// to report.
    pub fn lock<G>(
        &self,
        key: &str,
        native: &NativeIpcKey,
        mut attempt: impl FnMut(Duration) -> qshm::Result<Option<G>>,
        on_error: impl FnOnce(qshm::Error) -> Failure,
    ) -> Result<G, Failure> {
        let start = Instant::now();
        let mut holder: Option<Receiver<LockStatus>> = None;
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
            if start.elapsed() >= PATIENCE && holder.is_none() {
                holder = Some(look_at_holder(native));
            }
            if let Some(status) = holder.as_ref().and_then(|rx| rx.try_recv().ok()) {
                if status == LockStatus::HolderDied {
                    eprintln!("qshm: waiting for the lock of {key:?}: its holder died; taking it over");
                } else {
                    eprintln!(
                        "qshm: waiting for the lock of {key:?}: another process holds it (Ctrl-C to give up)"
                    );
                }
            }
        }
    }
}

/// Find out, in the background (it takes a second when the holder looks dead), whether
/// the lock of `native` is held by a living process.
fn look_at_holder(native: &NativeIpcKey) -> Receiver<LockStatus> {
    let (tx, rx) = std::sync::mpsc::channel();
    let native = native.clone();
    let _ = std::thread::Builder::new()
        .name("holder".to_owned())
        .spawn(move || {
            let status = admin::segment(&native)
                .ok()
                .flatten()
                .map_or(LockStatus::Unknown, |s| s.lock);
            let _ = tx.send(status);
        });
    rx
}

fn interrupted(key: &str) -> Failure {
    Failure::interrupted(format!("interrupted while waiting for the lock of {key:?}"))
}
