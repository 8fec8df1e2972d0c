//! # qshm — Qt-compatible named shared memory for Rust
//!
//! `qshm` does what Qt's `QSharedMemory` does on Linux — named shared-memory segments
//! shared by threads and processes, with a system-wide lock — and is compatible with
//! it: the same legacy key gives the same native key and the same lock, so a Qt
//! program and a qshm program meet in one segment.
//!
//! What it does better: the segment is destroyed when the last user detaches, also
//! for POSIX keys and also after crashes ([`sys`](crate) design notes in
//! `src/sys/posix.rs`); a lock whose holder died is handed on and reported
//! ([`LockGuard::previous_owner_died`]); an optional [`LockMode::Fast`] lock costs no
//! system call; and errors are typed values, never panics. Beyond Qt: typed views of
//! the segment ([`LockGuard::as_type`], zerocopy types), lock-free atomics
//! ([`SharedMemory::atomics`]) and change notification across processes
//! ([`SharedMemory::notify_all`], [`SharedMemory::wait_for_change`]).
//!
//! ```
//! use qshm::{AccessMode, SharedMemory};
//! # let key = format!("lib-doc-{}", std::process::id());
//! let mut shm = SharedMemory::new(&key);
//! shm.create(4096, AccessMode::ReadWrite)?;
//! {
//!     let mut data = shm.lock()?;       // system-wide lock, RAII
//!     data[..4].copy_from_slice(b"ping");
//! }                                       // unlocked here
//! shm.detach()?;                          // last user: the segment is destroyed
//! # Ok::<(), qshm::Error>(())
//! ```
//!
//! Tools that list and clean up every segment on the machine (`qshm ls`, `qshm rm
//! --stale`) use the module `admin` (feature `admin`, on by default).

#![deny(unsafe_op_in_unsafe_fn)]

/// Every Rust snippet of the README compiles and runs (as a doctest).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "admin")]
pub mod admin;
mod error;
mod key;
mod lock;
mod os;
mod semaphore;
mod shared_memory;
mod sys;

pub use error::{Error, Result, SharedMemoryError};
pub use key::{KeyType, NativeIpcKey};
pub use semaphore::SystemSemaphore;
pub use shared_memory::{AccessMode, Atomics, Generation, LockGuard, ReadGuard, SharedMemory};
pub use sys::{DEFAULT_PERMISSIONS, LockMode, SemaphoreMode};
/// The crate whose traits the typed views ([`LockGuard::as_type`]) ask for, re-exported so
/// that its version matches qshm's.
pub use zerocopy;
