//! Machine-wide administration, for tools such as `qshm ls` and `qshm rm --stale`: every
//! System V and POSIX shared-memory segment on the machine, who made it, whether anyone
//! still uses it, the state of its lock, and what crashed programs left behind (qshm's
//! lock state, Qt's semaphores and key files, glibc's unfinished semaphore files).
//!
//! # Looking never disturbs live users
//!
//! [`scan`] and [`segment`] attach to nothing, lock nothing and map nothing: attachment
//! counts come from the kernel (`/proc/sysvipc/shm`), `flock` holders from `/proc/locks`,
//! mappers from `/proc/*/maps`, a POSIX semaphore's value and qshm's lock state are read
//! from their files. (Taking a segment's `flock` to test it would make a concurrent last
//! detach believe another user is left, and leak the segment; mapping a semaphore would
//! make a waiter looking for a dead holder believe it has a living one.)
//!
//! # Removing never touches a live object
//!
//! [`remove_stale`] re-checks each object right before removing it, the way the library
//! reclaims a stale segment in `create`: a System V segment under its key file's `flock`,
//! a POSIX segment under its exclusive `flock` with a lease probe, every orphan with a
//! lease probe or `/proc`. Things younger than a couple of seconds are left alone, since
//! their maker may be between two steps of making them. Locks are never taken: a lock
//! whose holder died is taken over by its next locker, whoever that is (a clean-up run
//! as root never writes into a lock that another user can write).
//!
//! [`removed_in_use`] finds the segments of a key that were removed while processes
//! still map them (`ipcrm`, `rm`, `qshm rm`, systemd-logind's `RemoveIPC=yes`), and who
//! those processes are.
//!
//! The facts about one handle's segment that only tools need (`info`, `force_remove`,
//! `semaphore_key`, `lock_state_path`, `system_v_key`) are the extension trait
//! [`SharedMemoryExt`], so they stay out of [`SharedMemory`](crate::SharedMemory)'s own API.
//!
//! The module exists with the `admin` feature (on by default); it adds no dependency.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::{KeyType, NativeIpcKey};
use crate::sys::LockMode;

mod lock_status;
mod look;
mod orphans;
mod removal;
mod removed;
#[cfg(test)]
mod tests;
mod tools;

pub use crate::shared_memory::SegmentInfo;
pub use removed::{RemovedInUse, removed_in_use};
pub use tools::SharedMemoryExt;

/// How long a System V segment nobody ever attached to, or an empty POSIX segment, is
/// taken to be in the making rather than stale.
const NEW_GRACE: Duration = Duration::from_secs(10);
/// How old an orphan must be: younger ones may belong to a maker between two steps.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// What is known about a segment's users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Someone is attached (System V), or maps it or holds qshm's attachment lock (POSIX).
    Live,
    /// Just created and not used yet: its creator is between two steps.
    New,
    /// Nobody is attached: every user died (or, for POSIX, Qt left it behind).
    Stale,
    /// A POSIX segment that no visible process uses, where not every user could be
    /// seen: another user's (their processes' mappings need privileges), or any, in a
    /// container (`/proc` there does not list other PID namespaces' processes).
    Unknown,
}

/// Who made a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Maker {
    /// qshm, which records it (and the lock mode) in the lock state it makes before the
    /// segment can be found.
    Qshm {
        /// The segment's lock mode.
        lock_mode: LockMode,
    },
    /// Not qshm, but named the way Qt names the segments of legacy keys: a Qt program.
    Qt,
    /// Another program (or Qt with a native key).
    Other,
}

/// The state of a segment's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockStatus {
    /// Nobody holds it.
    Free,
    /// A process that may be alive holds it.
    Held,
    /// Held by a process that is gone: a qshm holder whose slot is free (its label names
    /// a process that died or `exec`ed), or a POSIX semaphore unit no living process
    /// could hold (looked at twice a second apart). The next qshm locker takes it over
    /// and is told (`previous_owner_died`): within about 10 ms of waiting for a qshm
    /// holder, within seconds for a Qt one (Qt itself waits for ever).
    HolderDied,
    /// Not known: no semaphore or lock state to look at, or no permission to read them.
    Unknown,
}

/// The operating system's name of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OsId {
    /// A System V segment.
    SystemV {
        /// Its id (`shmid`).
        shmid: i32,
        /// Its numeric key (`ftok` of the key file; 0 is `IPC_PRIVATE`).
        key: i32,
        /// Removed (`IPC_RMID`), and gone once its last user detaches.
        removed: bool,
    },
    /// A POSIX segment: a file in `/dev/shm`.
    Posix {
        /// The file.
        path: PathBuf,
        /// Its inode.
        inode: u64,
    },
}

