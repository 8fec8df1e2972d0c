//! Sizes and bad input at the API boundary: `SharedMemory::with_native_key(..).create(size,
//! mode)` with fuzzer-chosen sizes (0, ordinary small, near `isize::MAX`, near
//! `usize::MAX`, around powers of two, raw) and fuzzer-chosen POSIX native names (leading
//! slashes, any suffix: `/`, NUL, too long, any Unicode), lock modes, access modes and
//! permissions. It checks that
//!
//! * `create` returns a value or a typed error, never panics; 0 and sizes above
//!   `isize::MAX` are `InvalidSize`; sizes no `/dev/shm` could hold fail (`InvalidSize`,
//!   `OutOfResources` or, for a bad name, `KeyError`) without allocating; a small size
//!   with a plain name (no `/` or NUL, at most 251 bytes) succeeds, exactly that size;
//! * a created segment can be locked, written, attached by a second handle and read
//!   back, refuses a second create (`AlreadyExists`), and is gone after its last detach;
//! * nothing named with this process's prefix (`qshm-fuzz-create-<pid>-`), its `sem.`
//!   semaphore or its lock-state file is left in `/dev/shm` after any input (a leftover
//!   is removed, then reported with `panic!`).
//!
//! Real allocations are capped at 64 KiB: a size above that is only tried when it exceeds
//! the capacity of `/dev/shm`, so that it must fail before anything is allocated.
//!
//! Input: byte 0 flags, byte 1 size class, bytes 2..10 a little-endian u64, then (when
//! flag 0x80 is set) two bytes of permission bits, then the name suffix.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qshm::admin::SharedMemoryExt as _;
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError};

/// The largest segment this target really creates.
const MAX_REAL: usize = 64 * 1024;
const SHM_DIR: &str = "/dev/shm";

fn prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("qshm-fuzz-create-{}-", std::process::id()))
}

/// Total size of the `/dev/shm` file system: no segment larger than this can be made.
fn shm_capacity() -> u64 {
    static CAPACITY: OnceLock<u64> = OnceLock::new();
    *CAPACITY.get_or_init(|| {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: the path is NUL-terminated and st is writable memory of the right size.
        let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()) };
        assert_eq!(rc, 0, "statvfs /dev/shm: {}", std::io::Error::last_os_error());
        // SAFETY: statvfs succeeded, so it filled st.
        let st = unsafe { st.assume_init() };
        st.f_blocks * st.f_frsize
    })
}

fn pick_size(class: u8, raw: u64) -> usize {
    match class % 6 {
        0 => 0,
        1 => (raw % (MAX_REAL as u64 + 1)) as usize,
        2 => (isize::MAX as usize).wrapping_add(raw as i16 as isize as usize),
        3 => usize::MAX - (raw % 65536) as usize,
        4 => (1usize << (raw % 64)).wrapping_add((raw >> 8) as i8 as isize as usize),
        _ => raw as usize,
    }
}

/// Whatever this process's inputs left in `/dev/shm`, plus `extra` files that exist;
/// removed before they are returned, so that one leak does not hide later ones.
fn leftovers(extra: &[PathBuf]) -> Vec<String> {
    let sem_prefix = format!("sem.{}", prefix());
    let mut found: Vec<PathBuf> = std::fs::read_dir(SHM_DIR)
        .expect("read /dev/shm")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(prefix()) || name.starts_with(&sem_prefix)
        })
        .map(|e| e.path())
        .collect();
    found.extend(extra.iter().filter(|p| p.exists()).cloned());
    found.sort();
    found.dedup();
    for path in &found {
        let _ = std::fs::remove_file(path);
    }
    found.iter().map(|p| p.display().to_string()).collect()
}

