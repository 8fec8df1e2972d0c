use super::*;

#[test]
fn sizes_are_exact_and_nonsense_is_refused() {
    assert_eq!(checked_size(1), Ok(1));
    assert_eq!(checked_size(100), Ok(100));
    assert!(checked_size(0).is_err());
    assert!(checked_size(usize::MAX).is_err());
    assert!(checked_size(isize::MAX as usize + 1).is_err());
}

#[test]
fn lock_when_not_attached_is_a_lock_error() {
    let shm = SharedMemory::new("never-attached");
    let err = shm.lock().unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::LockError);
    assert_eq!(shm.error(), SharedMemoryError::LockError);
    assert!(shm.try_lock_read().is_err());
}

#[test]
fn empty_key_is_a_key_error() {
    let mut shm = SharedMemory::default();
    assert_eq!(
        shm.create(10, AccessMode::ReadWrite).unwrap_err().kind(),
        SharedMemoryError::KeyError
    );
    assert_eq!(
        shm.attach(AccessMode::ReadOnly).unwrap_err().kind(),
        SharedMemoryError::KeyError
    );
    assert!(!shm.is_attached());
    assert!(shm.as_ptr().is_null());
}
