//! The segment lock: [`Locker`] takes and releases it in the segment's [`LockMode`].
//!
//! * [`LockMode::QtCompatible`] takes the very semaphore `QSharedMemory::lock()` takes (a
//!   System V semaphore for System V keys, a POSIX named semaphore for POSIX keys), so a
//!   qshm process and a Qt process exclude each other.
//! * [`LockMode::Fast`] takes a robust process-shared pthread mutex in the lock state: an
//!   uncontended lock and unlock stay in user space. Only qshm processes see it.
//!
//! # Crash safety in Qt-compatible mode
//!
//! The kernel gives a dead holder's System V unit back (`SEM_UNDO`), but never a POSIX
//! one: a Qt program killed while holding the lock blocks everyone for good. qshm's side
//! keeps enough in the lock state to tell a dead holder from a live one:
//!
//! * a qshm process first locks the robust `marker` mutex, and holds it while it waits
//!   for, holds and releases the semaphore, recording its `phase` (acquiring, held,
//!   releasing). So at most one qshm process at a time deals with the semaphore.
//! * When a qshm holder dies, the next qshm locker gets `marker` with `EOWNERDEAD` and
//!   reads the phase: **held** means the dead process held the unit, so it is posted on
//!   its behalf and the death reported ([`previous_owner_died`]). **Acquiring** or
//!   **releasing** means it died within the few instructions around `sem_wait`/`sem_post`,
//!   and whether it held the unit cannot be read off anything; that case joins the next.
//! * A waiter (holding `marker`) that has not got the semaphore for a second looks in
//!   `/proc` for a process that could hold it: one that maps the semaphore without mapping
//!   qshm's lock state (a qshm process mapping the lock state cannot hold the semaphore
//!   while we hold `marker`). Twice in a row, a second apart, nobody: the holder died, the
//!   unit is posted and the death reported. So a dead Qt holder, and a qshm process killed
//!   anywhere around its semaphore calls, is recovered whenever no living non-qshm process
//!   has the semaphore open. While a living one has, its unit may be legitimately taken,
//!   and qshm waits (as Qt would). Processes of other users that we may not inspect count
//!   as possible holders if the semaphore's permissions let them open it (root's
//!   processes excepted: they are assumed not to use another user's semaphore).
//!
//! [`previous_owner_died`]: crate::LockGuard::previous_owner_died

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::Failure;
use crate::sys::lock_state::{LockState, phase};
use crate::sys::robust_mutex::{self, Locked};
use crate::sys::{LazyLock, LockMode, SemaphoreBackend, fork};

mod deadline;
mod holders;
mod watch;
use deadline::{deadline_after, expired, slice};
pub(crate) use holders::no_living_holder_possible;
use watch::Watch;

/// How long a waiter sleeps before looking again: for a dead POSIX-semaphore holder, or
/// for a robust-mutex wake-up lost with a waiter that was killed.
const REPAIR_INTERVAL: Duration = Duration::from_millis(50);

/// How long a POSIX semaphore must stay taken before a waiter looks for its holder, and
/// how far apart the two looks are.
pub(crate) const DEAD_HOLDER_LOOK: Duration = Duration::from_millis(1000);

/// A failure to find or make the lock's parts, as the `io::Error` the lock reports.
fn failure_io(failure: Failure) -> io::Error {
    match (failure.os, failure.detail) {
        (_, Some(detail)) => io::Error::other(detail),
        (Some(os), None) => os,
        (None, None) => io::Error::other(failure.kind.describe()),
    }
}

/// The error for a handle copied into a `fork()`ed child.
pub(crate) fn forked_error() -> io::Error {
    io::Error::other("this handle was inherited through fork(); attach anew in the child process")
}

/// Everything needed to lock one attached segment.
pub(crate) struct Locker {
    mode: LockMode,
    /// Set at construction, or (Qt-compatible POSIX segments, see [`LazyLock`]) at the
    /// first lock. `None` inside only in Qt-compatible mode where we may not add a lock
    /// state: then the semaphore alone excludes, with no dead-holder repair.
    state: OnceLock<Option<LockState>>,
    /// Qt's semaphore (Qt-compatible mode), likewise.
    semaphore: OnceLock<Arc<dyn SemaphoreBackend>>,
    /// How to get them at the first lock, if they were not given.
    lazy: Option<LazyLock>,
    /// Without lock state: the thread holding the semaphore through this locker (0: none),
    /// so that a second lock from it is `EDEADLK`, as the mutexes' error checking gives.
    holder: AtomicU64,
    /// The look for a dead holder of a POSIX semaphore, kept across calls: a caller that
    /// polls with short timeouts (`lock_timeout(100 ms)` in a loop) waits as long as one
    /// long call, and must see the holder recovered as well. Only used with `marker` held.
    watch: Mutex<Option<Watch>>,
    fork_epoch: u64,
}

