//! Making, opening (with the trust checks) and removing lock-state files.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use zerocopy::{FromBytes, IntoBytes};

use super::registry;
use super::{FILE_LEN, Header, LockMode, LockState, MAGIC, Origin, SLOTS, SegmentId, VERSION, slots};
use crate::os;
use crate::sys::SHM_DIR;
use crate::sys::fork::ParentOnlyFd;
use crate::sys::mapping::Mapping;
use crate::sys::named_file::NamedFile;

/// What to record in a new lock state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewLockState {
    pub id: SegmentId,
    pub mode: LockMode,
    pub origin: Origin,
    /// Mode bits (already [`lock_permissions`](super::lock_permissions) of the segment's).
    pub perms: u32,
    /// Give the file to this owner (root making one on a user's behalf).
    pub owner: Option<(u32, u32)>,
    pub key_file: Option<[u64; 3]>,
    pub semaphore: Option<[u64; 3]>,
}

/// What making a lock state can run into.
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

/// Facts about the segment that decide whether its lock state can be trusted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trust {
    pub owner_uid: u32,
    /// The segment's creator (System V keeps it apart from the owner).
    pub creator_uid: u32,
    pub segment_perms: u32,
}

/// Why an existing lock state was not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Untrusted {
    /// Owned by another user than the segment's.
    Owner(u32),
    /// Writable by users who may not write the segment.
    Permissions(u32),
    /// Not a lock state of this segment in this format (size, magic, version, identity),
    /// or damaged.
    Content,
}

/// What opening a lock state can run into.
#[derive(Debug)]
pub(crate) enum OpenError {
    Untrusted(Untrusted),
    Io(io::Error),
}

/// A lock state made whole but not named yet: the POSIX creator names it right after its
/// segment (so that a creator killed in between leaves a segment without lock state,
/// which attachers take for Qt's and the next `create` reclaims, never an orphan).
pub(crate) struct Prepared {
    fd: OwnedFd,
    id: SegmentId,
    header: Header,
}

impl Prepared {
    /// Give it its name; fails with [`CreateError::Taken`] if the name is taken.
    pub(crate) fn publish(self) -> Result<Arc<LockState>, CreateError> {
        let path = os::cstring(&self.id.lock_state_path())?;
        match os::link_fd(&self.fd, &path) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Err(CreateError::Taken),
            Err(e) => return Err(e.into()),
        }
        let made = os::fstat(&self.fd)
            .and_then(|file| LockState::assemble(self.fd, file, self.id, self.header, true));
        if made.is_err() {
            let _ = os::unlink(&path);
        }
        Ok(made?)
    }
}

