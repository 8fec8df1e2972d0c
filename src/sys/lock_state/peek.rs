//! Looking at a lock state from outside (for tools), without mapping it or taking
//! anything: the header and the lock words are read with `pread`, and a holder's slot is
//! asked about with `F_OFD_GETLK`, which works on a read-only descriptor.

use std::io;
use std::os::fd::AsFd;

use super::{LockMode, Origin, SLOTS_AT, SegmentId, WORDS_AT, file::read_header};
use crate::os;
use crate::sys::named_file::NamedFile;

/// What a look at a lock state finds.
#[derive(Debug)]
pub(crate) struct Peek {
    pub mode: LockMode,
    pub origin: Origin,
    /// (device, inode) of the file, to find its mappers in `/proc`.
    pub file: (u64, u64),
    /// The Fast-mode lock word.
    pub fast: u32,
    file_handle: NamedFile,
}

impl Peek {
    /// Whether the process that wrote `word` (a label, or a lock word holding one) lives:
    /// `None` for no label.
    pub(crate) fn holder_alive(&self, word: u32) -> Option<bool> {
        let label = super::Label::from_word(word)?;
        Some(super::slots::alive_by_file(
            self.file_handle.fd.as_fd(),
            label,
            |slot| {
                let mut bytes = [0u8; 4];
                match os::pread(
                    &self.file_handle.fd,
                    &mut bytes,
                    (SLOTS_AT + 4 * slot as usize) as u64,
                ) {
                    Ok(4) => Some(u32::from_ne_bytes(bytes)),
                    _ => None,
                }
            },
        ))
    }
}

impl super::LockState {
    /// Look at the lock state of segment `id` without using it. `Ok(None)`: there is none,
    /// or it does not belong to this segment.
    pub(crate) fn peek(id: SegmentId) -> io::Result<Option<Peek>> {
        let path = os::cstring(&id.lock_state_path())?;
        let file = match NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = match read_header(&file.fd) {
            Ok(header) => header,
            Err(_) => return Ok(None),
        };
        let Some(mode) = header.check(id) else {
            return Ok(None);
        };
        let mut words = [0u8; 4];
        if os::pread(&file.fd, &mut words, WORDS_AT as u64)? < words.len() {
            return Ok(None);
        }
        let word = |at: usize| u32::from_ne_bytes(words[at..at + 4].try_into().unwrap_or([0; 4]));
        Ok(Some(Peek {
            mode,
            origin: Origin::from_tag(header.origin).unwrap_or(Origin::Foreign),
            file: (file.stat.dev, file.stat.ino),
            fast: word(0),
            file_handle: file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::super::{LockState, NewLockState, name_tag};
    use super::*;

    #[test]
    fn peek_sees_mode_and_holders_without_taking_anything() {
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
            mode: LockMode::Fast,
            origin: Origin::Foreign,
            perms: 0o600,
            owner: None,
            key_file: None,
            semaphore: Some([1, 2, 3]),
        };
        let state = LockState::create(new).unwrap_or_else(|e| panic!("lock state: {e:?}"));

        let seen = LockState::peek(id).unwrap().expect("found");
        assert_eq!((seen.mode, seen.origin), (LockMode::Fast, Origin::Foreign));
        assert_eq!(seen.fast, 0);
        assert_eq!(seen.file, state.file_id());
        let me = state.label().expect("a slot").word();
        state.words().fast.store(me, Ordering::SeqCst);
        let seen = LockState::peek(id).unwrap().expect("found");
        assert_eq!(seen.fast, me);
        assert_eq!(seen.holder_alive(me), Some(true), "this process holds its slot");
        assert_eq!(seen.holder_alive(0), None);
        // a label of a slot nobody holds
        let other = super::super::Label::from_word(me ^ 1).expect("a label");
        assert_eq!(seen.holder_alive(other.word()), Some(false));
        state.words().fast.store(0, Ordering::SeqCst);
        let other_id = SegmentId::Posix {
            name_tag: name_tag("qshm-peek-other"),
            ino: 1,
            btime_ns: 1,
        };
        assert!(LockState::peek(other_id).unwrap().is_none(), "none there");
    }
}
