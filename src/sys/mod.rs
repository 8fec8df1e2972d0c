//! Platform backends behind one internal interface.
//!
//! [`SegmentBackend`] is an attached segment of either kind, [`SemaphoreBackend`] an open
//! counting semaphore of either kind. [`create_segment`], [`attach_segment`] and
//! [`open_semaphore`] pick the backend from the key's [`KeyType`]. Raw system calls
//! live in [`os`] only.

use std::io;
use std::time::Duration;

use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{KeyType, NativeIpcKey};

pub(crate) mod os;
pub(crate) mod posix;
pub(crate) mod sysv;

/// Identifies one incarnation of a segment: a segment destroyed and created again
/// under the same key gets another id. Lock state is bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentId(pub [u64; 3]);

/// What a segment says about itself (for `stat`/`ls`).
#[derive(Clone, Debug)]
pub(crate) struct SegmentStat {
    pub size: u64,
    pub attachments: Option<u64>,
    pub perms: u32,
    pub uid: u32,
    pub ctime_secs: i64,
    pub os_id: String,
}

/// An attached segment.
pub(crate) trait SegmentBackend: Send + Sync {
    /// Start of the mapping.
    fn base(&self) -> *mut u8;
    /// Mapped length in bytes (the segment's real size).
    fn len(&self) -> usize;
    /// Which incarnation of the key this is.
    fn id(&self) -> SegmentId;
    /// Current facts from the OS.
    fn stat(&self) -> io::Result<SegmentStat>;
    /// Unmap. If no user is left, run `on_last` (while other users are still kept out)
    /// and destroy the segment. Returns whether it was destroyed.
    fn detach(self: Box<Self>, on_last: &mut dyn FnMut()) -> Result<bool>;
}

/// A counting semaphore shared between processes.
pub(crate) trait SemaphoreBackend: Send + Sync {
    /// Take one unit. `None` blocks, `Some(0)` tries once. `Ok(false)`: busy or timed out.
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool>;
    /// Like `acquire`, but a semaphore removed meanwhile is not made again (`Ok(false)`).
    fn acquire_if_exists(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.acquire(timeout)
    }
    /// Give back `n` units.
    fn release(&self, n: u32) -> io::Result<()>;
    /// Current value, for diagnostics.
    fn value(&self) -> io::Result<i32>;
    /// Destroy the OS object (and a System V key file).
    fn remove(&self) -> io::Result<()>;
    /// True when a waiter that cannot get in should check for a dead holder
    /// (POSIX semaphores are not released by the kernel when their holder dies).
    fn needs_dead_holder_repair(&self) -> bool;
    /// True when this handle created the OS object (or, in `Create` mode, took it over).
    fn created(&self) -> bool;
}

/// What to do with a semaphore that already exists (Qt's `QSystemSemaphore::AccessMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SemaphoreMode {
    #[default]
    /// Use it as it is; create it with the initial value only if it does not exist.
    Open,
    /// Take ownership: set it to the initial value even if it survived a crash.
    Create,
}

/// Options of a segment creation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CreateRequest {
    pub size: usize,
    pub perms: u32,
    pub writable: bool,
    /// Programs that keep no qshm attachment count (Qt) may share the segment: before
    /// destroying a POSIX segment, also check that no other process maps it.
    pub foreign_peers: bool,
}

/// Create a new segment for `key`; a stale one (no user left alive) is reclaimed,
/// calling `on_stale` first so its companions can be removed too.
pub(crate) fn create_segment(
    key: &NativeIpcKey,
    req: CreateRequest,
    on_stale: &mut dyn FnMut(),
) -> Result<Box<dyn SegmentBackend>> {
    check_key(key, "create")?;
    match key.kind() {
        KeyType::SystemV => Ok(Box::new(sysv::Segment::create(key, req, on_stale)?)),
        KeyType::PosixRealtime => Ok(Box::new(posix::Segment::create(key, req, on_stale)?)),
    }
}

/// Attach to the existing segment of `key` (`foreign_peers`: see [`CreateRequest`]).
pub(crate) fn attach_segment(
    key: &NativeIpcKey,
    writable: bool,
    foreign_peers: bool,
) -> Result<Box<dyn SegmentBackend>> {
    check_key(key, "attach")?;
    match key.kind() {
        KeyType::SystemV => Ok(Box::new(sysv::Segment::attach(key, writable)?)),
        KeyType::PosixRealtime => Ok(Box::new(posix::Segment::attach(key, writable, foreign_peers)?)),
    }
}

/// Open (or create) the semaphore of `key`, as `QSystemSemaphore` does.
pub(crate) fn open_semaphore(
    key: &NativeIpcKey,
    initial: u32,
    mode: SemaphoreMode,
    perms: u32,
) -> Result<Box<dyn SemaphoreBackend>> {
    check_key(key, "open semaphore")?;
    match key.kind() {
        KeyType::SystemV => Ok(Box::new(sysv::Semaphore::open(key, initial, mode, perms)?)),
        KeyType::PosixRealtime => Ok(Box::new(posix::Semaphore::open(key, initial, mode, perms)?)),
    }
}

fn check_key(key: &NativeIpcKey, op: &'static str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(SharedMemoryError::KeyError, op, "").with_detail("key is empty"));
    }
    if key.native().contains('\0') {
        return Err(Error::new(SharedMemoryError::KeyError, op, key.display_name())
            .with_detail("key contains a NUL byte"));
    }
    key.check_usable(op)
}

/// Remove the Qt-style semaphore of `key` if it exists (never creates it).
pub(crate) fn remove_semaphore_if_exists(key: &NativeIpcKey) {
    if key.is_empty() {
        return;
    }
    match key.kind() {
        KeyType::SystemV => sysv::remove_semaphore_if_exists(key),
        KeyType::PosixRealtime => posix::remove_semaphore_if_exists(key),
    }
}

/// Destroy the segment of `key` whatever its users think (for tools and tests).
/// Returns whether there was one.
pub(crate) fn remove_segment(key: &NativeIpcKey) -> Result<bool> {
    check_key(key, "remove")?;
    match key.kind() {
        KeyType::SystemV => sysv::remove_segment(key),
        KeyType::PosixRealtime => posix::remove_segment(key),
    }
}
