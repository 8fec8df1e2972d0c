//! [`LockGuard`] and [`ReadGuard`]: a held segment lock, and the safe way to the bytes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use zerocopy::{CastError, FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Generation, SharedMemory};
use crate::error::{Result, SharedMemoryError};
use crate::lock::{RawLock, SegmentLock};
use crate::sys::fork;
use crate::sys::mapping::Mapping;

/// A held lock; the common part of both guards.
struct Held<'a> {
    shm: &'a SharedMemory,
    lock: &'a SegmentLock,
    mapping: &'a Mapping,
    previous_owner_died: bool,
    fork_epoch: u64,
    /// Unlocking must happen on the locking thread (the lock belongs to that thread), so
    /// a guard is not `Send`; sharing `&guard` (read-only bytes) between threads is fine.
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl Held<'_> {
    #[inline(always)]
    fn unlock(&self) -> Result<()> {
        if fork::epoch() != self.fork_epoch {
            // a copy in a fork()ed child: the lock is the parent's
            return Ok(());
        }
        self.lock.unlock().map_err(|f| self.shm.unlock_error(f))
    }

    /// Where `count` values of `T` start at byte `offset` and how many bytes they take
    /// (`count`: `None` for as many whole ones as fit), or why they do not fit.
    fn span<T>(
        &self,
        offset: usize,
        count: Option<usize>,
    ) -> std::result::Result<(*mut u8, usize, usize), String> {
        let len = self.mapping.len();
        let Some(room) = len.checked_sub(offset) else {
            return Err(format!(
                "offset {offset} is past the end of the segment ({len} bytes)"
            ));
        };
        let size = size_of::<T>();
        let count = match count {
            Some(count) => count,
            None if size == 0 => {
                return Err(format!(
                    "{} is zero-sized: a slice of it has no length to take from the segment",
                    std::any::type_name::<T>()
                ));
            }
            None => room / size,
        };
        match count.checked_mul(size) {
            Some(bytes) if bytes <= room => Ok((self.mapping.ptr().wrapping_add(offset), bytes, count)),
            _ => Err(format!(
                "{} at offset {offset} do{} not fit in the segment ({len} bytes)",
                describe::<T>(count),
                if count == 1 { "es" } else { "" }
            )),
        }
    }

    /// `count` values of `T` at `offset`, checked by zerocopy (size and alignment); only
    /// their own bytes are referenced, never the whole segment (other bytes may be words
    /// other processes change atomically meanwhile).
    fn typed<T>(&self, op: &'static str, offset: usize, count: Option<usize>) -> Result<&[T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        let result = self.span::<T>(offset, count).and_then(|(start, len, count)| {
            // SAFETY: start..start+len lies inside the live mapping (span() checked it);
            // the guard borrows the handle, which cannot detach meanwhile; the lock is
            // held (the soundness contract: every writer of these bytes takes it).
            let bytes = unsafe { std::slice::from_raw_parts(start, len) };
            <[T]>::ref_from_bytes_with_elems(bytes, count)
                .map_err(|e| refused::<T>(matches!(e, CastError::Alignment(_)), start, offset, count))
        });
        self.shm
            .record(result.map_err(|why| self.shm.error_of(op, SharedMemoryError::InvalidSize, why)))
    }

    /// [`typed`](Self::typed) for writing (a LockGuard: the attachment is ReadWrite).
    fn typed_mut<T>(&mut self, op: &'static str, offset: usize, count: Option<usize>) -> Result<&mut [T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        let result = self.span::<T>(offset, count).and_then(|(start, len, count)| {
            // SAFETY: as in typed(); the attachment is ReadWrite (a LockGuard exists only
            // then) and the &mut borrow of the guard makes this the only reference.
            let bytes = unsafe { std::slice::from_raw_parts_mut(start, len) };
            <[T]>::mut_from_bytes_with_elems(bytes, count)
                .map_err(|e| refused::<T>(matches!(e, CastError::Alignment(_)), start, offset, count))
        });
        self.shm
            .record(result.map_err(|why| self.shm.error_of(op, SharedMemoryError::InvalidSize, why)))
    }
}

