//! Platform backends behind one internal interface.
//!
//! [`create`] and [`attach`] pick the backend from the key's [`KeyType`] and hand back an
//! [`Attached`]: the segment (a [`SegmentBackend`]), its lock state and, in Qt-compatible
//! mode, Qt's semaphore, all found or made under the backend's own serialisation (so the
//! facade never runs code in the middle of a backend operation). Detaching returns what
//! happened; the backend removes the segment's companions itself when it destroys it.
//!
//! Errors are [`Failure`]s (a category, an explanation, the OS error); the facade adds the
//! operation and the key once. Raw system calls live in [`os`] only.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Failure, SharedMemoryError};
use crate::key::{KeyType, NativeIpcKey};
use crate::os;

pub(crate) mod fork;
pub(crate) mod lock_state;
pub(crate) mod mapping;
pub(crate) mod named_file;
pub(crate) mod posix;
pub(crate) mod procfs;
pub(crate) mod robust_mutex;
pub(crate) mod sysv;

pub use lock_state::LockMode;

/// The mode new segments and semaphores get unless told otherwise
/// ([`SharedMemory::set_permissions`](crate::SharedMemory::set_permissions)).
pub const DEFAULT_PERMISSIONS: u32 = 0o600;

/// Where glibc's `shm_open` and `sem_open` keep their files, and qshm its lock states.
pub(crate) const SHM_DIR: &str = "/dev/shm";
use lock_state::{LockState, NewLockState, Origin, SegmentId, Untrusted};
use mapping::Mapping;

/// What a segment says about itself (for `stat`/`ls`).
#[derive(Clone, Debug)]
pub(crate) struct SegmentStat {
    pub size: u64,
    pub attachments: Option<u64>,
    pub perms: u32,
    pub uid: u32,
    pub created_secs: i64,
    pub os_id: String,
    /// qshm's mark is on it (POSIX; System V segments carry no mark: their lock state,
    /// made at create, says who made them).
    pub marked_by_qshm: bool,
}

/// How a detach ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detached {
    /// Others still use the segment (or it is not ours to destroy).
    Kept,
    /// We were its last user: it is destroyed, with its lock state and Qt's semaphore.
    Destroyed,
    /// Someone had already removed it behind our back; we removed what was left of it.
    WasGone,
}

/// An attached segment (its bytes are the [`Mapping`] that came with it, which the facade
/// owns and drops before detaching).
pub(crate) trait SegmentBackend: Send + Sync {
    /// Current facts from the OS.
    fn stat(&self) -> io::Result<SegmentStat>;
    /// Detach (the mapping is gone already); if no user is left, destroy the segment,
    /// its lock state and Qt's semaphore. `lock_state_file`: (device, inode) of the lock
    /// state this process maps, if any, to tell qshm's processes from others in `/proc`.
    fn detach(self: Box<Self>, lock_state_file: Option<(u64, u64)>) -> Result<Detached, Failure>;
    /// In a `fork()`ed child: let go of this copy; the parent's attachment stays intact.
    fn forget(self: Box<Self>);
}

/// A counting semaphore shared between processes.
pub(crate) trait SemaphoreBackend: Send + Sync {
    /// Take one unit. `None` blocks, `Some(0)` tries once. `Ok(false)`: busy or timed out.
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool>;
    /// Like `acquire` with a timeout, but a semaphore removed meanwhile is not made again
    /// (`Ok(false)`): for a destroyer, which is about to remove it anyway.
    fn acquire_existing(&self, timeout: Duration) -> io::Result<bool> {
        self.acquire(Some(timeout))
    }
    /// Give back `n` units (all or none: never past the maximum).
    fn release(&self, n: u32) -> io::Result<()>;
    /// Give back `n` units as Qt's `QSystemSemaphore::release` does: where the OS object
    /// can be removed under its users (System V), a removed one is made again first.
    /// (Not for the segment lock: a lock's semaphore made again would count one too many.)
    fn release_remaking(&self, n: u32) -> io::Result<()> {
        self.release(n)
    }
    /// Current value, for diagnostics.
    fn value(&self) -> io::Result<i32>;
    /// Destroy the OS object (and a System V key file).
    fn remove(&self) -> io::Result<()>;
    /// True when the kernel does not give a dead holder's unit back (POSIX), so waiters
    /// must look for dead holders themselves.
    fn needs_dead_holder_repair(&self) -> bool;
    /// True when this handle created the OS object (or, in `Create` mode, took it over).
    fn created(&self) -> bool;
    /// The file a POSIX semaphore lives in, as (device, inode), to find who maps it.
    fn file_id(&self) -> Option<(u64, u64)> {
        None
    }
    /// Give back one unit on behalf of a holder that died, without the owner checks of
    /// `release` (same as `release(1)` here).
    fn post_for_dead_holder(&self) -> io::Result<()> {
        self.release(1)
    }
}

/// What to do with a semaphore that already exists (Qt's `QSystemSemaphore::AccessMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SemaphoreMode {
    #[default]
    /// Use it as it is; create it with the initial value only if it does not exist.
    Open,
    /// Take ownership: set it to the initial value even if it survived a crash.
    Create,
}

