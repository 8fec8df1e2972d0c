//! A segment that a frame channel or message queue owns, seen as words and byte ranges
//! at offsets its layout computed and checked.
//!
//! Every word is reached by offset through [`SegmentWords::u64_at`] and friends, which
//! check that it lies inside the mapping and is aligned (a typed `Inconsistent` error
//! otherwise, never an access outside the mapping), and every access through them is
//! atomic. On a read-only mapping only relaxed loads are made: Rust allows those, and
//! only those, on read-only memory (up to 8 bytes on x86-64; see `std::sync::atomic`,
//! "Atomic accesses to read-only memory"), so readers put `fence(Acquire)` after them
//! instead of using `Acquire` loads.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result, SharedMemoryError};
use crate::shared_memory::{AccessMode, SharedMemory};
use crate::sys::lock_state::LockState;

/// An attached segment owned by a channel or queue: the handle cannot detach (it is not
/// handed out until [`into_inner`](Self::into_inner)), so the mapping outlives every
/// reference made from it here.
#[derive(Debug)]
pub(crate) struct SegmentWords {
    shm: SharedMemory,
}

impl SegmentWords {
    /// Take `shm` over; `LockError` if it is not attached, was inherited through `fork()`,
    /// or has no qshm lock state (whose process slots say who holds a role); with
    /// `writable`, `PermissionDenied` unless attached read-write.
    pub(crate) fn new(shm: SharedMemory, op: &'static str, writable: bool) -> Result<SegmentWords> {
        shm.lock_state(op)?;
        if writable && shm.access_mode() != Some(AccessMode::ReadWrite) {
            return Err(shm.error_of(
                op,
                SharedMemoryError::PermissionDenied,
                "attached read-only: attach with AccessMode::ReadWrite to write",
            ));
        }
        Ok(SegmentWords { shm })
    }

    pub(crate) fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// The handle, leaving an unattached one here (every word access then fails).
    pub(crate) fn take(&mut self) -> SharedMemory {
        std::mem::take(&mut self.shm)
    }

    /// The segment's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.shm.size()
    }

    /// The lock state (process slots, change counter).
    pub(crate) fn state(&self, op: &'static str) -> Result<&LockState> {
        self.shm.lock_state(op)
    }

    /// An error of operation `op` on this segment.
    #[cold]
    pub(crate) fn error(
        &self,
        op: &'static str,
        kind: SharedMemoryError,
        detail: impl Into<String>,
    ) -> Error {
        self.shm.error_of(op, kind, detail)
    }

    /// Where `len` bytes at `offset` start, if they lie inside the mapping and `offset`
    /// is a multiple of `align`.
    fn checked(&self, op: &'static str, offset: usize, len: usize, align: usize) -> Result<*mut u8> {
        let base = self.shm.as_ptr();
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len());
        if !fits || !(base as usize).wrapping_add(offset).is_multiple_of(align) {
            return Err(self.error(
                op,
                SharedMemoryError::Inconsistent,
                format!(
                    "{len} bytes at offset {offset} are outside the segment ({} bytes) or misaligned",
                    self.len()
                ),
            ));
        }
        Ok(base.wrapping_add(offset).cast_mut())
    }

    /// The 8 bytes at `offset` as an atomic (only relaxed loads on a read-only mapping).
    pub(crate) fn u64_at(&self, op: &'static str, offset: usize) -> Result<&AtomicU64> {
        let ptr = self.checked(op, offset, 8, 8)?;
        // SAFETY: checked(): inside the live mapping (which lives as long as self: the
        // handle cannot detach while we own it) and 8-aligned; any bits are a valid
        // AtomicU64; every process touches these bytes only atomically (the layout's
        // contract), and on a read-only mapping only relaxed loads are made.
        Ok(unsafe { &*ptr.cast::<AtomicU64>() })
    }

    /// The 4 bytes at `offset` as an atomic (as [`u64_at`](Self::u64_at)).
    pub(crate) fn u32_at(&self, op: &'static str, offset: usize) -> Result<&AtomicU32> {
        let ptr = self.checked(op, offset, 4, 4)?;
        // SAFETY: as in u64_at, for 4 bytes.
        Ok(unsafe { &*ptr.cast::<AtomicU32>() })
    }

    /// The start of `len` bytes at `offset`, for [`shared_copy`](crate::shared_copy)
    /// (writing through it needs a read-write attachment, checked at `new`).
    pub(crate) fn bytes_at(&self, op: &'static str, offset: usize, len: usize) -> Result<*mut u8> {
        self.checked(op, offset, len, 1)
    }
}
