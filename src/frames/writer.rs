//! [`FrameWriter`]: publishes whole frames, never waiting for readers.

use std::sync::atomic::{Ordering, fence};

use zerocopy::{Immutable, IntoBytes};

use super::layout::{
    BUFFERS_AT, DEFAULT_BUFFERS, Geometry, LATEST_AT, MAGIC, MAGIC_AT, MAX_BUFFERS, MAX_FRAME_AT,
    MIN_BUFFERS, WRITER_AT,
};
use crate::error::{Result, SharedMemoryError};
use crate::role::{self, Claim, Peer};
use crate::segment_words::SegmentWords;
use crate::shared_copy;
use crate::shared_memory::SharedMemory;
use crate::sys::lock_state::Label;

/// The one writer of a frame channel in a segment: [`publish`](Self::publish) copies a
/// whole frame into a free buffer and makes it the newest, without ever waiting for
/// readers, then wakes readers sleeping in [`FrameReader::wait_for_frame`]. See the
/// README's "Frames" section.
///
/// **One writer per channel**: the writer's role is a word in the segment holding its
/// process's label (the process slot it holds in the segment's lock state). A second
/// `FrameWriter` — in another process, or another handle of this one — is refused
/// (`AlreadyExists`) while the first lives; one whose process died is taken over, and the
/// frame it was copying is never seen. Dropping the writer (or
/// [`into_inner`](Self::into_inner)) gives the role up.
///
/// [`FrameReader::wait_for_frame`]: crate::FrameReader::wait_for_frame
#[derive(Debug)]
pub struct FrameWriter {
    seg: SegmentWords,
    geometry: Geometry,
    label: Label,
    /// The number of the frame `publish` makes next.
    next: u64,
}

impl FrameWriter {
    /// The size of a segment for a channel of frames up to `max_frame_len` bytes with
    /// [`new`](Self::new)'s 3 buffers; `None` if the size overflows.
    pub fn segment_size(max_frame_len: usize) -> Option<usize> {
        Self::segment_size_with(max_frame_len, DEFAULT_BUFFERS)
    }

    /// The size of a segment for `buffers` buffers (2 to 64) of up to `max_frame_len`
    /// bytes; `None` if out of range or the size overflows.
    pub fn segment_size_with(max_frame_len: usize, buffers: usize) -> Option<usize> {
        Geometry::new(max_frame_len, buffers)?.segment_size()
    }

    /// Become the writer of the frame channel in `shm` (attached read-write), for frames
    /// of up to `max_frame_len` bytes in 3 buffers (readers have two frame times to copy
    /// one). See [`with_buffers`](Self::with_buffers).
    pub fn new(shm: SharedMemory, max_frame_len: usize) -> Result<FrameWriter> {
        Self::with_buffers(shm, max_frame_len, DEFAULT_BUFFERS)
    }

