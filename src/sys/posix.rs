//! POSIX realtime backend: `shm_open` segments in `/dev/shm` and `sem_open` semaphores.
//!
//! # Destroying the segment when the last user detaches (Qt leaks it on Linux)
//!
//! POSIX shared memory has no attachment count, so qshm keeps one that survives
//! crashes: **every qshm attachment holds a shared `flock` on its own descriptor of the
//! segment file**, for as long as it is attached. The kernel drops the lock when the
//! descriptor is closed, also when the process is killed, so the count can never leak.
//!
//! * **create** prepares the file unnamed (`O_TMPFILE`): its size, its pages
//!   (`posix_fallocate`: a full `/dev/shm` is `OutOfResources` now, never `SIGBUS`
//!   later), the mapping, and an *exclusive* lock. Then the file gets its name with
//!   `linkat`, which fails atomically if the name is taken, so two creators cannot both
//!   win. While attachers wait for the exclusive lock, the creator makes the lock state
//!   (named after the file's identity, see `lock_state.rs`) and opens Qt's semaphore; then
//!   it turns its lock into a shared one like every attachment's. A creator killed midway
//!   leaves either nothing or a stale segment that the next `create` reclaims.
//! * **attach** opens the name, takes the shared lock (waiting a bounded time while a
//!   destroyer holds it exclusively), then checks that the name still refers to the same
//!   file. If not, the segment was destroyed meanwhile: look again, or `NotFound`.
//! * **detach** unmaps and asks for the exclusive lock without waiting. Getting it means
//!   no other qshm attachment exists. Then a write-lease probe asks the kernel whether any
//!   other process has the file open or mapped at all (Qt and other programs take no
//!   flock); only if none does is the name unlinked — in every lock mode. In Qt-compatible
//!   mode Qt's semaphore is held around this, as Qt holds it around its own attach, so a
//!   Qt attach cannot slip in between. The cost does not depend on how many processes run.
//! * **stale segments** (every user killed; or left by Qt, which never unlinks) keep their
//!   name but have no lock holder and no mapper. `create` reclaims such a segment if it is
//!   ours (never another user's: that is `AlreadyExists`, naming the owner).

