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
//!   win. In Fast mode, while attachers wait for the exclusive lock, the creator makes the
//!   lock state (named after the file's identity, see `lock_state.rs`), then turns its
//!   lock into a shared one like every attachment's. A Qt-compatible segment takes the
//!   shared lock at once: its lock state and Qt's semaphore come at the first lock,
//!   whoever takes it. A creator killed midway leaves either nothing or a stale segment
//!   that the next `create` reclaims.
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

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod names;
mod probe;
mod semaphore;

pub(super) use names::id_of;
use names::segment_path;
pub(crate) use names::{QSHM_MADE, QSHM_MADE_QT_COMPATIBLE, made_by_qshm};
// only `admin` reads segment names from outside this module
#[cfg(feature = "admin")]
pub(crate) use names::shm_file_name;

use probe::mapped_by_others;
pub(crate) use probe::{Probe, probe_existing, unused_by_others};
use semaphore::refuse_foreign_semaphore;
pub(crate) use semaphore::{Semaphore, open_semaphore_of, remove_semaphore_if_unused};
#[cfg(feature = "admin")]
pub(crate) use semaphore::{peek_value, semaphore_file};

use super::lock_state::{self, CreateError, LockState, NewLockState, Origin, SegmentId};
use super::mapping::Mapping;
use super::named_file::{FILE_LOCK_WAIT, FileLock, NamedFile};
use super::procfs::Mapped;
use super::{
    AttachRequest, Attached, CreateRequest, Detached, LazyLock, LockMode, Owner, SHM_DIR, SegmentBackend,
    SegmentStat, SemaphoreBackend, fork, not_ours, owner_label,
};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os::{self, FileStat, NamedSemaphore};

/// How often create/attach retry when they lose a race with a destroyer.
const RACE_RETRIES: usize = 32;

