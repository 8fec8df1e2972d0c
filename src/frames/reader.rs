//! [`FrameReader`]: copies the newest whole frame, without a lock and without tearing.

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, IntoBytes};

use super::layout::{Geometry, LATEST_AT, WRITER_AT};
use crate::error::{Result, SharedMemoryError};
use crate::role::{self, Peer};
use crate::segment_words::SegmentWords;
use crate::shared_copy;
use crate::shared_memory::SharedMemory;

/// How long a read keeps trying for a whole copy before it reports `Inconsistent`: only a
/// writer that overwrites every frame while it is being copied, for this long, or a
/// co-writer garbling the stamps, makes it give up.
const READ_PATIENCE: Duration = Duration::from_secs(1);
/// Failed copies before a reader yields its CPU between tries (the writer may need it).
const TRIES_BEFORE_YIELD: u32 = 2;

/// A frame a reader copied: its number (frames are numbered from 1 by the writer, so a
/// gap since the last one read means frames were skipped) and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The frame's number.
    pub number: u64,
    /// Its length in bytes (what was copied to the front of the buffer).
    pub len: usize,
}

/// A reader of the frame channel in a segment, attached read-only or read-write, any
/// number per channel: [`read`](Self::read) copies the newest whole frame (never a torn
/// one, without a lock, never making the writer wait), and
/// [`wait_for_frame`](Self::wait_for_frame) sleeps until a newer one is published. See
/// the README's "Frames" section.
///
/// The channel's words are read as untrusted: every offset comes from the shape this
/// reader checked against its own mapping when it was made, and a garbled header,
/// stamp or length gives `Inconsistent` (after trying again for at most a second),
/// never a read outside the segment or a hang.
#[derive(Debug)]
pub struct FrameReader {
    seg: SegmentWords,
    geometry: Geometry,
    last: Option<u64>,
}

impl FrameReader {
    /// Read the frame channel in `shm` (attached in either mode).
    ///
    /// Errors: `NotFound` before its writer made it (try again later); `Inconsistent` if
    /// the segment holds something else; `LockError` for a segment without qshm lock
    /// state.
    pub fn new(shm: SharedMemory) -> Result<FrameReader> {
        const OP: &str = "frame reader";
        let seg = SegmentWords::new(shm, OP, false)?;
        let geometry = Geometry::read(&seg, OP)?;
        Ok(FrameReader {
            seg,
            geometry,
            last: None,
        })
    }

    /// The largest frame of this channel, in bytes (a buffer this long takes any frame).
    pub fn max_frame_len(&self) -> usize {
        self.geometry.max_frame
    }

    /// The number of the newest whole frame, `None` before the first.
    pub fn latest(&self) -> Result<Option<u64>> {
        self.geometry.still(&self.seg, "latest frame")?;
        let latest = self
            .seg
            .u64_at("latest frame", LATEST_AT)?
            .load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        Ok((latest != 0).then_some(latest))
    }

    /// The number of the last frame this reader read, if any.
    pub fn last_read(&self) -> Option<u64> {
        self.last
    }

    /// Whether the channel's writer lives: [`Peer::Alive`], [`Peer::Died`] (killed: the
    /// last whole frame stays readable, and a new writer takes over), [`Peer::Left`] or
    /// [`Peer::Absent`].
    pub fn writer(&self) -> Result<Peer> {
        role_of(&self.seg, "writer")
    }

