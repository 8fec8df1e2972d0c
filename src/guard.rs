//! [`LockGuard`] and [`ReadGuard`]: a held segment lock, and the safe way to the bytes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::error::Result;
use crate::lock::Locker;
use crate::shared_memory::SharedMemory;
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

impl<'a> LockGuard<'a> {
    pub(crate) fn new(shm: &'a SharedMemory, locker: &'a Locker, mapping: &'a Mapping, died: bool) -> Self {
        LockGuard {
            held: Held {
                shm,
                locker,
                mapping,
                previous_owner_died: died,
                _not_send: PhantomData,
            },
        }
    }
}

impl<'a> ReadGuard<'a> {
    pub(crate) fn new(shm: &'a SharedMemory, locker: &'a Locker, mapping: &'a Mapping, died: bool) -> Self {
        ReadGuard {
            held: Held {
                shm,
                locker,
                mapping,
                previous_owner_died: died,
                _not_send: PhantomData,
            },
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