use std::ffi::CString;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lock_state::{self, CreateError, LockState, NewLockState, Origin, SegmentId};
use super::mapping::Mapping;
use super::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use super::os::{self, FileStat, NamedSemaphore};
use super::procfs::{self, Mapped};
use super::{
    AttachRequest, Attached, CreateRequest, Detached, LockMode, Owner, SegmentBackend, SegmentStat,
    SemaphoreBackend, SemaphoreMode, fork, not_ours, owner_label,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;

/// Where glibc's `shm_open` and `sem_open` keep their files.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// How often create/attach retry when they lose a race with a destroyer.
const RACE_RETRIES: usize = 32;

/// How long a destroyer waits for Qt's semaphore: a Qt attach holds it for microseconds;
/// a holder keeping it longer is not attaching.
const DESTROY_SEMAPHORE_WAIT: Duration = Duration::from_millis(100);

/// The file name a POSIX native key maps to under `/dev/shm` (what glibc does: leading
/// slashes dropped, no other slash allowed), refusing the names of glibc's semaphores
/// and qshm's lock state, which live in the same directory.
pub(crate) fn shm_file_name(native: &str) -> Result<&str, Failure> {
    let key_error = |why: &str| Failure::because(SharedMemoryError::KeyError, why);
    let name = native.trim_start_matches('/');
    if name.is_empty() || name == "." || name == ".." {
        return Err(key_error("a POSIX key needs a name after the '/'"));
    }
    if name.contains('/') {
        return Err(key_error(
            "a POSIX key may not contain '/' after the first character",
        ));
    }
    if name.len() > 255 {
        return Err(key_error("a POSIX key may be at most 255 bytes long"));
    }
    if name.starts_with("sem.") || name.starts_with(lock_state::LOCK_STATE_PREFIX) {
        return Err(key_error(
            "POSIX segment names starting with \"sem.\" (glibc's semaphores) or \"qshm-lock.\" \
             (qshm's lock state) are reserved",
        ));
    }
    Ok(name)
}

fn segment_path(key: &NativeIpcKey) -> Result<CString, Failure> {
    let name = shm_file_name(key.native())?;
    Ok(os::cstring(&format!("{SHM_DIR}/{name}"))?)
}

fn id_of(c_path: &CString, st: &FileStat) -> SegmentId {
    let name = c_path.to_str().unwrap_or("").rsplit('/').next().unwrap_or("");
    SegmentId::Posix {
        name_tag: lock_state::name_tag(name),
        ino: st.ino,
        btime_ns: st.btime_ns.unwrap_or(st.ctime_ns),
    }
}

/// The mark qshm's creator puts on a segment file: the sticky bit, which means nothing
/// on a regular file to Linux, Qt or anyone else. A segment file with the mark but no
/// lock state is one whose qshm creator died between publishing and finishing it.
const QSHM_MADE: u32 = libc::S_ISVTX;

fn owner_of(st: &FileStat) -> Owner {
    Owner {
        uid: st.uid,
        gid: st.gid,
        creator_uid: st.uid,
        perms: st.mode & 0o777,
        unfinished_if_bare: st.mode & QSHM_MADE != 0,
    }
}

/// An attached POSIX segment.
pub(crate) struct Segment {
    /// Open for the whole attachment: its shared `flock` is the attachment count.
    file: NamedFile,
    id: SegmentId,
    mode: LockMode,
    semaphore: Option<Arc<dyn SemaphoreBackend>>,
    semaphore_key: NativeIpcKey,
    /// (device, inode) of the lock state, to tell qshm's processes from others in `/proc`.
    lock_state_file: Option<(u64, u64)>,
    fork_epoch: u64,
}

pub(crate) fn create(key: &NativeIpcKey, req: &CreateRequest) -> Result<Attached, Failure> {
    let c_path = segment_path(key)?;
    let dir = os::cstring(SHM_DIR)?;
    let perms = req.perms & 0o777;
    let lock_perms = lock_state::lock_permissions(perms);
    let fork_epoch = fork::epoch_watched();
    if req.mode == LockMode::QtCompatible {
        refuse_foreign_semaphore(&req.semaphore)?;
    }
    for _ in 0..RACE_RETRIES {
        // 1. the file, unnamed: size, pages, mapping, and an exclusive lock that keeps
        //    attachers waiting until the lock state exists
        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, perms)
            .map_err(|e| Failure::from(e).with_detail(format!("cannot make a file in {SHM_DIR}")))?;
        os::fchmod(&fd, perms | QSHM_MADE)?;
        os::ftruncate(&fd, req.size as u64).map_err(|e| size_failure(req.size, e))?;
        os::fallocate(&fd, req.size as u64).map_err(|e| size_failure(req.size, e))?;
        os::flock(&fd, libc::LOCK_EX)?;
        let st = os::fstat(&fd)?;
        let id = id_of(&c_path, &st);
        let mapping = Mapping::map_file(&fd, req.size, req.writable)?;
        // 2. publish it: atomic, and fails if the name is taken
        match os::link_fd(&fd, &c_path) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                drop(mapping);
                match probe_existing(&c_path)? {
                    Probe::Live { owner } if owner != os::euid() => {
                        return Err(not_ours("a segment of this key", owner));
                    }
                    Probe::Live { .. } => return Err(Failure::new(SharedMemoryError::AlreadyExists)),
                    Probe::Gone => continue,
                }
            }
            Err(e) => return Err(e.into()),
        }
        let file = NamedFile {
            fd,
            stat: st,
            path: c_path.clone(),
        };
        // 3. its lock state and Qt's semaphore, while attachers wait for our lock. If we
        //    die here, the segment is stale (no lock holder, no mapper) and reclaimed.
        let undo = |file: &NamedFile| {
            let _ = file.unlink_if_still_named();
        };
        let lock_state = match LockState::create(NewLockState {
            id,
            mode: req.mode,
            origin: Origin::Qshm,
            perms: lock_perms,
            owner: None,
            key_file: None,
        }) {
            Ok(state) => state,
            // someone squats on this identity's name: a new file gets a new identity
            Err(CreateError::Taken) => {
                undo(&file);
                continue;
            }
            Err(CreateError::Io(e)) => {
                undo(&file);
                return Err(lock_state_failure(e));
            }
        };
        let semaphore: Option<Arc<dyn SemaphoreBackend>> = match req.mode {
            LockMode::QtCompatible => match open_owned_semaphore(&req.semaphore, lock_perms) {
                Ok(sem) => Some(sem),
                Err(e) => {
                    drop(lock_state);
                    LockState::remove(id);
                    undo(&file);
                    return Err(e);
                }
            },
            LockMode::Fast => None,
        };
        // 4. let attachers in (the creator's attachment is a shared lock like theirs)
        os::flock(&file.fd, libc::LOCK_SH)?;
        let segment = Segment {
            file,
            id,
            mode: req.mode,
            semaphore: semaphore.clone(),
            semaphore_key: req.semaphore.clone(),
            lock_state_file: Some(lock_state.file_id()),
            fork_epoch,
        };
        return Ok(Attached {
            segment: Box::new(segment),
            mapping,
            lock_state: Some(lock_state),
            semaphore,
            mode: req.mode,
        });
    }
    Err(Failure::because(
        SharedMemoryError::UnknownError,
        "the key kept being taken and released by others; gave up",
    ))
}

