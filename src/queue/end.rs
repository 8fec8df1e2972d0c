//! What both ends of a queue do alike: format or check the segment, take their role,
//! look whether the other end lives, and sleep until the other end moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::layout::{
    CAPACITY_AT, CONSUMER_AT, CONSUMER_WAITING_AT, FORMATTING, Geometry, HEAD_AT, MAGIC, MAGIC_AT,
    MAX_CAPACITY, MAX_MESSAGE, MAX_MESSAGE_AT, PRODUCER_AT, PRODUCER_WAITING_AT, TAIL_AT, low_half,
};
use crate::error::{Result, SharedMemoryError};
use crate::os;
use crate::role::{self, Claim, Peer};
use crate::segment_words::SegmentWords;
use crate::shared_memory::SharedMemory;
use crate::sys::lock_state::{Holder, Label};

/// How often a waiting end looks whether the other end still lives: a dead peer is
/// reported within about this long.
pub(super) const PEER_LOOK: Duration = Duration::from_millis(50);
/// How long an end waits for another one that is formatting the segment.
const FORMAT_PATIENCE: Duration = Duration::from_secs(1);
/// Looks at the other end's index before an end goes to sleep. Few: spinning longer (1
/// and 4 µs were measured) made the ping-pong slower and the throughput lower on the
/// 2-core development machine with other programs running, where a spinning process
/// takes the CPU its peer needs.
const SPINS: u32 = 16;

/// Which end of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Producer,
    Consumer,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Producer => "producer",
            Side::Consumer => "consumer",
        }
    }

    fn role_at(self) -> usize {
        match self {
            Side::Producer => PRODUCER_AT,
            Side::Consumer => CONSUMER_AT,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }

    /// This end's own index (producer: tail; consumer: head) and waiting word.
    fn own_at(self) -> (usize, usize) {
        match self {
            Side::Producer => (TAIL_AT, PRODUCER_WAITING_AT),
            Side::Consumer => (HEAD_AT, CONSUMER_WAITING_AT),
        }
    }
}

/// One end of a queue: its segment, shape, label and private index.
#[derive(Debug)]
pub(super) struct End {
    pub seg: SegmentWords,
    pub geometry: Geometry,
    pub side: Side,
    label: Label,
    /// This end's index (the producer's tail, the consumer's head), kept privately:
    /// only this end writes it, so a garbled shared copy never misleads it.
    pub index: u64,
    /// When this end last looked whether the other end lives.
    last_look: std::cell::Cell<Option<Instant>>,
}

impl End {
    /// Take the `side` role of the queue in `shm`, formatting a fresh segment.
    pub(super) fn open(shm: SharedMemory, side: Side, max_message: usize, capacity: usize) -> Result<End> {
        let op = side.name();
        let seg = SegmentWords::new(shm, op, true)?;
        let Some(geometry) = Geometry::new(max_message, capacity) else {
            return Err(seg.error(
                op,
                SharedMemoryError::InvalidSize,
                format!(
                    "messages of {max_message} bytes, {capacity} of them: a queue holds 1 to {MAX_CAPACITY} messages \
                     of 1 to {MAX_MESSAGE} bytes"
                ),
            ));
        };
        let needed = geometry.segment_size().unwrap_or(usize::MAX);
        if needed > seg.len() {
            return Err(seg.error(
                op,
                SharedMemoryError::InvalidSize,
                format!(
                    "{capacity} messages of {max_message} bytes need a segment of {needed} bytes \
                     (Producer::segment_size), this one has {}",
                    seg.len()
                ),
            ));
        }
        let state = seg.state(op)?;
        let Some(label) = state.label() else {
            return Err(seg.error(
                op,
                SharedMemoryError::PermissionDenied,
                "only users who may write the segment may use its queue",
            ));
        };
        format_or_check(&seg, op, geometry, label)?;
        let claim = role::claim(seg.u32_at(op, side.role_at())?, state, label).map_err(|e| {
            seg.error(
                op,
                SharedMemoryError::UnknownError,
                "cannot ask who holds the role",
            )
            .with_os(e)
        })?;
        match claim {
            Claim::Claimed(_) => {}
            Claim::Taken { by_this_process } => {
                return Err(seg.error(
                    op,
                    SharedMemoryError::AlreadyExists,
                    format!(
                        "{} living {op} uses this queue: a queue has one {op} at a time",
                        if by_this_process {
                            "another handle of this process as"
                        } else {
                            "another process as a"
                        }
                    ),
                ));
            }
            Claim::Contested => {
                return Err(seg.error(
                    op,
                    SharedMemoryError::Inconsistent,
                    format!("the {op}'s word kept changing: another process writes it in a loop"),
                ));
            }
        }
        let mut end = End {
            seg,
            geometry,
            side,
            label,
            index: 0,
            last_look: std::cell::Cell::new(None),
        };
        // from here on, Drop gives the role up if we fail
        let (own_at, waiting_at) = side.own_at();
        end.index = end.seg.u64_at(op, own_at)?.load(Ordering::Acquire);
        end.seg.u32_at(op, waiting_at)?.store(0, Ordering::Relaxed);
        end.others_index(op)?;
        Ok(end)
    }

