//! Only one instance of an app at a time: the most common use of `QSharedMemory`, made
//! crash-proof.
//!
//! The Qt recipe: `QSharedMemory shm("my-app"); if (!shm.create(1)) { /* already running */ }`.
//! On Linux it breaks after a crash: the segment (and, for System V keys, its key file)
//! outlives the process that made it, so `create` keeps failing and the app never starts
//! again until someone cleans up by hand. With qshm the same recipe survives crashes: a
//! segment whose users all died is stale, and the next `create` reclaims it. A segment
//! held by a live process, qshm or Qt, is never taken over: the key also keeps out a Qt
//! build of the app that uses the same recipe and key (and Qt's `create` fails while this
//! one runs).
//!
//! ```text
//! cargo run --example single_instance            # runs until Enter (or stdin closes)
//! cargo run --example single_instance            # in another terminal: refused, exit code 3
//! kill -9 <the first one>; cargo run --example single_instance    # starts: the key was reclaimed
//! ```
//!
//! Arguments: `[KEY] [--posix]` (default key `qshm-single-instance-example`, System V as
//! Qt's `QSharedMemory(key)`).

use std::process::ExitCode;

use qshm::{AccessMode, KeyType, SharedMemory, SharedMemoryError};

/// The key this app claims; a Qt build of the same app uses the same string.
pub(crate) const DEFAULT_KEY: &str = "qshm-single-instance-example";

/// Claim `key` for this process: `Some(handle)` while we are the only instance (keep the
/// handle alive as long as the app runs; the segment goes when it is dropped or the
/// process dies in any way), `None` when another instance, qshm or Qt, runs.
pub(crate) fn claim(key: &str, kind: KeyType) -> Result<Option<SharedMemory>, qshm::Error> {
    let mut shm = SharedMemory::with_key_type(key, kind);
    match shm.create(1, AccessMode::ReadWrite) {
        Ok(()) => Ok(Some(shm)),
        Err(e) if e.kind() == SharedMemoryError::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = if args.iter().any(|a| a == "--posix") {
        KeyType::PosixRealtime
    } else {
        KeyType::SystemV
    };
    let key = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(DEFAULT_KEY, String::as_str);
    match claim(key, kind) {
        Ok(Some(_instance)) => {
            println!(
                "running: the only instance of {key:?} (pid {}); press Enter to quit",
                std::process::id()
            );
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            println!("quitting");
            ExitCode::SUCCESS
        } // `_instance` dropped: the key is free again
        Ok(None) => {
            eprintln!("another instance of {key:?} is running (qshm or Qt); not starting a second one");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("cannot claim {key:?}: {e}");
            ExitCode::from(1)
        }
    }
}
