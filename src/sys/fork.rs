//! What a `fork()`ed child (without `exec`) does with qshm's handles it inherited.
//!
//! * A counter the child side of `pthread_atfork` bumps tells a copied handle from the
//!   original: a handle records the count when it attaches, and if it differs later the
//!   handle is a copy and must neither unlock the parent's lock nor destroy the parent's
//!   segment.
//! * The child closes its copies of the lock-state descriptors whose byte locks prove that
//!   the parent is alive (`lock_state/slots.rs`): a lock is held by an open file description,
//!   which the copy shares, so a child that outlived its parent would make a dead holder
//!   look alive for as long as it runs.
//! * The child holds a shared `flock` of its own on every POSIX segment it inherited a
//!   mapping of, so the parent's last detach sees a user left and does not destroy the
//!   segment under the child's mapping. The parent takes it before `fork` (through a new
//!   open file description of the segment file, which both then have) and closes its copy
//!   right after, so it is in place before either runs on; the child's copy keeps it until
//!   the child exits or `exec`s. (The child never detaches that copy; once it exits the
//!   segment is stale, and the next `create` reclaims it.)
//!
//! The handlers run around `fork`, where only async-signal-safe calls are allowed: they
//! read fixed tables of atomics, format a path into a stack buffer and call `open`,
//! `flock` and `close`.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many descriptors of each kind the tables hold; more are left out of the child's
/// care (a child of a process with that many attachments keeps their slots alive).
const TABLE: usize = 1024;
/// Lock-state descriptors the child closes.
static CLOSE_IN_CHILD: [AtomicI32; TABLE] = [const { AtomicI32::new(-1) }; TABLE];
/// POSIX segment descriptors whose file the child locks anew.
static SHARE_IN_CHILD: [AtomicI32; TABLE] = [const { AtomicI32::new(-1) }; TABLE];
/// The descriptors the parent opened for the child before `fork` (index as above).
static FOR_CHILD: [AtomicI32; TABLE] = [const { AtomicI32::new(-1) }; TABLE];

/// When this process last forked (`CLOCK_MONOTONIC`, nanoseconds; 0: never).
static LAST_FORK_NS: AtomicU64 = AtomicU64::new(0);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether this process forked within the last `window`: a child it forked may still
/// hold a shared `flock` of its own on a segment (until it `exec`s).
pub(crate) fn forked_within(window: std::time::Duration) -> bool {
    let last = LAST_FORK_NS.load(Ordering::Relaxed);
    last != 0 && monotonic_ns().saturating_sub(last) < window.as_nanos() as u64
}

extern "C" fn before_fork() {
    LAST_FORK_NS.store(monotonic_ns(), Ordering::Relaxed);
    for (entry, made) in SHARE_IN_CHILD.iter().zip(&FOR_CHILD) {
        let fd = entry.load(Ordering::Relaxed);
        if fd >= 0 {
            made.store(lock_anew(fd), Ordering::Relaxed);
        }
    }
}

extern "C" fn in_parent() {
    for made in &FOR_CHILD {
        let fd = made.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: our copy of a descriptor before_fork opened; the child keeps its copy
            // (and so the open file description and its lock).
            unsafe { libc::close(fd) };
        }
    }
}

extern "C" fn in_child() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    for (entry, made) in SHARE_IN_CHILD.iter().zip(&FOR_CHILD) {
        // the child keeps what before_fork made for it (it closes at exec or exit)
        entry.store(-1, Ordering::Relaxed);
        made.store(-1, Ordering::Relaxed);
    }
    for entry in &CLOSE_IN_CHILD {
        let fd = entry.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: fd is the child's copy of a descriptor qshm owns in the parent; the
            // child's handles never use it again (they are inert after a fork).
            unsafe { libc::close(fd) };
        }
    }
}

/// Open `/proc/self/fd/<fd>` (a new open file description of the same file) and take a
/// shared `flock` on it; returns the new descriptor (-1 if it could not). Async-signal-safe.
fn lock_anew(fd: RawFd) -> RawFd {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[14 + i] = digits[len - 1 - i];
    }
    // SAFETY: path is NUL-terminated (the buffer has room for 10 digits and a NUL).
    let new = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if new >= 0 {
        // SAFETY: new is a descriptor we just opened.
        unsafe { libc::flock(new, libc::LOCK_SH | libc::LOCK_NB) };
    }
    new
}

fn watch() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handlers only make async-signal-safe calls, as atfork handlers must.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    });
}

/// The current count, after making sure the `fork` handler is installed.
pub(crate) fn epoch_watched() -> u64 {
    watch();
    epoch()
}

/// The current count (cheap: one relaxed load).
#[inline]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// A descriptor in one of the child's tables; it leaves the table when dropped (before the
/// descriptor is closed).
#[derive(Debug)]
pub(crate) struct InChild {
    table: &'static [AtomicI32; TABLE],
    index: Option<usize>,
    fd: RawFd,
}

impl InChild {
    fn enter(table: &'static [AtomicI32; TABLE], fd: RawFd) -> InChild {
        watch();
        let index = table.iter().position(|entry| {
            entry
                .compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        });
        InChild { table, index, fd }
    }

    /// A lock-state descriptor the child closes.
    pub(crate) fn close(fd: RawFd) -> InChild {
        InChild::enter(&CLOSE_IN_CHILD, fd)
    }

    /// A POSIX segment descriptor whose file the child locks anew.
    pub(crate) fn share(fd: RawFd) -> InChild {
        InChild::enter(&SHARE_IN_CHILD, fd)
    }
}

impl Drop for InChild {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            // (in a child the entry was cleared, and may hold someone else's descriptor now)
            let _ = self.table[i].compare_exchange(self.fd, -1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A descriptor whose open file description proves something about this process (a lock
/// state's slot lock, the semaphore file a lease probe asks about): closed by this
/// process's `fork()`ed children (so that a child outliving its parent never makes a dead
/// process look alive), and in a child never closed again (the number may name another
/// file by then).
#[derive(Debug)]
pub(crate) struct ParentOnlyFd {
    fd: ManuallyDrop<OwnedFd>,
    in_child: Option<InChild>,
    fork_epoch: u64,
}

impl ParentOnlyFd {
    pub(crate) fn new(fd: OwnedFd) -> ParentOnlyFd {
        ParentOnlyFd {
            in_child: Some(InChild::close(fd.as_raw_fd())),
            fork_epoch: epoch_watched(),
            fd: ManuallyDrop::new(fd),
        }
    }
}

impl AsFd for ParentOnlyFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ParentOnlyFd {
    fn drop(&mut self) {
        // out of the child's table before the number can be reused
        drop(self.in_child.take());
        if epoch() == self.fork_epoch {
            // SAFETY: dropped once, here; nothing uses the descriptor after this.
            unsafe { ManuallyDrop::drop(&mut self.fd) };
        }
        // else: a fork()ed child, which closed its copy already
    }
}