    /// The other end's index (the consumer's head for the producer, the producer's tail
    /// for the consumer), checked against ours; and how many messages are queued.
    pub(super) fn others_index(&self, op: &'static str) -> Result<(u64, u64)> {
        let (other_at, _) = self.side.other().own_at();
        let other = self.seg.u64_at(op, other_at)?.load(Ordering::Acquire);
        let (head, tail) = match self.side {
            Side::Producer => (other, self.index),
            Side::Consumer => (self.index, other),
        };
        match self.geometry.used(head, tail) {
            Some(used) => Ok((other, used)),
            None => Err(self.seg.error(
                op,
                SharedMemoryError::Inconsistent,
                format!(
                    "the queue's indices contradict each other (head {head}, tail {tail}, capacity {}): \
                     garbled by a co-writer",
                    self.geometry.capacity
                ),
            )),
        }
    }

    /// Publish this end's index and wake the other end if it sleeps.
    pub(super) fn publish(&mut self, op: &'static str, index: u64) -> Result<()> {
        let (own_at, _) = self.side.own_at();
        let (_, other_waiting_at) = self.side.other().own_at();
        let own = self.seg.u64_at(op, own_at)?;
        // SeqCst store, SeqCst load of the waiting word: either the other end sees the
        // new index before it sleeps, or we see it waiting (it sets the word, then looks
        // at the index, both SeqCst)
        own.store(index, Ordering::SeqCst);
        self.index = index;
        // swapped back to 0: one wake-up per sleep, not one per message while it wakes
        if self.seg.u32_at(op, other_waiting_at)?.swap(0, Ordering::SeqCst) != 0 {
            // SAFETY: `own` is a live, aligned u64 of the mapping (u64_at checked it),
            // so its low half is a live, aligned u32 for the call.
            unsafe { os::futex_wake_at(low_half(own), 1) }.map_err(|e| {
                self.seg
                    .error(op, SharedMemoryError::UnknownError, "cannot wake the other end")
                    .with_os(e)
            })?;
        }
        Ok(())
    }

    /// Who holds the other end's role.
    pub(super) fn peer(&self, op: &'static str) -> Result<Peer> {
        let word = self
            .seg
            .u32_at(op, self.side.other().role_at())?
            .load(Ordering::Acquire);
        role::peer(word, self.seg.state(op)?).map_err(|e| {
            self.seg
                .error(
                    op,
                    SharedMemoryError::UnknownError,
                    "cannot ask whether the other end lives",
                )
                .with_os(e)
        })
    }

    /// `Disconnected` if the other end died or left (looked at most every
    /// [`PEER_LOOK`] unless `now`).
    pub(super) fn check_peer(&self, op: &'static str, now: bool) -> Result<()> {
        let due = now || self.last_look.get().is_none_or(|t| t.elapsed() >= PEER_LOOK);
        if !due {
            return Ok(());
        }
        self.last_look.set(Some(Instant::now()));
        let other = self.side.other().name();
        match self.peer(op)? {
            Peer::Absent | Peer::Alive => Ok(()),
            Peer::Left => Err(self.seg.error(
                op,
                SharedMemoryError::Disconnected,
                format!("the {other} left (dropped its end); a new {other} may take its place"),
            )),
            Peer::Died => Err(self.seg.error(
                op,
                SharedMemoryError::Disconnected,
                format!("the {other} died; a new {other} may take its place"),
            )),
        }
    }

