//! The status of a segment's lock, found without taking or mapping anything.
//!
//! * A Fast-mode lock word, and a POSIX semaphore unit a qshm process holds, carry the
//!   holder's label: its process lives while its slot's byte lock is held
//!   (`sys/lock_state/slots.rs`), which is asked at once.
//! * A System V semaphore unit is given back by the kernel when its holder dies: free or
//!   held.
//! * An unlabelled POSIX semaphore unit (a Qt process's) is reported as
//!   [`LockStatus::HolderDied`] when, looked at twice [`DEAD_QT_HOLDER_LOOK`] apart, no
//!   living process could hold it: nobody has it open at all, or the `/proc` rule
//!   waiters use ([`lock::nobody_could_hold`]) says so.

use super::LockStatus;
use crate::key::NativeIpcKey;
use crate::lock::{self, DEAD_QT_HOLDER_LOOK};
use crate::os;
use crate::sys::lock_state::Peek;
use crate::sys::named_file::NamedFile;
use crate::sys::{LockMode, posix, sysv};

/// How to find out the status of an unlabelled POSIX semaphore unit.
#[derive(Clone, Debug)]
pub(super) struct Probe {
    pub semaphore: NativeIpcKey,
    /// (device, inode) of the segment's lock state, if it has one.
    pub lock_state: Option<(u64, u64)>,
}

/// What one look at a POSIX semaphore lock found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Known(LockStatus),
    /// Taken, and no living process could hold the semaphore in this file right now.
    Nobody((u64, u64)),
}

/// The status of a lock word or semaphore pad holding `word` (0: free).
fn labelled(peek: &Peek, word: u32) -> LockStatus {
    match peek.holder_alive(word) {
        None => LockStatus::Free,
        Some(true) => LockStatus::Held,
        Some(false) => LockStatus::HolderDied,
    }
}

/// A System V segment's lock: its Fast-mode word, or Qt's semaphore set, whose dead
/// holder's unit the kernel gives back (`SEM_UNDO`).
pub(super) fn system_v(peek: Option<&Peek>, semaphore: Option<&NativeIpcKey>) -> LockStatus {
    if let Some(p) = peek.filter(|p| p.mode == LockMode::Fast) {
        return labelled(p, p.fast);
    }
    let value = semaphore
        .and_then(sysv::numeric_key)
        .and_then(|key| os::semget(key, 0).and_then(os::sem_getval).ok());
    match value {
        Some(v) if v > 0 => LockStatus::Free,
        Some(_) => LockStatus::Held,
        None => LockStatus::Unknown,
    }
}

/// A POSIX segment's lock: known now (a Fast-mode word; a free or labelled semaphore), or
/// to be looked at twice ([`settle`]).
pub(super) fn posix(peek: Option<&Peek>, semaphore: Option<&NativeIpcKey>) -> (LockStatus, Option<Probe>) {
    if let Some(p) = peek.filter(|p| p.mode == LockMode::Fast) {
        return (labelled(p, p.fast), None);
    }
    let Some(sem) = semaphore else {
        return (LockStatus::Unknown, None);
    };
    match semaphore_word(sem) {
        Ok((value, _, _)) if value > 0 => (LockStatus::Free, None),
        Ok((_, pad, _)) if pad != 0 && peek.is_some() => (labelled(peek.expect("some"), pad), None),
        Ok(_) => (
            LockStatus::Unknown,
            Some(Probe {
                semaphore: sem.clone(),
                lock_state: peek.map(|p| p.file),
            }),
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (LockStatus::Free, None),
        Err(_) => (LockStatus::Unknown, None),
    }
}

/// The value, the pad and the file of the POSIX semaphore of `key`, read with `pread`:
/// mapping it would make this process look like a possible holder to a waiter.
fn semaphore_word(key: &NativeIpcKey) -> std::io::Result<(u32, u32, NamedFile)> {
    let path = posix::semaphore_file(key).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let file = NamedFile::open(&os::cstring(&path)?, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let (value, pad) = posix::peek_semaphore(&file.fd)?;
    Ok((value, pad, file))
}

fn look_once(probe: &Probe) -> Seen {
    let (value, pad, file) = match semaphore_word(&probe.semaphore) {
        Ok(seen) => seen,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Seen::Known(LockStatus::Free),
        Err(_) => return Seen::Known(LockStatus::Unknown),
    };
    if value > 0 {
        return Seen::Known(LockStatus::Free);
    }
    if pad != 0 {
        // a qshm holder took it meanwhile (its label is checked at the next look)
        return Seen::Known(LockStatus::Held);
    }
    let st = file.stat;
    let id = (st.dev, st.ino);
    // nobody else has it open at all (a lease probe through our descriptor, or through
    // the one this process maps it with, if it does), else nobody in /proc could hold it
    let alone = match posix::SemaphoreFile::find_here(id) {
        Some(mapped) => {
            drop(file); // (our own second description would count as another opener)
            mapped.alone() == Some(true)
        }
        None => {
            let alone = file.alone() == Some(true);
            file.release();
            alone
        }
    };
    if alone || lock::nobody_could_hold(id, (st.uid, st.gid, st.mode & 0o7777), probe.lock_state) {
        Seen::Nobody(id)
    } else {
        Seen::Known(LockStatus::Held)
    }
}

/// Settle the status of every lock that needs a look (`probe`, the status to set): one
/// look now and, for the locks that look abandoned, another one [`DEAD_QT_HOLDER_LOOK`] later.
pub(super) fn settle<'a>(locks: impl IntoIterator<Item = (&'a Probe, &'a mut LockStatus)>) {
    let mut suspects = Vec::new();
    for (probe, status) in locks {
        match look_once(probe) {
            Seen::Nobody(file) => suspects.push((probe, status, file)),
            Seen::Known(known) => *status = known,
        }
    }
    if suspects.is_empty() {
        return;
    }
    std::thread::sleep(DEAD_QT_HOLDER_LOOK);
    for (probe, status, file) in suspects {
        *status = match look_once(probe) {
            Seen::Nobody(again) if again == file => LockStatus::HolderDied,
            Seen::Known(known) => known,
            Seen::Nobody(_) => LockStatus::Held,
        };
    }
}
