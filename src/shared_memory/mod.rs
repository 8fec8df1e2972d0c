//! [`SharedMemory`]: Qt's `QSharedMemory` with a Rust face.

use std::fmt;

use crate::error::{Error, Failure, Result, SharedMemoryError};
use crate::key::{KeyType, NativeIpcKey};
use crate::lock::SegmentLock;
use crate::os;
use crate::sys::mapping::Mapping;
use crate::sys::{self, AttachRequest, CreateRequest, LockMode, SegmentBackend, fork};

mod atomics;
mod guard;
mod info;
mod last_error;
mod locking;
mod notify;
mod open_or_create;
mod removal;
mod setup;

pub use atomics::Atomics;
pub use guard::{LockGuard, ReadGuard};
#[cfg(feature = "admin")]
pub use info::SegmentInfo;
use last_error::LastError;
pub use notify::Generation;
/// The futex wait on a lock state's change counter, for the async wake-up's thread.
#[cfg(feature = "async")]
pub(crate) use notify::wait as wait_for_generation;

/// How a segment is mapped (Qt's `QSharedMemory::AccessMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[doc(alias = "QSharedMemory::AccessMode")]
pub enum AccessMode {
    /// Mapped `PROT_READ` / `SHM_RDONLY`: a write through a raw pointer faults.
    /// Only read guards are handed out.
    ReadOnly,
    /// Reading and writing are allowed.
    #[default]
    ReadWrite,
}

/// A named shared-memory segment, shared by threads and processes.
///
/// One handle [`create`](Self::create)s the segment (choosing its size and lock mode);
/// others [`attach`](Self::attach) to it. The segment is destroyed when the last handle,
/// in any process, detaches; dropping a handle detaches it. Locking returns a guard that
/// gives the bytes as a slice and unlocks when dropped.
///
/// ```
/// use qshm::{AccessMode, SharedMemory};
/// # let key = format!("doc-example-{}", std::process::id());
/// let mut writer = SharedMemory::new(&key);
/// writer.create(100, AccessMode::ReadWrite)?;
/// writer.lock()?[..5].copy_from_slice(b"hello");
///
/// let mut reader = SharedMemory::new(&key); // e.g. in another process
/// reader.attach(AccessMode::ReadOnly)?;
/// assert_eq!(&reader.lock_read()?[..5], b"hello");
/// assert_eq!(reader.size(), 100); // exactly what create asked, as in Qt
/// # Ok::<(), qshm::Error>(())
/// ```
///
/// # Soundness
///
/// The guards hand out `&[u8]` and `&mut [u8]` to memory other processes can change.
/// That is sound only under this contract, which qshm cannot enforce across processes:
///
/// * every process that writes the segment takes its lock for the write (qshm
///   processes through the guards, Qt programs with `QSharedMemory::lock()`; in
///   [`LockMode::Fast`] only qshm processes can take it, so no Qt program may write);
/// * nobody shrinks the segment file (`ftruncate` of a POSIX segment; qshm and Qt never
///   do), which would turn reads into `SIGBUS`;
/// * a process that writes without the lock uses the raw pointers ([`as_mut_ptr`]) and
///   atomic or volatile accesses, never the guards.
///
/// The raw pointers ([`as_ptr`], [`as_mut_ptr`]) are for experts: dereferencing them is
/// `unsafe` and subject to the same contract.
///
/// The typed views of the guards ([`LockGuard::as_type_at`] and friends) are the guards'
/// bytes under the same contract; they reference only the bytes of the `T`s they return,
/// never the rest of the segment, and their types accept any bytes (zerocopy's
/// `FromBytes`), have no padding (`IntoBytes`) and no interior mutability (`Immutable`).
///
/// ## Lock-free access: [`atomics`](Self::atomics)
///
/// [`Atomics`] hands out `&AtomicU8`, `&AtomicU32` and `&AtomicU64` to the segment's
/// bytes without the lock. It is sound because:
///
/// * atomics may be shared and changed through `&` (they are `UnsafeCell`s), so another
///   thread or process changing the word is no aliasing violation, and every access
///   through them is one atomic instruction, so concurrent atomic accesses from any
///   number of handles and processes are not data races (the hardware keeps the same
///   atomicity and ordering for a `MAP_SHARED` page mapped into several processes as
///   for threads of one);
/// * within a handle, `atomics()` borrows it mutably, so no guard of that handle, and
///   no `&[u8]`/`&mut [u8]` from one, can exist at the same time, and the mapping cannot
///   be detached under the view;
/// * the view exists only for read-write attachments: an atomic access to a read-only
///   mapping faults.
///
/// Across handles and processes, which the borrow checker cannot see, the contract
/// adds: **bytes that anyone accesses through atomics are accessed only through atomics
/// while that may happen, in every process** — never through a guard's `[u8]`, a typed
/// view of them, or plain pointer reads and writes — and **always with the same width**
/// (Rust's memory model leaves racing atomic accesses of different sizes to the same
/// bytes undefined: do not mix `atomic_u64(0)` with `bytes()[0..8]`). Keep lock-free
/// words and lock-protected data apart: put the words in their own range, and reach the
/// rest under the lock through the typed views at an offset
/// ([`as_type_at`](crate::LockGuard::as_type_at)), which reference only their own bytes (a
/// guard's whole `[u8]` would cover the words too).
///
/// ## Frame channels and message queues
///
/// A segment handed to a [`FrameWriter`](crate::FrameWriter),
/// [`FrameReader`](crate::FrameReader), [`Producer`](crate::Producer) or
/// [`Consumer`](crate::Consumer) belongs to its channel or queue: no process writes its
/// bytes other than through those types, which touch every shared word atomically, copy
/// frames and messages byte-wise atomically, and treat every word they read as
/// untrusted (checked before it is used as an index or length; a garbled word is an
/// `Inconsistent` error, never an access outside the segment). On a read-only attachment
/// they make only relaxed atomic loads, the only atomic access Rust allows there.
///
/// [`as_ptr`]: Self::as_ptr
/// [`as_mut_ptr`]: Self::as_mut_ptr
/// [`LockGuard::as_type_at`]: crate::LockGuard::as_type_at
/// [`Atomics`]: crate::Atomics
#[doc(alias = "QSharedMemory")]
pub struct SharedMemory {
    key: NativeIpcKey,
    perms: u32,
    /// The mode asked for with `with_lock_mode`/`set_lock_mode`: used by `create`, and
    /// required (rather than adopted) by `attach`.
    requested_mode: Option<LockMode>,
    attached: Option<Attachment>,
    last_error: LastError,
}

