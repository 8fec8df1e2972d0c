//! [`LockGuard`] and [`ReadGuard`]: a held segment lock, and the safe way to the bytes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Generation, SharedMemory};
use crate::error::{Result, SharedMemoryError};
use crate::lock::Locker;
use crate::sys::mapping::Mapping;

/// A held lock; the common part of both guards.
struct Held<'a> {
    shm: &'a SharedMemory,
    locker: &'a Locker,
    mapping: &'a Mapping,
    previous_owner_died: bool,
    /// Unlocking must happen on the locking thread (the lock belongs to that thread), so
    /// a guard is not `Send`; sharing `&guard` (read-only bytes) between threads is fine.
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl Held<'_> {
    #[inline]
    fn unlock(&self) -> Result<()> {
        self.locker.release().map_err(|e| self.shm.unlock_error(e))
    }

    /// Where `count` values of `T` at byte `offset` start (`count`: `None` for as many
    /// whole ones as fit), or the recorded `InvalidSize` saying what did not fit or align.
    fn place<T>(&self, op: &'static str, offset: usize, count: Option<usize>) -> Result<(*mut u8, usize)> {
        let result = typed_place::<T>(self.mapping.ptr(), self.mapping.len(), offset, count)
            .map_err(|why| self.shm.error_of(op, SharedMemoryError::InvalidSize, why));
        self.shm.record(result)
    }
}

/// The start and count of `count` values of `T` at `offset` in `len` bytes from `base`
/// (`count: None`: as many whole ones as fit after `offset`), or why they do not fit or
/// are misaligned.
fn typed_place<T>(
    base: *mut u8,
    len: usize,
    offset: usize,
    count: Option<usize>,
) -> std::result::Result<(*mut u8, usize), String> {
    let (size, align, name) = (size_of::<T>(), align_of::<T>(), std::any::type_name::<T>());
    let Some(room) = len.checked_sub(offset) else {
        return Err(format!(
            "offset {offset} is past the end of the segment ({len} bytes)"
        ));
    };
    let count = match count {
        Some(count) => count,
        None if size == 0 => {
            return Err(format!(
                "{name} is zero-sized: a slice of it has no length to take from the segment"
            ));
        }
        None => room / size,
    };
    let what = match count {
        1 => format!("a {name} ({size} bytes, alignment {align})"),
        n => format!("{n} x {name} ({size} bytes each, alignment {align})"),
    };
    match count.checked_mul(size) {
        Some(bytes) if bytes <= room => {}
        _ => {
            return Err(format!(
                "{what} at offset {offset} do{} not fit in the segment ({len} bytes)",
                if count == 1 { "es" } else { "" }
            ));
        }
    }
    let misalignment = (base as usize).wrapping_add(offset) % align;
    if misalignment != 0 {
        return Err(format!(
            "{what} at offset {offset} is misaligned: the address is {misalignment} bytes past a multiple of {align}"
        ));
    }
    // in bounds: offset <= len
    Ok((base.wrapping_add(offset), count))
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
    fn new(shm: &'a SharedMemory, locker: &'a Locker, mapping: &'a Mapping, died: bool) -> Self {
        Held {
            shm,
            locker,
            mapping,
            previous_owner_died: died,
            _not_send: PhantomData,
        }
    }
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(shm: &'a SharedMemory, locker: &'a Locker, mapping: &'a Mapping, died: bool) -> Self {
        LockGuard {
            held: Held::new(shm, locker, mapping, died),
        }
    }
}

