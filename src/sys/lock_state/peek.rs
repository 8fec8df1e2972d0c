//! Looking at a lock state from outside (for tools), without mapping it.

use std::io;

use super::{Layout, LockMode, LockState, MAGIC, Origin, SegmentId};
use crate::os;
use crate::sys::named_file::NamedFile;

/// What a look at a lock state finds (for tools): read from the file, without mapping
/// it or taking anything, so nobody using the lock notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peek {
    pub mode: LockMode,
    pub origin: Origin,
    /// (device, inode) of the file, to find its mappers in `/proc`.
    pub file: (u64, u64),
    /// The Qt-compatible holder's [`phase`](super::phase).
    pub phase: u32,
    /// The thread that holds `marker`, if one does (a thread id as its process sees it).
    pub marker_owner: Option<u32>,
    /// The thread that holds the Fast-mode mutex, if one does.
    pub fast_owner: Option<u32>,
}

/// The owner's thread id in the futex word of a robust mutex (glibc keeps the word, the
/// first field of `pthread_mutex_t`, at the owner's tid while it is locked; the kernel
/// clears the tid when the owner dies).
fn robust_owner(word: u32) -> Option<u32> {
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    Some(word & FUTEX_TID_MASK).filter(|&tid| tid != 0)
}

impl LockState {
    /// Look at the lock state of segment `id` without using it. `Ok(None)`: there is none,
    /// or it does not belong to this segment.
    pub(crate) fn peek(id: SegmentId) -> io::Result<Option<Peek>> {
        use std::mem::offset_of;
        let path = os::cstring(&id.lock_state_path())?;
        let file = match NamedFile::open(&path, libc::O_RDONLY, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = vec![0u8; std::mem::size_of::<Layout>()];
        if os::pread(&file.fd, &mut bytes, 0)? < bytes.len() {
            return Ok(None);
        }
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let identity: Vec<u64> = (0..4)
            .map(|i| u64_at(offset_of!(Layout, identity) + 8 * i))
            .collect();
        let Some(mode) = LockMode::from_tag(u32_at(offset_of!(Layout, mode))) else {
            return Ok(None);
        };
        if u64_at(offset_of!(Layout, magic)) != MAGIC || identity != id.words() {
            return Ok(None);
        }
        Ok(Some(Peek {
            mode,
            origin: match u32_at(offset_of!(Layout, origin)) {
                2 => Origin::Foreign,
                _ => Origin::Qshm,
            },
            file: (file.stat.dev, file.stat.ino),
            phase: u32_at(offset_of!(Layout, phase)),
            marker_owner: robust_owner(u32_at(offset_of!(Layout, marker))),
            fast_owner: robust_owner(u32_at(offset_of!(Layout, fast))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::super::{LockState, NewLockState, name_tag, phase};
    use super::*;
    use crate::sys::robust_mutex;

    #[test]
    fn peek_sees_mode_phase_and_holders_without_taking_anything() {
        let id = SegmentId::Posix {
            name_tag: name_tag(&format!("qshm-peek-test-{}", std::process::id())),
            ino: u64::from(std::process::id()),
            btime_ns: 1,
        };
        struct Remove(SegmentId);
        impl Drop for Remove {
            fn drop(&mut self) {
                LockState::remove(self.0);
            }
        }
        let _remove = Remove(id);
        let new = NewLockState {
            id,
            mode: LockMode::QtCompatible,
            origin: Origin::Foreign,
            perms: 0o600,
            owner: None,
            key_file: None,
        };
        let state = LockState::create(new).unwrap_or_else(|_| panic!("lock state"));
        let seen = LockState::peek(id).unwrap().expect("found");
        assert_eq!(
            (seen.mode, seen.origin),
            (LockMode::QtCompatible, Origin::Foreign)
        );
        assert_eq!(
            (seen.marker_owner, seen.fast_owner, seen.phase),
            (None, None, phase::IDLE)
        );
        assert_eq!(seen.file, state.file_id());
        assert_eq!(
            // SAFETY: the mutex lives in the lock-state mapping owned by state.
            unsafe { robust_mutex::try_lock(state.marker()) }.unwrap(),
            robust_mutex::Locked::Yes
        );
        state.phase().store(phase::HELD, Ordering::SeqCst);
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let seen = LockState::peek(id).unwrap().expect("found");
        assert_eq!((seen.marker_owner, seen.phase), (Some(me), phase::HELD));
        // SAFETY: locked just above by this thread.
        unsafe { robust_mutex::unlock(state.marker()) }.unwrap();
        assert_eq!(LockState::peek(id).unwrap().expect("found").marker_owner, None);
        let other = SegmentId::Posix {
            name_tag: name_tag("qshm-peek-other"),
            ino: 1,
            btime_ns: 1,
        };
        assert_eq!(LockState::peek(other).unwrap(), None, "none there");
    }
}
