//! Where a frame channel keeps what in its segment: integers and bytes only.
//!
//! ```text
//! 0     magic "QSHMFRM1" (u64), written last when the writer formats the segment
//! 8     writer (u32): the role word (0, LEFT or the writer's label; role.rs)
//! 12    buffers (u32): N, 2..=64
//! 16    max_frame (u64): the largest frame in bytes
//! 64    latest (u64): the number of the newest complete frame, 0 before the first
//! 128   N stamps, one cache line each: stamp (u64) = frame << 1 | busy, len (u64)
//! data  N buffers of `stride` bytes (max_frame rounded up to 64), from 128 + 64 N
//! ```
//!
//! Frame `f` (numbered from 1) goes to buffer `f % N`. Its stamp is odd while the writer
//! copies it in and `f << 1` once it is whole; then `latest` becomes `f`. A reader takes
//! `latest`, checks the stamp, copies, and checks the stamp again (a seqlock per buffer):
//! the writer overwrites a buffer only N frames later, so a reader has N - 1 frame times
//! to copy before it must try again. A writer killed while copying leaves an odd stamp in
//! a buffer that `latest` does not name: the previous frame stays readable.

use crate::error::{Result, SharedMemoryError};
use crate::segment_words::SegmentWords;

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"QSHMFRM1");
pub(super) const MAGIC_AT: usize = 0;
pub(super) const WRITER_AT: usize = 8;
pub(super) const BUFFERS_AT: usize = 12;
pub(super) const MAX_FRAME_AT: usize = 16;
pub(super) const LATEST_AT: usize = 64;
const STAMPS_AT: usize = 128;
const LINE: usize = 64;

/// Buffers a channel may have: 2 (one being written, one whole) to 64.
pub(super) const MIN_BUFFERS: usize = 2;
pub(super) const MAX_BUFFERS: usize = 64;
/// Buffers of [`FrameWriter::new`](crate::FrameWriter::new): a reader has two frame times
/// to copy the newest frame before the writer comes back to its buffer.
pub(super) const DEFAULT_BUFFERS: usize = 3;

/// The shape of a channel: how many buffers, how large a frame may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub buffers: usize,
    pub max_frame: usize,
    stride: usize,
    data_at: usize,
}

impl Geometry {
    /// The geometry of `buffers` buffers of `max_frame` bytes, if it can exist: `None`
    /// when the numbers are out of range or the sizes overflow.
    pub(super) fn new(max_frame: usize, buffers: usize) -> Option<Geometry> {
        if max_frame == 0 || !(MIN_BUFFERS..=MAX_BUFFERS).contains(&buffers) {
            return None;
        }
        let stride = max_frame.checked_next_multiple_of(LINE)?;
        let data_at = STAMPS_AT + LINE * buffers;
        let geometry = Geometry {
            buffers,
            max_frame,
            stride,
            data_at,
        };
        geometry.segment_size().filter(|&n| n <= isize::MAX as usize)?;
        Some(geometry)
    }

    /// The segment size this geometry needs.
    pub(super) fn segment_size(&self) -> Option<usize> {
        self.stride.checked_mul(self.buffers)?.checked_add(self.data_at)
    }

    /// The offset of buffer `i`'s stamp (its length is 8 bytes after).
    pub(super) fn stamp_at(&self, i: usize) -> usize {
        STAMPS_AT + LINE * i
    }

    /// The offset of buffer `i`'s bytes.
    pub(super) fn data_at(&self, i: usize) -> usize {
        self.data_at + self.stride * i
    }

    /// The buffer of frame `number`.
    pub(super) fn buffer_of(&self, number: u64) -> usize {
        (number % self.buffers as u64) as usize
    }

    /// The geometry a formatted segment's header describes, checked against the
    /// segment's size: `NotFound` before a writer formatted it, `Inconsistent` for a
    /// header no writer of this code made or one that does not fit.
    pub(super) fn read(seg: &SegmentWords, op: &'static str) -> Result<Geometry> {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        if seg.len() < STAMPS_AT {
            return Err(seg.error(
                op,
                SharedMemoryError::InvalidSize,
                format!("{} bytes are too few for a frame channel", seg.len()),
            ));
        }
        let magic = seg.u64_at(op, MAGIC_AT)?.load(relaxed);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        if magic == 0 {
            return Err(seg.error(
                op,
                SharedMemoryError::NotFound,
                "no frame channel here yet: its writer makes it (FrameWriter::new)",
            ));
        }
        let buffers = seg.u32_at(op, BUFFERS_AT)?.load(relaxed) as usize;
        let max_frame = seg.u64_at(op, MAX_FRAME_AT)?.load(relaxed);
        let geometry = usize::try_from(max_frame)
            .ok()
            .and_then(|max_frame| Geometry::new(max_frame, buffers));
        match geometry {
            Some(g) if magic == MAGIC && g.segment_size().is_some_and(|n| n <= seg.len()) => Ok(g),
            _ => Err(seg.error(
                op,
                SharedMemoryError::Inconsistent,
                format!(
                    "the segment's header is not a frame channel's (magic {magic:#018x}, {buffers} buffers \
                     of {max_frame} bytes, in {} bytes)",
                    seg.len()
                ),
            )),
        }
    }

    /// Whether the header still says this geometry (a co-writer may have changed it).
    pub(super) fn still(&self, seg: &SegmentWords, op: &'static str) -> Result<()> {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let same = seg.u64_at(op, MAGIC_AT)?.load(relaxed) == MAGIC
            && seg.u32_at(op, BUFFERS_AT)?.load(relaxed) as usize == self.buffers
            && seg.u64_at(op, MAX_FRAME_AT)?.load(relaxed) == self.max_frame as u64;
        if same {
            Ok(())
        } else {
            Err(seg.error(
                op,
                SharedMemoryError::Inconsistent,
                "the frame channel's header changed under this reader (garbled by a co-writer?)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_refuse_what_cannot_exist_and_lay_out_lines() {
        assert_eq!(Geometry::new(0, 3), None);
        assert_eq!(Geometry::new(100, 1), None);
        assert_eq!(Geometry::new(100, 65), None);
        assert_eq!(Geometry::new(usize::MAX - 10, 3), None);
        assert_eq!(Geometry::new(usize::MAX / 2, 3), None);
        let g = Geometry::new(100, 3).unwrap();
        assert_eq!(g.segment_size(), Some(128 + 3 * 64 + 3 * 128));
        assert_eq!(g.data_at(1) - g.data_at(0), 128);
        assert_eq!(g.stamp_at(2), 256);
        assert_eq!(g.buffer_of(7), 1);
        assert!(g.data_at(0).is_multiple_of(64));
    }
}
