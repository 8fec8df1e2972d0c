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

pub(crate) mod exec_watch;
pub(crate) mod fork;
pub(crate) mod lock_state;
pub(crate) mod mapping;
pub(crate) mod named_file;
pub(crate) mod posix;
pub(crate) mod procfs;
pub(crate) mod shared_here;
pub(crate) mod sysv;

pub use lock_state::LockMode;

/// The mode new segments and semaphores get unless told otherwise
/// ([`SharedMemory::set_permissions`](crate::SharedMemory::set_permissions)).
pub const DEFAULT_PERMISSIONS: u32 = 0o600;

/// Where glibc's `shm_open` and `sem_open` keep their files, and qshm its lock states.
pub(crate) const SHM_DIR: &str = "/dev/shm";
/// [`SHM_DIR`] as a C string.
pub(crate) const SHM_DIR_C: &std::ffi::CStr = c"/dev/shm";
use lock_state::{CreateError, LockState, NewLockState, OpenError, Origin, SegmentId, Trust, Untrusted};
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

/// Which way [`SharedMemory::open_or_create`](crate::SharedMemory::open_or_create) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opened {
    /// No segment had the key: this call made it (with this handle's size, lock mode and
    /// permissions), exactly as [`create`](crate::SharedMemory::create) would have.
    Created,
    /// A live segment had the key: this call attached to it, exactly as
    /// [`attach`](crate::SharedMemory::attach) would have (adopting its lock mode).
    Attached,
}

/// Whether an attached segment is still the one its key names
/// ([`SharedMemory::removal`](crate::SharedMemory::removal)).
///
/// A segment is *removed* when it loses its name while attached: System V's `IPC_RMID`
/// (`ipcrm`, `qshm rm`, systemd-logind's `RemoveIPC=yes` at logout) marks it for
/// destruction and takes its key away; a POSIX segment's file in `/dev/shm` is unlinked
/// (`rm`, `qshm rm`, `RemoveIPC=yes`) or another file takes its name. The processes that
/// are attached keep their mapping, its bytes and its lock, but nobody can attach to it
/// any more, and the kernel frees it when the last of them detaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Removal {
    /// Not removed: the key still names this very segment (System V: the kernel has not
    /// marked it for destruction; POSIX: its name in `/dev/shm` still is this file).
    Present,
    /// Removed, and nothing has the key now: an `attach` of the key finds nothing.
    Removed,
    /// Removed, and the key names another segment now: one made since (by a `create`,
    /// an `open_or_create`, a Qt program) or, for POSIX, another file put in its place.
    /// Others who attach meet there, not here.
    Replaced,
    /// The segment is present, but the lock state qshm keeps beside it in `/dev/shm` was
    /// removed (`rm`, or systemd-logind's `RemoveIPC=yes`, which removes every
    /// `/dev/shm` file of the user but leaves a System V segment that is attached).
    /// Processes that attach from now on share the bytes but not this handle's lock
    /// state: not its [`LockMode::Fast`] lock, not its change notification.
    LockStateRemoved,
}

impl Removal {
    /// True for everything but [`Present`](Removal::Present): this handle no longer
    /// shares the key's segment (or, for [`LockStateRemoved`](Removal::LockStateRemoved),
    /// its lock) with anyone who attaches from now on.
    pub fn is_removed(self) -> bool {
        self != Removal::Present
    }
}

/// An attached segment (its bytes are the [`Mapping`] that came with it, which the facade
/// owns and drops before detaching).
pub(crate) trait SegmentBackend: Send + Sync {
    /// Current facts from the OS.
    fn stat(&self) -> io::Result<SegmentStat>;
    /// Whether the key still names this segment (see [`Removal`]).
    fn removal(&self) -> io::Result<Removal>;
    /// Detach (the mapping and the lock are gone already); if no user is left, destroy
    /// the segment, its lock state and Qt's semaphore.
    fn detach(self: Box<Self>) -> Result<Detached, Failure>;
    /// In a `fork()`ed child: let go of this copy; the parent's attachment stays intact.
    fn forget(self: Box<Self>);
}

