//! Which `fork()`ed children still hold what they inherited: one pipe per fork of a process
//! that uses qshm (a child may inherit a POSIX segment's mapping, its `flock` or its file,
//! see `fork.rs`). The child alone keeps the
//! write end, which closes when it `exec`s or exits (`O_CLOEXEC`), so the parent's read
//! end hangs up exactly then. A last detach that finds the segment's lock shared waits on
//! those read ends instead of guessing from the time since the last fork: a child slower
//! to `exec` than any fixed window (a loaded machine) no longer leaves the segment behind.
//!
//! The fork handlers run where only async-signal-safe calls are allowed: they use fixed
//! tables of atomics and `pipe2`, `poll` and `close`. A detacher borrows a table entry
//! (a count beside the descriptor) while it polls it, so that nobody closes it meanwhile.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::procfs;

/// How long a last detach waits at most for children forked while the segment was
/// attached to `exec` or exit; one that has not by then is taken for a child that uses
/// its inherited mapping (or attachment), and the segment stays.
pub(crate) const WAIT_FOR_CHILDREN: Duration = Duration::from_secs(1);

/// Children watched at once; a fork beyond them is counted in [`UNWATCHED`] instead.
const WATCHES: usize = 64;
/// A free entry: no descriptor (all ones), nobody borrowing it.
const FREE: u64 = u32::MAX as u64;
/// An entry being filled by a fork handler (no descriptor is this large).
const FILLING: u64 = (u32::MAX - 1) as u64;
/// One borrower, in an entry's high half.
const BORROW: u64 = 1 << 32;

/// Per entry: the read end of a child's pipe (low half) and its borrowers (high half).
static WATCH: [AtomicU64; WATCHES] = [const { AtomicU64::new(FREE) }; WATCHES];
/// The fork number each entry's child was made at.
static WATCH_FORK: [AtomicU64; WATCHES] = [const { AtomicU64::new(0) }; WATCHES];
/// When each entry's child was forked (`CLOCK_MONOTONIC`, nanoseconds).
static WATCH_BORN: [AtomicU64; WATCHES] = [const { AtomicU64::new(0) }; WATCHES];
/// Write ends between `before_fork` and the parent's handler (index as above).
static WRITE_END: [AtomicI32; WATCHES] = [const { AtomicI32::new(-1) }; WATCHES];
/// Forks that shared a segment's lock with their child, counted.
static FORKS: AtomicU64 = AtomicU64::new(0);
/// The last such fork whose child could not be watched (no free entry, no pipe).
static UNWATCHED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The entry of the fork this thread is making (its handlers run on this thread).
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn fd_of(entry: u64) -> Option<RawFd> {
    let low = entry & FREE;
    (low < FILLING).then_some(low as RawFd)
}

/// Forks whose handlers run now (their number; [`PENDING`] before it is drawn), so that
/// a segment made meanwhile counts them: such a fork may have read the tables before the
/// segment entered them and still copy its mapping into the child.
static IN_PROGRESS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
const PENDING: u64 = u64::MAX;
/// Forks in progress that found no free entry above.
static IN_PROGRESS_UNLISTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The `IN_PROGRESS` entry of the fork this thread is making.
    static MY_PROGRESS: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Every child with a larger number than this may have inherited what this process maps or
/// shares from now on: a segment reads it before it enters the fork tables and maps.
pub(crate) fn forks_before_now() -> u64 {
    let mut since = FORKS.load(Ordering::SeqCst);
    if IN_PROGRESS_UNLISTED.load(Ordering::SeqCst) > 0 {
        return 0;
    }
    for entry in &IN_PROGRESS {
        match entry.load(Ordering::SeqCst) {
            0 => {}
            PENDING => return 0, // its number may be below `since`: count every child
            number => since = since.min(number - 1),
        }
    }
    since
}

/// First thing in every `before_fork`: this fork is in progress, with a number and a pipe.
pub(super) fn before_fork() {
    let listed = IN_PROGRESS.iter().position(|entry| {
        entry
            .compare_exchange(0, PENDING, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    });
    if listed.is_none() {
        IN_PROGRESS_UNLISTED.fetch_add(1, Ordering::SeqCst);
    }
    MY_PROGRESS.with(|m| m.set(listed.unwrap_or(usize::MAX)));
    let number = FORKS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(i) = listed {
        IN_PROGRESS[i].store(number, Ordering::SeqCst);
    }
    let mut ends = [-1; 2];
    // SAFETY: pipe2 writes two descriptors; async-signal-safe.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        UNWATCHED.fetch_max(number, Ordering::SeqCst);
        return;
    }
    let [read, write] = ends;
    let slot = claim().or_else(|| {
        reap_hung_up();
        claim()
    });
    let Some(slot) = slot else {
        // SAFETY: both ends are ours and used nowhere else.
        unsafe {
            libc::close(read);
            libc::close(write);
        }
        UNWATCHED.fetch_max(number, Ordering::SeqCst);
        return;
    };
    WATCH_FORK[slot].store(number, Ordering::Relaxed);
    WATCH_BORN[slot].store(monotonic_ns(), Ordering::Relaxed);
    WRITE_END[slot].store(write, Ordering::Relaxed);
    WATCH[slot].store(read as u64, Ordering::Release);
    MINE.with(|m| m.set(slot));
}