/// Refuse, before anything is made, a semaphore file that belongs to another user.
fn refuse_foreign_semaphore(key: &NativeIpcKey) -> Result<(), Failure> {
    match os::cstring(&semaphore_file(key)?).and_then(|p| os::lstat(&p)) {
        Ok(st) if st.uid != os::euid() => Err(not_ours("the lock's semaphore", st.uid)),
        _ => Ok(()),
    }
}

/// Qt's semaphore for a segment being created: open or make it, but never one that
/// belongs to another user (they could set it to 0, or to 5).
fn open_owned_semaphore(key: &NativeIpcKey, perms: u32) -> Result<Arc<dyn SemaphoreBackend>, Failure> {
    refuse_foreign_semaphore(key)?;
    let sem = Semaphore::open(key, 1, SemaphoreMode::Open, perms)?;
    match sem.owner() {
        Some(uid) if uid != os::euid() => Err(not_ours("the lock's semaphore", uid)),
        _ => Ok(Arc::new(sem)),
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
    Failure::from(e).with_detail(format!("cannot make the lock state in {SHM_DIR}"))
}

pub(crate) fn attach(key: &NativeIpcKey, req: &AttachRequest) -> Result<Attached, Failure> {
    let c_path = segment_path(key)?;
    let flags = if req.writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let fork_epoch = fork::epoch_watched();
    let deadline = Instant::now() + FILE_LOCK_WAIT;
    for _ in 0..RACE_RETRIES {
        let file = match NamedFile::open(&c_path, flags, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(Failure::new(SharedMemoryError::NotFound));
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                let owner = os::lstat(&c_path)
                    .map(|st| owner_label(st.uid))
                    .unwrap_or_default();
                return Err(Failure::from(e).with_detail(format!("the segment belongs to {owner}")));
            }
            Err(e) => return Err(e.into()),
        };
        file.lock_until(FileLock::Shared, deadline)?;
        if !file.still_named() {
            continue; // destroyed (and maybe made anew) while we waited
        }
        let st = os::fstat(&file.fd)?;
        if st.size == 0 {
            // a non-qshm creator (Qt) between shm_open and ftruncate: give it a moment
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let len = usize::try_from(st.size).map_err(|_| Failure::new(SharedMemoryError::InvalidSize))?;
        let id = id_of(&c_path, &st);
        let (lock_state, mode) = super::adopt_lock_state(id, owner_of(&st), req.mode)?;
        if mode == LockMode::Fast {
            // nobody else has the file open at all (the kernel says so cheaply): then
            // nobody else maps it either; else ask /proc who does
            let alone = file.alone();
            file.release();
            if alone != Some(true) {
                let segment = Mapped::File {
                    dev: st.dev,
                    ino: st.ino,
                };
                super::refuse_fast_next_to_foreign_mapper(segment, lock_state.as_ref())?;
            }
        }
        let mapping = Mapping::map_file(&file.fd, len, req.writable)?;
        let semaphore: Option<Arc<dyn SemaphoreBackend>> = match mode {
            LockMode::QtCompatible => Some(Arc::new(Semaphore::open(
                &req.semaphore,
                1,
                SemaphoreMode::Open,
                lock_state::lock_permissions(st.mode & 0o777),
            )?)),
            LockMode::Fast => None,
        };
        let segment = Segment {
            file: NamedFile { stat: st, ..file },
            id,
            mode,
            semaphore: semaphore.clone(),
            semaphore_key: req.semaphore.clone(),
            lock_state_file: lock_state.as_ref().map(LockState::file_id),
            fork_epoch,
        };
        return Ok(Attached {
            segment: Box::new(segment),
            mapping,
            lock_state,
            semaphore,
            mode,
        });
    }
    Err(Failure::new(SharedMemoryError::NotFound))
}

/// What a look at an existing segment name found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// In use, or not ours to remove (`owner`: whose it is).
    Live { owner: u32 },
    /// It was removed (by us, because it was stale and ours, or by someone else).
    Gone,
}

