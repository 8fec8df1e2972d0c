//! The segment lock: two modes, one crash-safe design.
//!
//! # Lock modes
//!
//! * [`LockMode::QtCompatible`] (the default) takes the very semaphore
//!   `QSharedMemory::lock()` takes: for a legacy key the `qipc_systemsem_…` key Qt
//!   derives, else the segment's own native key; a System V semaphore for System V keys
//!   and a POSIX named semaphore for POSIX keys. A qshm process and a Qt process
//!   exclude each other. Each lock and unlock is a system call.
//! * [`LockMode::Fast`] uses a robust, process-shared pthread mutex: an uncontended
//!   lock and unlock stay in user space (tens of nanoseconds). Only qshm processes
//!   see this lock, so use it when no Qt program shares the segment.
//!
//! All qshm users of one segment must use the same mode; the mode is recorded with the
//! lock state, and a handle using the other mode gets a `LockError`.
//!
//! # Lock state and crash safety
//!
//! Lock state lives in a small companion file next to POSIX segments,
//! `/dev/shm/qshm-lock.<sha1 of type and native key>`, bound to one incarnation of the
//! segment (a re-created segment re-initialises it) and removed with the segment. It
//! holds two robust mutexes:
//!
//! * `fast`: the Fast-mode lock. If its holder dies, the next locker gets it with
//!   `EOWNERDEAD`; qshm marks it consistent and reports
//!   [`previous_owner_died`](crate::LockGuard::previous_owner_died).
//! * `marker`: in Qt-compatible mode, held by the qshm process that holds the
//!   semaphore, from just after acquiring to just before releasing it. The System V
//!   semaphore is used with `SEM_UNDO`, so the kernel gives back a dead holder's unit;
//!   the next holder then finds `marker` owner-dead and reports the death. A POSIX
//!   semaphore is *not* given back by the kernel (a crashed Qt holder blocks everyone
//!   for good). qshm waiters therefore wake every 50 ms, try `marker` without waiting,
//!   and if its owner died (which can only happen while that owner held the semaphore)
//!   post the semaphore on the dead process's behalf and flag the death for the next
//!   holder. The remaining window (death between acquiring the semaphore and taking
//!   `marker`, or between releasing `marker` and posting) is a few instructions wide.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::error::{Error, Result, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::sys::os::{self, RobustLock};
use crate::sys::{SegmentId, SemaphoreBackend};

/// Which lock [`SharedMemory::lock`](crate::SharedMemory::lock) takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// The semaphore Qt's `QSharedMemory::lock()` takes: excludes Qt programs too.
    /// One system call per lock and unlock.
    #[default]
    QtCompatible,
    /// A robust process-shared mutex: no system call when uncontended, but only
    /// qshm programs see it.
    Fast,
}

impl LockMode {
    fn tag(self) -> u32 {
        match self {
            LockMode::QtCompatible => 1,
            LockMode::Fast => 2,
        }
    }

    fn from_tag(tag: u32) -> Option<LockMode> {
        match tag {
            1 => Some(LockMode::QtCompatible),
            2 => Some(LockMode::Fast),
            _ => None,
        }
    }
}

const MAGIC: u64 = u64::from_le_bytes(*b"QSHMLCK1");

/// The companion file's content. Only ever accessed through a shared mapping.
#[repr(C)]
struct LockState {
    magic: AtomicU64,
    binding: [u64; 3],
    mode: u32,
    /// Set by a waiter that repaired a dead holder's POSIX semaphore; the next holder
    /// reports the death and clears it.
    owner_died_pending: AtomicU32,
    fast: libc::pthread_mutex_t,
    marker: libc::pthread_mutex_t,
}

/// Mode of the lock state and semaphore of a segment with mode `perms`: whoever may read
/// the segment may also lock it (locking writes the lock), so each read bit brings its
/// write bit. 0600 stays 0600; 0644 becomes 0666.
pub(crate) fn lock_permissions(perms: u32) -> u32 {
    (perms | ((perms & 0o444) >> 1)) & 0o666
}