/// A number unique to the calling thread, never reused (never 0).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

impl Locker {
    pub(crate) fn new(
        mode: LockMode,
        state: Option<LockState>,
        semaphore: Option<Arc<dyn SemaphoreBackend>>,
        lazy: Option<LazyLock>,
        fork_epoch: u64,
    ) -> Locker {
        let state_cell = OnceLock::new();
        if state.is_some() || lazy.is_none() {
            let _ = state_cell.set(state);
        }
        let semaphore_cell = OnceLock::new();
        if let Some(semaphore) = semaphore {
            let _ = semaphore_cell.set(semaphore);
        }
        Locker {
            mode,
            state: state_cell,
            semaphore: semaphore_cell,
            lazy,
            holder: AtomicU64::new(0),
            watch: Mutex::new(None),
            fork_epoch,
        }
    }

    /// The lock state of a Qt-compatible lock, found or made at the first lock.
    fn qt_state(&self) -> io::Result<Option<&LockState>> {
        if self.state.get().is_none() {
            let made = match &self.lazy {
                Some(lazy) => lazy.lock_state().map_err(failure_io)?,
                None => None,
            };
            // another thread may have been quicker: theirs is as good (same file)
            let _ = self.state.set(made);
        }
        Ok(self.state())
    }

    /// Qt's semaphore, opened at the first lock.
    fn qt_semaphore(&self) -> io::Result<&dyn SemaphoreBackend> {
        if self.semaphore.get().is_none() {
            let Some(lazy) = &self.lazy else {
                return Err(io::Error::other("no semaphore: the segment's lock is missing"));
            };
            let _ = self.semaphore.set(lazy.semaphore().map_err(failure_io)?);
        }
        Ok(self.semaphore.get().map(|s| s.as_ref()).expect("set just above"))
    }

    /// The lock state that holds the change-notification word: Fast mode's, or a
    /// Qt-compatible segment's, found or made the way the first lock does (a POSIX
    /// segment's through [`LazyLock`]). `None`: a segment without lock state that we may
    /// not add one to (another user's Qt segment).
    pub(crate) fn change_state(&self) -> io::Result<Option<&LockState>> {
        if self.forked() {
            return Err(forked_error());
        }
        match self.mode {
            LockMode::Fast => Ok(self.state()),
            LockMode::QtCompatible => self.qt_state(),
        }
    }

    /// The lock mode.
    pub(crate) fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock state, if there is one (yet).
    pub(crate) fn state(&self) -> Option<&LockState> {
        self.state.get().and_then(Option::as_ref)
    }

    /// The path of the segment's lock state: this locker's, or (not looked for yet, see
    /// [`LazyLock`]) the one another process made, if it exists.
    pub(crate) fn state_path(&self) -> Option<String> {
        if let Some(state) = self.state() {
            return Some(state.segment().lock_state_path());
        }
        let lazy = self.lazy.as_ref().filter(|_| self.state.get().is_none())?;
        let path = lazy.id.lock_state_path();
        std::fs::symlink_metadata(&path).is_ok().then_some(path)
    }

    /// Give up the semaphore and keep only the lock state (for detach, which unmaps the
    /// lock state last).
    pub(crate) fn into_state(self) -> Option<LockState> {
        self.state.into_inner().flatten()
    }

