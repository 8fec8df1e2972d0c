//! POSIX realtime backend: segments are files in `/dev/shm` (what `shm_open` opens), and
//! Qt's lock is a glibc semaphore file beside them (`sem.NAME`, what `sem_open` opens).
//!
//! # Made whole before anyone can find it
//!
//! `create` makes, in this order, before the segment has a name: Qt's semaphore of the key
//! (Qt-compatible mode; a stale one of ours is replaced, a live one shared), the segment
//! file (`O_TMPFILE`: size, pages reserved with `posix_fallocate`, so a full `/dev/shm` is
//! `OutOfResources` now and never `SIGBUS` later), and its lock state, named after the
//! file's identity. Then `linkat` names the segment, atomically: a taken name fails, so
//! two creators never both win. A Qt process that attaches finds Qt's semaphore already
//! there and never becomes its creator (Qt's creator unlinks the semaphore when it exits,
//! which would split the lock in two). A creator killed midway leaves a lock state whose
//! segment never got a name (an orphan `qshm ls` shows and any clean-up removes) and maybe
//! a semaphore, which the next `create` replaces.
//!
//! # Destroyed when the last user detaches (Qt leaks it on Linux)
//!
//! POSIX shared memory has no attachment count, so qshm keeps one the kernel maintains for
//! it: **every qshm attachment holds a shared `flock` on its own descriptor of the segment
//! file**, dropped when the descriptor closes, also when the process is killed.
//!
//! * **attach** opens the name (`O_NONBLOCK`: a destroyer's lease never stalls it), takes
//!   the shared lock without waiting, and checks that the name still means that file. If
//!   a destroyer holds the file exclusively, it closes its descriptor, waits a little and
//!   tries again (a bounded time), so that it never keeps the file open without a lock.
//! * **detach** unmaps and asks for the exclusive lock without waiting. Getting it means no
//!   other qshm attachment exists. Then a write-lease probe asks the kernel whether any
//!   other process, in any PID namespace, has the file open or mapped (Qt and other
//!   programs take no `flock`); a few probes a few milliseconds apart let qshm processes
//!   that are only passing by (an attach retrying, a tool looking) go. Only if one probe
//!   finds nobody is the name unlinked, with the lock state and the semaphore qshm made.
//!   Someone who stays is a user: the segment stays, whoever it is, even where `/proc`
//!   cannot show it (a Qt process of another user or container). In Qt-compatible mode
//!   Qt's semaphore is held meanwhile, as Qt holds it around its own attach.
//! * **stale segments** (every user killed, or left by Qt, which never unlinks) have no
//!   lock holder and nobody opens them; `create` reclaims such a segment if it is ours.
//!
//! Where the kernel cannot answer (a lease needs the file's owner or root, and Linux 5.3
//! to count read-only openers), `/proc` is asked: a mapper found there, or a process that
//! could open the file and whose mappings may not be read, keeps the segment.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod names;
mod probe;
mod semaphore;
mod semaphore_file;
mod semaphore_keep;

pub(crate) use names::id_of;
use names::segment_path;
// only `admin` reads segment names from outside this module
#[cfg(feature = "admin")]
pub(crate) use names::shm_file_name;

use probe::sweep_orphaned_lock_states;
pub(crate) use probe::{Probe, Reclaim, probe_existing, unused_by_others};
#[cfg(feature = "admin")]
pub(crate) use semaphore::remove_semaphore_if_unused;
pub(crate) use semaphore::{Semaphore, semaphore_file};
use semaphore::{semaphore_for_attach, semaphore_for_create};
#[cfg(feature = "admin")]
pub(crate) use semaphore_file::peek as peek_semaphore;
pub(crate) use semaphore_file::{SemaphoreFile, Take, holder_label, seen_value};