/// Look at the segment file named `c_path`: remove it (with its lock state) if it is ours
/// and stale, else report it live.
pub(crate) fn probe_existing(c_path: &CString) -> Result<Probe, Failure> {
    let file = match NamedFile::open(c_path, libc::O_RDONLY, 0) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Probe::Gone),
        // not ours to inspect (another user's, or not a regular file): in use
        Err(_) => {
            let owner = os::lstat(c_path).map(|st| st.uid).unwrap_or(u32::MAX);
            return Ok(Probe::Live { owner });
        }
    };
    let owner = file.stat.uid;
    if owner != os::euid() {
        return Ok(Probe::Live { owner });
    }
    if !file.try_lock(FileLock::Exclusive)? {
        // A shared lock means a live user; an exclusive one a destroyer, who always
        // unlinks: wait for it, then see if the name survived.
        file.lock_until(FileLock::Shared, Instant::now() + FILE_LOCK_WAIT)?;
        return Ok(if file.still_named() {
            Probe::Live { owner }
        } else {
            Probe::Gone
        });
    }
    if !file.still_named() {
        return Ok(Probe::Gone);
    }
    if !unused_by_others(&file) {
        return Ok(Probe::Live { owner });
    }
    LockState::remove(id_of(&file.path, &file.stat));
    let removed = file.unlink_if_still_named();
    file.release();
    removed?;
    Ok(Probe::Gone)
}

/// Whether, holding the segment file's exclusive `flock` (so no qshm attachment exists),
/// no other process can still be using it. Asked first of the kernel (a lease probe,
/// cheap whatever the number of processes): nobody else has the file open at all. If
/// someone has, it may be a qshm process coming or going, which holds the file open for a
/// moment but maps nothing while we hold the lock; a program that is not qshm (Qt) maps
/// the file while attached, and that is what `/proc` is asked then. (A Qt attach in
/// progress, between `shm_open` and `mmap`, holds Qt's semaphore, which a Qt-compatible
/// destroyer holds meanwhile.) On `true` a lease may be held: [`NamedFile::release`] it.
fn unused_by_others(file: &NamedFile) -> bool {
    match file.alone() {
        Some(true) => true,
        Some(false) | None => !mapped_by_others(&file.stat),
    }
}