    /// Become the writer of the frame channel in `shm` with `buffers` buffers (2 to 64: more
    /// buffers give slow readers more time before the writer comes back to the buffer
    /// they copy). A fresh segment (all zeros) is formatted; one a writer formatted before
    /// with the same shape is taken over where it stands (frame numbers go on).
    ///
    /// Errors: `PermissionDenied` if attached read-only; `InvalidSize` if the numbers
    /// are out of range, the segment is smaller than [`segment_size_with`] says, or
    /// another shape was formatted; `AlreadyExists` while another living writer (also
    /// of this process) holds the channel; `Inconsistent` if the segment holds something
    /// else; `LockError` for a segment without qshm lock state (see
    /// [`SharedMemory::notify_all`]).
    ///
    /// [`segment_size_with`]: Self::segment_size_with
    pub fn with_buffers(shm: SharedMemory, max_frame_len: usize, buffers: usize) -> Result<FrameWriter> {
        const OP: &str = "frame writer";
        let seg = SegmentWords::new(shm, OP, true)?;
        let Some(geometry) = Geometry::new(max_frame_len, buffers) else {
            return Err(seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "{buffers} buffers of {max_frame_len} bytes: a channel has {MIN_BUFFERS} to {MAX_BUFFERS} \
                     buffers of at least 1 byte"
                ),
            ));
        };
        let needed = geometry.segment_size().unwrap_or(usize::MAX);
        if needed > seg.len() {
            return Err(seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "{buffers} buffers of {max_frame_len} bytes need a segment of {needed} bytes \
                     (FrameWriter::segment_size_with), this one has {}",
                    seg.len()
                ),
            ));
        }
        let state = seg.state(OP)?;
        let Some(label) = state.label() else {
            return Err(seg.error(
                OP,
                SharedMemoryError::PermissionDenied,
                "only users who may write the segment may write frames",
            ));
        };
        let claim = role::claim(seg.u32_at(OP, WRITER_AT)?, state, label).map_err(|e| {
            seg.error(OP, SharedMemoryError::UnknownError, "cannot ask who writes")
                .with_os(e)
        })?;
        match claim {
            Claim::Claimed(_) => {}
            Claim::Taken { by_this_process } => {
                return Err(seg.error(
                    OP,
                    SharedMemoryError::AlreadyExists,
                    if by_this_process {
                        "another FrameWriter of this process writes this channel: a channel has one writer"
                    } else {
                        "another living process writes this channel: a channel has one writer"
                    },
                ));
            }
            Claim::Contested => {
                return Err(seg.error(
                    OP,
                    SharedMemoryError::Inconsistent,
                    "the writer's word kept changing: another process writes it in a loop",
                ));
            }
        }
        let mut writer = FrameWriter {
            seg,
            geometry,
            label,
            next: 1,
        };
        // from here on, Drop gives the role up again if we fail
        writer.format_or_resume()?;
        Ok(writer)
    }

    /// Format a fresh segment, or go on where the last writer of this shape stopped.
    fn format_or_resume(&mut self) -> Result<()> {
        const OP: &str = "frame writer";
        let seg = &self.seg;
        let g = self.geometry;
        let magic = seg.u64_at(OP, MAGIC_AT)?.load(Ordering::Acquire);
        if magic == 0 {
            // fresh, or a writer died formatting it (the magic is written last)
            seg.u32_at(OP, BUFFERS_AT)?
                .store(g.buffers as u32, Ordering::Relaxed);
            seg.u64_at(OP, MAX_FRAME_AT)?
                .store(g.max_frame as u64, Ordering::Relaxed);
            seg.u64_at(OP, LATEST_AT)?.store(0, Ordering::Relaxed);
            for i in 0..g.buffers {
                seg.u64_at(OP, g.stamp_at(i))?.store(0, Ordering::Relaxed);
                seg.u64_at(OP, g.stamp_at(i) + 8)?.store(0, Ordering::Relaxed);
            }
            seg.u64_at(OP, MAGIC_AT)?.store(MAGIC, Ordering::Release);
            return Ok(());
        }
        let found = Geometry::read(seg, OP)?;
        if found != g {
            return Err(seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "the channel was made for {} buffers of {} bytes, not {} of {}",
                    found.buffers, found.max_frame, g.buffers, g.max_frame
                ),
            ));
        }
        let latest = seg.u64_at(OP, LATEST_AT)?.load(Ordering::Acquire);
        self.next = latest.wrapping_add(1).max(1);
        Ok(())
    }

    /// The largest frame this channel takes, in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.geometry.max_frame
    }

    /// How many buffers the channel has.
    pub fn buffers(&self) -> usize {
        self.geometry.buffers
    }

    /// The number the next published frame gets (frames are numbered from 1).
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Publish `frame` (at most [`max_frame_len`](Self::max_frame_len) bytes; frames may
    /// differ in length) as the newest frame, and wake the readers waiting for one.
    /// Returns its number. Never waits for readers: a reader still copying the buffer
    /// this frame goes to notices and copies the newest frame again.
    ///
    /// Errors: `InvalidSize` for a frame that is too long (nothing is published);
    /// `Inconsistent` if a co-writer changed the channel's header; a notification
    /// failure after the frame was published (it is readable; sleepers may not wake).
    pub fn publish(&mut self, frame: &[u8]) -> Result<u64> {
        const OP: &str = "publish";
        let g = self.geometry;
        if frame.len() > g.max_frame {
            return Err(self.seg.error(
                OP,
                SharedMemoryError::InvalidSize,
                format!(
                    "a frame of {} bytes is longer than the channel's {} bytes",
                    frame.len(),
                    g.max_frame
                ),
            ));
        }
        let number = self.next;
        let buffer = g.buffer_of(number);
        let stamp = self.seg.u64_at(OP, g.stamp_at(buffer))?;
        let len = self.seg.u64_at(OP, g.stamp_at(buffer) + 8)?;
        let data = self.seg.bytes_at(OP, g.data_at(buffer), frame.len())?;
        let latest = self.seg.u64_at(OP, LATEST_AT)?;
        // busy: readers that took this buffer's stamp before see it change
        stamp.store((number << 1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        len.store(frame.len() as u64, Ordering::Relaxed);
        // SAFETY: `data` is frame.len() bytes inside the writable mapping (bytes_at
        // checked it; SegmentWords::new checked ReadWrite); `frame` is our own memory,
        // which cannot overlap a shared mapping we only reach through raw pointers.
        unsafe { shared_copy::store_bytes(data, frame.as_ptr(), frame.len()) };
        stamp.store(number << 1, Ordering::Release);
        latest.store(number, Ordering::Release);
        self.next = number.wrapping_add(1).max(1);
        self.seg.shm().notify_all()?;
        Ok(number)
    }

    /// Publish a `T` as a frame (its bytes; zerocopy's `IntoBytes` says it has no
    /// padding). Readers read it with [`FrameReader::read_value`](crate::FrameReader::read_value).
    pub fn publish_value<T: IntoBytes + Immutable + ?Sized>(&mut self, value: &T) -> Result<u64> {
        self.publish(value.as_bytes())
    }

    /// Who else might write: always [`Peer::Alive`] (this writer) unless a co-writer
    /// garbled the role word.
    pub fn writer(&self) -> Result<Peer> {
        super::reader::role_of(&self.seg, "writer")
    }

    /// The segment handle, giving the writer's role up.
    pub fn into_inner(mut self) -> SharedMemory {
        self.give_up();
        self.seg.take() // Drop then finds no segment, and does nothing
    }

    fn give_up(&self) {
        if let Ok(word) = self.seg.u32_at("frame writer", WRITER_AT) {
            role::release(word, self.label);
        }
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        self.give_up();
    }
}