/// A name Qt derives from a legacy key: it keeps the key's ASCII letters and its SHA-1,
/// not the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QtName {
    /// The letters of the legacy key, in order (`market` for `"market-2"`).
    pub letters: String,
    /// The lowercase hex SHA-1 of the legacy key's UTF-8 bytes.
    pub sha1: String,
}

impl QtName {
    /// What the name of `key` tells, if Qt derived it from a legacy key (the key's own
    /// legacy key is not needed: the name is read).
    pub fn of(key: &NativeIpcKey) -> Option<QtName> {
        look::qt_name(key.native().rsplit('/').next().unwrap_or(""))
    }
}

/// One segment found on the machine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Segment {
    /// Its name to the operating system.
    pub os_id: OsId,
    /// The native key that finds it, when known (System V: a Qt key file in Qt's
    /// temporary directory whose `ftok` key it has).
    pub native_key: Option<NativeIpcKey>,
    /// What its name tells about the legacy key, for names Qt derived from one.
    pub qt_name: Option<QtName>,
    /// Size in bytes.
    pub size: u64,
    /// System V: attachments counted by the kernel. POSIX: processes mapping it.
    pub attachments: u64,
    /// POSIX: qshm attachments (holders of the segment file's `flock`); `None` for
    /// System V, where the kernel's count includes them.
    pub qshm_attachments: Option<u64>,
    /// Owner's user id.
    pub owner_uid: u32,
    /// Permission bits.
    pub permissions: u32,
    /// Time since it was made (System V: since its creation or last `IPC_SET`).
    pub age: Duration,
    /// Whether anyone uses it.
    pub state: State,
    /// Who made it.
    pub maker: Maker,
    /// Its lock.
    pub lock: LockStatus,
    /// qshm's lock state for it, if it has one.
    pub lock_state: Option<PathBuf>,
}

impl Segment {
    /// POSIX, or System V: of its key file's `ftok` project id when the key file is
    /// known (`systemv-84`), else Qt's default.
    pub fn kind(&self) -> KeyType {
        match (&self.os_id, &self.native_key) {
            // its key file's type: the ftok project id its numeric key was made with
            (OsId::SystemV { .. }, Some(key)) => key.kind(),
            (OsId::SystemV { .. }, None) => KeyType::SystemV,
            (OsId::Posix { .. }, _) => KeyType::PosixRealtime,
        }
    }

    /// Nobody uses it.
    pub fn is_stale(&self) -> bool {
        self.state == State::Stale
    }

    /// Another program's segment: neither made by qshm or Qt, nor known to qshm (no
    /// lock state). [`remove_stale`] leaves those alone unless asked.
    pub fn is_foreign(&self) -> bool {
        self.maker == Maker::Other && self.lock_state.is_none()
    }
}

/// What kind of thing an [`Orphan`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OrphanKind {
    /// qshm's lock state (`/dev/shm/qshm-lock.…`) of a segment of this type that is gone,
    /// or the second name of a POSIX segment's semaphore (`qshm-lock.k.…`) whose lock state
    /// never got its name (its creator was killed in between) and that nobody has open.
    LockState(KeyType),
    /// A Qt POSIX semaphore (`/dev/shm/sem.qipc_systemsem_…`) whose segment is gone and
    /// that nobody has open.
    PosixSemaphore,
    /// A Qt System V semaphore whose segment is gone and whose last user died (the path
    /// is its key file).
    SystemVSemaphore {
        /// Its id.
        semid: i32,
        /// Its numeric key.
        key: i32,
    },
    /// A Qt key file (`$TMPDIR/qipc_…`) with no System V object behind it.
    KeyFile,
    /// glibc's temporary name (`/dev/shm/sem.` and 6 random characters) of a semaphore
    /// that has its real name too: its `sem_open` was killed between `link` and `unlink`.
    /// Removing it removes a name, never the semaphore.
    UnfinishedSemaphore,
    /// A file named like glibc's temporary with no other name, unused: left by a
    /// `sem_open` killed before it named its semaphore, or a semaphore someone named with
    /// six letters and digits (`sem_open("/daemon")`), which nothing tells apart. So it is
    /// another program's ([`Orphan::is_foreign`]): [`remove_stale`] removes it only when
    /// asked to remove other programs' objects too. (qshm itself never leaves one: it
    /// makes its semaphores without a temporary name.)
    MaybeUnfinishedSemaphore,
}