/// An attached segment: its bytes, its lock, and the backend that detaches it.
pub(crate) struct Attachment {
    mapping: Mapping,
    lock: SegmentLock,
    segment: Box<dyn SegmentBackend>,
    access: AccessMode,
    fork_epoch: u64,
}

impl SharedMemory {
    /// Create a segment of exactly `size` bytes and attach to it with `mode`.
    ///
    /// The segment gets this handle's lock mode (default [`LockMode::QtCompatible`]) and
    /// permissions. Its pages are reserved now, so a full `/dev/shm` is `OutOfResources`
    /// here rather than a `SIGBUS` later. Fails with `AlreadyExists` if a live segment has
    /// this key (a stale one of ours, whose users all died, is replaced; another user's
    /// object is never taken over), `InvalidSize` for 0 or absurd sizes, `KeyError` for an
    /// empty or unusable key.
    pub fn create(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        let result = self.create_inner(size, mode);
        self.record(result)
    }

    fn create_inner(&mut self, size: usize, mode: AccessMode) -> Result<()> {
        const OP: &str = "create";
        let req = self.create_request(OP, size, mode)?;
        let attached = sys::create(&self.key, &req).map_err(|f| self.fail(OP, f))?;
        self.attached = Some(Attachment::new(attached, mode));
        Ok(())
    }

    /// What `create` (operation `op`) asks the backend for, once the handle is free and
    /// `size` makes sense.
    fn create_request(&self, op: &'static str, size: usize, mode: AccessMode) -> Result<CreateRequest> {
        if self.attached.is_some() {
            return Err(self.error_of(
                op,
                SharedMemoryError::AlreadyExists,
                "this handle is already attached; detach first",
            ));
        }
        checked_size(size).map_err(|why| self.error_of(op, SharedMemoryError::InvalidSize, why))?;
        let limit = os::memory_limit();
        if size as u64 > limit {
            return Err(self.error_of(
                op,
                SharedMemoryError::OutOfResources,
                format!("{size} bytes is more than this machine's memory and swap ({limit} bytes)"),
            ));
        }
        Ok(CreateRequest {
            size,
            perms: self.perms,
            writable: mode == AccessMode::ReadWrite,
            mode: self.requested_mode.unwrap_or_default(),
            semaphore: crate::key::semaphore_key(&self.key),
        })
    }

    /// Attach to the existing segment (`NotFound` if there is none), adopting its lock mode
    /// (or failing with `LockError` if this handle asked for the other one).
    pub fn attach(&mut self, mode: AccessMode) -> Result<()> {
        let result = self.attach_inner(mode, crate::key::semaphore_key(&self.key));
        self.record(result)
    }

    fn attach_inner(&mut self, mode: AccessMode, semaphore: NativeIpcKey) -> Result<()> {
        const OP: &str = "attach";
        if self.attached.is_some() {
            return Err(self.error_of(
                OP,
                SharedMemoryError::AlreadyExists,
                "this handle is already attached; detach first",
            ));
        }
        let req = self.attach_request(mode, semaphore);
        let attached = sys::attach(&self.key, &req).map_err(|f| self.fail(OP, f))?;
        self.attached = Some(Attachment::new(attached, mode));
        Ok(())
    }

