//! Single-process API behaviour: Qt's semantics through the Rust API, bad input, errors.

mod support;

use std::time::Duration;

use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError, SystemSemaphore};
use support::*;

fn both_modes() -> [(KeyType, LockMode); 4] {
    [
        (KeyType::SystemV, LockMode::QtCompatible),
        (KeyType::SystemV, LockMode::Fast),
        (KeyType::PosixRealtime, LockMode::QtCompatible),
        (KeyType::PosixRealtime, LockMode::Fast),
    ]
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SharedMemory>();
    send_sync::<SystemSemaphore>();
    send_sync::<qshm::Error>();
}

#[test]
fn size_is_exact_and_attach_sees_it() {
    for (kind, mode) in both_modes() {
        let key = unique_key("size");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut a = handle(&key, kind, mode);
        a.create(1, AccessMode::ReadWrite).unwrap();
        assert_eq!(a.size(), 1, "as in Qt, exactly the size asked for");
        let mut b = handle(&key, kind, mode);
        b.attach(AccessMode::ReadOnly).unwrap();
        assert_eq!(b.size(), 1);
        assert_eq!(b.access_mode(), Some(AccessMode::ReadOnly));
        assert!(
            b.as_mut_ptr().is_null(),
            "no mutable pointer for a read-only attachment"
        );
        assert!(!b.as_ptr().is_null());
        drop(b);
        a.detach().unwrap();
        assert_eq!(a.size(), 0);
        assert!(a.as_ptr().is_null());
        assert!(leftovers(&key, kind, &[]).is_empty());
    }
}

#[test]
fn bad_sizes_are_typed_errors_and_leave_nothing() {
    for kind in KINDS {
        let key = unique_key("badsize");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        for size in [0usize, usize::MAX, (isize::MAX as usize) + 1] {
            let err = shm.create(size, AccessMode::ReadWrite).unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::InvalidSize, "size {size}: {err}");
            assert_eq!(shm.error(), SharedMemoryError::InvalidSize);
            assert!(!shm.error_string().is_empty());
        }
        // more than the machine has, but a valid size
        for size in [1usize << 50, isize::MAX as usize] {
            let err = shm.create(size, AccessMode::ReadWrite).unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::OutOfResources, "{err}");
        }
        assert!(!shm.is_attached());
        assert!(
            leftovers(&key, kind, &[]).is_empty(),
            "{:?}",
            leftovers(&key, kind, &[])
        );
        // and a good create afterwards clears error()
        shm.create(10, AccessMode::ReadWrite).unwrap();
        assert_eq!(shm.error(), SharedMemoryError::NoError);
        assert_eq!(shm.error_string(), "");
    }
}

#[test]
fn bad_keys_are_key_errors() {
    let mut empty = SharedMemory::new("");
    assert_eq!(
        empty.create(10, AccessMode::ReadWrite).unwrap_err().kind(),
        SharedMemoryError::KeyError
    );
    for native in ["/", "/a/b", "/with\0nul"] {
        let mut shm = SharedMemory::with_native_key(NativeIpcKey::new(native, KeyType::PosixRealtime));
        let err = shm.create(10, AccessMode::ReadWrite).unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError, "{native:?}: {err}");
    }
    let long = format!("/{}", "x".repeat(300));
    let mut shm = SharedMemory::with_native_key(NativeIpcKey::new(long, KeyType::PosixRealtime));
    assert_eq!(
        shm.create(10, AccessMode::ReadWrite).unwrap_err().kind(),
        SharedMemoryError::KeyError
    );
    // a System V key file in a directory that does not exist
    let mut shm =
        SharedMemory::with_native_key(NativeIpcKey::new("/nonexistent-qshm-dir/key", KeyType::SystemV));
    let err = shm.create(10, AccessMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
    // Qt 6.11 too says KeyError here, not NotFound: it cannot make the key file
    let err = shm.attach(AccessMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
    assert!(
        err.to_string().contains("/nonexistent-qshm-dir, the directory"),
        "{err}"
    );
}

#[test]
fn relocking_on_the_same_thread_is_an_error_not_a_deadlock() {
    for (kind, mode) in both_modes() {
        let key = unique_key("relock");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, mode);
        shm.create(8, AccessMode::ReadWrite).unwrap();
        let guard = shm.lock().unwrap();
        let err = shm.lock_timeout(Duration::from_millis(50)).unwrap_err();
        assert_eq!(
            err.kind(),
            SharedMemoryError::LockError,
            "{kind:?} {mode:?}: {err}"
        );
        assert!(err.to_string().contains("already holds"), "{err}");
        guard.unlock().unwrap();
        assert!(shm.try_lock().unwrap().is_some(), "free again after unlock");
    }
}

