//! Asking whether the attached segment was removed behind the handle's back
//! (`SharedMemory::is_removed`), against the one system call that would answer it for
//! the segment alone: `lstat` of its /dev/shm name (POSIX), `shmctl(IPC_STAT)` of its id
//! (System V). qshm also looks at its lock state's name (a removed lock state is
//! reported too), so it makes two such calls where the floor makes one.

use std::ffi::CString;
use std::hint::black_box;

use qshm::admin::SharedMemoryExt as _;
use qshm::{AccessMode, KeyType, LockMode, SharedMemory};

use crate::{Runner, interleaved, key, ns_per_op};

pub const POSIX: &str = "qshm is_removed() (Fast, POSIX)";
pub const SYSV: &str = "qshm is_removed() (Qt-compatible, System V)";
pub const LSTAT: &str = "floor: lstat of the segment's /dev/shm name";
pub const SHMCTL: &str = "floor: shmctl(IPC_STAT) of the segment's id";

fn segment(kind: KeyType, mode: LockMode) -> SharedMemory {
    let mut shm = SharedMemory::with_key_type(&key("removal"), kind).with_lock_mode(mode);
    shm.create(4096, AccessMode::ReadWrite).expect("create");
    assert!(!shm.is_removed().expect("is_removed"), "just created");
    shm
}

/// Nanoseconds per call of each, `calls` calls per run, `runs` runs interleaved.
pub fn measure(runs: usize, calls: u64) {
    let posix = segment(KeyType::PosixRealtime, LockMode::Fast);
    let sysv = segment(KeyType::SystemV, LockMode::QtCompatible);
    let path = CString::new(format!("/dev/shm{}", posix.native_key())).expect("path");
    let id = {
        let k = SharedMemory::system_v_key(sysv.native_ipc_key()).expect("System V key");
        // SAFETY: shmget takes plain values.
        let id = unsafe { libc::shmget(k, 0, 0) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        id
    };
    let runners: Vec<Runner> = vec![
        (
            POSIX.into(),
            Box::new(|| {
                ns_per_op(calls, |n| {
                    (0..n).for_each(|_| assert!(!posix.is_removed().expect("is_removed")))
                })
            }),
        ),
        (
            SYSV.into(),
            Box::new(|| {
                ns_per_op(calls, |n| {
                    (0..n).for_each(|_| assert!(!sysv.is_removed().expect("is_removed")))
                })
            }),
        ),
        (
            LSTAT.into(),
            Box::new(|| {
                ns_per_op(calls, |n| {
                    for _ in 0..n {
                        // SAFETY: path is NUL-terminated; st is written by the call.
                        let mut st: libc::stat = unsafe { std::mem::zeroed() };
                        // SAFETY: as above.
                        assert_eq!(unsafe { libc::lstat(path.as_ptr(), &mut st) }, 0);
                        black_box(st.st_ino);
                    }
                })
            }),
        ),
        (
            SHMCTL.into(),
            Box::new(|| {
                ns_per_op(calls, |n| {
                    for _ in 0..n {
                        // SAFETY: ds is written by the call; id is a live segment.
                        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
                        // SAFETY: as above.
                        assert_eq!(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, 0);
                        black_box(ds.shm_perm.mode);
                    }
                })
            }),
        ),
    ];
    interleaved("removal_check_ns", None, runs, "ns", runners);
}
