//! The lock state: a small file in `/dev/shm` that belongs to one incarnation of one
//! segment and holds what qshm needs to lock it (the robust mutexes) and what it must know
//! about it (its lock mode, whether qshm made the segment, the key file qshm made).
//!
//! # Naming and trust
//!
//! The file is named after the segment's identity, not its key:
//! `qshm-lock.p.<inode>.<birth ns>` for a POSIX segment file,
//! `qshm-lock.s.<shmid>.<creator pid>` for a System V segment. A segment destroyed and
//! made again gets another name, so a lock state is never re-initialised while in use,
//! two native keys of one segment (`/x` and `//x`) share it, and racing creators never
//! meet on one name.
//!
//! It is created whole, never adopted: prepared unnamed (`O_TMPFILE`), sized and
//! reserved (`posix_fallocate`, so a full `/dev/shm` is an error now, not `SIGBUS`
//! later), initialised, and only then linked under its name, which fails if the name
//! is taken. A Fast-mode segment's creator does this before its segment can be found
//! (POSIX: before it lets attachers in; System V: under the key file's lock), so an
//! attacher always finds it complete. A Qt-compatible POSIX segment (and one qshm did not
//! make, Qt's) gets its lock state at its first lock by a qshm process that owns the
//! segment (or root, on the owner's behalf); two such first lockers meet on the name and
//! the second uses the first one's. Whoever opens a lock state trusts it only if its owner
//! is the segment's owner (or creator), its permissions give nobody more than the
//! segment's permissions allow ([`lock_permissions`]), and its content names this
//! segment.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::SHM_DIR;
use super::mapping::Mapping;
use super::named_file::NamedFile;
use super::robust_mutex;
use crate::os::{self, FileStat};

#[cfg(feature = "admin")]
mod peek;
mod segment_id;
#[cfg(feature = "admin")]
pub(crate) use peek::Peek;
pub(crate) use segment_id::{LOCK_STATE_PREFIX, SegmentId, name_tag};

/// Which lock [`SharedMemory::lock`](crate::SharedMemory::lock) takes. It belongs to the
/// segment: chosen by its creator, recorded in the lock state, adopted by attachers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// The semaphore Qt's `QSharedMemory::lock()` takes: excludes Qt programs too.
    /// One system call per lock and unlock.
    #[default]
    QtCompatible,
    /// A robust process-shared mutex: no system call when uncontended, but only
    /// qshm programs see it. Refused for segments a non-qshm program made or maps.
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

    /// `LockMode::QtCompatible` or `LockMode::Fast`, as written in Rust.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LockMode::QtCompatible => "LockMode::QtCompatible",
            LockMode::Fast => "LockMode::Fast",
        }
    }
}

/// Who made the segment a lock state belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// qshm created the segment and this lock state with it.
    Qshm,
    /// Another program (Qt) created the segment; a qshm attacher added this lock state.
    Foreign,
}

/// Mode bits of the lock state (and Qt's semaphore) of a segment with mode `perms`:
/// whoever may read the segment may also lock it (locking writes the lock), so each
/// read bit brings its write bit. 0600 stays 0600; 0644 becomes 0666.
pub(crate) fn lock_permissions(perms: u32) -> u32 {
    (perms | ((perms & 0o444) >> 1)) & 0o666
}

const MAGIC: u64 = u64::from_le_bytes(*b"QSHMLCK2");

/// Phases of a Qt-compatible lock holder (see `lock.rs`), so that whoever finds the
/// holder dead knows whether it held the semaphore.
pub(crate) mod phase {
    /// Not acquiring, not holding.
    pub(crate) const IDLE: u32 = 0;
    /// Waiting for (or just got) the semaphore.
    pub(crate) const ACQUIRING: u32 = 1;
    /// Holds the semaphore.
    pub(crate) const HELD: u32 = 2;
    /// Posting (or just posted) the semaphore.
    pub(crate) const RELEASING: u32 = 3;
}

/// The file's content. Only ever accessed through a shared mapping.
#[repr(C)]
struct Layout {
    magic: AtomicU64,
    mode: u32,
    origin: u32,
    identity: [u64; 4],
    /// A System V key file qshm created for the segment: (device, inode, birth ns).
    key_file: [u64; 3],
    /// Set by whoever repaired a dead holder's POSIX semaphore: the next holder reports it.
    owner_died_pending: AtomicU32,
    /// The Qt-compatible holder's [`phase`].
    phase: AtomicU32,
    /// Bumped by writers that notify; waited on by readers (change notification, a
    /// shared futex word).
    generation: AtomicU32,
    /// How many processes may be asleep on `generation` (raised before a wait, lowered
    /// after it; a waiter killed in between leaves it raised, which only costs notifiers
    /// a system call). Notifiers skip `FUTEX_WAKE` while it is 0. (Was a reserved word,
    /// 0 in lock states made before; same layout.)
    waiters: AtomicU32,
    fast: libc::pthread_mutex_t,
    marker: libc::pthread_mutex_t,
}