impl<'a> ReadGuard<'a> {
    pub(crate) fn new(shm: &'a SharedMemory, locker: &'a Locker, mapping: &'a Mapping, died: bool) -> Self {
        ReadGuard {
            held: Held::new(shm, locker, mapping, died),
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
                let (ptr, _) = self.held.place::<T>("as_type", offset, Some(1))?;
                // SAFETY: place() checked that size_of::<T>() bytes at ptr are inside the
                // live mapping and aligned for T; FromBytes: any bytes are a valid T;
                // Immutable: the &T cannot write; the lock is held (the soundness
                // contract: every writer of these bytes takes it).
                Ok(unsafe { &*ptr.cast::<T>() })
            }

            /// As many whole `T`s as fit in the segment, from its start.
            /// `InvalidSize` for a zero-sized `T`.
            pub fn as_slice_of<T>(&self) -> Result<&[T]>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                let (ptr, n) = self.held.place::<T>("as_slice_of", 0, None)?;
                // SAFETY: as in as_type_at, for n values of T.
                Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), n) })
            }

            /// `len` values of `T` from byte `offset`; errors as for
            /// [`as_type_at`](Self::as_type_at).
            pub fn as_slice_of_at<T>(&self, offset: usize, len: usize) -> Result<&[T]>
            where
                T: FromBytes + IntoBytes + KnownLayout + Immutable,
            {
                let (ptr, n) = self.held.place::<T>("as_slice_of", offset, Some(len))?;
                // SAFETY: as in as_type_at, for n values of T.
                Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), n) })
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
            #[inline]
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
        let (ptr, _) = self.held.place::<T>("as_type_mut", offset, Some(1))?;
        // SAFETY: as in as_type_at; the attachment is ReadWrite (a LockGuard exists only
        // then) and the &mut borrow of the guard makes this the only reference;
        // IntoBytes: a T has no padding, so writing one leaves every byte initialised
        // for whoever reads the segment as bytes.
        Ok(unsafe { &mut *ptr.cast::<T>() })
    }

    /// As many whole `mut T`s as fit in the segment, from its start.
    pub fn as_slice_of_mut<T>(&mut self) -> Result<&mut [T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        let (ptr, n) = self.held.place::<T>("as_slice_of_mut", 0, None)?;
        // SAFETY: as in as_type_mut_at, for n values of T.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<T>(), n) })
    }

    /// `len` values of `mut T` from byte `offset`; errors as for
    /// [`as_type_at`](Self::as_type_at).
    pub fn as_slice_of_mut_at<T>(&mut self, offset: usize, len: usize) -> Result<&mut [T]>
    where
        T: FromBytes + IntoBytes + KnownLayout + Immutable,
    {
        let (ptr, n) = self.held.place::<T>("as_slice_of_mut", offset, Some(len))?;
        // SAFETY: as in as_type_mut_at, for n values of T.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<T>(), n) })
    }
}

#[cfg(test)]
mod tests {
    use super::typed_place;

    #[test]
    fn typed_places_check_size_and_alignment() {
        let base = 4096 as *mut u8;
        assert_eq!(typed_place::<u64>(base, 64, 8, Some(1)).map(|p| p.1), Ok(1));
        assert_eq!(typed_place::<u64>(base, 64, 0, None).map(|p| p.1), Ok(8));
        assert_eq!(typed_place::<u64>(base, 67, 8, None).map(|p| p.1), Ok(7));
        assert_eq!(typed_place::<u8>(base, 64, 64, Some(0)).map(|p| p.1), Ok(0));
        let misaligned = typed_place::<u64>(base, 64, 4, Some(1)).unwrap_err();
        assert!(misaligned.contains("misaligned"), "{misaligned}");
        let too_big = typed_place::<[u64; 9]>(base, 64, 0, Some(1)).unwrap_err();
        assert!(too_big.contains("does not fit"), "{too_big}");
        assert!(typed_place::<u64>(base, 64, 65, Some(0)).is_err());
        assert!(typed_place::<u64>(base, 64, 8, Some(usize::MAX)).is_err());
        assert!(typed_place::<()>(base, 64, 0, None).is_err());
        assert_eq!(typed_place::<()>(base, 64, 0, Some(5)).map(|p| p.1), Ok(5));
    }
}