use super::exec_watch;
use super::fork::{self, InChild};
use super::lock_state::{self, CreateError, LockState, NewLockState, Origin, SegmentId};
use super::mapping::Mapping;
use super::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use super::procfs::Mapped;
use super::{
    AttachRequest, Attached, CreateRequest, Detached, IfMissing, LockMode, LockParts, Opened, Owner, Removal,
    SHM_DIR, SegmentBackend, SegmentStat, not_ours, owner_label,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os::{self, FileStat};

/// How often create/attach retry when they lose a race with a destroyer.
const RACE_RETRIES: usize = 64;

/// How long a destroyer waits for Qt's semaphore: a Qt attach holds it for microseconds;
/// a holder keeping it longer is not attaching.
const DESTROY_SEMAPHORE_WAIT: Duration = Duration::from_millis(100);

fn owner_of(st: &FileStat) -> Owner {
    Owner {
        uid: st.uid,
        gid: st.gid,
        creator_uid: st.uid,
        perms: st.mode & 0o777,
    }
}

/// An attached POSIX segment.
pub(crate) struct Segment {
    /// Open for the whole attachment: its shared `flock` is the attachment count.
    file: NamedFile,
    id: SegmentId,
    /// The lock state (for what it records: the semaphore qshm made).
    state: Option<Arc<LockState>>,
    /// Qt's semaphore (Qt-compatible mode), held by the destroyer around its last look.
    semaphore: Option<Arc<SemaphoreFile>>,
    fork_epoch: u64,
    /// A `fork()`ed child takes its own shared lock on the file (see `fork.rs`).
    _in_child: InChild,
}

pub(crate) fn create(key: &NativeIpcKey, req: &CreateRequest) -> Result<Attached, Failure> {
    let c_path = segment_path(key)?;
    sweep_orphaned_lock_states(&c_path);
    for _ in 0..RACE_RETRIES {
        match create_round(&c_path, req)? {
            Made::Segment(attached) => return Ok(attached),
            // lost a race with another creator or a destroyer: again
            Made::Again => continue,
            Made::Taken { owner } if owner != os::euid() => {
                return Err(not_ours("a segment of this key", owner));
            }
            Made::Taken { .. } => return Err(Failure::new(SharedMemoryError::AlreadyExists)),
        }
    }
    Err(Failure::because(
        SharedMemoryError::UnknownError,
        "the key kept being taken and released by others; gave up",
    ))
}

/// Attach to the live segment named by `key`, or create it (see [`super::open_or_create`]).
/// Looks first, so that attaching never makes (and reserves the pages of) a segment in
/// vain; `linkat` still decides between racing creators, and a creator that loses attaches
/// to the winner's segment in its next round.
pub(crate) fn open_or_create(
    key: &NativeIpcKey,
    create: &CreateRequest,
    attach_req: &AttachRequest,
) -> Result<(Attached, Opened), Failure> {
    let c_path = segment_path(key)?;
    sweep_orphaned_lock_states(&c_path);
    let mut without_lock_state = 0;
    for _ in 0..super::OPEN_OR_CREATE_ROUNDS {
        // a live segment (a stale one of ours is removed here, as create removes it)
        if let Probe::Live { .. } = probe_existing(&c_path, Reclaim::Ours)? {
            match attach(key, attach_req) {
                Ok(attached) => return Ok((attached, Opened::Attached)),
                // its last user destroyed it since we looked: create it
                Err(f) if f.kind == SharedMemoryError::NotFound => {}
                // A segment without lock state refuses LockMode::Fast. It may be Qt's, or
                // one whose creator was killed between naming it and its lock state: that
                // one is stale, and a next round's look removes it once the racers that
                // look at it with us let go. A few rounds tell; then the failure stands.
                Err(f)
                    if f.kind == SharedMemoryError::LockError
                        && without_lock_state < HALF_MADE_ROUNDS
                        && lacks_lock_state(&c_path) =>
                {
                    without_lock_state += 1;
                }
                Err(f) => return Err(f),
            }
        }
        match create_round(&c_path, create)? {
            Made::Segment(attached) => return Ok((attached, Opened::Created)),
            // another creator won (attach to its segment), or a destroyer was in the way
            Made::Taken { .. } | Made::Again => continue,
        }
    }
    Err(super::kept_changing())
}

/// How many rounds `open_or_create` gives a segment without lock state to turn out stale
/// (each round's look lets about 6 ms pass when others have it open).
const HALF_MADE_ROUNDS: usize = 8;

/// Whether the segment file named `c_path` has no lock state (made by another program,
/// or by a qshm creator killed before it named the lock state).
fn lacks_lock_state(c_path: &std::ffi::CString) -> bool {
    NamedFile::open(c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .is_ok_and(|file| LockState::missing(id_of(c_path, &file.stat)))
}

/// What one round of creating came to.
enum Made {
    /// The segment, made, named and attached.
    Segment(Attached),
    /// A race was lost (the name was taken by a stale segment now removed, or a squatter
    /// holds the lock state's name): try again.
    Again,
    /// A live segment has the name; `owner` is its owner.
    Taken { owner: u32 },
}

/// One round of [`create`]: Qt's semaphore (step 1), then the segment ([`create_once`]).
/// What was made for a segment that is not ours in the end is undone.
fn create_round(c_path: &std::ffi::CString, req: &CreateRequest) -> Result<Made, Failure> {
    // 1. Qt's semaphore, before the segment can be found
    let semaphore = match req.mode {
        LockMode::QtCompatible => Some(semaphore_for_create(&req.semaphore, req.perms & 0o777, c_path)?),
        LockMode::Fast => None,
    };
    let made = create_once(c_path, req, semaphore.as_ref().map(|s| &s.file));
    if let Some(sem) = semaphore
        && matches!(made, Ok(Made::Taken { .. }) | Err(_))
    {
        sem.undo();
    }
    made
}

/// Steps 2 to 5 of [`create`]: the segment file and its lock state, published.
fn create_once(
    c_path: &std::ffi::CString,
    req: &CreateRequest,
    semaphore: Option<&Arc<SemaphoreFile>>,
) -> Result<Made, Failure> {
    let dir = os::cstring(SHM_DIR)?;
    let perms = req.perms & 0o777;
    // 2. the file, unnamed: size, pages, and an exclusive flock that keeps attachers
    //    waiting until its lock state has its name too
    let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, perms)
        .map_err(|e| Failure::from(e).with_detail(format!("cannot make a file in {SHM_DIR}")))?;
    os::fchmod(&fd, perms)?;
    // reserves the pages and sets the size (no ftruncate needed)
    os::fallocate(&fd, req.size as u64).map_err(|e| size_failure(req.size, e))?;
    os::flock(&fd, libc::LOCK_EX)?;
    let st = os::fstat(&fd)?;
    let id = id_of(c_path, &st);
    // 3. its lock state, named after the file's identity, complete but unnamed
    let prepared = LockState::prepare(NewLockState {
        id,
        mode: req.mode,
        origin: Origin::Qshm,
        perms: lock_state::lock_permissions(perms),
        owner: None,
        key_file: None,
        // made, or shared with a racing creator: the segment's from now on, removed with
        // it by its last detacher
        semaphore: semaphore.map(|s| s.record()),
    })
    .map_err(|e| {
        lock_state_failure(match e {
            CreateError::Io(e) => e,
            CreateError::Taken => io::Error::from_raw_os_error(libc::EEXIST),
        })
    })?;
    // children forked from here on lock the file too (and are waited for by the last
    // detach): before the mapping, so that no child maps it without
    let in_child = InChild::share(std::os::fd::AsRawFd::as_raw_fd(&fd));
    let mapping = Mapping::map_file(&fd, req.size, req.writable)?;
    // 4. name the semaphore's second name, the lock state, then the segment (atomic, and
    //    fails if the name is taken): whoever finds the segment finds its lock state. (The
    //    other order let a creator killed in between leave a named segment without one,
    //    which an attacher took for another program's: LockError in Fast mode.) Killed in
    //    between: a lock state whose segment never got a name, or a second name without
    //    its lock state, orphans that clean-ups remove.
    //    The second name follows from the lock state's, so it goes first, while nobody
    //    else can know it (the segment file has no name yet): given after the lock state's,
    //    another user who saw that one could name a file there first, and when the Qt
    //    process that made the semaphore unlinked its Qt name, attachers made another
    //    semaphore: two locks.
    if let Some(sem) = semaphore {
        semaphore_keep::keep(sem, id);
    }
    let state = match prepared.publish() {
        Ok(state) => state,
        // a squatter on this identity's name: a new file gets a new identity
        Err(CreateError::Taken) => {
            LockState::remove_second_name(id);
            return Ok(Made::Again);
        }
        Err(CreateError::Io(e)) => {
            LockState::remove_second_name(id);
            return Err(lock_state_failure(e));
        }
    };
    match os::link_fd(&fd, c_path) {
        Ok(()) => {}
        Err(e) => {
            drop(mapping);
            drop(state);
            LockState::remove(id);
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e.into());
            }
            return Ok(match probe_existing(c_path, Reclaim::Ours)? {
                Probe::Live { owner } => Made::Taken { owner },
                Probe::Gone => Made::Again,
            });
        }
    }
    // 5. the semaphore opened in step 1 must still be the key's: the last detacher of a
    //    segment this one replaces unlinks its semaphore before its name, so a creator
    //    that shared that semaphore finds it gone here, and starts again with a new one
    //    (attachers make a new one when the name is missing: two locks otherwise)
    if let Some(sem) = semaphore
        && !sem.still_named()
    {
        drop(state);
        LockState::remove(id);
        if os::lstat(c_path).is_ok_and(|now| now.same_file(&st)) {
            let _ = os::unlink(c_path);
        }
        return Ok(Made::Again);
    }
    //    One made before the segment (a Qt process's attach makes it, 0600) lets in the
    //    new segment's other writers (bits are only added). Only now, when the segment is
    //    ours: a create that found another's segment must leave its semaphore as it was
    //    (its attachers refuse one wider than the segment). qshm's attachers are still
    //    kept waiting by the exclusive flock.
    if let Some(sem) = semaphore {
        sem.add_permissions(lock_state::locker_permissions(perms));
    }
    // 6. let attachers in: the creator's attachment is a shared lock like theirs
    os::flock(&fd, libc::LOCK_SH)?;
    name_the_mapping(c_path, &st, &mapping, req.writable);
    let file = NamedFile::from_parts(fd, st, c_path.clone());
    let lock = match semaphore {
        Some(sem) => LockParts::QtPosix {
            semaphore: sem.clone(),
            state: Some(state.clone()),
        },
        None => LockParts::Fast { state: state.clone() },
    };
    Ok(Made::Segment(Attached {
        segment: Box::new(Segment {
            _in_child: in_child,
            file,
            id,
            state: Some(state),
            semaphore: semaphore.cloned(),
            fork_epoch: fork::epoch_watched(),
        }),
        mapping,
        lock,
    }))
}