/// Size of the file: one page.
fn file_len() -> usize {
    os::page_size().max(std::mem::size_of::<Layout>())
}

/// What creating a lock state can run into.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The name is taken (by a squatter: identities are never reused).
    Taken,
    Io(io::Error),
}

impl From<io::Error> for CreateError {
    fn from(e: io::Error) -> CreateError {
        CreateError::Io(e)
    }
}

/// Why an existing lock state was not trusted.
#[derive(Debug)]
pub(crate) enum Untrusted {
    /// Owned by another user than the segment's.
    Owner(u32),
    /// Writable by more users than the segment lets read it.
    Permissions(u32),
    /// Not a lock state of this segment (wrong size, magic or identity).
    Content,
}

/// A mapped lock state.
#[derive(Debug)]
pub(crate) struct LockState {
    map: Mapping,
    file: FileStat,
    id: SegmentId,
}

/// What to record in a new lock state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewLockState {
    pub id: SegmentId,
    pub mode: LockMode,
    pub origin: Origin,
    /// Mode bits (already [`lock_permissions`] of the segment's).
    pub perms: u32,
    /// Give the file to this owner (root making one on a user's behalf).
    pub owner: Option<(u32, u32)>,
    pub key_file: Option<[u64; 3]>,
}

impl LockState {
    /// Create the lock state of a segment; fails with [`CreateError::Taken`] if the name is.
    pub(crate) fn create(new: NewLockState) -> Result<LockState, CreateError> {
        let dir = os::cstring(SHM_DIR)?;
        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, new.perms)?;
        os::fchmod(&fd, new.perms)?;
        if let Some((uid, gid)) = new.owner {
            os::fchown(&fd, uid, gid)?;
        }
        let len = file_len();
        os::fallocate(&fd, len as u64)?;
        let map = Mapping::map_file(&fd, len, true)?;
        let state = LockState {
            map,
            file: os::fstat(&fd)?,
            id: new.id,
        };
        state.init(&new)?;
        let path = os::cstring(&new.id.lock_state_path())?;
        match os::link_fd(&fd, &path) {
            Ok(()) => Ok(state),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(CreateError::Taken),
            Err(e) => Err(e.into()),
        }
    }

    fn init(&self, new: &NewLockState) -> io::Result<()> {
        let state = self.layout();
        // SAFETY: the mapping is ours alone (the file has no name yet) and at least
        // size_of::<Layout>() bytes long; the robust mutexes are initialised in place.
        unsafe {
            robust_mutex::init(&raw mut (*state).fast)?;
            robust_mutex::init(&raw mut (*state).marker)?;
            (*state).mode = new.mode.tag();
            (*state).origin = match new.origin {
                Origin::Qshm => 1,
                Origin::Foreign => 2,
            };
            (*state).identity = new.id.words();
            (*state).key_file = new.key_file.unwrap_or([0; 3]);
            (*state).magic.store(MAGIC, Ordering::Release);
        }
        Ok(())
    }

    /// Open the lock state of segment `id`, owned by `segment_uid` (or `creator_uid`) with
    /// mode `segment_perms`. `Ok(None)`: there is none. `Err(Ok(why))`: one exists but is
    /// not to be trusted.
    pub(crate) fn open(
        id: SegmentId,
        segment_uid: u32,
        creator_uid: u32,
        segment_perms: u32,
    ) -> Result<Option<LockState>, Result<Untrusted, io::Error>> {
        let path = os::cstring(&id.lock_state_path()).map_err(Err)?;
        let file = match NamedFile::open(&path, libc::O_RDWR, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(Err(e)),
        };
        let st = file.stat;
        if st.uid != segment_uid && st.uid != creator_uid {
            return Err(Ok(Untrusted::Owner(st.uid)));
        }
        if st.mode & 0o7777 & !lock_permissions(segment_perms) != 0 {
            return Err(Ok(Untrusted::Permissions(st.mode & 0o7777)));
        }
        let len = file_len();
        if st.size < len as u64 {
            return Err(Ok(Untrusted::Content));
        }
        let map = Mapping::map_file(&file.fd, len, true).map_err(Err)?;
        let state = LockState { map, file: st, id };
        let layout = state.layout();
        // SAFETY: the mapping is live and long enough; magic is an atomic and identity is
        // written once, before the file got its name (and the magic's Release store).
        let ok =
            unsafe { (*layout).magic.load(Ordering::Acquire) == MAGIC && (*layout).identity == id.words() };
        if !ok || state.mode().is_none() {
            return Err(Ok(Untrusted::Content));
        }
        Ok(Some(state))
    }

    /// Remove the lock state of segment `id` (the segment is gone or going).
    pub(crate) fn remove(id: SegmentId) {
        if let Ok(path) = os::cstring(&id.lock_state_path()) {
            let _ = os::unlink(&path);
        }
    }

    fn layout(&self) -> *mut Layout {
        self.map.ptr().cast()
    }

    /// The segment's lock mode (`None` only for a corrupt file, refused by `open`).
    pub(crate) fn mode(&self) -> Option<LockMode> {
        // SAFETY: mode is written once, before the file is published.
        LockMode::from_tag(unsafe { (*self.layout()).mode })
    }

    /// Who made the segment.
    pub(crate) fn origin(&self) -> Origin {
        // SAFETY: as for mode.
        match unsafe { (*self.layout()).origin } {
            2 => Origin::Foreign,
            _ => Origin::Qshm,
        }
    }

    /// The key file qshm made for the segment, if it did: (device, inode, birth ns).
    pub(crate) fn key_file(&self) -> Option<[u64; 3]> {
        // SAFETY: as for mode.
        let words = unsafe { (*self.layout()).key_file };
        (words != [0; 3]).then_some(words)
    }

    /// The segment this lock state belongs to.
    pub(crate) fn segment(&self) -> SegmentId {
        self.id
    }

    /// (device, inode) of the file, to find its mappers in `/proc`.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        (self.file.dev, self.file.ino)
    }

    /// The Fast-mode mutex.
    #[inline]
    pub(crate) fn fast(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mapping is live; taking a field's address does not read it.
        unsafe { &raw mut (*self.layout()).fast }
    }

    /// The mutex a qshm process holds while it acquires, holds or releases the
    /// Qt-compatible semaphore.
    #[inline]
    pub(crate) fn marker(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: as in fast().
        unsafe { &raw mut (*self.layout()).marker }
    }

    /// The Qt-compatible holder's phase.
    #[inline]
    pub(crate) fn phase(&self) -> &AtomicU32 {
        // SAFETY: the atomic lives in the mapping for as long as self.
        unsafe { &(*self.layout()).phase }
    }

    /// Set when a dead holder's unit was given back; taken by the next holder.
    pub(crate) fn owner_died_pending(&self) -> &AtomicU32 {
        // SAFETY: as in phase().
        unsafe { &(*self.layout()).owner_died_pending }
    }

    /// The change-notification counter (a futex word shared by every process that maps
    /// this lock state).
    #[inline]
    pub(crate) fn generation(&self) -> &AtomicU32 {
        // SAFETY: as in phase().
        unsafe { &(*self.layout()).generation }
    }

    /// How many processes may be waiting on [`generation`](Self::generation).
    #[inline]
    pub(crate) fn waiters(&self) -> &AtomicU32 {
        // SAFETY: as in phase().
        unsafe { &(*self.layout()).waiters }
    }
}