/// The `/proc` fallback where no lease can be taken: does any other process map the file?
/// Processes we may not inspect count as mapping it if they could open it.
fn mapped_by_others(st: &FileStat) -> bool {
    let census = procfs::census(&[Mapped::File {
        dev: st.dev,
        ino: st.ino,
    }]);
    !census.mapping.is_empty()
        || census
            .hidden
            .iter()
            .any(|&(_, uid)| uid == 0 || uid == st.uid || st.mode & 0o066 != 0)
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

    fn detach(self: Box<Self>) -> Result<Detached, Failure> {
        let Segment {
            file,
            id,
            mode,
            semaphore,
            semaphore_key,
            lock_state_file,
            fork_epoch,
        } = *self;
        if fork::epoch() != fork_epoch {
            return Ok(Detached::Kept);
        }
        if !file.try_lock(FileLock::Exclusive)? {
            return Ok(Detached::Kept); // other qshm attachments
        }
        if !file.still_named() {
            // removed behind our back (qshm rm, a test's clean-up): we were the last qshm
            // user of this incarnation; remove what was left of it
            LockState::remove(id);
            if matches!(os::lstat(&file.path), Err(e) if e.raw_os_error() == Some(libc::ENOENT)) {
                drop(semaphore);
                remove_semaphore_if_unused(&semaphore_key, lock_state_file);
            }
            return Ok(Detached::WasGone);
        }
        if file.stat.uid != os::euid() && os::euid() != 0 {
            return Ok(Detached::Kept); // not ours to remove; its owner reclaims it
        }
        // Keep Qt's attach out: Qt holds its semaphore around attach.
        let held = mode == LockMode::QtCompatible
            && semaphore
                .as_ref()
                .is_some_and(|sem| sem.acquire_existing(DESTROY_SEMAPHORE_WAIT).unwrap_or(false));
        let mut outcome = Detached::Kept;
        if unused_by_others(&file) {
            LockState::remove(id);
            let unlinked = file.unlink_if_still_named();
            file.release();
            if matches!(unlinked, Ok(true)) {
                outcome = Detached::Destroyed;
            }
        }
        if held && let Some(sem) = &semaphore {
            let _ = sem.release(1);
        }
        if outcome == Detached::Destroyed && mode == LockMode::QtCompatible {
            drop(semaphore);
            remove_semaphore_if_unused(&semaphore_key, lock_state_file);
        }
        drop(file);
        Ok(outcome)
    }

    fn forget(self: Box<Self>) {
        // The descriptor shares its open file description (and so its flock) with the
        // parent: closing our copy leaves the parent's lock in place.
        drop(self);
    }
}

/// The file a POSIX semaphore key lives in.
pub(crate) fn semaphore_file(key: &NativeIpcKey) -> Result<String, Failure> {
    let name = key.native().trim_start_matches('/');
    if name.is_empty() || name.contains('/') {
        return Err(Failure::because(
            SharedMemoryError::KeyError,
            "not a POSIX semaphore name",
        ));
    }
    Ok(format!("{SHM_DIR}/sem.{name}"))
}

/// Remove the POSIX semaphore `key` if it is ours and no process outside qshm can be using
/// it: nobody else has it open (a lease probe), or everyone who maps it also maps the
/// lock state `lock_state` (qshm processes of this segment, on their way out: they close
/// the semaphore before the lock state). A semaphore a Qt program holds open stays.
pub(crate) fn remove_semaphore_if_unused(key: &NativeIpcKey, lock_state: Option<(u64, u64)>) -> bool {
    let Ok(path) = semaphore_file(key).and_then(|p| Ok(os::cstring(&p)?)) else {
        return false;
    };
    let Ok(file) = NamedFile::open(&path, libc::O_RDWR, 0) else {
        return false;
    };
    if file.stat.uid != os::euid() && os::euid() != 0 {
        return false;
    }
    let unused = match file.alone() {
        Some(true) => true,
        _ => {
            let sem = Mapped::File {
                dev: file.stat.dev,
                ino: file.stat.ino,
            };
            match lock_state {
                Some((dev, ino)) => {
                    let census = procfs::census(&[sem, Mapped::File { dev, ino }]);
                    census.hidden.is_empty()
                        && census
                            .mapping
                            .iter()
                            .all(|&(_, bits)| bits & 0b10 != 0 || bits & 0b01 == 0)
                }
                None => !mapped_by_others(&file.stat),
            }
        }
    };
    let removed = unused && matches!(file.unlink_if_still_named(), Ok(true));
    file.release();
    removed
}

/// A POSIX named semaphore (`sem_open`), opened the way `QSystemSemaphore` opens it.
pub(crate) struct Semaphore {
    sem: NamedSemaphore,
    name: CString,
    created: bool,
}