/// Map the creator's pages again through the segment's name: a mapping of the unnamed
/// `O_TMPFILE` descriptor is `/dev/shm/#INODE (deleted)` in `/proc/PID/maps` for ever,
/// one through the name is `/dev/shm/NAME`, and `/dev/shm/NAME (deleted)` once someone
/// removes it, which is how `qshm stat` finds the processes still using a removed segment
/// ([`crate::admin::removed_in_use`]). Best effort: the mapping stays as it was otherwise.
fn name_the_mapping(c_path: &std::ffi::CString, st: &FileStat, mapping: &Mapping, writable: bool) {
    let flags = if writable { libc::O_RDWR } else { libc::O_RDONLY };
    if let Ok(named) = NamedFile::open(c_path, flags, 0)
        && named.stat.same_file(st)
    {
        let _ = mapping.remap_through(&named.fd, writable);
    }
}

fn size_failure(size: usize, e: io::Error) -> Failure {
    let kind = match e.raw_os_error() {
        Some(libc::EFBIG | libc::EINVAL) => SharedMemoryError::InvalidSize,
        Some(libc::ENOSPC | libc::ENOMEM) => SharedMemoryError::OutOfResources,
        _ => SharedMemoryError::from_errno(e.raw_os_error().unwrap_or(0)),
    };
    let free = os::cstring(SHM_DIR)
        .and_then(|d| os::fs_space(&d))
        .map(|(free, _)| format!(" ({SHM_DIR} has {free} bytes free)"))
        .unwrap_or_default();
    Failure::from(e)
        .with_kind(kind)
        .with_detail(format!("cannot reserve {size} bytes for the segment{free}"))
}