/// (device, inode, birth ns) of a file, as recorded for key files.
pub(crate) fn file_words(st: &FileStat) -> [u64; 3] {
    [st.dev, st.ino, st.btime_ns.unwrap_or(st.ctime_ns) as u64]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_permissions_give_readers_the_lock() {
        assert_eq!(lock_permissions(0o600), 0o600);
        assert_eq!(lock_permissions(0o644), 0o666);
        assert_eq!(lock_permissions(0o640), 0o660);
        assert_eq!(lock_permissions(0o400), 0o600);
        assert_eq!(lock_permissions(0o777), 0o666);
    }

    #[test]
    fn names_round_trip() {
        for id in [
            SegmentId::Posix {
                name_tag: name_tag("qipc_sharedmemory_x"),
                ino: 42,
                btime_ns: 1_700_000_000_123_456_789,
            },
            SegmentId::SystemV {
                key: 0x5100_abcd,
                shmid: 98311,
                cpid: 4242,
            },
            SegmentId::SystemV {
                key: -5,
                shmid: 1,
                cpid: 2,
            },
        ] {
            assert_eq!(SegmentId::from_lock_state_name(&id.lock_state_name()), Some(id));
        }
        assert_eq!(SegmentId::from_lock_state_name("qshm-lock.0123abcd"), None);
        assert_eq!(SegmentId::from_lock_state_name("qshm-lock.x.1.2.3"), None);
    }
}