/// A counting semaphore shared between processes (`SystemSemaphore`'s backends).
pub(crate) trait SemaphoreBackend: Send + Sync {
    /// Take one unit. `None` blocks, `Some(0)` tries once. `Ok(false)`: busy or timed out.
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool>;
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
    /// True when this handle created the OS object (or, in `Create` mode, took it over).
    fn created(&self) -> bool;
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

/// The parts of a segment's lock, as the backend found or made them; the lock module
/// assembles the lock from them.
pub(crate) enum LockParts {
    /// `LockMode::Fast`: the word in the lock state.
    Fast { state: Arc<LockState> },
    /// Qt-compatible, POSIX key: Qt's semaphore, and the lock state that labels its units
    /// (`None` for a segment another program made, whose lock state we may not add).
    QtPosix {
        semaphore: Arc<posix::SemaphoreFile>,
        state: Option<Arc<LockState>>,
    },
    /// Qt-compatible, System V key: Qt's semaphore set, and the lock state that records
    /// its qshm holder.
    QtSystemV {
        semaphore: Arc<sysv::Semaphore>,
        state: Option<Arc<LockState>>,
    },
    /// This user may not take the lock (it may read the segment, not write it): only the
    /// lock state, read-only, for change notification.
    Unlockable {
        state: Option<Arc<LockState>>,
        mode: LockMode,
    },
}

/// What create and attach hand to the facade.
pub(crate) struct Attached {
    pub segment: Box<dyn SegmentBackend>,
    pub mapping: Mapping,
    pub lock: LockParts,
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

/// Attach to the live segment of `key`, or create it if there is none, as one step: one
/// creator however many race, never a `NotFound` or `AlreadyExists` for a segment that
/// was being made or destroyed meanwhile (such races are retried inside, a bounded number
/// of times).
pub(crate) fn open_or_create(
    key: &NativeIpcKey,
    create: &CreateRequest,
    attach: &AttachRequest,
) -> Result<(Attached, Opened), Failure> {
    check_key(key)?;
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => sysv::open_or_create(key, create, attach),
        KeyType::PosixRealtime => posix::open_or_create(key, create, attach),
    }
}

/// How often `open_or_create` tries again after losing a race (a segment destroyed
/// between its look and its attach, or made between its look and its create). Each
/// round is a full look, so losing them all takes others making and destroying the key
/// 64 times in a row.
pub(crate) const OPEN_OR_CREATE_ROUNDS: usize = 64;

/// The failure of an `open_or_create` that lost every round.
pub(crate) fn kept_changing() -> Failure {
    Failure::because(
        SharedMemoryError::UnknownError,
        format!(
            "the segment of this key was made and removed by others {OPEN_OR_CREATE_ROUNDS} times \
             while this call tried to attach or create it; gave up"
        ),
    )
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
}

impl Owner {
    fn trust(&self) -> Trust {
        Trust {
            owner_uid: self.uid,
            creator_uid: self.creator_uid,
            segment_perms: self.perms,
        }
    }
}

/// What [`lock_state_of`] does when the segment has no lock state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfMissing {
    /// Leave it missing: the caller makes it later, once it knows what to record.
    Leave,
    /// Make one, recording Qt's semaphore this attacher made for the segment, if it made
    /// one (so that it is removed with the segment even if another program removes that).
    Make { semaphore: Option<[u64; 3]> },
}