/// `CLOCK_MONOTONIC` in nanoseconds (async-signal-safe).
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

/// A free entry, now `FILLING`.
fn claim() -> Option<usize> {
    WATCH.iter().position(|entry| {
        entry
            .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })
}

/// Close the read ends whose child is gone or `exec`'d and nobody borrows.
fn reap_hung_up() {
    for entry in &WATCH {
        let seen = entry.load(Ordering::Acquire);
        if let Some(fd) = fd_of(seen)
            && seen == fd as u64
            && hung_up(fd, 0)
            && entry
                .compare_exchange(seen, FREE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the entry was ours alone (no borrower) and is free now.
            unsafe { libc::close(fd) };
        }
    }
}

/// Whether `fd`'s pipe hung up within `millis` (no write end left).
fn hung_up(fd: RawFd, millis: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; poll is async-signal-safe.
    let n = unsafe { libc::poll(&mut p, 1, millis) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// This thread's fork is over (in the parent).
fn progress_done() {
    match MY_PROGRESS.with(|m| m.replace(usize::MAX)) {
        usize::MAX => {
            IN_PROGRESS_UNLISTED.fetch_sub(1, Ordering::SeqCst);
        }
        i => IN_PROGRESS[i].store(0, Ordering::SeqCst),
    }
}

/// In the parent after `fork`: only the child keeps the write end.
pub(super) fn in_parent() {
    progress_done();
    let slot = MINE.with(|m| m.replace(usize::MAX));
    if let Some(write) = WRITE_END.get(slot) {
        let fd = write.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the parent's copy of the write end before_fork made.
            unsafe { libc::close(fd) };
        }
    }
}

/// In the child: it keeps its own write end (closed at `exec` or exit) and closes the
/// others' (forks made at the same moment by other threads) and every read end.
pub(super) fn in_child() {
    let mine = MINE.with(|m| m.replace(usize::MAX));
    for (slot, write) in WRITE_END.iter().enumerate() {
        let fd = write.swap(-1, Ordering::Relaxed);
        if fd >= 0 && slot != mine {
            // SAFETY: the child's copy of another fork's write end; nobody uses it here.
            unsafe { libc::close(fd) };
        }
    }
    for entry in &WATCH {
        if let Some(fd) = fd_of(entry.swap(FREE, Ordering::Relaxed)) {
            // SAFETY: the child's copy of the parent's read end; the child's table is its own.
            unsafe { libc::close(fd) };
        }
    }
    UNWATCHED.store(0, Ordering::Relaxed);
    MY_PROGRESS.with(|m| m.set(usize::MAX));
    for entry in &IN_PROGRESS {
        entry.store(0, Ordering::Relaxed);
    }
    IN_PROGRESS_UNLISTED.store(0, Ordering::Relaxed);
}

/// A borrowed read end: the entry is not closed while it exists.
struct Borrowed {
    slot: usize,
    fd: RawFd,
    /// How much longer this child is waited for.
    left: Duration,
}

impl Borrowed {
    /// The read ends of children made after fork number `since` and less than `limit`
    /// ago (an older one that has not `exec`'d is taken for one that uses what it
    /// inherited); `None` while a fork handler fills an entry (the caller looks again a
    /// moment later).
    fn after(since: u64, limit: Duration) -> Option<Vec<Borrowed>> {
        let now = monotonic_ns();
        let limit = limit.as_nanos() as u64;
        let mut out = Vec::new();
        for (slot, entry) in WATCH.iter().enumerate() {
            let mut seen = entry.load(Ordering::Acquire);
            loop {
                if seen & FREE == FILLING {
                    return None; // (dropping `out` gives the others back)
                }
                let Some(fd) = fd_of(seen) else { break };
                let age = now.saturating_sub(WATCH_BORN[slot].load(Ordering::Relaxed));
                if WATCH_FORK[slot].load(Ordering::Relaxed) <= since || age >= limit {
                    break;
                }
                match entry.compare_exchange(seen, seen + BORROW, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let child = Borrowed {
                            slot,
                            fd,
                            left: Duration::from_nanos(limit - age),
                        };
                        // one that is gone already is no longer waited for (dropping
                        // the last borrow of it closes it)
                        if !hung_up(fd, 0) {
                            out.push(child);
                        }
                        break;
                    }
                    Err(now) => seen = now,
                }
            }
        }
        Some(out)
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let entry = &WATCH[self.slot];
        let left = entry.fetch_sub(BORROW, Ordering::AcqRel) - BORROW;
        // the last borrower of a hung-up pipe frees the entry
        if left == self.fd as u64
            && hung_up(self.fd, 0)
            && entry
                .compare_exchange(left, FREE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: no borrower is left and the entry is free now: the descriptor is ours.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// A last detach's `look` (the exclusive `flock`, the lease probe, `shm_nattch`) failed,
/// maybe only because children forked after fork number `since` still hold what they
/// inherited. Wait until each of them has `exec`'d or exited, but for none longer than
/// `limit` after its fork, and look again whenever one did; true as soon as `look` is.
/// False at once when no such child lives (the segment is another process's too), and
/// once the children left are older than `limit` (a child that never `exec`s uses its
/// inherited mapping: the segment stays). So a program with long-lived forked workers
/// only waits right after a fork, at most `limit`.
pub(crate) fn once_children_exec(
    since: u64,
    limit: Duration,
    look: impl FnMut() -> io::Result<bool>,
) -> io::Result<bool> {
    wait_for_children(since, limit, Spawned::Ignored, look)
}

/// [`once_children_exec`], also waiting (as long) for children spawned meanwhile through
/// a clone that runs no fork handlers (`posix_spawn`, `vfork`: Rust's `Command` without
/// `pre_exec`), which hold a copy of every descriptor until they `exec`. For a look that
/// counts open files (a lease probe), not `flock`s: qshm releases its locks explicitly,
/// so such a child never holds one.
pub(crate) fn once_children_and_spawned_exec(
    since: u64,
    limit: Duration,
    look: impl FnMut() -> io::Result<bool>,
) -> io::Result<bool> {
    wait_for_children(since, limit, Spawned::WaitedFor, look)
}

/// Whether a wait for children counts those spawned without fork handlers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spawned {
    Ignored,
    WaitedFor,
}

fn wait_for_children(
    since: u64,
    limit: Duration,
    spawned: Spawned,
    mut look: impl FnMut() -> io::Result<bool>,
) -> io::Result<bool> {
    // (a bound for children the table could not hold, and for spawned ones, whose age is
    // unknown)
    let deadline = Instant::now() + limit;
    let mut waited = false;
    loop {
        let own = match spawned {
            Spawned::WaitedFor if Instant::now() < deadline => procfs::own_children(limit),
            _ => procfs::OwnChildren::Settled,
        };
        // one that may be in the middle of its exec: look again over the settling time
        waited |= own == procfs::OwnChildren::JustStarted;
        let unwatched = Instant::now() < deadline
            && (UNWATCHED.load(Ordering::SeqCst) > since || own == procfs::OwnChildren::BeforeExec);
        let Some(children) = Borrowed::after(since, limit) else {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::yield_now();
            continue;
        };
        if children.is_empty() && !unwatched {
            // (children that hung up a moment ago may still hold their locks)
            return if waited { settled(look) } else { Ok(false) };
        }
        waited = true;

        // unwatched children (more than the table holds) can only be looked for now and then
        let slice = match children.iter().map(|c| c.left).min() {
            Some(left) if !unwatched => left,
            Some(left) => left.min(Duration::from_millis(5)),
            None => Duration::from_millis(5),
        };
        let mut polled: Vec<libc::pollfd> = children
            .iter()
            .map(|c| libc::pollfd {
                fd: c.fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let millis = i32::try_from(slice.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: polled is a valid array of pollfds for the borrowed descriptors.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, millis) };
        if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::last_os_error());
        }
        let all_gone = polled
            .iter()
            .all(|p| p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0);
        drop(children);
        if look()? {
            return Ok(true);
        }
        if all_gone && !unwatched {
            return settled(look);
        }
    }
}

/// How long the locks of a child that hung up may outlive its pipe: `exec` closes its
/// descriptors one by one, and the kernel releases each file a moment later.
const SETTLING: Duration = Duration::from_millis(50);

/// Every watched child is gone: look a few more times over [`SETTLING`] before deciding
/// that what holds the segment is another process's.
fn settled(mut look: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    let until = Instant::now() + SETTLING;
    let mut pause = Duration::from_micros(50);
    while Instant::now() < until {
        std::thread::sleep(pause);
        if look()? {
            return Ok(true);
        }
        pause = (pause * 2).min(Duration::from_millis(2));
    }
    Ok(false)
}