impl OrphanKind {
    /// The type of IPC it belongs to.
    pub fn key_type(self) -> KeyType {
        match self {
            OrphanKind::LockState(kind) => kind,
            OrphanKind::PosixSemaphore
            | OrphanKind::UnfinishedSemaphore
            | OrphanKind::MaybeUnfinishedSemaphore => KeyType::PosixRealtime,
            OrphanKind::SystemVSemaphore { .. } | OrphanKind::KeyFile => KeyType::SystemV,
        }
    }
}

/// Something left behind without its segment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Orphan {
    /// What it is.
    pub kind: OrphanKind,
    /// Its file.
    pub path: PathBuf,
    /// What its name tells about the legacy key, for names Qt derived from one.
    pub qt_name: Option<QtName>,
    /// Time since it was made.
    pub age: Duration,
}

impl Orphan {
    /// Maybe another program's object rather than a leftover ([`remove_stale`] leaves it
    /// alone unless asked).
    pub fn is_foreign(&self) -> bool {
        self.kind == OrphanKind::MaybeUnfinishedSemaphore
    }

    /// Younger than 2 seconds: its maker may be between two steps of making it (a lock
    /// state is made before its segment is named), so it may not be an orphan at all.
    /// [`scan`] lists it, [`remove_stale`] leaves it alone.
    pub fn is_new(&self) -> bool {
        self.age < ORPHAN_GRACE
    }
}

/// Everything one look at the machine found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Scan {
    /// Every shared-memory segment: all of System V, and the files in `/dev/shm` that
    /// are neither semaphores nor qshm's lock state.
    pub segments: Vec<Segment>,
    /// Lock state, semaphores and key files whose segment is gone, new ones included
    /// ([`Orphan::is_new`]).
    pub orphans: Vec<Orphan>,
}

/// What [`remove_stale`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Removal {
    /// Stale segments removed (with their lock state, Qt semaphore and key file).
    pub segments: Vec<Segment>,
    /// Orphans removed.
    pub orphans: Vec<Orphan>,
    /// Live segments whose lock a dead process held: their next locker takes it over.
    pub held_by_dead: Vec<Segment>,
    /// Stale segments left alone because they are other programs' ([`Segment::is_foreign`]).
    pub kept_foreign: Vec<Segment>,
    /// Orphans left alone because they may be other programs' ([`Orphan::is_foreign`]).
    pub kept_foreign_orphans: Vec<Orphan>,
}

/// Look at the whole machine once: every segment, and the orphans. Takes a second more
/// when a lock looks abandoned (it is looked at again, a second later).
pub fn scan() -> Result<Scan> {
    let look = look::Look::take().map_err(|e| Error::os("scan", "/dev/shm", e))?;
    let mut drafts = look.segments();
    look::settle(&mut drafts);
    let segments = drafts.into_iter().map(|d| d.segment).collect();
    let orphans = orphans::find(&look);
    Ok(Scan { segments, orphans })
}

/// The segment of `key`, as [`scan`] reports it, if it exists: attachments, state,
/// lock (with the semaphore this very key locks).
pub fn segment(key: &NativeIpcKey) -> Result<Option<Segment>> {
    let look = look::Look::take().map_err(|e| Error::os("scan", key.display_name(), e))?;
    let mut drafts: Vec<_> = look.segment_of(key).into_iter().collect();
    look::settle(&mut drafts);
    Ok(drafts.pop().map(|d| d.segment))
}

/// The name of the user with id `uid` (`getpwuid_r`), if it has one: what `ls` and `stat`
/// print for owners.
pub fn user_name(uid: u32) -> Option<String> {
    crate::os::user_name(uid)
}

/// Whether the segment of `key` exists right now (without attaching to it).
pub fn exists(key: &NativeIpcKey) -> bool {
    look::exists(key)
}

/// Remove every stale Qt or qshm segment (with its lock state, Qt semaphore and key
/// file) and every orphan older than 2 seconds ([`Orphan::is_new`]), and report every
/// lock whose holder died; with `include_foreign`, also other programs' stale segments (any
/// System V segment nobody
/// is attached to, any file in `/dev/shm` nobody maps or locks). Live segments are never
/// removed: each is checked again right before.
pub fn remove_stale(include_foreign: bool) -> Result<Removal> {
    removal::remove_stale(include_foreign)
}