pub(crate) fn lock_state_failure(e: io::Error) -> Failure {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::ENOMEM) => SharedMemoryError::OutOfResources,
        _ => SharedMemoryError::from_errno(e.raw_os_error().unwrap_or(0)),
    };
    Failure::from(e)
        .with_kind(kind)
        .with_detail(format!("cannot make the lock state in {SHM_DIR}"))
}

/// A last detach's look (the exclusive `flock`, the lease probe) that a child of ours may
/// fail until it `exec`s: look again each time such a child `exec`'d or exited (see
/// `exec_watch`). (Without it, any program that spawns processes from another thread left
/// segments behind: the last detach took the child's lock and open file for another
/// user's.)
fn once_children_exec(since: u64, look: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    exec_watch::once_children_exec(since, exec_watch::WAIT_FOR_CHILDREN, look)
}

/// Open the segment file for an attach: the file with a shared `flock` on it, still
/// carrying its name. While a destroyer or reclaimer holds it exclusively, the file is
/// closed and opened again a little later (never kept open without a lock, which would
/// look like a user to the destroyer's lease probe), up to [`FILE_LOCK_WAIT`].
fn open_attached(c_path: &std::ffi::CString, writable: bool) -> Result<NamedFile, Failure> {
    let flags = if writable { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_NONBLOCK;
    let deadline = Instant::now() + FILE_LOCK_WAIT;
    let mut pause = Duration::from_micros(50);
    loop {
        match NamedFile::open(c_path, flags, 0) {
            Ok(file) => {
                if file.try_lock(FileLock::Shared)? {
                    if file.still_named() {
                        return Ok(file);
                    }
                    // destroyed (and maybe made anew) meanwhile: look again at once
                    continue;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(Failure::new(SharedMemoryError::NotFound));
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                let owner = os::lstat(c_path)
                    .map(|st| owner_label(st.uid))
                    .unwrap_or_default();
                return Err(Failure::from(e).with_detail(format!("the segment belongs to {owner}")));
            }
            // a destroyer's lease: it is about to unlink, or to let go
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::from(super::named_file::lock_wait_timeout(c_path)));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

pub(crate) fn attach(key: &NativeIpcKey, req: &AttachRequest) -> Result<Attached, Failure> {
    let c_path = segment_path(key)?;
    let fork_epoch = fork::epoch_watched();
    for _ in 0..RACE_RETRIES {
        let file = open_attached(&c_path, req.writable)?;
        // A size once set never changes (qshm sets it before the name exists, Qt right
        // after shm_open): only a 0 seen at open is worth asking again.
        let st = match file.stat.size {
            0 => os::fstat(&file.fd)?,
            _ => file.stat,
        };
        if st.size == 0 {
            // a non-qshm creator (Qt) between shm_open and ftruncate: give it a moment
            drop(file);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let len = usize::try_from(st.size).map_err(|_| Failure::new(SharedMemoryError::InvalidSize))?;
        let id = id_of(&c_path, &st);
        let owner = owner_of(&st);
        let (state, mode) = super::lock_state_of(id, owner, req.mode, IfMissing::Make { semaphore: None })?;
        if mode == LockMode::Fast {
            // Nobody else has the file open at all (the kernel says so cheaply): then
            // nobody else maps it either. Else, if Qt's semaphore of this key is open
            // somewhere, a Qt process may map it: ask /proc who does. (A process that
            // maps it without any lock is not looked for: no mode would exclude it.)
            let alone = file.alone();
            file.release();
            if alone != Some(true) && semaphore::qt_semaphore_in_use(&req.semaphore) {
                let segment = Mapped::File {
                    dev: st.dev,
                    ino: st.ino,
                };
                super::refuse_fast_next_to_foreign_mapper(segment, state.as_deref())?;
            }
        }
        let lock = match (mode, state.clone()) {
            (LockMode::Fast, Some(state)) => LockParts::Fast { state },
            (LockMode::Fast, None) => unreachable_fast(),
            (LockMode::QtCompatible, state) => match semaphore_for_attach(
                &req.semaphore,
                owner,
                &c_path,
                state
                    .as_ref()
                    .and_then(|s| s.semaphore())
                    .map(|recorded| (id, recorded)),
            )? {
                Some(semaphore) => LockParts::QtPosix { semaphore, state },
                None => LockParts::Unlockable {
                    state,
                    mode: LockMode::QtCompatible,
                },
            },
        };
        // (before the mapping: see create_once)
        let in_child = InChild::share(std::os::fd::AsRawFd::as_raw_fd(&file.fd));
        let mapping = Mapping::map_file(&file.fd, len, req.writable)?;
        let semaphore = match &lock {
            LockParts::QtPosix { semaphore, .. } => Some(semaphore.clone()),
            _ => None,
        };
        return Ok(Attached {
            segment: Box::new(Segment {
                file: {
                    let mut file = file;
                    file.stat = st;
                    file
                },
                id,
                state,
                semaphore,
                fork_epoch,
                _in_child: in_child,
            }),
            mapping,
            lock,
        });
    }
    Err(Failure::new(SharedMemoryError::NotFound))
}

/// Fast mode always comes from a lock state (`lock_state_of` never says Fast without one).
#[cold]
fn unreachable_fast() -> LockParts {
    LockParts::Unlockable {
        state: None,
        mode: LockMode::Fast,
    }
}

impl SegmentBackend for Segment {
    fn stat(&self) -> io::Result<SegmentStat> {
        let now = os::fstat(&self.file.fd)?;
        Ok(SegmentStat {
            size: now.size,
            attachments: None,
            perms: now.mode & 0o777,
            uid: now.uid,
            created_secs: now.created_secs(),
            os_id: format!("{} (inode {})", self.file.path.to_string_lossy(), now.ino),
        })
    }

    fn removal(&self) -> io::Result<Removal> {
        // While we hold the file open its inode cannot be reused: another device and
        // inode under the name is another file.
        match os::lstat(&self.file.path) {
            Ok(now) if now.same_file(&self.file.stat) => Ok(Removal::Present),
            Ok(_) => Ok(Removal::Replaced),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Removal::Removed),
            Err(e) => Err(e),
        }
    }

    fn detach(self: Box<Self>) -> Result<Detached, Failure> {
        let Segment {
            file,
            id,
            state,
            semaphore,
            fork_epoch,
            _in_child,
        } = *self;
        let since = _in_child.forks_before();
        drop(_in_child);
        if fork::epoch() != fork_epoch {
            return Ok(Detached::Kept);
        }
        if !file.try_lock(FileLock::Exclusive)?
            && !once_children_exec(since, || file.try_lock(FileLock::Exclusive))?
        {
            return Ok(Detached::Kept); // other qshm attachments
        }
        let made_semaphore = state.as_ref().and_then(|s| s.semaphore());
        let ours = |sem: &SemaphoreFile| made_semaphore == Some(sem.record());
        if !file.still_named() {
            // removed behind our back (qshm rm, a test's clean-up): we were the last qshm
            // user of this incarnation; remove what was left of it. Qt's semaphore belongs
            // to the key, not the incarnation: a segment made since under the name (after
            // an `rm` that left the semaphore) shares it and keeps it; otherwise it goes
            // only if nobody else has it open (a creator may be sharing it already).
            LockState::remove(id);
            let made_again = os::lstat(&file.path).is_ok();
            if !made_again && let Some(sem) = semaphore.as_ref().filter(|s| ours(s)) {
                SemaphoreFile::unlink_if_alone(sem);
            }
            return Ok(Detached::WasGone);
        }
        if file.stat.uid != os::euid() && os::euid() != 0 {
            return Ok(Detached::Kept); // not ours to remove; its owner reclaims it
        }
        // Keep Qt's attach out: Qt holds its semaphore around attach.
        let label = state.as_ref().and_then(|s| s.label()).map_or(0, |l| l.word());
        let held = semaphore.as_ref().is_some_and(|sem| hold_briefly(sem, label));
        let mut outcome = Detached::Kept;
        if unused_by_others(&file)
            || exec_watch::once_children_and_spawned_exec(since, exec_watch::WAIT_FOR_CHILDREN, || {
                Ok(unused_by_others(&file))
            })?
        {
            // Qt's semaphore goes first (like Qt's creator, which unlinks it when it goes
            // away: whoever still has it open keeps it), while the segment still has its
            // name: a creator of the key can publish a new segment only once that name is
            // gone, and then sees that the semaphore it opened is gone too (it checks), so
            // no new segment ever shares a semaphore that is about to lose its name. (The
            // other order let a creator in between share it; the next attacher then made
            // another one: two locks.)
            if let Some(sem) = semaphore.as_ref().filter(|s| ours(s)) {
                sem.unlink_if_still_named();
            }
            // then the name, then the lock state: killed in between, this leaves a lock
            // state without a segment (an orphan the key's next create or destroy sweeps),
            // never a named segment without its lock state, which attachers would take for
            // another program's (the other order did; a crash trial found it)
            if matches!(file.unlink_if_still_named(), Ok(true)) {
                outcome = Detached::Destroyed;
            } else {
                file.release();
            }
            if !file.still_named() {
                LockState::remove(id);
            }
        }
        let c_path = file.path.clone();
        drop(file);
        if held && let Some(sem) = &semaphore {
            let _ = sem.give_back(label);
        }
        if outcome == Detached::Destroyed {
            // what racers killed between naming their lock state and their segment left
            sweep_orphaned_lock_states(&c_path);
        }
        Ok(outcome)
    }

    fn forget(self: Box<Self>) {
        // The descriptor shares its open file description (and so its flock) with the
        // parent: closing our copy leaves the parent's lock in place.
        drop(self);
    }
}

/// Take a unit of `sem` for at most [`DESTROY_SEMAPHORE_WAIT`] (labelled, so that a
/// destroyer killed meanwhile is recovered like any holder).
fn hold_briefly(sem: &SemaphoreFile, label: u32) -> bool {
    let deadline = Instant::now() + DESTROY_SEMAPHORE_WAIT;
    loop {
        match sem.try_take(label, false) {
            Ok(Take::Took) => return true,
            Ok(Take::Busy(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return false,
        }
    }
}

/// Destroy the segment of `key` and what belongs to it, whoever still uses it.
pub(crate) fn remove(key: &NativeIpcKey, semaphore: &NativeIpcKey) -> Result<bool, Failure> {
    let c_path = segment_path(key)?;
    let existed = match NamedFile::open(&c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Ok(file) => {
            // the name first, then the lock state (see the last detach)
            let unlinked = file.unlink_if_still_named()?;
            LockState::remove(id_of(&file.path, &file.stat));
            unlinked
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => return Err(e.into()),
    };
    if let Ok(path) = semaphore_file(semaphore).and_then(|p| Ok(os::cstring(&p)?)) {
        let _ = os::unlink(&path);
    }
    Ok(existed)
}
