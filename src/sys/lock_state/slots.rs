//! Process slots: how a waiter tells a living lock holder from a dead one without
//! privileges, across users and PID namespaces, and without reading `/proc`.
//!
//! Every process that may lock a segment claims one slot of its lock state: it takes an
//! exclusive open-file-description lock on byte `SLOT_LOCK_BASE + slot` of the file and
//! bumps the slot's generation. The kernel keeps that byte lock exactly as long as the
//! process keeps the file open — it is dropped when the process dies or `exec`s — and
//! shows it to every process that can open the file (`F_OFD_GETLK`). A process writes its
//! [`Label`] (slot and generation) into a lock word when it takes the lock; a waiter that
//! finds a label there asks: is that slot's byte locked, and has its generation not moved
//! on? If not, the holder is gone. A slot reused by a new process has a new generation,
//! so a dead holder's label never names a living process.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use super::{LockState, SLOTS};
use crate::os;

/// Bits of a label that hold the slot (plus one, so that no label is 0).
pub(crate) const SLOT_BITS: u32 = 12;
/// Bits of a label that hold the slot's generation (the top bit of a label stays clear,
/// for the lock word's contended flag).
const GENERATION_BITS: u32 = 31 - SLOT_BITS;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;
/// Byte `SLOT_LOCK_BASE + slot` of the file is a slot's proof of life (far past its end:
/// byte locks need no bytes).
const SLOT_LOCK_BASE: u64 = 1 << 32;

/// Who holds a lock, as written into a lock word: a slot and its generation, never 0, top
/// bit clear. A plain number: nothing is ever read or written through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Label(u32);

impl Label {
    fn new(slot: u32, generation: u32) -> Label {
        Label(((generation & GENERATION_MASK) << SLOT_BITS) | (slot + 1))
    }

    /// The label in a lock word (its top bit ignored); `None` for 0.
    pub(crate) fn from_word(word: u32) -> Option<Label> {
        let word = word & !(1 << 31);
        (word != 0).then_some(Label(word))
    }

    /// The word to store.
    #[inline]
    pub(crate) fn word(self) -> u32 {
        self.0
    }

    /// The slot, if the label names one that exists.
    fn slot(self) -> Option<u32> {
        let slot = (self.0 & ((1 << SLOT_BITS) - 1)).checked_sub(1)?;
        (slot < SLOTS).then_some(slot)
    }

    fn generation(self) -> u32 {
        (self.0 >> SLOT_BITS) & GENERATION_MASK
    }
}

/// Whether the process behind a label lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// This process (another thread or handle of it).
    ThisProcess,
    /// Another process that is alive.
    Alive,
    /// Nobody: the process died or `exec`ed, or the label is not one any process wrote.
    Gone,
}

/// This process's slot in a lock state.
#[derive(Debug)]
pub(super) struct Slot {
    pub label: Label,
}

/// Claim a free slot of `state` for this process through its descriptor (open for writing).
pub(super) fn claim(state: &LockState) -> io::Result<Slot> {
    // start at a different place in every process, so that claims rarely collide
    let start = std::process::id().wrapping_mul(2_654_435_761) % SLOTS;
    for i in 0..SLOTS {
        let index = (start + i) % SLOTS;
        if os::ofd_try_lock_byte(state.fd.as_fd(), SLOT_LOCK_BASE + u64::from(index))? {
            // Ours now: a new generation, so that labels of its last owner name nobody.
            let generation = state
                .slot_generation(index)
                .fetch_add(1, Ordering::AcqRel)
                .wrapping_add(1);
            return Ok(Slot {
                label: Label::new(index, generation),
            });
        }
    }
    Err(io::Error::other(format!(
        "all {SLOTS} process slots of the lock state are taken: too many processes use this segment's lock"
    )))
}

/// Whether the process that wrote `label` lives.
pub(super) fn holder(state: &LockState, label: Label) -> io::Result<Holder> {
    if state.label() == Some(label) {
        return Ok(Holder::ThisProcess);
    }
    // Our own byte lock does not show through our own descriptor (it cannot conflict with
    // itself), but the label is not ours, so a lock seen here is another process's.
    let alive = alive_by_file(state.fd.as_fd(), label, |slot| {
        Some(state.slot_generation(slot).load(Ordering::Acquire))
    });
    Ok(if alive { Holder::Alive } else { Holder::Gone })
}

/// Whether the process that wrote `label` into a lock state lives, asked through `fd` (open
/// for reading suffices), with `generation` reading a slot's generation: its slot's byte is
/// locked and the slot was not claimed again since. A label that names no slot, and an
/// error asking, count as gone and alive respectively (never gone without evidence).
pub(super) fn alive_by_file(
    fd: BorrowedFd<'_>,
    label: Label,
    generation: impl Fn(u32) -> Option<u32>,
) -> bool {
    let Some(index) = label.slot() else {
        return false;
    };
    match generation(index) {
        // the slot was claimed again since: its holder of then is gone
        Some(now) if now & GENERATION_MASK != label.generation() => return false,
        _ => {}
    }
    os::ofd_byte_locked(fd, SLOT_LOCK_BASE + u64::from(index)).unwrap_or(true)
}

/// A coarse monotonic clock in milliseconds (for pacing looks, not for timeouts).
pub(super) fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC_COARSE needs nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_never_zero_and_keep_the_top_bit_clear() {
        for (slot, generation) in [(0, 0), (SLOTS - 1, u32::MAX), (7, 1 << 20), (100, 5)] {
            let label = Label::new(slot, generation);
            assert_ne!(label.word(), 0);
            assert_eq!(label.word() >> 31, 0);
            assert_eq!(label.slot(), Some(slot));
            assert_eq!(label.generation(), generation & GENERATION_MASK);
            assert_eq!(Label::from_word(label.word() | (1 << 31)), Some(label));
        }
        assert_eq!(Label::from_word(0), None);
        assert_eq!(Label::from_word(1 << 31), None);
        assert_eq!(
            Label::from_word(0xfff).and_then(Label::slot),
            None,
            "no such slot"
        );
    }
}
