//! [`Atomics`]: the segment as atomic integers, for reading and writing without the lock.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
use std::time::Duration;

use super::{AccessMode, SharedMemory};
use crate::error::{Result, SharedMemoryError};
use crate::shared_memory::notify::Generation;

/// The segment's bytes as atomics: lock-free access that is sound while other threads and
/// processes read and write the same words atomically. Made by [`SharedMemory::atomics`].
///
/// It derefs to `[AtomicU8]` (every byte of the segment); [`atomic_u32`](Self::atomic_u32)
/// and [`atomic_u64`](Self::atomic_u64) give wider words at aligned offsets. It borrows the
/// handle mutably, so no [`LockGuard`](crate::LockGuard) of the same handle can hand out
/// `&mut [u8]` to the same bytes while it lives:
///
/// ```compile_fail
/// # use qshm::{AccessMode, SharedMemory};
/// let mut shm = SharedMemory::new("atomics-exclude-guards");
/// shm.create(8, AccessMode::ReadWrite).unwrap();
/// let atomics = shm.atomics().unwrap();
/// let guard = shm.lock().unwrap(); // error: `shm` is already borrowed mutably
/// atomics.atomic_u64(0).unwrap();
/// ```
///
/// The rules across handles and processes are in [`SharedMemory`]'s `# Soundness`.
pub struct Atomics<'a> {
    shm: &'a SharedMemory,
    bytes: &'a [AtomicU8],
}

impl SharedMemory {
    /// The segment as atomic integers, for lock-free access.
    ///
    /// `LockError` when not attached; `PermissionDenied` when attached
    /// [`ReadOnly`](AccessMode::ReadOnly) (an atomic access may write, which faults on a
    /// read-only mapping: Rust counts atomics on read-only memory as undefined behaviour).
    ///
    /// ```
    /// use qshm::{AccessMode, SharedMemory};
    /// use std::sync::atomic::Ordering;
    /// # let key = format!("doc-atomics-{}", std::process::id());
    /// let mut shm = SharedMemory::new(&key);
    /// shm.create(64, AccessMode::ReadWrite)?;
    /// let atomics = shm.atomics()?;
    /// let hits = atomics.atomic_u64(8)?; // bytes 8..16; other processes see the same word
    /// hits.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// assert!(atomics.atomic_u64(4).is_err()); // misaligned: a typed error, no panic
    /// # Ok::<(), qshm::Error>(())
    /// ```
    pub fn atomics(&mut self) -> Result<Atomics<'_>> {
        let result = self.atomics_inner();
        let this: &SharedMemory = self;
        let result = result.map(|(ptr, len)| {
            // SAFETY: `ptr..ptr+len` is the live, writable mapping of the segment, which
            // stays mapped while `self` is borrowed (detach needs `&mut self`);
            // AtomicU8 has the size and alignment of u8, and every access through it is
            // atomic. No guard of this handle can exist meanwhile (the `&mut self`
            // borrow); other handles and processes follow the `# Soundness` contract.
            let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU8>(), len) };
            Atomics { shm: this, bytes }
        });
        this.record(result)
    }

    fn atomics_inner(&self) -> Result<(*mut u8, usize)> {
        const OP: &str = "atomics";
        let Some(a) = &self.attached else {
            return Err(self.error_of(
                OP,
                SharedMemoryError::LockError,
                "not attached: create or attach first",
            ));
        };
        if a.access == AccessMode::ReadOnly {
            return Err(self.error_of(
                OP,
                SharedMemoryError::PermissionDenied,
                "attached read-only: atomics need a read-write attachment",
            ));
        }
        Ok((a.mapping.ptr(), a.mapping.len()))
    }
}

impl<'a> Atomics<'a> {
    /// Every byte of the segment (what `Deref` gives too).
    pub fn bytes(&self) -> &'a [AtomicU8] {
        self.bytes
    }

    /// The 4 bytes at `offset` as an [`AtomicU32`]. `InvalidSize` if they do not fit in
    /// the segment or `offset` is not a multiple of 4.
    pub fn atomic_u32(&self, offset: usize) -> Result<&'a AtomicU32> {
        let ptr = self.word::<AtomicU32>("atomic_u32", offset)?;
        // SAFETY: word() checked that the 4 bytes are inside the mapping and aligned;
        // AtomicU32 has the layout of u32 and any bits are a valid u32.
        Ok(unsafe { &*ptr })
    }

    /// The 8 bytes at `offset` as an [`AtomicU64`]. `InvalidSize` if they do not fit in
    /// the segment or `offset` is not a multiple of 8.
    pub fn atomic_u64(&self, offset: usize) -> Result<&'a AtomicU64> {
        let ptr = self.word::<AtomicU64>("atomic_u64", offset)?;
        // SAFETY: as in atomic_u32, for 8 bytes.
        Ok(unsafe { &*ptr })
    }

    /// [`SharedMemory::notify_all`] of the handle this view borrows.
    pub fn notify_all(&self) -> Result<Generation> {
        self.shm.notify_all()
    }

    /// [`SharedMemory::wait_for_change`] of the handle this view borrows.
    pub fn wait_for_change(&self, seen: Generation, timeout: Duration) -> Result<Generation> {
        self.shm.wait_for_change(seen, timeout)
    }

    /// [`SharedMemory::generation`] of the handle this view borrows.
    pub fn generation(&self) -> Result<Generation> {
        self.shm.generation()
    }

    fn word<W>(&self, op: &'static str, offset: usize) -> Result<*const W> {
        let (size, align) = (size_of::<W>(), align_of::<W>());
        let base = self.bytes.as_ptr() as usize;
        let fits = offset
            .checked_add(size)
            .is_some_and(|end| end <= self.bytes.len());
        let detail = if !fits {
            format!(
                "{size} bytes at offset {offset} do not fit in the segment ({} bytes)",
                self.bytes.len()
            )
        } else if !(base + offset).is_multiple_of(align) {
            format!("offset {offset} is not a multiple of {align}, the alignment of a {size}-byte atomic")
        } else {
            return Ok(self.bytes[offset..].as_ptr().cast());
        };
        let error = self.shm.error_of(op, SharedMemoryError::InvalidSize, detail);
        self.shm.record(Err(error))
    }
}

impl Deref for Atomics<'_> {
    type Target = [AtomicU8];
    fn deref(&self) -> &[AtomicU8] {
        self.bytes
    }
}

impl fmt::Debug for Atomics<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Atomics").field("len", &self.bytes.len()).finish()
    }
}
