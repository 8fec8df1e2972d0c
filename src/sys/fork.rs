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
//! * Every fork gets a pipe whose write end only the child keeps, so that a last detach can
//!   wait until the children that may hold a segment have `exec`'d or exited
//!   (`exec_watch.rs`).
//!
//! The handlers run around `fork`, where only async-signal-safe calls are allowed: they
//! read fixed tables of atomics and constant-initialised thread-locals (plain TLS
//! accesses), format a path into a stack buffer and call `open`, `flock`, `pipe2`, `poll`
//! and `close`.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::exec_watch;

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many descriptors of each kind the tables hold; more are left out of the child's
/// care (a child of a process with that many attachments keeps their slots alive).
const TABLE: usize = 1024;
/// Lock-state descriptors the child closes.
static CLOSE_IN_CHILD: [AtomicU64; TABLE] = [const { AtomicU64::new(EMPTY) }; TABLE];
/// POSIX segment descriptors whose file the child locks anew.
static SHARE_IN_CHILD: [AtomicU64; TABLE] = [const { AtomicU64::new(EMPTY) }; TABLE];
/// An entry of those tables: the descriptor (low half) and the entry's number (high half),
/// so that a fork handler can tell the entry it read from a later one that reuses the
/// slot and the descriptor number.
const EMPTY: u64 = u64::MAX;
static ENTRIES: AtomicU32 = AtomicU32::new(0);

fn entry_fd(entry: u64) -> Option<RawFd> {
    (entry != EMPTY).then_some(entry as u32 as RawFd)
}
/// The descriptors the parent opened for children before `fork`, each with the number of
/// the fork it was opened for (`made`): two threads forking at once each close only their
/// own in the parent, and each child keeps only its own. (One shared slot per segment, as
/// before, let one fork overwrite another's descriptor: the parent then kept that one, and
/// its lock, for good, and a child could hold a lock no watch knew of.)
static FOR_CHILD: [AtomicU64; TABLE] = [const { AtomicU64::new(NOT_MADE) }; TABLE];
const NOT_MADE: u64 = u64::MAX;
/// Numbers for forks that share segments' locks (0: none).
static MADE_FOR: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// The number of the fork this thread is making (its handlers run on this thread).
    static MY_FORK: Cell<u32> = const { Cell::new(0) };
}

fn made(fork: u32, fd: RawFd) -> u64 {
    (u64::from(fork) << 32) | u64::from(fd as u32)
}

fn made_parts(entry: u64) -> Option<(u32, RawFd)> {
    (entry != NOT_MADE).then_some(((entry >> 32) as u32, entry as u32 as RawFd))
}

extern "C" fn before_fork() {
    // counted and watched first: see exec_watch::forks_before_now
    exec_watch::before_fork();
    let mut share = [EMPTY; TABLE];
    let mut any = false;
    for (to, entry) in share.iter_mut().zip(&SHARE_IN_CHILD) {
        *to = entry.load(Ordering::SeqCst);
        any |= *to != EMPTY;
    }
    if !any {
        return;
    }
    let mut number = MADE_FOR.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if number == 0 || number == u32::MAX {
        number = 1;
    }
    MY_FORK.with(|m| m.set(number));
    for (seen, entry) in share.into_iter().zip(&SHARE_IN_CHILD) {
        let Some(fd) = entry_fd(seen) else { continue };
        let new = lock_anew(fd);
        if new < 0 {
            continue;
        }
        if entry.load(Ordering::SeqCst) != seen {
            // detached meanwhile: the number may name another segment's file by now,
            // which this fork was not counted for
            // SAFETY: our own new descriptor, in no table.
            unsafe { libc::close(new) };
            continue;
        }
        let placed = FOR_CHILD.iter().any(|slot| {
            slot.compare_exchange(NOT_MADE, made(number, new), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        });
        if !placed {
            // SAFETY: our own new descriptor, in no table: the child goes without it.
            unsafe { libc::close(new) };
        }
    }
}

extern "C" fn in_parent() {
    exec_watch::in_parent();
    let mine = MY_FORK.with(|m| m.replace(0));
    if mine == 0 {
        return;
    }
    for slot in &FOR_CHILD {
        let entry = slot.load(Ordering::Relaxed);
        if let Some((fork, fd)) = made_parts(entry)
            && fork == mine
            && slot
                .compare_exchange(entry, NOT_MADE, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: our copy of a descriptor before_fork opened for this fork; the child
            // keeps its copy (and so the open file description and its lock).
            unsafe { libc::close(fd) };
        }
    }
}

extern "C" fn in_child() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    exec_watch::in_child();
    let mine = MY_FORK.with(|m| m.replace(0));
    for entry in &SHARE_IN_CHILD {
        entry.store(EMPTY, Ordering::Relaxed);
    }
    for slot in &FOR_CHILD {
        if let Some((fork, fd)) = made_parts(slot.swap(NOT_MADE, Ordering::Relaxed))
            && fork != mine
        {
            // SAFETY: the child's copy of a descriptor made for another thread's fork
            // at the same moment; this child must not hold its lock.
            unsafe { libc::close(fd) };
        }
        // its own it keeps: they close at exec or exit
    }
    for entry in &CLOSE_IN_CHILD {
        if let Some(fd) = entry_fd(entry.swap(EMPTY, Ordering::Relaxed)) {
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
        // (it may fail: the creator holds the file exclusively until the segment is made;
        // the child still keeps the file open, which a last detach's lease probe sees)
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
    table: &'static [AtomicU64; TABLE],
    index: Option<usize>,
    entry: u64,
    forks_before: u64,
}

impl InChild {
    fn enter(table: &'static [AtomicU64; TABLE], fd: RawFd) -> InChild {
        watch();
        // read before the entry is in the table (and the segment mapped): a fork that may
        // see the entry, or copy the mapping, has a larger number than this
        let forks_before = exec_watch::forks_before_now();
        let mut number = ENTRIES.fetch_add(1, Ordering::Relaxed);
        if number == u32::MAX {
            number = ENTRIES.fetch_add(1, Ordering::Relaxed);
        }
        let entry = (u64::from(number) << 32) | u64::from(fd as u32);
        let index = table.iter().position(|slot| {
            slot.compare_exchange(EMPTY, entry, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        });
        InChild {
            table,
            index,
            entry,
            forks_before,
        }
    }

    /// The number of forks before this entry: only children forked after it may hold
    /// what it shares (see `exec_watch::once_children_exec`).
    pub(crate) fn forks_before(&self) -> u64 {
        self.forks_before
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
            let _ = self.table[i].compare_exchange(self.entry, EMPTY, Ordering::SeqCst, Ordering::Relaxed);
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