/// How long a destroyer waits for Qt's semaphore: a Qt attach holds it for microseconds;
/// a holder keeping it longer is not attaching.
const DESTROY_SEMAPHORE_WAIT: Duration = Duration::from_millis(100);

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
    /// Qt's semaphore if this handle opened it at attach (else opened, if it exists, only
    /// when destroying).
    semaphore: Option<Arc<dyn SemaphoreBackend>>,
    semaphore_key: NativeIpcKey,
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
        // 1. the file, unnamed: size, pages, mapping, and our attachment's flock: in Fast
        //    mode exclusive, which keeps attachers waiting until the lock state exists
        //    (step 3); a Qt-compatible segment gets its lock state at the first lock
        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, perms)
            .map_err(|e| Failure::from(e).with_detail(format!("cannot make a file in {SHM_DIR}")))?;
        // qshm's mark; a Fast-mode segment's also says it must have a lock state
        let mark = match req.mode {
            LockMode::Fast => QSHM_MADE,
            LockMode::QtCompatible => QSHM_MADE_QT_COMPATIBLE,
        };
        os::fchmod(&fd, perms | mark)?;
        // reserves the pages and sets the size (no ftruncate needed)
        os::fallocate(&fd, req.size as u64).map_err(|e| size_failure(req.size, e))?;
        let first_lock = match req.mode {
            LockMode::Fast => libc::LOCK_EX,
            LockMode::QtCompatible => libc::LOCK_SH,
        };
        os::flock(&fd, first_lock)?;
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
        // 3. Fast mode: its lock state, while attachers wait for our lock. If we die here,
        //    the segment is stale (no lock holder, no mapper) and reclaimed. (Qt-compatible
        //    mode makes its lock state and opens Qt's semaphore at the first lock.)
        let lock_state = match req.mode {
            LockMode::Fast => match LockState::create(NewLockState {
                id,
                mode: req.mode,
                origin: Origin::Qshm,
                perms: lock_perms,
                owner: None,
                key_file: None,
            }) {
                Ok(state) => Some(state),
                // someone squats on this identity's name: a new file gets a new identity
                Err(CreateError::Taken) => {
                    let _ = file.unlink_if_still_named();
                    continue;
                }
                Err(CreateError::Io(e)) => {
                    let _ = file.unlink_if_still_named();
                    return Err(lock_state_failure(e));
                }
            },
            LockMode::QtCompatible => None,
        };
        // 4. let attachers in (the creator's attachment is a shared lock like theirs)
        if first_lock == libc::LOCK_EX {
            os::flock(&file.fd, libc::LOCK_SH)?;
        }
        let lazy = (req.mode == LockMode::QtCompatible).then(|| LazyLock {
            id,
            owner: owner_of(&st),
            origin: Origin::Qshm,
            semaphore: req.semaphore.clone(),
        });
        let segment = Segment {
            file,
            id,
            mode: req.mode,
            semaphore: None,
            semaphore_key: req.semaphore.clone(),
            fork_epoch,
        };
        return Ok(Attached {
            segment: Box::new(segment),
            mapping,
            lock_state,
            semaphore: None,
            mode: req.mode,
            lazy,
        });
    }
    Err(Failure::because(
        SharedMemoryError::UnknownError,
        "the key kept being taken and released by others; gave up",
    ))
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
        // A size once set never changes (qshm sets it before the name exists, Qt right
        // after shm_open): only a 0 seen at open is worth asking again after the wait.
        let st = match file.stat.size {
            0 => os::fstat(&file.fd)?,
            _ => file.stat,
        };
        if st.size == 0 {
            // a non-qshm creator (Qt) between shm_open and ftruncate: give it a moment
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let len = usize::try_from(st.size).map_err(|_| Failure::new(SharedMemoryError::InvalidSize))?;
        let id = id_of(&c_path, &st);
        let (lock_state, mode) = if st.mode & QSHM_MADE_QT_COMPATIBLE != 0 {
            // qshm made it Qt-compatible: the mark says the mode, and a lock state (made
            // by whichever qshm process locked first) is found at our first lock
            match req.mode {
                Some(LockMode::Fast) => {
                    return Err(super::mode_conflict(LockMode::Fast, LockMode::QtCompatible));
                }
                _ => (None, LockMode::QtCompatible),
            }
        } else {
            super::find_lock_state(id, owner_of(&st), req.mode, None)?
        };
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
                super::refuse_fast_next_to_foreign_mapper(segment, lock_state.as_ref())?;
            }
        }
        let mapping = Mapping::map_file(&file.fd, len, req.writable)?;
        let lazy = (mode == LockMode::QtCompatible).then(|| LazyLock {
            id,
            owner: owner_of(&st),
            origin: Origin::Foreign,
            semaphore: req.semaphore.clone(),
        });
        let segment = Segment {
            file: NamedFile { stat: st, ..file },
            id,
            mode,
            semaphore: None,
            semaphore_key: req.semaphore.clone(),
            fork_epoch,
        };
        return Ok(Attached {
            segment: Box::new(segment),
            mapping,
            lock_state,
            semaphore: None,
            mode,
            lazy,
        });
    }
    Err(Failure::new(SharedMemoryError::NotFound))
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
            marked_by_qshm: made_by_qshm(now.mode),
        })
    }

    fn detach(self: Box<Self>, lock_state_file: Option<(u64, u64)>) -> Result<Detached, Failure> {
        let Segment {
            file,
            id,
            mode,
            semaphore,
            semaphore_key,
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
        // Keep Qt's attach out: Qt holds its semaphore around attach (if none exists, no
        // Qt process is attaching).
        let semaphore = match (semaphore, mode) {
            (None, LockMode::QtCompatible) => Semaphore::open_existing(&semaphore_key),
            (semaphore, _) => semaphore,
        };
        let held = mode == LockMode::QtCompatible
            && semaphore
                .as_ref()
                .is_some_and(|sem| sem.acquire_existing(DESTROY_SEMAPHORE_WAIT).unwrap_or(false));
        let mut outcome = Detached::Kept;
        if unused_by_others(&file) {
            LockState::remove(id);
            if matches!(file.unlink_if_still_named(), Ok(true)) {
                // nobody can open it by name any more: closing it gives the lease back
                outcome = Detached::Destroyed;
            } else {
                file.release();
            }
        }
        drop(file);
        if held && let Some(sem) = &semaphore {
            let _ = sem.release(1);
        }
        // With no semaphore before the check, none of qshm's can have appeared since (no
        // qshm attachment existed); one a Qt process made meanwhile is Qt's to remove.
        if outcome == Detached::Destroyed && semaphore.is_some() {
            drop(semaphore);
            remove_semaphore_if_unused(&semaphore_key, lock_state_file);
        }
        Ok(outcome)
    }

    fn forget(self: Box<Self>) {
        // The descriptor shares its open file description (and so its flock) with the
        // parent: closing our copy leaves the parent's lock in place.
        drop(self);
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
