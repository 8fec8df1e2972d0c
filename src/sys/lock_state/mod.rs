//! The lock state: a small file in `/dev/shm` that belongs to one incarnation of one
//! segment and holds qshm's side of its lock, as plain integers only: the Fast-mode lock
//! word, the label of the qshm process holding a System V semaphore unit, the change
//! counter and its waiter count, and one generation per process slot (`slots.rs`). No
//! pointer is ever stored in it or read from it: whatever another process writes there
//! can make a lock busy or free, never make this process write anywhere or crash.
//!
//! # Naming, making, trusting
//!
//! The file is named after the segment's identity, not its key (`segment_id.rs`): a
//! segment destroyed and made again gets another name, so a lock state is never
//! re-initialised while in use, and racing creators never meet on one name. It is made
//! whole before it gets its name (`O_TMPFILE`, `posix_fallocate`, the header written), by
//! the segment's creator before anyone can attach (System V: under the key file's lock;
//! POSIX: named right after the segment, while the creator holds the segment's `flock`
//! exclusively and attachers wait); a qshm attacher adds one to a segment another
//! program (Qt) made if it owns the segment (or is root, on the owner's behalf).
//!
//! Whoever opens one trusts it only if its owner is the segment's owner (or creator), its
//! mode gives write access to nobody who may not write the segment ([`lock_permissions`]),
//! it has the right size, and its header names this segment in a version and layout this
//! code knows. Every process maps it once ([`registry`]), however many handles it has.
//!
//! # Who may write it
//!
//! Only users who may write the segment may write its lock state (and so take its lock):
//! they could corrupt or shrink the segment itself anyway (as with Qt, whose lock
//! semaphore is `0600`). Users who may only read the segment can read the lock state
//! (for change notification), and nothing else.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::mapping::Mapping;
use crate::os::FileStat;

mod file;
#[cfg(feature = "admin")]
mod peek;
mod registry;
mod segment_id;
mod slots;

pub(crate) use file::{CreateError, NewLockState, OpenError, Trust, Untrusted};
#[cfg(feature = "admin")]
pub(crate) use peek::Peek;
pub(crate) use segment_id::{LOCK_STATE_PREFIX, SegmentId, name_tag};
pub(crate) use slots::{Holder, Label};

/// Which lock [`SharedMemory::lock`](crate::SharedMemory::lock) takes. It belongs to the
/// segment: chosen by its creator, recorded in the lock state, adopted by attachers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// The semaphore Qt's `QSharedMemory::lock()` takes: excludes Qt programs too.
    #[default]
    QtCompatible,
    /// A lock word in qshm's lock state: no system call when uncontended, but only
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

impl Origin {
    fn tag(self) -> u32 {
        match self {
            Origin::Qshm => 1,
            Origin::Foreign => 2,
        }
    }

    fn from_tag(tag: u32) -> Option<Origin> {
        match tag {
            1 => Some(Origin::Qshm),
            2 => Some(Origin::Foreign),
            _ => None,
        }
    }
}

/// Mode bits of the lock state of a segment with mode `perms`: read and write for every
/// class that may write the segment (locking writes the lock words), read for those that
/// may only read it (so they can wait for changes), and always read and write for the
/// owner. 0644 stays 0644 (readers cannot lock), 0664 and 0666 stay as they are.
pub(crate) fn lock_permissions(perms: u32) -> u32 {
    let writers = perms & 0o022;
    0o600 | (perms & 0o044) | writers | (writers << 1)
}

/// Mode bits of Qt's semaphore that qshm makes for a segment with mode `perms`: read and
/// write for the owner and for every class that may write the segment, nothing for the
/// others (as Qt, whose semaphore is 0600). Readers have no use for it.
pub(crate) fn locker_permissions(perms: u32) -> u32 {
    let writers = perms & 0o022;
    0o600 | writers | (writers << 1)
}

/// Whether mode `mode` of a lock object gives write access to a class of users that may
/// not write a segment with mode `segment_perms` (such an object is not to be trusted:
/// they could change or shrink what this process maps).
pub(crate) fn writable_beyond(mode: u32, segment_perms: u32) -> bool {
    mode & 0o022 & !(segment_perms & 0o022) != 0 || mode & 0o7000 != 0
}

const MAGIC: u64 = u64::from_le_bytes(*b"QSHMLCK3");
const VERSION: u32 = 3;