/// A segment creation.
#[derive(Clone, Debug)]
pub(crate) struct CreateRequest {
    pub size: usize,
    pub perms: u32,
    pub writable: bool,
    pub mode: LockMode,
    /// Qt's semaphore for this key (used in Qt-compatible mode).
    pub semaphore: NativeIpcKey,
}

/// An attach.
#[derive(Clone, Debug)]
pub(crate) struct AttachRequest {
    pub writable: bool,
    /// The mode the caller insists on; `None` adopts the segment's.
    pub mode: Option<LockMode>,
    pub semaphore: NativeIpcKey,
}

/// What create and attach hand to the facade.
pub(crate) struct Attached {
    pub segment: Box<dyn SegmentBackend>,
    pub mapping: Mapping,
    /// `None` for a segment another program made, whose lock state we may not add, and
    /// until the first lock of a Qt-compatible POSIX segment (see [`LazyLock`]).
    pub lock_state: Option<LockState>,
    /// Qt's semaphore (Qt-compatible mode; `None` until the first lock, see [`LazyLock`]).
    pub semaphore: Option<Arc<dyn SemaphoreBackend>>,
    pub mode: LockMode,
    pub lazy: Option<LazyLock>,
}

/// What a Qt-compatible lock of a POSIX segment makes on its first use rather than at
/// create/attach: Qt's semaphore and the lock state (a create and destroy that never
/// lock make neither). Qt-compatible mode is what a segment without lock state has, so
/// nothing about the segment's mode depends on it.
#[derive(Clone, Debug)]
pub(crate) struct LazyLock {
    pub id: SegmentId,
    pub owner: Owner,
    /// Whether this handle created the segment (recorded in a lock state it makes).
    pub origin: Origin,
    pub semaphore: NativeIpcKey,
}

impl LazyLock {
    /// The segment's lock state: found, or made if we may (its owner, or root for them);
    /// `None` when we may not or there is no room (the semaphore alone still excludes).
    pub(crate) fn lock_state(&self) -> Result<Option<LockState>, Failure> {
        find_lock_state(self.id, self.owner, None, Some(self.origin)).map(|(state, _)| state)
    }

    /// Qt's semaphore, opened as `QSystemSemaphore` does (made if missing), but never one
    /// of a user other than us and the segment's owner.
    pub(crate) fn semaphore(&self) -> Result<Arc<dyn SemaphoreBackend>, Failure> {
        let perms = lock_state::lock_permissions(self.owner.perms);
        posix::open_semaphore_of(&self.semaphore, perms, self.owner.uid)
    }
}

/// Create a new segment for `key`; a stale one of ours (no user left alive) is reclaimed.
pub(crate) fn create(key: &NativeIpcKey, req: &CreateRequest) -> Result<Attached, Failure> {
    check_key(key)?;
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => sysv::create(key, req),
        KeyType::PosixRealtime => posix::create(key, req),
    }
}

/// Attach to the existing segment of `key`.
pub(crate) fn attach(key: &NativeIpcKey, req: &AttachRequest) -> Result<Attached, Failure> {
    check_key(key)?;
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => sysv::attach(key, req),
        KeyType::PosixRealtime => posix::attach(key, req),
    }
}

/// Open (or create) the semaphore of `key`, as `QSystemSemaphore` does.
pub(crate) fn open_semaphore(
    key: &NativeIpcKey,
    initial: u32,
    mode: SemaphoreMode,
    perms: u32,
) -> Result<Box<dyn SemaphoreBackend>, Failure> {
    check_key(key)?;
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => {
            Ok(Box::new(sysv::Semaphore::open(key, initial, mode, perms)?))
        }
        KeyType::PosixRealtime => Ok(Box::new(posix::Semaphore::open(key, initial, mode, perms)?)),
    }
}

/// Destroy the segment of `key` whatever its users think (for tools and tests), with its
/// lock state and Qt's semaphore `semaphore`. Returns whether there was a segment.
/// Never removes a file that is not a segment or key file qshm or Qt would make.
pub(crate) fn remove(key: &NativeIpcKey, semaphore: &NativeIpcKey) -> Result<bool, Failure> {
    check_key(key)?;
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => sysv::remove(key, semaphore),
        KeyType::PosixRealtime => posix::remove(key, semaphore),
    }
}

fn check_key(key: &NativeIpcKey) -> Result<(), Failure> {
    if key.is_empty() {
        return Err(Failure::because(SharedMemoryError::KeyError, "key is empty"));
    }
    if key.native().contains('\0') {
        return Err(Failure::because(
            SharedMemoryError::KeyError,
            "key contains a NUL byte",
        ));
    }
    key.check_usable()
}