    /// Wait until the other end's index is no longer `seen`, at most until `deadline`
    /// (`None`: for ever), looking every [`PEER_LOOK`] whether it lives; `Ok(false)`
    /// when the deadline passed. The caller looks at the queue again either way.
    pub(super) fn wait_for_other(
        &self,
        op: &'static str,
        seen: u64,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let (other_at, _) = self.side.other().own_at();
        let (_, waiting_at) = self.side.own_at();
        let other = self.seg.u64_at(op, other_at)?;
        for _ in 0..SPINS {
            if other.load(Ordering::Acquire) != seen {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        let waiting = self.seg.u32_at(op, waiting_at)?;
        let result = loop {
            // said before every sleep: the other end clears it when it wakes us
            waiting.store(1, Ordering::SeqCst);
            if other.load(Ordering::SeqCst) != seen {
                break Ok(true);
            }
            // a peer that left or died is reported only if it did not move its index
            // first (it publishes before it gives its role up: seeing the role given up,
            // we see the index it published)
            if let Err(e) = self.check_peer(op, false) {
                break if other.load(Ordering::SeqCst) != seen {
                    Ok(true)
                } else {
                    Err(e)
                };
            }
            let mut slice = PEER_LOOK;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Ok(false);
                }
                slice = slice.min(left);
            }
            // SAFETY: `other` is a live, aligned u64 of the mapping (u64_at checked it),
            // so its low half is a live, aligned u32; FUTEX_WAIT only reads it.
            if let Err(e) = unsafe { os::futex_wait_at(low_half(other), seen as u32, Some(slice)) } {
                break Err(self
                    .seg
                    .error(op, SharedMemoryError::UnknownError, "the wait failed")
                    .with_os(e));
            }
        };
        waiting.store(0, Ordering::Relaxed);
        result
    }

    /// Give the role up (Drop, `into_inner`).
    pub(super) fn leave(&mut self) {
        if let Ok(word) = self.seg.u32_at(self.side.name(), self.side.role_at()) {
            role::release(word, self.label);
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Format the queue if the segment is fresh (or its formatter died), else check that it
/// is a queue of this shape.
fn format_or_check(seg: &SegmentWords, op: &'static str, g: Geometry, me: Label) -> Result<()> {
    let magic = seg.u64_at(op, MAGIC_AT)?;
    let start = Instant::now();
    loop {
        let now = magic.load(Ordering::Acquire);
        if now == MAGIC {
            let max_message = seg.u32_at(op, MAX_MESSAGE_AT)?.load(Ordering::Relaxed) as usize;
            let capacity = seg.u32_at(op, CAPACITY_AT)?.load(Ordering::Relaxed) as usize;
            return match (max_message, capacity) {
                (m, c) if m == g.max_message && c == g.capacity => Ok(()),
                (m, c) => Err(seg.error(
                    op,
                    SharedMemoryError::InvalidSize,
                    format!(
                        "the queue was made for {c} messages of {m} bytes, not {} of {}",
                        g.capacity, g.max_message
                    ),
                )),
            };
        }
        let formatter_gone = match now {
            0 => true,
            now if now >> 32 == FORMATTING => {
                let state = seg.state(op)?;
                match Label::from_word(now as u32).map(|l| state.holder(l)) {
                    Some(Ok(Holder::Alive | Holder::ThisProcess)) => false,
                    Some(Ok(Holder::Gone)) | None => true,
                    Some(Err(e)) => {
                        return Err(seg
                            .error(
                                op,
                                SharedMemoryError::UnknownError,
                                "cannot ask who formats the queue",
                            )
                            .with_os(e));
                    }
                }
            }
            other => {
                return Err(seg.error(
                    op,
                    SharedMemoryError::Inconsistent,
                    format!(
                        "the segment holds something else than a message queue (first word {other:#018x})"
                    ),
                ));
            }
        };
        if formatter_gone {
            let mine = (FORMATTING << 32) | u64::from(me.word());
            if magic
                .compare_exchange(now, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                seg.u32_at(op, MAX_MESSAGE_AT)?
                    .store(g.max_message as u32, Ordering::Relaxed);
                seg.u32_at(op, CAPACITY_AT)?
                    .store(g.capacity as u32, Ordering::Relaxed);
                for at in [TAIL_AT, HEAD_AT] {
                    seg.u64_at(op, at)?.store(0, Ordering::Relaxed);
                }
                for at in [PRODUCER_AT, PRODUCER_WAITING_AT, CONSUMER_AT, CONSUMER_WAITING_AT] {
                    seg.u32_at(op, at)?.store(0, Ordering::Relaxed);
                }
                magic.store(MAGIC, Ordering::Release);
                return Ok(());
            }
            continue;
        }
        if start.elapsed() > FORMAT_PATIENCE {
            return Err(seg.error(
                op,
                SharedMemoryError::Inconsistent,
                "another living process started formatting the queue and did not finish within a second",
            ));
        }
        std::thread::yield_now();
    }
}

/// The deadline `timeout` from now (`None`: for ever).
pub(super) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The length word of a slot.
pub(super) fn len_word<'a>(
    seg: &'a SegmentWords,
    op: &'static str,
    g: &Geometry,
    index: u64,
) -> Result<&'a AtomicU64> {
    seg.u64_at(op, g.slot_at(index))
}