    /// Copy the newest whole frame to the front of `buf` and return which it was; `None`
    /// before the first frame. Frames already read are read again (see
    /// [`read_next`](Self::read_next) for "only a newer one").
    ///
    /// Errors: `InvalidSize` if the frame is longer than `buf`
    /// ([`max_frame_len`](Self::max_frame_len) always suffices); `Inconsistent` as
    /// described on [`FrameReader`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<Frame>> {
        let frame = self.copy_newest(buf)?;
        if let Some(frame) = frame {
            self.last = Some(frame.number);
        }
        Ok(frame)
    }

    /// The newest whole frame as a new `Vec`.
    pub fn read_vec(&mut self) -> Result<Option<(Frame, Vec<u8>)>> {
        let mut buf = vec![0; self.geometry.max_frame];
        Ok(self.read(&mut buf)?.map(|frame| {
            buf.truncate(frame.len);
            (frame, buf)
        }))
    }

    /// The newest frame as a `T` (published with
    /// [`FrameWriter::publish_value`](crate::FrameWriter::publish_value)); `InvalidSize`
    /// if its length is not `size_of::<T>()`. For large `T`s, see
    /// [`read_value_into`](Self::read_value_into).
    pub fn read_value<T: FromBytes + IntoBytes>(&mut self) -> Result<Option<(Frame, T)>> {
        let mut value = T::new_zeroed();
        Ok(self.read_value_into(&mut value)?.map(|frame| (frame, value)))
    }

    /// The newest frame copied into `value` (which keeps its old contents when there is
    /// no frame or an error).
    pub fn read_value_into<T: FromBytes + IntoBytes>(&mut self, value: &mut T) -> Result<Option<Frame>> {
        let size = size_of::<T>();
        let mut scratch = T::new_zeroed();
        let Some(frame) = self.read(scratch.as_mut_bytes())? else {
            return Ok(None);
        };
        if frame.len != size {
            return Err(self.seg.error(
                "read frame",
                SharedMemoryError::InvalidSize,
                format!(
                    "frame {} has {} bytes, a {} has {size}",
                    frame.number,
                    frame.len,
                    std::any::type_name::<T>()
                ),
            ));
        }
        *value = scratch;
        Ok(Some(frame))
    }

    /// Sleep until the channel's newest frame is not `than` (a newer one was published),
    /// at most `timeout` (`Duration::MAX`: for ever); returns its number, or `None` when
    /// the timeout passed. Built on the segment's change notification
    /// ([`SharedMemory::wait_for_change`]), which the writer sends with every frame: no
    /// polling.
    pub fn wait_for_frame(&self, than: Option<u64>, timeout: Duration) -> Result<Option<u64>> {
        let shm = self.seg.shm();
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // the generation before the frame number, so a frame in between wakes us
            let seen = shm.generation()?;
            let latest = self.latest()?;
            if latest.is_some() && latest != than {
                return Ok(latest);
            }
            let left = match deadline {
                None => Duration::MAX,
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => return Ok(None),
                    left => left,
                },
            };
            shm.wait_for_change(seen, left)?;
        }
    }

    /// Wait (at most `timeout`) for a frame newer than the last one this reader read,
    /// then [`read`](Self::read) the newest; `None` when the timeout passed.
    pub fn read_next(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<Frame>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            let before = self.last;
            if self.wait_for_frame(before, left)?.is_none() {
                return Ok(None);
            }
            if let Some(frame) = self.read(buf)?
                && Some(frame.number) != before
            {
                return Ok(Some(frame));
            }
            // `latest` named the frame already read again (a co-writer wrote it back):
            // wait for another
        }
    }

    /// The segment handle.
    pub fn into_inner(mut self) -> SharedMemory {
        self.seg.take()
    }

    /// The shared part of every read: seqlock-copy the frame `latest` names.
    fn copy_newest(&self, buf: &mut [u8]) -> Result<Option<Frame>> {
        const OP: &str = "read frame";
        let seg = &self.seg;
        let g = self.geometry;
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            let Some(number) = self.latest()? else {
                return Ok(None);
            };
            let buffer = g.buffer_of(number);
            let stamp = seg.u64_at(OP, g.stamp_at(buffer))?;
            let before = stamp.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if before == number.wrapping_shl(1) {
                let len = seg.u64_at(OP, g.stamp_at(buffer) + 8)?.load(Ordering::Relaxed);
                let fits_channel = len <= g.max_frame as u64;
                if fits_channel && len as usize <= buf.len() {
                    let len = len as usize;
                    let src = seg.bytes_at(OP, g.data_at(buffer), len)?;
                    // SAFETY: `src` is `len` bytes inside the mapping (bytes_at checked
                    // it); `buf` is our own memory with room for them; a shared mapping
                    // we reach only through raw pointers never overlaps it.
                    unsafe { shared_copy::load_bytes(buf.as_mut_ptr(), src, len) };
                    fence(Ordering::Acquire);
                    if stamp.load(Ordering::Relaxed) == before {
                        return Ok(Some(Frame { number, len }));
                    }
                } else if stamp.load(Ordering::Relaxed) == before {
                    // a whole frame (the stamp did not move) with an impossible length
                    return Err(if fits_channel {
                        seg.error(
                            OP,
                            SharedMemoryError::InvalidSize,
                            format!(
                                "frame {number} has {len} bytes, more than the buffer's {} (FrameReader::max_frame_len \
                                 is {})",
                                buf.len(),
                                g.max_frame
                            ),
                        )
                    } else {
                        garbled(
                            seg,
                            OP,
                            format!(
                                "frame {number} claims {len} bytes, more than the channel's {}",
                                g.max_frame
                            ),
                        )
                    });
                }
            }
            tries += 1;
            if start.elapsed() > READ_PATIENCE {
                return Err(garbled(
                    seg,
                    OP,
                    format!(
                        "no whole copy of the newest frame in {tries} tries over {READ_PATIENCE:?}: the writer \
                         overwrote each one while it was copied (give the channel more buffers), or a co-writer \
                         garbles its stamps"
                    ),
                ));
            }
            if tries > TRIES_BEFORE_YIELD {
                std::thread::yield_now();
            }
        }
    }
}

#[cold]
fn garbled(seg: &SegmentWords, op: &'static str, detail: String) -> crate::Error {
    seg.error(op, SharedMemoryError::Inconsistent, detail)
}

/// Who holds the writer's role of the channel in `seg`.
pub(super) fn role_of(seg: &SegmentWords, op: &'static str) -> Result<Peer> {
    let word = seg.u32_at(op, WRITER_AT)?.load(Ordering::Relaxed);
    let state = seg.state(op)?;
    role::peer(word, state).map_err(|e| {
        seg.error(
            op,
            SharedMemoryError::UnknownError,
            "cannot ask whether the writer lives",
        )
        .with_os(e)
    })
}