/// Name of the companion file for a key (in `/dev/shm`).
pub(crate) fn companion_name(key: &NativeIpcKey) -> String {
    let digest = Sha1::digest(format!("{}:{}", key.kind(), key.native()).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("qshm-lock.{hex}")
}

fn companion_path(key: &NativeIpcKey) -> String {
    format!("{}/{}", crate::sys::posix::SHM_DIR, companion_name(key))
}

/// Remove the companion file of `key` (the segment is going away).
pub(crate) fn remove_companion(key: &NativeIpcKey) {
    if let Ok(path) = os::cstring(&companion_path(key)) {
        let _ = os::unlink(&path);
    }
}

/// A mapped companion file.
struct Companion {
    state: *mut LockState,
    len: usize,
}

// SAFETY: the state is process-shared memory accessed only through atomics and
// process-shared pthread mutexes, which are safe to use from any thread.
unsafe impl Send for Companion {}
// SAFETY: as above.
unsafe impl Sync for Companion {}

impl Drop for Companion {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; Locker is dropped only after every guard is gone.
        let _ = unsafe { os::munmap(self.state.cast(), self.len) };
    }
}

impl Companion {
    fn open(key: &NativeIpcKey, segment: SegmentId, mode: LockMode, perms: u32) -> io::Result<Companion> {
        let path = os::cstring(&companion_path(key))?;
        let perms = lock_permissions(perms);
        for _ in 0..32 {
            let (fd, created) = match os::open(
                &path,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                perms,
            ) {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    match os::open(&path, libc::O_RDWR | libc::O_NOFOLLOW, 0) {
                        Ok(fd) => (fd, false),
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if created {
                os::fchmod(&fd, perms)?;
            }
            // Serialise initialisation; the lock is dropped with fd below.
            os::flock(&fd, libc::LOCK_EX)?;
            let file = os::fstat(&fd)?;
            if !matches!(os::lstat(&path), Ok(now) if now.same_file(&file)) {
                continue;
            }
            let len = os::page_size().max(std::mem::size_of::<LockState>());
            if file.size < len as u64 {
                os::ftruncate(&fd, len as u64)?;
            }
            use std::os::fd::AsRawFd;
            let ptr = os::mmap_shared(fd.as_raw_fd(), len, true)?;
            let companion = Companion {
                state: ptr.cast(),
                len,
            };
            let bound = companion.bind(segment, mode);
            // The mapping keeps the open file (and so its flock) alive after fd is
            // closed: unlock explicitly.
            os::flock(&fd, libc::LOCK_UN)?;
            bound?;
            return Ok(companion);
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Make the state belong to `segment`, initialising it if it belongs to another
    /// incarnation (or to nobody). Runs under the companion's exclusive flock.
    fn bind(&self, segment: SegmentId, mode: LockMode) -> io::Result<()> {
        let state = self.state;
        // SAFETY: state points to a live mapping of at least size_of::<LockState>()
        // bytes; we hold the file's exclusive flock, so no other qshm process is
        // initialising it, and a state bound to another incarnation has no users.
        unsafe {
            let bound = (*state).magic.load(Ordering::Acquire) == MAGIC && (*state).binding == segment.0;
            if !bound {
                (*state).magic.store(0, Ordering::Release);
                os::robust_mutex_init(&raw mut (*state).fast)?;
                os::robust_mutex_init(&raw mut (*state).marker)?;
                (*state).binding = segment.0;
                (*state).mode = mode.tag();
                (*state).owner_died_pending.store(0, Ordering::Relaxed);
                (*state).magic.store(MAGIC, Ordering::Release);
            } else if (*state).mode != mode.tag() {
                let theirs = match LockMode::from_tag((*state).mode) {
                    Some(LockMode::Fast) => "LockMode::Fast",
                    Some(LockMode::QtCompatible) => "LockMode::QtCompatible",
                    None => "an unknown mode",
                };
                return Err(io::Error::other(format!(
                    "the segment's other qshm users lock it with {theirs}; use the same LockMode"
                )));
            }
        }
        Ok(())
    }

    #[inline]
    fn fast(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: state is a live mapping; taking a field's address does not read it.
        unsafe { &raw mut (*self.state).fast }
    }

    #[inline]
    fn marker(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: as in fast().
        unsafe { &raw mut (*self.state).marker }
    }

    fn owner_died_pending(&self) -> &AtomicU32 {
        // SAFETY: the atomic lives in the mapping for as long as self.
        unsafe { &(*self.state).owner_died_pending }
    }
}

/// Everything needed to lock one attached segment.
pub(crate) struct Locker {
    mode: LockMode,
    companion: Companion,
    /// Qt's semaphore (QtCompatible mode only).
    semaphore: Option<Arc<dyn SemaphoreBackend>>,
    /// The thread holding the semaphore through this locker (0: none). A second lock
    /// from that thread would wait for itself forever; it gets `EDEADLK` instead, as the
    /// Fast mode's error-checking mutex does.
    holder: AtomicU64,
    /// The Fast-mode mutex (None in Qt-compatible mode), computed once for the fast path.
    fast: Option<*mut libc::pthread_mutex_t>,
}

// SAFETY: `fast` points into `companion`'s mapping, which the Locker owns; the mutex is
// process-shared and thread-safe, like the rest of the lock state (see Companion).
unsafe impl Send for Locker {}
// SAFETY: as above.
unsafe impl Sync for Locker {}

/// A number unique to the calling thread while it lives (never 0).
fn thread_token() -> u64 {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as u64)
}

/// How long a waiter sleeps before looking again: for a dead POSIX-semaphore holder, or
/// for a robust-mutex wake-up lost with a waiter that was killed.
const REPAIR_INTERVAL: Duration = Duration::from_millis(50);

impl Locker {
    pub(crate) fn new(
        key: &NativeIpcKey,
        segment: SegmentId,
        mode: LockMode,
        perms: u32,
        semaphore: Option<Arc<dyn SemaphoreBackend>>,
    ) -> Result<Locker> {
        let companion = Companion::open(key, segment, mode, perms).map_err(|e| {
            let kind = match e.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => SharedMemoryError::PermissionDenied,
                _ => SharedMemoryError::LockError,
            };
            Error::new(kind, "lock", key.display_name())
                .with_detail(format!("cannot open the lock state: {e}"))
        })?;
        let mut locker = Locker {
            mode,
            companion,
            semaphore,
            holder: AtomicU64::new(0),
            fast: None,
        };
        if !(mode == LockMode::QtCompatible && locker.semaphore.is_some()) {
            locker.fast = Some(locker.companion.fast());
        }
        Ok(locker)
    }

    /// The Fast-mode mutex, for the inlined fast path (`None` in Qt-compatible mode).
    #[inline]
    pub(crate) fn fast_mutex(&self) -> Option<*mut libc::pthread_mutex_t> {
        self.fast
    }

    /// Take the lock. `None` waits forever, `Some(0)` tries once.
    /// `Ok(None)`: busy or timed out. `Ok(Some(died))`: held; `died` when the previous
    /// holder died holding it.
    #[inline]
    pub(crate) fn acquire(&self, timeout: Option<Duration>) -> io::Result<Option<bool>> {
        match (self.mode, &self.semaphore) {
            (LockMode::QtCompatible, Some(sem)) => self.acquire_semaphore(sem.as_ref(), timeout),
            _ => self.acquire_fast(timeout),
        }
    }

    /// Wait for the robust mutex in slices of at most [`REPAIR_INTERVAL`]. When an owner
    /// dies the kernel wakes one waiter; if that waiter is killed before it takes the
    /// lock, the other waiters are never woken. Bounded sleeps make them look again.
    fn acquire_fast(&self, timeout: Option<Duration>) -> io::Result<Option<bool>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                None => REPAIR_INTERVAL,
                Some(d) => d.saturating_duration_since(Instant::now()).min(REPAIR_INTERVAL),
            };
            // SAFETY: the companion mapping outlives self and holds an initialised mutex.
            match unsafe { os::robust_mutex_lock(self.companion.fast(), Some(slice)) }? {
                RobustLock::Acquired => return Ok(Some(false)),
                RobustLock::OwnerDied => return Ok(Some(true)),
                RobustLock::Busy if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                RobustLock::Busy => {}
            }
        }
    }

    fn acquire_semaphore(
        &self,
        sem: &dyn SemaphoreBackend,
        timeout: Option<Duration>,
    ) -> io::Result<Option<bool>> {
        let me = thread_token();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(io::Error::from_raw_os_error(libc::EDEADLK));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let repair = sem.needs_dead_holder_repair();
        loop {
            let slice = match (deadline, repair) {
                (None, false) => None,
                (None, true) => Some(REPAIR_INTERVAL),
                (Some(d), false) => Some(d.saturating_duration_since(Instant::now())),
                (Some(d), true) => Some(d.saturating_duration_since(Instant::now()).min(REPAIR_INTERVAL)),
            };
            if sem.acquire(slice)? {
                break;
            }
            if repair {
                self.repair_dead_holder(sem)?;
            }
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if expired {
                // one last try right after a repair, so try_lock sees a repaired lock
                if repair && sem.acquire(Some(Duration::ZERO))? {
                    break;
                }
                return Ok(None);
            }
        }
        // SAFETY: the companion mapping outlives self and holds an initialised mutex.
        let marker = unsafe { os::robust_mutex_lock(self.companion.marker(), None) };
        let died = match marker {
            Ok(RobustLock::OwnerDied) => true,
            Ok(_) => false,
            Err(e) => {
                let _ = sem.release(1);
                return Err(e);
            }
        };
        let pending = self.companion.owner_died_pending().swap(0, Ordering::AcqRel) != 0;
        self.holder.store(me, Ordering::Release);
        Ok(Some(died || pending))
    }

    /// If a qshm process died holding the POSIX semaphore, give its unit back.
    fn repair_dead_holder(&self, sem: &dyn SemaphoreBackend) -> io::Result<()> {
        // SAFETY: the companion mapping outlives self and holds an initialised mutex.
        match unsafe { os::robust_mutex_lock(self.companion.marker(), Some(Duration::ZERO)) }? {
            RobustLock::OwnerDied => {
                // marker is only held while holding the semaphore: its dead owner
                // still holds a unit nobody will ever post.
                self.companion.owner_died_pending().store(1, Ordering::Release);
                sem.release(1)?;
                // SAFETY: we locked marker just above.
                unsafe { os::robust_mutex_unlock(self.companion.marker()) }
            }
            // SAFETY: we locked marker just above.
            RobustLock::Acquired => unsafe { os::robust_mutex_unlock(self.companion.marker()) },
            RobustLock::Busy => Ok(()),
        }
    }

    /// Release the lock taken by [`acquire`](Self::acquire) on this thread.
    #[inline]
    pub(crate) fn release(&self) -> io::Result<()> {
        match (self.mode, &self.semaphore) {
            (LockMode::QtCompatible, Some(sem)) => {
                self.holder.store(0, Ordering::Release);
                // SAFETY: this thread locked marker in acquire_semaphore.
                let unlocked = unsafe { os::robust_mutex_unlock(self.companion.marker()) };
                let posted = sem.release(1);
                unlocked.and(posted)
            }
            // SAFETY: this thread locked fast in acquire.
            _ => unsafe { os::robust_mutex_unlock(self.companion.fast()) },
        }
    }
}

/// The segment's Qt semaphore key (`QSharedMemoryPrivate::initKey`): derived from the
/// legacy key when there is one, else the segment's own native key.
pub(crate) fn semaphore_key(key: &NativeIpcKey) -> NativeIpcKey {
    match key.legacy_key() {
        Some(legacy) if !legacy.is_empty() => {
            crate::key::legacy_platform_safe_key(legacy, crate::key::IpcType::SystemSemaphore, key.kind())
        }
        _ => key.clone(),
    }
}