/// "a T (16 bytes, alignment 8)" or "3 x T (16 bytes each, alignment 8)".
fn describe<T>(count: usize) -> String {
    let (size, align, name) = (size_of::<T>(), align_of::<T>(), std::any::type_name::<T>());
    match count {
        1 => format!("a {name} ({size} bytes, alignment {align})"),
        n => format!("{n} x {name} ({size} bytes each, alignment {align})"),
    }
}

/// Why zerocopy refused `count` values of `T` at `start` (byte `offset` of the segment).
/// The span fits (checked before), so it can only be the alignment.
#[cold]
fn refused<T>(misaligned: bool, start: *mut u8, offset: usize, count: usize) -> String {
    let align = align_of::<T>();
    match misaligned {
        true => format!(
            "{} at offset {offset} is misaligned: the address is {} bytes past a multiple of {align}",
            describe::<T>(count),
            start as usize % align
        ),
        false => format!(
            "{} at offset {offset} cannot be read as such",
            describe::<T>(count)
        ),
    }
}

/// Exclusive access to a segment attached [`ReadWrite`](crate::AccessMode::ReadWrite):
/// derefs to `[u8]` and `mut [u8]`; unlocks when dropped.
///
/// A guard stays on the thread that locked (the lock belongs to that thread):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let shm = qshm::SharedMemory::new("guard-is-not-send");
/// send(shm.lock().unwrap());
/// ```
#[must_use = "if unused the lock is released at once"]
pub struct LockGuard<'a> {
    held: Held<'a>,
}

/// Exclusive access for reading: derefs to `[u8]`; unlocks when dropped.
#[must_use = "if unused the lock is released at once"]
pub struct ReadGuard<'a> {
    held: Held<'a>,
}

impl<'a> Held<'a> {
    fn new(shm: &'a SharedMemory, attachment: &'a super::Attachment, died: bool) -> Self {
        Held {
            shm,
            lock: &attachment.lock,
            mapping: &attachment.mapping,
            previous_owner_died: died,
            fork_epoch: attachment.fork_epoch,
            _not_send: PhantomData,
        }
    }
}

impl<'a> LockGuard<'a> {
    #[inline]
    pub(crate) fn new(shm: &'a SharedMemory, attachment: &'a super::Attachment, died: bool) -> Self {
        LockGuard {
            held: Held::new(shm, attachment, died),
        }
    }
}

impl<'a> ReadGuard<'a> {
    #[inline]
    pub(crate) fn new(shm: &'a SharedMemory, attachment: &'a super::Attachment, died: bool) -> Self {
        ReadGuard {
            held: Held::new(shm, attachment, died),
        }
    }
}

macro_rules! guard_common {
    ($guard:ident) => {
        impl $guard<'_> {
            /// True when the previous holder died while holding the lock: the data may
            /// be half-written; check or repair it.
            pub fn previous_owner_died(&self) -> bool {
                self.held.previous_owner_died
            }

            /// Unlock now and report a failure (Qt's `unlock()`); dropping the guard
            /// unlocks too, but silently.
            pub fn unlock(self) -> Result<()> {
                let this = std::mem::ManuallyDrop::new(self);
                let result = this.held.unlock();
                this.held.shm.record(result)
            }

            /// The segment's first bytes as a `T` (see [`as_type_at`](Self::as_type_at)).
            pub fn as_type<T>(&self) -> Result<&T>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                self.as_type_at(0)
            }

            /// The bytes at `offset` as a `T`, e.g. a `#[repr(C)]` struct deriving
            /// zerocopy's `FromBytes, IntoBytes, KnownLayout, Immutable`. `InvalidSize`
            /// (saying what did not fit or align) if the `T` does not fit in the segment
            /// from `offset`, or if `offset` is not a multiple of `T`'s alignment (the
            /// segment itself starts on a page boundary); never a panic.
            ///
            /// Only the bytes of the `T` are referenced, not the whole segment.
            pub fn as_type_at<T>(&self, offset: usize) -> Result<&T>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                Ok(&self.held.typed::<T>("as_type", offset, Some(1))?[0])
            }

            /// As many whole `T`s as fit in the segment, from its start.
            /// `InvalidSize` for a zero-sized `T`.
            pub fn as_slice_of<T>(&self) -> Result<&[T]>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                self.held.typed::<T>("as_slice_of", 0, None)
            }

            /// `len` values of `T` from byte `offset`; errors as for
            /// [`as_type_at`](Self::as_type_at).
            pub fn as_slice_of_at<T>(&self, offset: usize, len: usize) -> Result<&[T]>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                self.held.typed::<T>("as_slice_of", offset, Some(len))
            }
        }

        impl Deref for $guard<'_> {
            type Target = [u8];
            #[inline]
            fn deref(&self) -> &[u8] {
                // SAFETY: the mapping is live (the guard borrows the handle, which cannot
                // detach meanwhile) and `len` bytes long; we hold the segment lock, which
                // every writer takes (the soundness contract of `SharedMemory`).
                unsafe { std::slice::from_raw_parts(self.held.mapping.ptr(), self.held.mapping.len()) }
            }
        }

        impl Drop for $guard<'_> {
            #[inline(always)]
            fn drop(&mut self) {
                let result = self.held.unlock();
                let _ = self.held.shm.record(result);
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("len", &self.held.mapping.len())
                    .field("previous_owner_died", &self.held.previous_owner_died)
                    .finish()
            }
        }
    };
}