/// Use a created segment: lock, write, attach a second handle, read back, create again.
fn exercise(shm: &mut SharedMemory, key: &NativeIpcKey, lock_mode: LockMode, mode: AccessMode, flags: u8) {
    let len = shm.size();
    if flags & 0x10 != 0 {
        match mode {
            AccessMode::ReadWrite => {
                let mut guard = shm.try_lock().expect("try_lock").expect("uncontended lock");
                assert_eq!(guard.len(), len);
                guard[0] = 0xa5;
                guard[len - 1] = 0x5a;
                guard.unlock().expect("unlock");
            }
            AccessMode::ReadOnly => {
                match shm.try_lock() {
                    Err(e) => assert_eq!(e.kind(), SharedMemoryError::PermissionDenied, "{e}"),
                    Ok(_) => panic!("a read-only attachment locked for writing"),
                }
                let guard = shm.try_lock_read().expect("try_lock_read").expect("uncontended");
                assert!(guard.iter().all(|&b| b == 0), "a new segment is zeroed");
            }
        }
    }
    if flags & 0x20 != 0 {
        let again = shm.create(1, mode).expect_err("create on an attached handle");
        assert_eq!(again.kind(), SharedMemoryError::AlreadyExists);
        let mut other = SharedMemory::with_native_key(key.clone()).with_lock_mode(lock_mode);
        let taken = other
            .create(len, AccessMode::ReadWrite)
            .expect_err("second create");
        assert_eq!(taken.kind(), SharedMemoryError::AlreadyExists, "{taken}");
        match other.attach(AccessMode::ReadOnly) {
            Ok(()) => {
                assert_eq!(other.size(), len);
                if flags & 0x10 != 0 && mode == AccessMode::ReadWrite {
                    let guard = other
                        .try_lock_read()
                        .expect("try_lock_read")
                        .expect("uncontended");
                    assert_eq!((guard[0], guard[len - 1]), (0xa5, 0x5a));
                }
                other.detach().expect("detach the second handle");
            }
            // permission bits without read access (not as root)
            Err(e) => assert_eq!(e.kind(), SharedMemoryError::PermissionDenied, "{e}"),
        }
    }
    if flags & 0x40 != 0 {
        let info = shm.info().expect("info");
        assert_eq!(info.size, len as u64);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let flags = data[0];
    let raw = u64::from_le_bytes(data[2..10].try_into().unwrap());
    let mut rest = &data[10..];
    let mut perms = 0o600;
    if flags & 0x80 != 0 && rest.len() >= 2 {
        perms = u32::from(u16::from_le_bytes([rest[0], rest[1]])) & 0o777;
        rest = &rest[2..];
    }
    let suffix = String::from_utf8_lossy(rest);
    let slashes = "/".repeat(usize::from(flags & 3));
    let key = NativeIpcKey::new(format!("{slashes}{}{suffix}", prefix()), KeyType::PosixRealtime);
    let lock_mode = if flags & 4 == 0 {
        LockMode::QtCompatible
    } else {
        LockMode::Fast
    };
    let mode = if flags & 8 == 0 {
        AccessMode::ReadWrite
    } else {
        AccessMode::ReadOnly
    };
    let mut size = pick_size(data[1], raw);
    if size > MAX_REAL && size as u64 <= shm_capacity() {
        // it might fit: do not allocate it
        size %= MAX_REAL + 1;
    }

    let mut shm = SharedMemory::with_native_key(key.clone())
        .with_lock_mode(lock_mode)
        .with_permissions(perms);
    let mut companions: Vec<PathBuf> = Vec::new();
    let name = format!("{}{suffix}", prefix());
    let plain_name = !name.contains(['/', '\0']) && name.len() <= 251;
    match shm.create(size, mode) {
        Ok(()) => {
            assert!((1..=MAX_REAL).contains(&size), "created {size} bytes");
            assert!(shm.is_attached());
            assert_eq!(shm.size(), size, "exactly the size asked for, as in Qt");
            companions.extend(shm.lock_state_path());
            exercise(&mut shm, &key, lock_mode, mode, flags);
            shm.detach().expect("detach");
            assert!(!shm.is_attached());
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(!shm.is_attached());
            assert_eq!(shm.error(), e.kind());
            if size == 0 || size > isize::MAX as usize {
                assert_eq!(e.kind(), SharedMemoryError::InvalidSize, "{size}: {e}");
            } else if size > MAX_REAL {
                assert!(
                    matches!(
                        e.kind(),
                        SharedMemoryError::InvalidSize
                            | SharedMemoryError::OutOfResources
                            | SharedMemoryError::KeyError
                    ),
                    "{size}: {e}"
                );
            } else {
                assert!(!plain_name, "{size} bytes as {:?} failed: {e}", key.native());
            }
            let attach = shm.attach(mode).expect_err("nothing to attach to");
            assert!(
                matches!(
                    attach.kind(),
                    SharedMemoryError::NotFound | SharedMemoryError::KeyError
                ),
                "{attach}"
            );
        }
    }
    let left = leftovers(&companions);
    assert!(
        left.is_empty(),
        "left behind for {:?} ({size} bytes): {left:?}",
        key.native()
    );
});
