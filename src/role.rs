//! Roles in a segment held by one process at a time — the writer of a frame channel, the
//! producer and the consumer of a message queue — and who holds them.
//!
//! A role is a 32-bit word in the segment: 0 (nobody has held it), [`LEFT`] (its last
//! holder gave it up), or the holder's [`Label`] — the process slot it claimed in the
//! segment's lock state and that slot's generation (`sys/lock_state/slots.rs`). Whether
//! a labelled holder lives is decided as for a lock holder: by the byte lock the kernel
//! keeps for its slot, which anyone who may read the lock state can see, across users and
//! PID namespaces; never by the absence of other evidence.
//!
//! The word is an integer other processes may garble: a garbled word names a dead or
//! living slot, or none, and so makes the role look free or taken; it never makes this
//! process read or write anywhere else.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::lock_state::{Holder, Label, LockState};

/// A role word's value after its holder gave it up.
pub(crate) const LEFT: u32 = u32::MAX;

/// Who holds a role (the writer of a frame channel, a queue's producer or consumer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Nobody has taken the role yet.
    Absent,
    /// A living process holds it (this one included).
    Alive,
    /// Its last holder gave it up (dropped its handle).
    Left,
    /// Its holder died holding it (its process slot's byte lock is gone); the next
    /// process to take the role takes it over.
    Died,
}

/// Who holds the role whose word holds `word`, asked through `state`.
pub(crate) fn peer(word: u32, state: &LockState) -> std::io::Result<Peer> {
    Ok(match word {
        0 => Peer::Absent,
        LEFT => Peer::Left,
        word => match Label::from_word(word)
            .map(|label| state.holder(label))
            .transpose()?
        {
            Some(Holder::ThisProcess | Holder::Alive) => Peer::Alive,
            Some(Holder::Gone) | None => Peer::Died,
        },
    })
}

/// How claiming a role ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Ours now; the word held a role of this [`Peer`] state before (not `Alive`).
    Claimed(Peer),
    /// A living process holds it (`true`: this very process, through another handle).
    Taken { by_this_process: bool },
    /// The word kept changing under us: another process writes it in a loop.
    Contested,
}

/// Claim the role in `word` for this process (which must have a label: it may write the
/// lock state). A role held by a dead process is taken over.
pub(crate) fn claim(word: &AtomicU32, state: &LockState, me: Label) -> std::io::Result<Claim> {
    // bounded: only a co-writer flipping the word makes the exchange fail again and again
    for _ in 0..64 {
        let now = word.load(Ordering::Acquire);
        let before = match now {
            0 => Peer::Absent,
            LEFT => Peer::Left,
            _ => match Label::from_word(now).map(|l| state.holder(l)).transpose()? {
                Some(Holder::ThisProcess) => {
                    return Ok(Claim::Taken {
                        by_this_process: true,
                    });
                }
                Some(Holder::Alive) => {
                    return Ok(Claim::Taken {
                        by_this_process: false,
                    });
                }
                Some(Holder::Gone) | None => Peer::Died,
            },
        };
        if word
            .compare_exchange(now, me.word(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Ok(Claim::Claimed(before));
        }
    }
    Ok(Claim::Contested)
}

/// Give the role in `word` up, if this process (`me`) still holds it.
pub(crate) fn release(word: &AtomicU32, me: Label) {
    let _ = word.compare_exchange(me.word(), LEFT, Ordering::AcqRel, Ordering::Relaxed);
}