    /// True in a `fork()`ed child that inherited this locker.
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        fork::epoch() != self.fork_epoch
    }

    /// The uncontended Fast-mode path: one try, no system call. `None`: not Fast mode, or
    /// busy (the caller then takes the general path, which waits).
    #[inline]
    pub(crate) fn try_fast(&self) -> Option<io::Result<bool>> {
        if self.mode != LockMode::Fast {
            return None;
        }
        let state = self.state()?;
        if self.forked() {
            return Some(Err(forked_error()));
        }
        // SAFETY: the mutex lives in the lock-state mapping owned by self.
        match unsafe { robust_mutex::try_lock(state.fast()) } {
            Ok(Locked::Yes) => Some(Ok(false)),
            Ok(Locked::OwnerDied) => Some(Ok(true)),
            Ok(Locked::Busy) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Take the lock. `None` waits for ever, `Some(0)` tries once. `Ok(None)`: busy or
    /// timed out. `Ok(Some(died))`: held; `died` when the previous holder died holding it.
    pub(crate) fn acquire(&self, timeout: Option<Duration>) -> io::Result<Option<bool>> {
        if self.forked() {
            return Err(forked_error());
        }
        let once = timeout == Some(Duration::ZERO);
        // no clock for `lock()` and `try_lock()`
        let deadline = if once { None } else { deadline_after(timeout) };
        match self.mode {
            LockMode::Fast => match self.state() {
                Some(state) => self.acquire_fast(state, deadline, once),
                None => Err(io::Error::other("no lock: the segment's lock state is missing")),
            },
            LockMode::QtCompatible => {
                let sem = self.qt_semaphore()?;
                match self.qt_state()? {
                    Some(state) => self.acquire_qt(state, sem, deadline, once),
                    None => self.acquire_bare(sem, timeout),
                }
            }
        }
    }

    /// Wait for the robust mutex in slices of at most [`REPAIR_INTERVAL`]: when an owner
    /// dies the kernel wakes one waiter, and if that waiter is killed before it takes the
    /// lock, the other waiters are never woken. Bounded sleeps make them look again.
    fn acquire_fast(
        &self,
        state: &LockState,
        deadline: Option<Instant>,
        once: bool,
    ) -> io::Result<Option<bool>> {
        loop {
            let wait = if once {
                Duration::ZERO
            } else {
                slice(deadline, REPAIR_INTERVAL)
            };
            // SAFETY: the mutex lives in the lock-state mapping owned by self.
            match unsafe { robust_mutex::lock(state.fast(), wait) }? {
                Locked::Yes => return Ok(Some(false)),
                Locked::OwnerDied => return Ok(Some(true)),
                Locked::Busy if once || expired(deadline) => return Ok(None),
                Locked::Busy => {}
            }
        }
    }

    fn acquire_qt(
        &self,
        state: &LockState,
        sem: &dyn SemaphoreBackend,
        deadline: Option<Instant>,
        once: bool,
    ) -> io::Result<Option<bool>> {
        // 1. marker: the right to deal with the semaphore on qshm's side (uncontended: one
        //    try, no clock)
        // SAFETY: the mutex lives in the lock-state mapping owned by self.
        let mut got = unsafe { robust_mutex::try_lock(state.marker()) }?;
        while got == Locked::Busy {
            if once || expired(deadline) {
                return Ok(None);
            }
            // SAFETY: as above.
            got = unsafe { robust_mutex::lock(state.marker(), slice(deadline, REPAIR_INTERVAL)) }?;
        }
        let result = self.acquire_semaphore(state, sem, got == Locked::OwnerDied, deadline, once);
        if result.is_err() {
            // every failure leaves marker, or this thread's next lock fails with EDEADLK
            self.leave_marker(state);
        }
        result
    }

    /// Step 2 of [`acquire_qt`](Self::acquire_qt), holding `marker`: the semaphore. On
    /// `Ok(None)` it has left `marker`; on an error the caller leaves it.
    fn acquire_semaphore(
        &self,
        state: &LockState,
        sem: &dyn SemaphoreBackend,
        marker_owner_died: bool,
        deadline: Option<Instant>,
        once: bool,
    ) -> io::Result<Option<bool>> {
        let mut died = false;
        if marker_owner_died {
            died = self.repair_after_dead_marker_owner(state, sem)?;
        }
        // The phase is what a successor reads after this process died holding `marker`
        // (it gets `marker` through the robust futex, which orders these stores before).
        state.phase().store(phase::ACQUIRING, Ordering::Release);
        // uncontended: the semaphore at the first try
        if sem.acquire(Some(Duration::ZERO))? {
            return Ok(Some(self.held(state, died)));
        }
        // 2. the semaphore, watching for a holder that cannot be alive any more
        let repair = sem.needs_dead_holder_repair();
        let mut saved = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let mut watch = Watch::resume(saved.take());
        loop {
            let wait = match (once, repair, deadline) {
                (true, ..) => Some(Duration::ZERO),
                (false, true, _) => Some(slice(deadline, REPAIR_INTERVAL)),
                (false, false, None) => None,
                (false, false, Some(_)) => Some(slice(deadline, Duration::MAX)),
            };
            if sem.acquire(wait)? {
                break;
            }
            if repair && !once && watch.look_due() {
                watch.last_look = Some(Instant::now());
                let nobody = sem
                    .file_id()
                    .is_some_and(|file| no_living_holder_possible(file, Some(state.file_id())));
                watch.nobody_seen = if nobody { watch.nobody_seen + 1 } else { 0 };
                if watch.nobody_seen >= 2 {
                    // Nobody alive can hold it: its holder died. Post on its behalf
                    // (unless it came back meanwhile) and take it in the next round.
                    watch.nobody_seen = 0;
                    if !sem.acquire(Some(Duration::ZERO))? {
                        sem.post_for_dead_holder()?;
                    } else {
                        died = true;
                        break;
                    }
                    died = true;
                    continue;
                }
            }
            if once || expired(deadline) {
                watch.left = Instant::now();
                *saved = Some(watch);
                drop(saved);
                self.leave_marker(state);
                return Ok(None);
            }
        }
        drop(saved);
        Ok(Some(self.held(state, died)))
    }

    /// The semaphore is ours: record it, and take a death reported for us.
    #[inline]
    fn held(&self, state: &LockState, died: bool) -> bool {
        state.phase().store(phase::HELD, Ordering::Release);
        let pending = state.owner_died_pending();
        let reported = pending.load(Ordering::Relaxed) != 0 && pending.swap(0, Ordering::AcqRel) != 0;
        died || reported
    }

    /// We got `marker` from a dead qshm process: act on the phase it left.
    fn repair_after_dead_marker_owner(
        &self,
        state: &LockState,
        sem: &dyn SemaphoreBackend,
    ) -> io::Result<bool> {
        let died = match state.phase().load(Ordering::Acquire) {
            phase::HELD => {
                // It held the unit. System V: SEM_UNDO gave it back already.
                if sem.needs_dead_holder_repair() {
                    sem.post_for_dead_holder()?;
                }
                true
            }
            // Around sem_wait/sem_post: undecidable here; if the unit stays missing, the
            // look for living holders in acquire_qt recovers it.
            _ => false,
        };
        state.phase().store(phase::IDLE, Ordering::Release);
        Ok(died)
    }

    fn leave_marker(&self, state: &LockState) {
        state.phase().store(phase::IDLE, Ordering::Release);
        // SAFETY: this thread locked marker in acquire_qt.
        let _ = unsafe { robust_mutex::unlock(state.marker()) };
    }

    /// Qt-compatible without lock state: the semaphore alone.
    fn acquire_bare(
        &self,
        sem: &dyn SemaphoreBackend,
        timeout: Option<Duration>,
    ) -> io::Result<Option<bool>> {
        let me = thread_token();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(io::Error::from_raw_os_error(libc::EDEADLK));
        }
        let wait = timeout.filter(|t| Instant::now().checked_add(*t).is_some());
        if !sem.acquire(wait)? {
            return Ok(None);
        }
        self.holder.store(me, Ordering::Release);
        Ok(Some(false))
    }

    /// Release the lock taken by [`acquire`](Self::acquire) (or [`try_fast`](Self::try_fast))
    /// on this thread. In a `fork()`ed child it does nothing: the lock is the parent's.
    #[inline]
    pub(crate) fn release(&self) -> io::Result<()> {
        if self.forked() {
            return Ok(());
        }
        match (self.mode, self.state(), self.semaphore.get()) {
            // SAFETY: this thread locked fast in acquire or try_fast.
            (LockMode::Fast, Some(state), _) => unsafe { robust_mutex::unlock(state.fast()) },
            (LockMode::QtCompatible, Some(state), Some(sem)) => {
                state.phase().store(phase::RELEASING, Ordering::Release);
                let posted = sem.release(1);
                state.phase().store(phase::IDLE, Ordering::Release);
                // SAFETY: this thread locked marker in acquire_qt.
                let unlocked = unsafe { robust_mutex::unlock(state.marker()) };
                posted.and(unlocked)
            }
            (LockMode::QtCompatible, None, Some(sem)) => {
                self.holder.store(0, Ordering::Release);
                sem.release(1)
            }
            _ => Ok(()),
        }
    }
}
