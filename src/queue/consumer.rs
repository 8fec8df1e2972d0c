//! [`Consumer`]: the receiving end of a message queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use zerocopy::{FromBytes, IntoBytes};

use super::end::{self, End, Side};
use crate::error::{Result, SharedMemoryError};
use crate::role::Peer;
use crate::shared_copy;
use crate::shared_memory::SharedMemory;

/// The receiving end of a bounded single-producer single-consumer queue of messages in a
/// segment (see [`Producer`](crate::Producer)). Messages arrive whole and in order; a
/// message is removed when a receive returns it (a consumer killed inside a receive
/// leaves it queued for the next consumer). When the queue is empty and the producer
/// died or left, receives return `Disconnected` (the messages it queued before are
/// delivered first); a new producer makes the queue usable again.
#[derive(Debug)]
pub struct Consumer {
    end: End,
}

impl Consumer {
    /// Become the consumer of the queue in `shm` (attached read-write); arguments and
    /// errors as for [`Producer::new`](crate::Producer::new).
    pub fn new(shm: SharedMemory, max_message: usize, capacity: usize) -> Result<Consumer> {
        Ok(Consumer {
            end: End::open(shm, Side::Consumer, max_message, capacity)?,
        })
    }

    /// The largest message, in bytes (a buffer this long takes any message).
    pub fn max_message(&self) -> usize {
        self.end.geometry.max_message
    }

    /// How many messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.end.geometry.capacity
    }

    /// How many messages are queued now (the producer may be adding some meanwhile).
    pub fn len(&self) -> Result<usize> {
        Ok(self.end.others_index("queue length")?.1 as usize)
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Who holds the producer's end: [`Peer::Alive`], [`Peer::Died`], [`Peer::Left`] or
    /// [`Peer::Absent`].
    pub fn producer(&self) -> Result<Peer> {
        self.end.peer("producer")
    }

    /// Take the oldest message into the front of `buf` and return its length; `None` when
    /// the queue is empty. Never waits. `Disconnected` when the queue is empty and the
    /// producer died or left (looked at most every 50 ms); `InvalidSize` when the message
    /// is longer than `buf` (it stays queued; [`max_message`](Self::max_message) always
    /// suffices); `Inconsistent` if the producer's words are garbled.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        const OP: &str = "receive";
        let end = &mut self.end;
        let g = end.geometry;
        let (_, used) = end.others_index(OP)?;
        if used == 0 {
            match end.check_peer(OP, false) {
                Ok(()) => return Ok(None),
                // the producer may have sent a last message and left since we looked: a
                // departure is reported only for a queue still empty after it was seen
                Err(e) if end.others_index(OP)?.1 == 0 => return Err(e),
                Err(_) => {}
            }
        }
        let index = end.index;
        let len = end::len_word(&end.seg, OP, &g, index)?.load(Ordering::Relaxed);
        if len > g.max_message as u64 {
            return Err(end.seg.error(
                OP,
                SharedMemoryError::Inconsistent,
                format!(
                    "message {index} claims {len} bytes, more than the queue's {}: garbled by a co-writer",
                    g.max_message
                ),
            ));
        }
        let len = len as usize;
        if len > buf.len() {
            return Err(end.seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "the next message has {len} bytes, more than the buffer's {} (it stays queued)",
                    buf.len()
                ),
            ));
        }
        let bytes = end.seg.bytes_at(OP, g.bytes_at(index), len)?;
        // SAFETY: `bytes` is `len` bytes inside the mapping (bytes_at checked it); `buf`
        // is our own memory with room for them (checked above), never overlapping a
        // shared mapping reached only through raw pointers.
        unsafe { shared_copy::load_bytes(buf.as_mut_ptr(), bytes, len) };
        // the slot is the producer's again once the new head is seen
        end.publish(OP, index.wrapping_add(1))?;
        Ok(Some(len))
    }

    /// Take the oldest message, waiting at most `timeout` (`Duration::MAX`: for ever) for
    /// one; `None` when the timeout passed. Errors as for [`try_recv`](Self::try_recv);
    /// a producer that dies while this waits is reported within about 50 ms.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        const OP: &str = "receive";
        let deadline = end::deadline(timeout);
        loop {
            if let Some(len) = self.try_recv(buf)? {
                return Ok(Some(len));
            }
            let (tail, used) = self.end.others_index(OP)?;
            if used != 0 {
                continue; // sent since try_recv looked
            }
            if !self.end.wait_for_other(OP, tail, deadline)? {
                return self.try_recv(buf);
            }
        }
    }

    /// [`recv_timeout`](Self::recv_timeout) without a timeout.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            if let Some(len) = self.recv_timeout(buf, Duration::MAX)? {
                return Ok(len);
            }
        }
    }

    /// The oldest message as a new `Vec`, waiting at most `timeout`.
    pub fn recv_vec_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0; self.max_message()];
        Ok(self.recv_timeout(&mut buf, timeout)?.map(|len| {
            buf.truncate(len);
            buf
        }))
    }

    /// The oldest message as a `T` (sent with
    /// [`Producer::send_value_timeout`](crate::Producer::send_value_timeout)), waiting at
    /// most `timeout`. A message of another length than `size_of::<T>()` is
    /// `InvalidSize`, and it is taken from the queue all the same (it can never be a `T`).
    pub fn recv_value_timeout<T: FromBytes + IntoBytes>(&mut self, timeout: Duration) -> Result<Option<T>> {
        let mut buf = vec![0; self.max_message().max(size_of::<T>())];
        let Some(len) = self.recv_timeout(&mut buf, timeout)? else {
            return Ok(None);
        };
        T::read_from_bytes(&buf[..len]).map(Some).map_err(|_| {
            self.end.seg.error(
                "receive",
                SharedMemoryError::InvalidSize,
                format!("a message of {len} bytes is not a {}", std::any::type_name::<T>()),
            )
        })
    }

    /// The segment handle, giving the consumer's role up.
    pub fn into_inner(mut self) -> SharedMemory {
        self.end.leave();
        self.end.seg.take()
    }
}