guard_common!(LockGuard);
guard_common!(ReadGuard);

impl DerefMut for LockGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; the attachment is ReadWrite (checked before a LockGuard is
        // made), and the &mut borrow of the guard makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.held.mapping.ptr(), self.held.mapping.len()) }
    }
}

impl LockGuard<'_> {
    /// Unlock, then [`notify_all`](SharedMemory::notify_all): wake every process waiting
    /// for a change of the segment. Returns the new [`Generation`]. An unlock failure is
    /// reported after the notification is sent.
    pub fn unlock_and_notify(self) -> Result<Generation> {
        let shm = self.held.shm;
        let unlocked = self.unlock();
        let notified = shm.notify_all();
        unlocked.and(notified)
    }

    /// The segment's first bytes as a `mut T` (see [`as_type_at`](Self::as_type_at)).
    pub fn as_type_mut<T>(&mut self) -> Result<&mut T>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        self.as_type_mut_at(0)
    }

    /// The bytes at `offset` as a `mut T`; errors as for [`as_type_at`](Self::as_type_at).
    ///
    /// ```
    /// use qshm::{AccessMode, SharedMemory};
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// #[repr(C)]
    /// struct Quote {
    ///     bid: u64,
    ///     ask: u64,
    /// }
    ///
    /// # let key = format!("doc-as-type-{}", std::process::id());
    /// let mut shm = SharedMemory::new(&key);
    /// shm.create(64, AccessMode::ReadWrite)?;
    /// let mut data = shm.lock()?;
    /// let quote = data.as_type_mut_at::<Quote>(16)?;
    /// quote.bid = 10_842;
    /// quote.ask = 10_844;
    /// assert_eq!(data.as_type_at::<Quote>(16)?.ask, 10_844);
    /// assert!(data.as_type_at::<Quote>(4).is_err()); // misaligned for u64
    /// assert!(data.as_type_at::<Quote>(56).is_err()); // 16 bytes do not fit at 56
    /// # Ok::<(), qshm::Error>(())
    /// ```
    pub fn as_type_mut_at<T>(&mut self, offset: usize) -> Result<&mut T>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        // IntoBytes: a T has no padding, so writing one leaves every byte initialised for
        // whoever reads the segment as bytes
        Ok(&mut self.held.typed_mut::<T>("as_type_mut", offset, Some(1))?[0])
    }

    /// As many whole `mut T`s as fit in the segment, from its start.
    pub fn as_slice_of_mut<T>(&mut self) -> Result<&mut [T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        self.held.typed_mut::<T>("as_slice_of_mut", 0, None)
    }

    /// `len` values of `mut T` from byte `offset`; errors as for
    /// [`as_type_at`](Self::as_type_at).
    pub fn as_slice_of_mut_at<T>(&mut self, offset: usize, len: usize) -> Result<&mut [T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        self.held.typed_mut::<T>("as_slice_of_mut", offset, Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn typed_views_say_what_they_are() {
        assert_eq!(describe::<u64>(1), "a u64 (8 bytes, alignment 8)");
        assert_eq!(describe::<u32>(3), "3 x u32 (4 bytes each, alignment 4)");
    }
}
