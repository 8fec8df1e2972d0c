// The crate's front page on docs.rs is the README, so that it explains what the README
// does (and every Rust snippet in it is compiled and run as a doctest).
#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

// Linux only: segments, locks and lifetime rest on Linux's /dev/shm, System V IPC,
// flock, open file description semantics, futexes and /proc.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "qshm supports Linux only (x86_64 is what its tests run on). A port to another OS adds \
     a backend under src/sys/ (the SegmentBackend interface in src/sys/mod.rs, as \
     src/sys/posix/ and src/sys/sysv/ implement it) and its system calls under src/os/; \
     Qt's keys (src/key/) are portable."
);

// On other targets only the compile_error! above is reported, not a page of errors from
// Linux-only system calls.
#[cfg(all(target_os = "linux", feature = "admin"))]
pub mod admin;
#[cfg(all(target_os = "linux", feature = "async"))]
mod async_wait;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod frames;
#[cfg(target_os = "linux")]
mod key;
#[cfg(target_os = "linux")]
mod lock;
#[cfg(target_os = "linux")]
mod os;
#[cfg(target_os = "linux")]
mod queue;
#[cfg(target_os = "linux")]
mod role;
#[cfg(target_os = "linux")]
mod segment_words;
#[cfg(target_os = "linux")]
mod semaphore;
#[cfg(target_os = "linux")]
mod shared_copy;
#[cfg(target_os = "linux")]
mod shared_memory;
#[cfg(target_os = "linux")]
mod sys;

#[cfg(all(target_os = "linux", feature = "async"))]
pub use async_wait::Changed;
#[cfg(target_os = "linux")]
pub use error::{Error, Result, SharedMemoryError, SizeMismatch};
#[cfg(target_os = "linux")]
pub use frames::{Frame, FrameReader, FrameWriter};
#[cfg(target_os = "linux")]
pub use key::{KeyType, NativeIpcKey, SystemVId};
#[cfg(target_os = "linux")]
pub use queue::{Consumer, Producer};
#[cfg(target_os = "linux")]
pub use role::Peer;
#[cfg(target_os = "linux")]
pub use semaphore::SystemSemaphore;
#[cfg(target_os = "linux")]
pub use shared_memory::{AccessMode, Atomics, Generation, LockGuard, ReadGuard, SharedMemory};
#[cfg(target_os = "linux")]
pub use sys::{DEFAULT_PERMISSIONS, LockMode, Opened, Removal, SemaphoreMode};
/// The crate whose traits the typed views ([`LockGuard::as_type`]) ask for, re-exported so
/// that its version matches qshm's.
pub use zerocopy;