impl LockState {
    /// Make the lock state of a segment, whole but without a name yet.
    pub(crate) fn prepare(new: NewLockState) -> Result<Prepared, CreateError> {
        let dir = os::cstring(SHM_DIR)?;
        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, new.perms)?;
        os::fchmod(&fd, new.perms)?;
        if let Some((uid, gid)) = new.owner {
            os::fchown(&fd, uid, gid)?;
        }
        // the pages are taken now: a full /dev/shm is an error here, never SIGBUS later
        os::fallocate(&fd, FILE_LEN as u64)?;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            mode: new.mode.tag(),
            origin: new.origin.tag(),
            slots: SLOTS,
            identity: new.id.words(),
            key_file: new.key_file.unwrap_or([0; 3]),
            semaphore: new.semaphore.unwrap_or([0; 3]),
        };
        os::pwrite(&fd, header.as_bytes(), 0)?;
        Ok(Prepared {
            fd,
            id: new.id,
            header,
        })
    }

    /// Make the lock state of a segment and name it. Fails with [`CreateError::Taken`]
    /// if the name is.
    pub(crate) fn create(new: NewLockState) -> Result<Arc<LockState>, CreateError> {
        LockState::prepare(new)?.publish()
    }

    /// Open the lock state of segment `id`, if it has one, and check that it can be
    /// trusted. Read and write access if this user may write it (then this process claims
    /// a slot and may lock), else read only.
    pub(crate) fn open(id: SegmentId, trust: Trust) -> Result<Option<Arc<LockState>>, OpenError> {
        let path = os::cstring(&id.lock_state_path()).map_err(OpenError::Io)?;
        let opened = match NamedFile::open(&path, libc::O_RDWR | libc::O_NONBLOCK, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0).map(|f| (f, false))
            }
            other => other.map(|f| (f, true)),
        };
        let (file, writable) = match opened {
            Ok(opened) => opened,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(OpenError::Io(e)),
        };
        let st = file.stat;
        if let Some(shared) = registry::find((st.dev, st.ino)) {
            return Ok(Some(shared));
        }
        if st.uid != trust.owner_uid && st.uid != trust.creator_uid {
            return Err(OpenError::Untrusted(Untrusted::Owner(st.uid)));
        }
        if super::writable_beyond(st.mode & 0o7777, trust.segment_perms) {
            return Err(OpenError::Untrusted(Untrusted::Permissions(st.mode & 0o7777)));
        }
        if st.size != FILE_LEN as u64 {
            return Err(OpenError::Untrusted(Untrusted::Content));
        }
        let header = read_header(&file.fd).map_err(OpenError::Io)?;
        if header.check(id).is_none() {
            return Err(OpenError::Untrusted(Untrusted::Content));
        }
        LockState::assemble(file.into_fd(), st, id, header, writable)
            .map(Some)
            .map_err(OpenError::Io)
    }

    /// Map the file, claim a slot if `writable`, and share it in this process.
    fn assemble(
        fd: OwnedFd,
        file: os::FileStat,
        id: SegmentId,
        header: Header,
        writable: bool,
    ) -> io::Result<Arc<LockState>> {
        let map = Mapping::map_file(&fd, FILE_LEN, writable)?;
        let mut state = LockState {
            map,
            file,
            id,
            header,
            slot: None,
            last_look: AtomicU64::new(0),
            fd: ParentOnlyFd::new(fd),
        };
        if writable {
            state.slot = Some(slots::claim(&state)?);
        }
        Ok(registry::share(state))
    }

    /// Remove the lock state of segment `id` (the segment is gone or going), and first the
    /// second name of its POSIX semaphore, if it has one: killed in between, a lock state
    /// is left without it, which clean-ups remove like any other. (A second name without its
    /// lock state, which a creator killed before it named the lock state leaves, they
    /// remove too.)
    pub(crate) fn remove(id: SegmentId) {
        LockState::remove_second_name(id);
        if let Ok(path) = os::cstring(&id.lock_state_path()) {
            let _ = os::unlink(&path);
        }
    }

    /// Unlink the second name of segment `id`'s POSIX semaphore
    /// (`sys/posix/semaphore_keep.rs`), if it has one.
    pub(crate) fn remove_second_name(id: SegmentId) {
        if let Some(Ok(keep)) = id.semaphore_keep_path().map(|p| os::cstring(&p)) {
            let _ = os::unlink(&keep);
        }
    }

    /// Whether segment `id` has no lock state: its name does not exist (`ENOENT`; any other
    /// answer is no evidence that it is missing).
    pub(crate) fn missing(id: SegmentId) -> bool {
        os::cstring(&id.lock_state_path())
            .is_ok_and(|path| os::lstat(&path).is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT)))
    }

    /// What the lock state of `id` records of the objects qshm made with its segment (key
    /// file, semaphore), read without mapping it; `None` if it has none or is not one.
    pub(crate) fn recorded(id: SegmentId) -> Option<Recorded> {
        let path = os::cstring(&id.lock_state_path()).ok()?;
        let file = NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0).ok()?;
        let header = read_header(&file.fd).ok()?;
        header.check(id)?;
        Some(Recorded {
            key_file: (header.key_file != [0; 3]).then_some(header.key_file),
            semaphore: (header.semaphore != [0; 3]).then_some(header.semaphore),
        })
    }
}

/// What a lock state records of the objects qshm made with its segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// A System V key file: (device, inode, birth ns).
    pub key_file: Option<[u64; 3]>,
    /// Qt's semaphore: POSIX (device, inode, birth ns), System V (semid, key, ctime).
    pub semaphore: Option<[u64; 3]>,
}

/// The header of an open lock-state file, read with `pread` (not mapped).
pub(super) fn read_header(fd: &OwnedFd) -> io::Result<Header> {
    let mut bytes = [0u8; size_of::<Header>()];
    if os::pread(fd, &mut bytes, 0)? < bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Header::read_from_bytes(&bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