/// The size of the file: four pages, most of it process slots.
pub(crate) const FILE_LEN: usize = 16 * 1024;
/// Where the lock words start.
const WORDS_AT: usize = 128;
/// Where the slot generations start.
const SLOTS_AT: usize = 256;
/// How many processes may use one segment's lock at once.
pub(crate) const SLOTS: u32 = ((FILE_LEN - SLOTS_AT) / 4) as u32;

/// What never changes after the file got its name. Written whole before that, and read
/// (checked, then copied) by every opener; tools read it with `pread`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct Header {
    magic: u64,
    version: u32,
    mode: u32,
    origin: u32,
    slots: u32,
    identity: [u64; 4],
    /// A System V key file qshm created for the segment: (device, inode, birth ns).
    key_file: [u64; 3],
    /// Qt's semaphore qshm created with the segment, to remove it with the segment and
    /// never another one that took its name: POSIX (device, inode, birth ns) of its file,
    /// System V (semid, numeric key, creation time).
    semaphore: [u64; 3],
}

const _: () = assert!(size_of::<Header>() <= WORDS_AT);

impl Header {
    /// Whether the header is one this code wrote for segment `id` (and its mode).
    fn check(&self, id: SegmentId) -> Option<LockMode> {
        (self.magic == MAGIC
            && self.version == VERSION
            && self.slots == SLOTS
            && self.identity == id.words()
            && Origin::from_tag(self.origin).is_some())
        .then(|| LockMode::from_tag(self.mode))
        .flatten()
    }
}

/// The lock words, at [`WORDS_AT`]. Every field is an integer changed atomically.
#[repr(C)]
pub(crate) struct Words {
    /// The Fast-mode lock: 0 when free, else the holder's [`Label`], with
    /// [`CONTENDED`](crate::lock::CONTENDED) set while others may sleep on it.
    pub fast: AtomicU32,
    /// The [`Label`] of the qshm process holding a System V semaphore unit, 0 when none.
    pub qt_holder: AtomicU32,
    /// Bumped by writers that notify; waited on by readers (a shared futex word).
    pub generation: AtomicU32,
    /// How many processes that may write this file may be asleep on `generation` (raised
    /// before a wait, lowered after it). Read-only users cannot raise it: notifiers of a
    /// segment others may read always wake.
    pub waiters: AtomicU32,
}

/// One process's mapping of a lock state, shared by all its handles of the segment.
#[derive(Debug)]
pub(crate) struct LockState {
    map: Mapping,
    file: FileStat,
    id: SegmentId,
    header: Header,
    /// This process's proof of life, when it may lock (it opened the file for writing).
    slot: Option<slots::Slot>,
    /// When a waiter of this process last looked whether a holder lives (for `try_lock`,
    /// which looks at most every so often).
    last_look: AtomicU64,
    /// Last field: the descriptor closes after the mapping is gone.
    fd: crate::sys::fork::ParentOnlyFd,
}

impl LockState {
    /// The segment's lock mode.
    pub(crate) fn mode(&self) -> LockMode {
        LockMode::from_tag(self.header.mode).unwrap_or_default()
    }

    /// Who made the segment.
    pub(crate) fn origin(&self) -> Origin {
        Origin::from_tag(self.header.origin).unwrap_or(Origin::Foreign)
    }

    /// The key file qshm made for the segment, if it did: (device, inode, birth ns).
    pub(crate) fn key_file(&self) -> Option<[u64; 3]> {
        (self.header.key_file != [0; 3]).then_some(self.header.key_file)
    }

    /// Qt's semaphore qshm made with the segment, if it did.
    pub(crate) fn semaphore(&self) -> Option<[u64; 3]> {
        (self.header.semaphore != [0; 3]).then_some(self.header.semaphore)
    }

    /// The segment this lock state belongs to.
    pub(crate) fn segment(&self) -> SegmentId {
        self.id
    }