/// "user mallory (uid 1001)", for messages about other users' objects.
pub(crate) fn owner_label(uid: u32) -> String {
    match os::user_name(uid) {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// A failure saying that an existing object belongs to someone else and is left alone.
pub(crate) fn not_ours(what: &str, uid: u32) -> Failure {
    Failure::because(
        SharedMemoryError::AlreadyExists,
        format!(
            "{what} already exists and belongs to {}; qshm never takes over another user's object",
            owner_label(uid)
        ),
    )
}

/// Facts about a segment that decide whose lock state to trust.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The creator's uid (System V keeps it apart from the owner).
    pub creator_uid: u32,
    pub perms: u32,
    /// qshm made the segment (it has no lock state only if its creator died while making
    /// it): such a segment is unfinished, and nobody attaches to it.
    pub unfinished_if_bare: bool,
}

/// Find the lock state of segment `id` and settle the lock mode, as an attacher does:
/// the segment's recorded mode is adopted; a conflicting explicit request is an error; a
/// segment without lock state is locked the Qt way (made by Qt, or by qshm in Qt-compatible
/// mode). With `make` (the origin to record), a missing lock state is added if we may (its
/// owner, or root for them), so dead holders can be recovered.
pub(crate) fn find_lock_state(
    id: SegmentId,
    owner: Owner,
    requested: Option<LockMode>,
    make: Option<Origin>,
) -> Result<(Option<LockState>, LockMode), Failure> {
    for _ in 0..3 {
        match LockState::open(id, owner.uid, owner.creator_uid, owner.perms) {
            Ok(Some(state)) => {
                let mode = state.mode().unwrap_or_default();
                if let Some(asked) = requested.filter(|&asked| asked != mode) {
                    return Err(mode_conflict(asked, mode));
                }
                return Ok((Some(state), mode));
            }
            Ok(None) => {
                if owner.unfinished_if_bare {
                    return Err(Failure::because(
                        SharedMemoryError::NotFound,
                        "its creator died while making it (the next create of the key reclaims it)",
                    ));
                }
                if requested == Some(LockMode::Fast) {
                    return Err(Failure::because(
                        SharedMemoryError::LockError,
                        "the segment's lock mode is LockMode::QtCompatible (it has no qshm lock \
                         state: made by Qt, or by qshm in that mode), and Qt would not see \
                         LockMode::Fast's lock; attach without with_lock_mode to adopt it",
                    ));
                }
                let Some(origin) = make else {
                    return Ok((None, LockMode::QtCompatible));
                };
                let me = os::euid();
                if me != owner.uid && me != 0 {
                    return Ok((None, LockMode::QtCompatible));
                }
                let new = NewLockState {
                    id,
                    mode: LockMode::QtCompatible,
                    origin,
                    perms: lock_state::lock_permissions(owner.perms),
                    owner: (me != owner.uid).then_some((owner.uid, owner.gid)),
                    key_file: None,
                };
                match LockState::create(new) {
                    Ok(state) => return Ok((Some(state), LockMode::QtCompatible)),
                    // another attacher was quicker: use theirs (next round)
                    Err(lock_state::CreateError::Taken) => continue,
                    // no room for it: the semaphore alone still excludes
                    Err(lock_state::CreateError::Io(_)) => return Ok((None, LockMode::QtCompatible)),
                }
            }
            Err(Ok(why)) => return Err(untrusted(id, why)),
            Err(Err(e)) => {
                return Err(Failure::from(e)
                    .with_detail(format!("cannot open the lock state {}", id.lock_state_path())));
            }
        }
    }
    Err(Failure::because(
        SharedMemoryError::LockError,
        "the lock state kept changing while attaching; try again",
    ))
}

fn mode_conflict(asked: LockMode, mode: LockMode) -> Failure {
    Failure::because(
        SharedMemoryError::LockError,
        format!(
            "the segment's lock mode is {} (chosen by its creator), not the {} this handle asks for; \
             attach without with_lock_mode to adopt it",
            mode.name(),
            asked.name()
        ),
    )
}

fn untrusted(id: SegmentId, why: Untrusted) -> Failure {
    let path = id.lock_state_path();
    let detail = match why {
        Untrusted::Owner(uid) => format!(
            "refusing the lock state {path}: it belongs to {}, not the segment's owner",
            owner_label(uid)
        ),
        Untrusted::Permissions(mode) => format!(
            "refusing the lock state {path}: its mode {mode:04o} lets more users change the lock than may read the segment"
        ),
        Untrusted::Content => format!("refusing the lock state {path}: it does not belong to this segment"),
    };
    Failure::because(SharedMemoryError::LockError, detail)
}

/// In `LockMode::Fast`, refuse a segment that a process outside qshm maps: that process
/// would not see the lock. (Processes mapping the lock state are qshm's.)
pub(crate) fn refuse_fast_next_to_foreign_mapper(
    segment: procfs::Mapped,
    lock_state: Option<&LockState>,
) -> Result<(), Failure> {
    let Some(state) = lock_state else {
        return Ok(());
    };
    let (dev, ino) = state.file_id();
    let census = procfs::census(&[segment, procfs::Mapped::File { dev, ino }]);
    if let Some((pid, _)) = census.mapping.iter().find(|(_, bits)| bits & 0b11 == 0b01) {
        return Err(Failure::because(
            SharedMemoryError::LockError,
            format!(
                "the segment uses LockMode::Fast, but process {pid} maps it without qshm's lock state \
                 (Qt?) and would not see the lock; refusing to attach"
            ),
        ));
    }
    Ok(())
}
