//! Where a message queue keeps what in its segment: integers and bytes only.
//!
//! ```text
//! 0    magic "QSHMSPQ1" (u64), written last by whichever end formats the segment;
//!      while one formats it: FORMATTING << 32 | its label
//! 8    max_message (u32), capacity (u32)
//! 64   tail (u64): messages sent so far        | the producer's cache line
//! 72   producer role (u32), producer waiting (u32)
//! 128  head (u64): messages received so far    | the consumer's cache line
//! 136  consumer role (u32), consumer waiting (u32)
//! 192  capacity slots of `stride` bytes: length (u64), then the message
//! ```
//!
//! Message `i` lives in slot `i % capacity`. The producer writes it, then publishes
//! `tail = i + 1` (release); the consumer copies it out, then publishes `head = i + 1`.
//! Each end keeps its own index privately and only reads the other's, which it checks
//! (`0 <= tail - head <= capacity`) before using it: a garbled index is `Inconsistent`,
//! never a slot outside the segment. A sleeping end says so in its "waiting" word and
//! sleeps on the low 32 bits of the other end's index (a futex); the other end wakes it
//! after publishing.

use std::sync::atomic::AtomicU64;

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"QSHMSPQ1");
/// The top half of the magic word while an end formats the segment.
pub(super) const FORMATTING: u64 = 0x5153_4651; // "QFSQ"
pub(super) const MAGIC_AT: usize = 0;
pub(super) const MAX_MESSAGE_AT: usize = 8;
pub(super) const CAPACITY_AT: usize = 12;
pub(super) const TAIL_AT: usize = 64;
pub(super) const PRODUCER_AT: usize = 72;
pub(super) const PRODUCER_WAITING_AT: usize = 76;
pub(super) const HEAD_AT: usize = 128;
pub(super) const CONSUMER_AT: usize = 136;
pub(super) const CONSUMER_WAITING_AT: usize = 140;
const SLOTS_AT: usize = 192;
const LEN_BYTES: usize = 8;

/// The largest message and the capacity a queue may have.
pub(super) const MAX_MESSAGE: usize = u32::MAX as usize;
pub(super) const MAX_CAPACITY: usize = 1 << 31;

/// The shape of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub max_message: usize,
    pub capacity: usize,
    stride: usize,
}

impl Geometry {
    /// `None` when out of range (0, or more than [`MAX_MESSAGE`] / [`MAX_CAPACITY`]) or
    /// when the segment size would overflow.
    pub(super) fn new(max_message: usize, capacity: usize) -> Option<Geometry> {
        if !(1..=MAX_MESSAGE).contains(&max_message) || !(1..=MAX_CAPACITY).contains(&capacity) {
            return None;
        }
        let stride = (LEN_BYTES + max_message).checked_next_multiple_of(8)?;
        let g = Geometry {
            max_message,
            capacity,
            stride,
        };
        g.segment_size().filter(|&n| n <= isize::MAX as usize)?;
        Some(g)
    }

    pub(super) fn segment_size(&self) -> Option<usize> {
        self.stride.checked_mul(self.capacity)?.checked_add(SLOTS_AT)
    }

    /// The offset of message `index`'s slot (its length word; the bytes follow).
    pub(super) fn slot_at(&self, index: u64) -> usize {
        SLOTS_AT + self.stride * (index % self.capacity as u64) as usize
    }

    pub(super) fn bytes_at(&self, index: u64) -> usize {
        self.slot_at(index) + LEN_BYTES
    }

    /// Messages between `head` and `tail`, if that is a count this queue can hold.
    pub(super) fn used(&self, head: u64, tail: u64) -> Option<u64> {
        let used = tail.wrapping_sub(head);
        (used <= self.capacity as u64).then_some(used)
    }
}

/// The low 32 bits of `word` (a futex word: the kernel only reads it; every process
/// changes the whole u64 atomically).
pub(super) fn low_half(word: &AtomicU64) -> *const u32 {
    let at = if cfg!(target_endian = "little") { 0 } else { 4 };
    word.as_ptr()
        .cast::<u8>()
        .wrapping_add(at)
        .cast::<u32>()
        .cast_const()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_geometries_refuse_what_cannot_exist() {
        assert_eq!(Geometry::new(0, 8), None);
        assert_eq!(Geometry::new(8, 0), None);
        assert_eq!(Geometry::new(8, MAX_CAPACITY + 1), None);
        assert_eq!(
            Geometry::new(MAX_MESSAGE, MAX_CAPACITY),
            None,
            "too large for a segment"
        );
        let g = Geometry::new(64, 4).unwrap();
        assert_eq!(g.segment_size(), Some(192 + 4 * 72));
        assert_eq!(g.slot_at(5), 192 + 72);
        assert_eq!(g.used(3, 7), Some(4));
        assert_eq!(g.used(3, 8), None, "more than the capacity");
        assert_eq!(g.used(7, 3), None, "tail behind head");
        assert_eq!(g.used(u64::MAX, 1), Some(2), "indices may wrap");
    }
}