impl Semaphore {
    pub(crate) fn open(
        key: &NativeIpcKey,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
    ) -> Result<Semaphore, Failure> {
        semaphore_file(key)?;
        if initial > os::SEM_VALUE_MAX {
            return Err(Failure::because(
                SharedMemoryError::InvalidSize,
                format!(
                    "initial value {initial} is above the system's maximum {}",
                    os::SEM_VALUE_MAX
                ),
            ));
        }
        let name = os::cstring(key.native())?;
        let perms = perms as libc::mode_t;
        let mut tries = 0;
        loop {
            tries += 1;
            match NamedSemaphore::open(&name, libc::O_CREAT | libc::O_EXCL, perms, initial) {
                Ok(sem) => {
                    // sem_open applies the umask; give it exactly the mode asked for
                    if let Ok(file) = semaphore_file(key).and_then(|f| Ok(os::cstring(&f)?)) {
                        let _ = os::chmod(&file, perms);
                    }
                    return Ok(Semaphore {
                        sem,
                        name,
                        created: true,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match mode {
                // Qt: a semaphore that exists at create time survived a crash: replace it.
                SemaphoreMode::Create if tries < 3 => match NamedSemaphore::unlink(&name) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                },
                _ => match NamedSemaphore::open(&name, 0, 0, 0) {
                    Ok(sem) => {
                        return Ok(Semaphore {
                            sem,
                            name,
                            created: false,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && tries < 3 => continue,
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    /// The owner of the semaphore's file (the one this handle maps).
    fn owner(&self) -> Option<u32> {
        let (dev, ino) = self.file_id()?;
        let path = os::cstring(&format!(
            "{SHM_DIR}/sem.{}",
            self.name.to_str().ok()?.trim_start_matches('/')
        ))
        .ok()?;
        let st = os::lstat(&path).ok()?;
        (st.dev == dev && st.ino == ino).then_some(st.uid)
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.sem.wait(timeout)
    }

    fn release(&self, n: u32) -> io::Result<()> {
        // All or nothing: never past SEM_VALUE_MAX (sem_post would stop there, half done).
        let value = u32::try_from(self.sem.value()?.max(0)).unwrap_or(0);
        if n > os::SEM_VALUE_MAX - value.min(os::SEM_VALUE_MAX) {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        }
        for _ in 0..n {
            self.sem.post()?;
        }
        Ok(())
    }

    fn value(&self) -> io::Result<i32> {
        self.sem.value()
    }

    fn remove(&self) -> io::Result<()> {
        match NamedSemaphore::unlink(&self.name) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    fn needs_dead_holder_repair(&self) -> bool {
        true
    }

    fn created(&self) -> bool {
        self.created
    }

    fn file_id(&self) -> Option<(u64, u64)> {
        procfs::own_mapping_of(self.sem.addr())
    }

    fn post_for_dead_holder(&self) -> io::Result<()> {
        self.sem.post()
    }
}

/// Destroy the segment of `key` and what belongs to it, whoever still uses it.
pub(crate) fn remove(key: &NativeIpcKey, semaphore: &NativeIpcKey) -> Result<bool, Failure> {
    let c_path = segment_path(key)?;
    let existed = match NamedFile::open(&c_path, libc::O_RDONLY, 0) {
        Ok(file) => {
            LockState::remove(id_of(&file.path, &file.stat));
            file.unlink_if_still_named()?
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => return Err(e.into()),
    };
    if let Ok(name) = os::cstring(semaphore.native()) {
        let _ = NamedSemaphore::unlink(&name);
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_names_follow_glibc_rules() {
        assert_eq!(shm_file_name("/abc").ok(), Some("abc"));
        assert_eq!(shm_file_name("//abc").ok(), Some("abc"));
        assert_eq!(shm_file_name("abc").ok(), Some("abc"));
        assert!(shm_file_name("/").is_err());
        assert!(shm_file_name("/a/b").is_err());
        assert!(shm_file_name("/..").is_err());
        assert!(shm_file_name(&format!("/{}", "x".repeat(256))).is_err());
        assert!(shm_file_name("/sem.x").is_err());
        assert!(shm_file_name("/qshm-lock.p.1.2").is_err());
    }
}
