//! [`Producer`]: the sending end of a message queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use zerocopy::{Immutable, IntoBytes};

use super::end::{self, End, Side};
use super::layout::Geometry;
use crate::error::{Result, SharedMemoryError};
use crate::role::Peer;
use crate::shared_copy;
use crate::shared_memory::SharedMemory;

/// The sending end of a bounded single-producer single-consumer queue of messages in a
/// segment: lock-free (one copy and one release store per message, a system call only
/// to wake a sleeping consumer), crash-aware (a consumer that died is reported as
/// `Disconnected`) and reusable (a new consumer, or producer, takes a dead one's place).
/// See the README's "Message queues" section.
///
/// One producer at a time: the role is a word in the segment holding this process's
/// label (its slot in the segment's lock state); a second `Producer` is `AlreadyExists`
/// while the first lives (also in this process), and takes over from a dead one.
#[derive(Debug)]
pub struct Producer {
    end: End,
}

impl Producer {
    /// The size of a segment for a queue of `capacity` messages of up to `max_message`
    /// bytes; `None` if out of range (0, more than 2³¹ messages or 2³² - 1 bytes each) or
    /// the size overflows.
    pub fn segment_size(max_message: usize, capacity: usize) -> Option<usize> {
        Geometry::new(max_message, capacity)?.segment_size()
    }

    /// Become the producer of the queue in `shm` (attached read-write), a queue of
    /// `capacity` messages of up to `max_message` bytes; a fresh segment (all zeros) is
    /// formatted (by whichever end comes first), one formatted before must have this
    /// shape. Messages already queued stay (a producer that died never published the
    /// one it was writing).
    ///
    /// Errors: `PermissionDenied` if attached read-only or the user may not write the
    /// segment; `InvalidSize` for numbers out of range, a segment smaller than
    /// [`segment_size`](Self::segment_size) or another shape; `AlreadyExists` while
    /// another living producer (also of this process) holds the queue; `Inconsistent`
    /// if the segment holds something else; `LockError` for a segment without qshm
    /// lock state.
    pub fn new(shm: SharedMemory, max_message: usize, capacity: usize) -> Result<Producer> {
        Ok(Producer {
            end: End::open(shm, Side::Producer, max_message, capacity)?,
        })
    }

    /// The largest message, in bytes.
    pub fn max_message(&self) -> usize {
        self.end.geometry.max_message
    }

    /// How many messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.end.geometry.capacity
    }

    /// How many messages are queued now (the consumer may be taking some meanwhile).
    pub fn len(&self) -> Result<usize> {
        Ok(self.end.others_index("queue length")?.1 as usize)
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Who holds the consumer's end: [`Peer::Alive`], [`Peer::Died`], [`Peer::Left`] or
    /// [`Peer::Absent`].
    pub fn consumer(&self) -> Result<Peer> {
        self.end.peer("consumer")
    }

    /// Queue `message` if there is room; `Ok(false)` when the queue is full. Never
    /// waits. `InvalidSize` for a message longer than
    /// [`max_message`](Self::max_message); `Inconsistent` if the consumer's index is
    /// garbled.
    pub fn try_send(&mut self, message: &[u8]) -> Result<bool> {
        const OP: &str = "send";
        let end = &mut self.end;
        let g = end.geometry;
        if message.len() > g.max_message {
            return Err(end.seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "a message of {} bytes is longer than the queue's {} bytes",
                    message.len(),
                    g.max_message
                ),
            ));
        }
        let (_, used) = end.others_index(OP)?;
        if used == g.capacity as u64 {
            return Ok(false);
        }
        let index = end.index;
        let bytes = end.seg.bytes_at(OP, g.bytes_at(index), message.len())?;
        end::len_word(&end.seg, OP, &g, index)?.store(message.len() as u64, Ordering::Relaxed);
        // SAFETY: `bytes` is message.len() bytes of the writable mapping (bytes_at
        // checked it; End::open checked ReadWrite); `message` is our own memory, which a
        // shared mapping reached only through raw pointers never overlaps.
        unsafe { shared_copy::store_bytes(bytes, message.as_ptr(), message.len()) };
        // the release in publish() orders the message before the new tail
        end.publish(OP, index.wrapping_add(1))?;
        Ok(true)
    }

    /// Queue `message`, waiting at most `timeout` (`Duration::MAX`: for ever) for room;
    /// `Ok(false)` when the timeout passed with the queue still full. While it waits it
    /// looks every 50 ms whether the consumer lives: `Disconnected` when the consumer
    /// died or left (with the queue full, nobody would make room). Errors otherwise as
    /// for [`try_send`](Self::try_send).
    pub fn send_timeout(&mut self, message: &[u8], timeout: Duration) -> Result<bool> {
        const OP: &str = "send";
        let deadline = end::deadline(timeout);
        loop {
            if self.try_send(message)? {
                return Ok(true);
            }
            let (head, used) = self.end.others_index(OP)?;
            if used != self.end.geometry.capacity as u64 {
                continue; // room made since try_send looked
            }
            if !self.end.wait_for_other(OP, head, deadline)? {
                return self.try_send(message);
            }
        }
    }

    /// [`send_timeout`](Self::send_timeout) without a timeout.
    pub fn send(&mut self, message: &[u8]) -> Result<()> {
        self.send_timeout(message, Duration::MAX).map(drop)
    }

    /// Queue a `T` (its bytes) as a message, waiting at most `timeout` for room. The
    /// consumer reads it with [`Consumer::recv_value_timeout`](crate::Consumer::recv_value_timeout).
    pub fn send_value_timeout<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<bool> {
        self.send_timeout(value.as_bytes(), timeout)
    }

    /// The segment handle, giving the producer's role up.
    pub fn into_inner(mut self) -> SharedMemory {
        self.end.leave();
        self.end.seg.take()
    }
}
