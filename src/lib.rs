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