    /// (device, inode) of the file, to find its mappers in `/proc`.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        (self.file.dev, self.file.ino)
    }

    /// Whether this process may lock through it (it could open the file for writing).
    pub(crate) fn may_lock(&self) -> bool {
        self.slot.is_some()
    }

    /// Whether users who may only read it exist: they can wait for changes but cannot
    /// say so in [`Words::waiters`].
    pub(crate) fn has_read_only_users(&self) -> bool {
        let mode = self.file.mode;
        (mode & 0o040 != 0 && mode & 0o020 == 0) || (mode & 0o004 != 0 && mode & 0o002 == 0)
    }

    /// The lock words.
    #[inline]
    pub(crate) fn words(&self) -> &Words {
        // SAFETY: the mapping is FILE_LEN bytes, page-aligned, and lives as long as self;
        // Words (four AtomicU32) at WORDS_AT is in bounds and aligned; every process
        // touches these bytes only atomically, and any bits are a valid AtomicU32.
        unsafe { &*self.map.ptr().add(WORDS_AT).cast::<Words>() }
    }

    /// The generation of slot `index` (`index < SLOTS`).
    fn slot_generation(&self, index: u32) -> &AtomicU32 {
        debug_assert!(index < SLOTS);
        // SAFETY: SLOTS_AT + 4 * index + 4 <= FILE_LEN for index < SLOTS, aligned to 4;
        // the mapping lives as long as self and these words are only touched atomically.
        unsafe {
            &*self
                .map
                .ptr()
                .add(SLOTS_AT + 4 * index as usize)
                .cast::<AtomicU32>()
        }
    }

    /// This process's label, if it may lock.
    #[inline]
    pub(crate) fn label(&self) -> Option<Label> {
        self.slot.as_ref().map(|s| s.label)
    }

    /// Whether the process that wrote `label` into a lock word is alive.
    pub(crate) fn holder(&self, label: Label) -> io::Result<Holder> {
        slots::holder(self, label)
    }

    /// `try_lock` looks whether a holder lives at most this often.
    pub(crate) fn look_due(&self, every: std::time::Duration) -> bool {
        let now = slots::coarse_now_ms();
        let last = self.last_look.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every.as_millis() as u64
            && self
                .last_look
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// This process's shared mapping of the lock state whose file is (device, inode), if it
/// has one open: what a helper that must outlive a borrow of the handle keeps (the
/// async wake-up's thread, `src/async_wait/`).
#[cfg(feature = "async")]
pub(crate) fn shared(file: (u64, u64)) -> Option<std::sync::Arc<LockState>> {
    registry::find(file)
}

/// (device, inode, birth ns) of a file, as recorded for key files.
pub(crate) fn file_words(st: &FileStat) -> [u64; 3] {
    [st.dev, st.ino, st.btime_ns.unwrap_or(st.ctime_ns) as u64]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_permissions_give_the_lock_to_writers_only() {
        assert_eq!(lock_permissions(0o600), 0o600);
        assert_eq!(lock_permissions(0o644), 0o644);
        assert_eq!(lock_permissions(0o640), 0o640);
        assert_eq!(lock_permissions(0o664), 0o664);
        assert_eq!(lock_permissions(0o666), 0o666);
        assert_eq!(lock_permissions(0o400), 0o600, "the owner may always lock");
        assert_eq!(lock_permissions(0o620), 0o660, "writers need to read the words");
        assert_eq!(locker_permissions(0o644), 0o600);
        assert_eq!(locker_permissions(0o664), 0o660);
        assert_eq!(locker_permissions(0o666), 0o666);
        assert!(writable_beyond(0o666, 0o644));
        assert!(!writable_beyond(0o644, 0o644));
        assert!(!writable_beyond(0o600, 0o644));
        assert!(writable_beyond(0o4600, 0o600), "no set-id bits");
    }

    #[test]
    fn the_layout_fits() {
        const { assert!(SLOTS < (1 << slots::SLOT_BITS), "a slot and one more fit a label") };
        assert_eq!(SLOTS_AT + 4 * SLOTS as usize, FILE_LEN);
        const { assert!(WORDS_AT + size_of::<Words>() <= SLOTS_AT) };
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
            },
            SegmentId::SystemV { key: -5, shmid: 1 },
        ] {
            assert_eq!(SegmentId::from_lock_state_name(&id.lock_state_name()), Some(id));
            // a POSIX semaphore's second name is never taken for a lock state, and tells
            // its segment (the sweep of one left without its lock state needs that)
            if let Some(keep) = id.semaphore_keep_path() {
                let name = keep.rsplit('/').next().unwrap_or_default();
                assert!(name.starts_with(LOCK_STATE_PREFIX), "{name}");
                assert_eq!(SegmentId::from_lock_state_name(name), None, "{name}");
                assert_eq!(SegmentId::from_semaphore_keep_name(name), Some(id), "{name}");
            }
            assert_eq!(SegmentId::from_semaphore_keep_name(&id.lock_state_name()), None);
        }
        assert_eq!(SegmentId::from_lock_state_name("qshm-lock.0123abcd"), None);
        assert_eq!(SegmentId::from_lock_state_name("qshm-lock.x.1.2.3"), None);
    }
}