#[test]
fn threads_exclude_each_other_through_one_handle() {
    for (kind, mode) in both_modes() {
        let key = unique_key("threads");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, mode);
        shm.create(8, AccessMode::ReadWrite).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        let mut data = shm.lock().unwrap();
                        let v = u64::from_ne_bytes(data[..8].try_into().unwrap());
                        std::thread::yield_now();
                        data[..8].copy_from_slice(&(v + 1).to_ne_bytes());
                    }
                });
            }
        });
        let total = u64::from_ne_bytes(shm.lock().unwrap()[..8].try_into().unwrap());
        assert_eq!(total, 2000, "{kind:?} {mode:?}");
    }
}

#[test]
fn set_key_detaches_and_keys_read_back() {
    let key = unique_key("setkey");
    let other = unique_key("setkey-other");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    cleanup.key(&other, KeyType::SystemV);
    let mut shm = SharedMemory::new(&key);
    assert_eq!(shm.key(), Some(key.as_str()));
    assert_eq!(
        shm.native_key(),
        SharedMemory::legacy_native_key(&key, KeyType::SystemV).native()
    );
    shm.create(10, AccessMode::ReadWrite).unwrap();
    shm.set_key(&key).unwrap(); // same key: stays attached
    assert!(shm.is_attached());
    shm.set_key(&other).unwrap(); // new key: detaches (and destroys, being the last)
    assert!(!shm.is_attached());
    assert_eq!(shm.key(), Some(other.as_str()));
    assert!(leftovers(&key, KeyType::SystemV, &[]).is_empty());
    let err = shm.detach().unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::NotFound);
    let native: NativeIpcKey = shm.native_ipc_key().to_string().parse().unwrap();
    assert_eq!(&native, shm.native_ipc_key());
}

#[test]
fn double_attach_and_create_while_attached_are_refused() {
    let key = unique_key("twice");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::PosixRealtime);
    let mut shm = handle(&key, KeyType::PosixRealtime, LockMode::QtCompatible);
    shm.create(10, AccessMode::ReadWrite).unwrap();
    assert!(shm.attach(AccessMode::ReadWrite).is_err());
    assert!(shm.create(10, AccessMode::ReadWrite).is_err());
    assert!(shm.is_attached(), "refusals leave the attachment alone");
}

#[test]
fn info_reports_the_segment() {
    for kind in KINDS {
        let key = unique_key("info");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        shm.create(5000, AccessMode::ReadWrite).unwrap();
        let info = shm.info().unwrap();
        assert_eq!(info.size as usize, shm.size());
        assert_eq!(info.permissions, 0o600, "{kind:?}");
        match kind {
            KeyType::SystemV => assert_eq!(info.attachments, Some(1)),
            KeyType::PosixRealtime => assert_eq!(info.attachments, None),
            _ => unreachable!("these tests use KINDS: System V and POSIX"),
        }
    }
}

#[test]
fn lock_mode_mismatch_is_reported_at_attach() {
    let key = unique_key("mismatch");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::PosixRealtime);
    let mut fast = handle(&key, KeyType::PosixRealtime, LockMode::Fast);
    fast.create(8, AccessMode::ReadWrite).unwrap(); // the mode is the segment's from here
    let mut qt = handle(&key, KeyType::PosixRealtime, LockMode::QtCompatible);
    let err = qt.attach(AccessMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::LockError);
    assert!(err.to_string().contains("LockMode::Fast"), "{err}");
    assert!(!qt.is_attached());
}

#[test]
fn system_semaphore_counts_and_cleans_up() {
    for kind in KINDS {
        let key = unique_key("sem");
        let native = SystemSemaphore::legacy_native_key(&key, kind);
        let sem = SystemSemaphore::with_native_key(native.clone(), 2, qshm::SemaphoreMode::Create).unwrap();
        assert_eq!(sem.value().unwrap(), 2);
        sem.acquire().unwrap();
        assert!(sem.try_acquire().unwrap());
        assert!(!sem.try_acquire().unwrap());
        assert!(!sem.acquire_timeout(Duration::from_millis(20)).unwrap());
        sem.release(2).unwrap();
        assert_eq!(sem.value().unwrap(), 2);
        let opened = SystemSemaphore::with_native_key(native.clone(), 0, qshm::SemaphoreMode::Open).unwrap();
        assert_eq!(opened.value().unwrap(), 2, "Open keeps the value");
        drop(opened);
        drop(sem); // the creator removes it
        assert!(leftovers(&key, kind, &[]).is_empty());
    }
}

#[test]
fn detach_after_force_remove_recreates_nothing() {
    for kind in KINDS {
        let key = unique_key("forced");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        shm.create(64, AccessMode::ReadWrite).unwrap();
        drop(shm.lock().unwrap());
        let recorded = sysv_keys(&key, kind);
        assert!(SharedMemory::force_remove(shm.native_ipc_key()).unwrap());
        shm.detach().unwrap();
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{kind:?}: {left:?}");
    }
}