    /// What `attach` asks the backend for.
    fn attach_request(&self, mode: AccessMode, semaphore: NativeIpcKey) -> AttachRequest {
        AttachRequest {
            writable: mode == AccessMode::ReadWrite,
            mode: self.requested_mode,
            semaphore,
        }
    }

    /// Detach from the segment; the last detach (in any process) destroys it.
    ///
    /// Fails with `NotFound` when the handle is not attached; as in Qt, that failure is
    /// not recorded in [`error`](Self::error).
    pub fn detach(&mut self) -> Result<()> {
        let Some(attached) = self.attached.take() else {
            return Err(
                Error::new(SharedMemoryError::NotFound, "detach", self.key.display_name())
                    .with_detail("not attached"),
            );
        };
        let result = attached.detach().map_err(|f| self.fail("detach", f));
        self.record(result)
    }

    /// True while attached (Qt's `isAttached()`).
    #[doc(alias = "isAttached")]
    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// The access mode of the attachment, if attached.
    #[doc(alias = "AccessMode")]
    pub fn access_mode(&self) -> Option<AccessMode> {
        self.attached.as_ref().map(|a| a.access)
    }

    /// Size of the attached segment in bytes, 0 when not attached: exactly what its
    /// creator asked for (what Qt's `size()` reports too).
    pub fn size(&self) -> usize {
        self.attached.as_ref().map_or(0, |a| a.mapping.len())
    }

    /// Start of the segment (Qt's `constData()`), null when not attached.
    ///
    /// The pointer stays valid until `detach`. Reading through it while another process
    /// writes is a data race unless you hold the lock or use atomics (see `## Soundness`).
    #[doc(alias = "constData")]
    pub fn as_ptr(&self) -> *const u8 {
        self.attached
            .as_ref()
            .map_or(std::ptr::null(), |a| a.mapping.ptr())
    }

    /// Start of the segment for writing (Qt's `data()`), null when not attached or
    /// attached [`ReadOnly`](AccessMode::ReadOnly).
    #[doc(alias = "data")]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        match &self.attached {
            Some(a) if a.access == AccessMode::ReadWrite => a.mapping.ptr(),
            _ => std::ptr::null_mut(),
        }
    }

    #[cold]
    pub(crate) fn error_of(
        &self,
        op: &'static str,
        kind: SharedMemoryError,
        detail: impl Into<String>,
    ) -> Error {
        Error::new(kind, op, self.key.display_name()).with_detail(detail)
    }

    #[cold]
    fn fail(&self, op: &'static str, failure: Failure) -> Error {
        Error::from_failure(op, self.key.display_name(), failure)
    }
}
impl Attachment {
    fn new(attached: sys::Attached, access: AccessMode) -> Attachment {
        Attachment {
            lock: SegmentLock::from_parts(attached.lock),
            mapping: attached.mapping,
            segment: attached.segment,
            access,
            fork_epoch: fork::epoch_watched(),
        }
    }

    /// True in a `fork()`ed child that inherited this attachment.
    #[inline]
    fn forked(&self) -> bool {
        fork::epoch() != self.fork_epoch
    }

    fn detach(self) -> std::result::Result<(), Failure> {
        let Attachment {
            mapping,
            lock,
            segment,
            fork_epoch,
            ..
        } = self;
        // The segment's bytes first, then the lock; the backend decides about the rest.
        drop(mapping);
        drop(lock);
        if fork::epoch() != fork_epoch {
            segment.forget();
            Ok(())
        } else {
            segment.detach().map(drop)
        }
    }
}

/// Check that `size` can be a segment size, or say why not.
fn checked_size(size: usize) -> std::result::Result<usize, String> {
    if size == 0 {
        return Err("size must be at least 1 byte".to_owned());
    }
    if size > isize::MAX as usize {
        return Err(format!(
            "{size} bytes is more than any segment can have (a negative size?)"
        ));
    }
    Ok(size)
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if let Some(attached) = self.attached.take() {
            let _ = attached.detach();
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("key", &self.key)
            .field("attached", &self.access_mode())
            .field("size", &self.size())
            .field("lock_mode", &self.lock_mode())
            .finish()
    }
}

impl Default for SharedMemory {
    /// A handle without a key (Qt's `QSharedMemory()`): an empty key of Qt's default type
    /// for the OS (`QNativeIpcKey::DefaultTypeForOs`, POSIX on Linux); set one before
    /// create/attach.
    fn default() -> SharedMemory {
        SharedMemory::with_native_key(NativeIpcKey::new(String::new(), KeyType::default_for_os()))
    }
}

#[cfg(test)]
mod tests;