/// Find the lock state of segment `id` and settle the lock mode, as an attacher does:
/// the segment's recorded mode is adopted; a conflicting explicit request is an error.
/// A segment without lock state was made by another program (qshm makes its lock state
/// before its segment can be found): its lock is Qt's, and with [`IfMissing::Make`], a
/// lock state is added if we may (its owner, or root for them), so that qshm's holders
/// are labelled and change notification works. `None` then: we may not, or there is no
/// room (the semaphore alone still excludes, as in Qt).
pub(crate) fn lock_state_of(
    id: SegmentId,
    owner: Owner,
    requested: Option<LockMode>,
    missing: IfMissing,
) -> Result<(Option<Arc<LockState>>, LockMode), Failure> {
    for _ in 0..3 {
        match LockState::open(id, owner.trust()) {
            Ok(Some(state)) => {
                let mode = state.mode();
                if let Some(asked) = requested.filter(|&asked| asked != mode) {
                    return Err(mode_conflict(asked, mode));
                }
                return Ok((Some(state), mode));
            }
            Ok(None) => {
                if requested == Some(LockMode::Fast) {
                    return Err(Failure::because(
                        SharedMemoryError::LockError,
                        "the segment's lock mode is LockMode::QtCompatible (it has no qshm lock \
                         state: another program made it), and Qt would not see LockMode::Fast's \
                         lock; attach without with_lock_mode to adopt it",
                    ));
                }
                let me = os::euid();
                let IfMissing::Make { semaphore } = missing else {
                    return Ok((None, LockMode::QtCompatible));
                };
                if me != owner.uid && me != 0 {
                    return Ok((None, LockMode::QtCompatible));
                }
                let new = NewLockState {
                    id,
                    mode: LockMode::QtCompatible,
                    origin: Origin::Foreign,
                    perms: lock_state::lock_permissions(owner.perms),
                    owner: (me != owner.uid).then_some((owner.uid, owner.gid)),
                    key_file: None,
                    semaphore,
                };
                match LockState::create(new) {
                    Ok(state) => {
                        return Ok((Some(state), LockMode::QtCompatible));
                    }
                    // another attacher was quicker: use theirs (next round)
                    Err(CreateError::Taken) => continue,
                    // no room for it: the semaphore alone still excludes
                    Err(CreateError::Io(_)) => return Ok((None, LockMode::QtCompatible)),
                }
            }
            Err(OpenError::Untrusted(why)) => return Err(untrusted(id, why)),
            Err(OpenError::Io(e)) => {
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

pub(crate) fn mode_conflict(asked: LockMode, mode: LockMode) -> Failure {
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

/// The failure for a lock state (or semaphore) that is not to be trusted, naming the file
/// and the way out.
pub(crate) fn untrusted(id: SegmentId, why: Untrusted) -> Failure {
    untrusted_file(&id.lock_state_path(), "lock state", why)
}

/// The failure for the lock object `what` at `path` that is not to be trusted.
pub(crate) fn untrusted_file(path: &str, what: &str, why: Untrusted) -> Failure {
    let detail = match why {
        Untrusted::Owner(uid) => format!(
            "refusing the {what} {path}: it belongs to {}, not the segment's owner",
            owner_label(uid)
        ),
        Untrusted::Permissions(mode) => format!(
            "refusing the {what} {path}: its mode {mode:04o} lets users change it who may not write the segment"
        ),
        Untrusted::Content => format!(
            "refusing the {what} {path}: it is damaged or not this segment's (its owner can remove the \
             segment with `qshm rm KEY` and make it again)"
        ),
    };
    Failure::because(SharedMemoryError::LockError, detail)
}

/// In `LockMode::Fast`, refuse a segment that a process outside qshm maps: that process
/// would not see the lock. (Processes mapping the lock state are qshm's.) Called only when
/// Qt's semaphore of the key is in use; where `/proc` cannot list every process (another
/// PID namespace), refuse too.
pub(crate) fn refuse_fast_next_to_foreign_mapper(
    segment: procfs::Mapped,
    lock_state: Option<&LockState>,
) -> Result<(), Failure> {
    let Some(state) = lock_state else {
        return Ok(());
    };
    let (dev, ino) = state.file_id();
    let census = procfs::census(&[segment, procfs::Mapped::File { dev, ino }]);
    if let Some(pid) = census
        .mapping
        .iter()
        .find(|m| m.maps & 0b11 == 0b01)
        .map(|m| m.pid)
    {
        return Err(Failure::because(
            SharedMemoryError::LockError,
            format!(
                "the segment uses LockMode::Fast, but process {pid} maps it without qshm's lock state \
                 (Qt?) and would not see the lock; refusing to attach"
            ),
        ));
    }
    // Qt's semaphore is in use, and a Qt process of another PID namespace would not be
    // listed at all: no evidence that none maps the segment
    if !census.complete {
        return Err(Failure::because(
            SharedMemoryError::LockError,
            "the segment uses LockMode::Fast, and Qt's semaphore of its key is in use, but /proc here does \
             not list the processes of other PID namespaces (a container?): a Qt process there would not \
             see the lock; refusing to attach (Qt programs share a segment only in LockMode::QtCompatible)",
        ));
    }
    Ok(())
}
