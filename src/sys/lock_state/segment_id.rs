//! [`SegmentId`]: one incarnation of a segment, and the lock-state file name made of it.

use crate::sys::SHM_DIR;

/// One incarnation of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SegmentId {
    /// A POSIX segment file: a tag of its name (so tools can find a key's lock states),
    /// inode and birth time (inodes are reused, birth times not).
    Posix { name_tag: u64, ino: u64, btime_ns: i64 },
    /// A System V segment: numeric key and id. Both read the same in every PID namespace
    /// (a creator pid does not: its own namespace shows 1, one where it is invisible 0),
    /// and the kernel hands an id out again only after its index has cycled (at least 64
    /// segments) through every sequence number (65 536): a lock state left by a segment
    /// is swept by the next create long before.
    SystemV { key: i32, shmid: i32 },
}

/// Prefix of every lock-state file name in `/dev/shm`.
pub(crate) const LOCK_STATE_PREFIX: &str = "qshm-lock.";

/// The tag of a POSIX segment's file name in its lock state's name: the first 8 bytes
/// of the name's SHA-1.
pub(crate) fn name_tag(file_name: &str) -> u64 {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(file_name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

impl SegmentId {
    /// The lock state's file name.
    pub(crate) fn lock_state_name(&self) -> String {
        match *self {
            SegmentId::Posix {
                name_tag,
                ino,
                btime_ns,
            } => {
                format!("{LOCK_STATE_PREFIX}p.{name_tag:016x}.{ino}.{btime_ns}")
            }
            SegmentId::SystemV { key, shmid } => {
                format!("{LOCK_STATE_PREFIX}s.{:08x}.{shmid}", key as u32)
            }
        }
    }

    /// The lock state's path.
    pub(crate) fn lock_state_path(&self) -> String {
        format!("{SHM_DIR}/{}", self.lock_state_name())
    }

    /// The path of the second name qshm gives Qt's POSIX semaphore of a POSIX segment (a
    /// hard link beside the lock state, kind `k` where the lock state's is `p`), so that
    /// the semaphore outlives the unlink of its Qt name by a Qt process that made it (see
    /// `sys/posix/semaphore_keep.rs`). `None` for a System V segment.
    pub(crate) fn semaphore_keep_path(&self) -> Option<String> {
        match *self {
            SegmentId::Posix {
                name_tag,
                ino,
                btime_ns,
            } => Some(format!(
                "{SHM_DIR}/{LOCK_STATE_PREFIX}k.{name_tag:016x}.{ino}.{btime_ns}"
            )),
            SegmentId::SystemV { .. } => None,
        }
    }

    /// The segment a lock-state file name belongs to, if it is one.
    pub(crate) fn from_lock_state_name(name: &str) -> Option<SegmentId> {
        let rest = name.strip_prefix(LOCK_STATE_PREFIX)?;
        let mut parts = rest.splitn(4, '.');
        let (kind, tag, a, b) = (parts.next()?, parts.next()?, parts.next()?, parts.next());
        match (kind, b) {
            ("p", Some(b)) => Some(SegmentId::Posix {
                name_tag: u64::from_str_radix(tag, 16).ok()?,
                ino: a.parse().ok()?,
                btime_ns: b.parse().ok()?,
            }),
            ("s", None) => Some(SegmentId::SystemV {
                key: u32::from_str_radix(tag, 16).ok()? as i32,
                shmid: a.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// The POSIX segment whose semaphore's second name is `name`
    /// ([`semaphore_keep_path`](Self::semaphore_keep_path)), if it is one.
    pub(crate) fn from_semaphore_keep_name(name: &str) -> Option<SegmentId> {
        let rest = name.strip_prefix(LOCK_STATE_PREFIX)?.strip_prefix("k.")?;
        match SegmentId::from_lock_state_name(&format!("{LOCK_STATE_PREFIX}p.{rest}"))? {
            id @ SegmentId::Posix { .. } => Some(id),
            SegmentId::SystemV { .. } => None,
        }
    }

    pub(super) fn words(&self) -> [u64; 4] {
        match *self {
            SegmentId::Posix {
                name_tag,
                ino,
                btime_ns,
            } => [1, name_tag, ino, btime_ns as u64],
            SegmentId::SystemV { key, shmid } => [2, u64::from(key as u32), shmid as u64, 0],
        }
    }
}
