//! Unit tests: names, the policy decisions, and what a look at a real segment shows.

use std::time::Duration;

use super::lock_status;
use super::look::{self, maker, posix_state, sysv_state};
use super::orphans::is_glibc_temporary;
use super::*;
use crate::key::{IpcType, LegacyName};
use crate::os;
use crate::sys::lock_state::{Origin, Peek, SegmentId};
use crate::sys::procfs;
use crate::{AccessMode, SharedMemory, SystemSemaphore};

#[test]
fn qt_names_are_read_back_from_every_derived_key() {
    for key in ["market", "a/b", "héllo wörld", "x1y2", "123"] {
        let letters: String = key.chars().filter(char::is_ascii_alphabetic).collect();
        for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
            let shm = SharedMemory::legacy_native_key(key, kind);
            let sem = SystemSemaphore::legacy_native_key(key, kind);
            let shm_name = shm.native().rsplit('/').next().unwrap_or("");
            let sem_name = sem.native().rsplit('/').next().unwrap_or("");
            let parsed = LegacyName::parse(shm_name).expect("a Qt name");
            assert_eq!(
                (parsed.ipc, parsed.letters),
                (IpcType::SharedMemory, letters.as_str())
            );
            assert_eq!(
                parsed.for_ipc(IpcType::SystemSemaphore),
                sem_name,
                "{key:?} {kind}"
            );
            assert_eq!(look::qt_name(sem_name).map(|n| n.letters), Some(letters.clone()));
        }
        let sysv = SharedMemory::legacy_native_key(key, KeyType::SystemV);
        let sem = look::sysv_semaphore_of(sysv.native(), KeyType::SystemV).expect("a Qt key file");
        let derived = SystemSemaphore::legacy_native_key(key, KeyType::SystemV);
        assert_eq!((sem.native(), sem.kind()), (derived.native(), KeyType::SystemV));
        // another ftok project id: Qt derives the semaphore with the segment's type
        let t = KeyType::system_v(b'T').unwrap();
        let sem = look::sysv_semaphore_of(sysv.native(), t).expect("a Qt key file");
        let derived = SystemSemaphore::legacy_native_key(key, t);
        assert_eq!((sem.native(), sem.kind()), (derived.native(), t));
    }
}

#[test]
fn names_qt_cannot_derive_are_not_read_as_qt_names() {
    let hash = "5c9f73af73334ffe350c60ec076e5744db0ecda3";
    assert!(LegacyName::parse(&format!("qipc_sharedmemory_market{hash}")).is_some());
    for name in [
        format!("qipc_sharedmemory_{}", &hash[1..]), // 39 hex digits
        format!("qipc_sharedmemory_a-b{hash}"),      // Qt keeps only letters
        format!("qipc_sharedmemory_x{}", hash.to_uppercase()),
        format!("qipc_other_x{hash}"),
        "qipc_sharedmemory_short".to_owned(),
        "market".to_owned(),
    ] {
        assert_eq!(LegacyName::parse(&name), None, "{name}");
    }
    assert_eq!(look::sysv_semaphore_of("/tmp/custom", KeyType::SystemV), None);
}

#[test]
fn glibc_temporaries_are_sem_and_six_characters() {
    assert!(is_glibc_temporary("sem.aB3xYz"));
    assert!(!is_glibc_temporary("sem.aB3xY"), "five");
    assert!(!is_glibc_temporary("sem.aB3xYz7"), "seven");
    assert!(!is_glibc_temporary("sem.aB-xYz"), "glibc uses letters and digits");
    assert!(!is_glibc_temporary("aB3xYz"));
}

#[test]
fn states_follow_users_age_and_visibility() {
    let young = Duration::from_secs(1);
    let old = NEW_GRACE + Duration::from_secs(1);
    assert_eq!(sysv_state(1, true, old), State::Live);
    assert_eq!(
        sysv_state(0, false, young),
        State::New,
        "never attached, just made"
    );
    assert_eq!(
        sysv_state(0, true, young),
        State::Stale,
        "attached once, all gone"
    );
    assert_eq!(sysv_state(0, false, old), State::Stale);
    assert_eq!(posix_state(2, 4096, old, true), State::Live);
    assert_eq!(
        posix_state(0, 0, young, true),
        State::New,
        "being sized by its maker"
    );
    assert_eq!(posix_state(0, 4096, young, true), State::Stale);
    assert_eq!(posix_state(0, 4096, old, false), State::Unknown, "another user's");
}

/// A lock state made for a made-up segment, and removed at the end.
struct TestState(SegmentId, std::sync::Arc<crate::sys::lock_state::LockState>);

impl TestState {
    fn new(tag: u64, mode: LockMode, origin: Origin) -> TestState {
        use crate::sys::lock_state::{LockState, NewLockState, name_tag};
        let id = SegmentId::Posix {
            name_tag: name_tag(&format!("qshm-admin-test-state-{}", std::process::id())),
            ino: tag,
            btime_ns: i64::from(std::process::id()),
        };
        let state = LockState::create(NewLockState {
            id,
            mode,
            origin,
            perms: 0o600,
            owner: None,
            key_file: None,
            semaphore: None,
        })
        .unwrap_or_else(|e| panic!("lock state: {e:?}"));

        TestState(id, state)
    }

    fn peek(&self) -> Peek {
        crate::sys::lock_state::LockState::peek(self.0)
            .unwrap()
            .expect("there")
    }
}

impl Drop for TestState {
    fn drop(&mut self) {
        crate::sys::lock_state::LockState::remove(self.0);
    }
}

#[test]
fn makers_come_from_the_lock_state_and_the_name() {
    let qshm_fast = TestState::new(1, LockMode::Fast, Origin::Qshm).peek();
    let added = TestState::new(2, LockMode::QtCompatible, Origin::Foreign).peek();
    let fast = Maker::Qshm {
        lock_mode: LockMode::Fast,
    };
    assert_eq!(maker(Some(&qshm_fast), false), fast);
    assert_eq!(maker(Some(&qshm_fast), true), fast, "the lock state says qshm");
    assert_eq!(
        maker(Some(&added), true),
        Maker::Qt,
        "Qt's, a qshm attacher added the lock state"
    );
    assert_eq!(maker(Some(&added), false), Maker::Other);
    assert_eq!(maker(None, false), Maker::Other, "mode bits are no evidence");
    assert_eq!(maker(None, true), Maker::Qt);
    let segment = |maker, lock_state: Option<&str>| Segment {
        os_id: OsId::SystemV {
            shmid: 1,
            key: 2,
            removed: false,
        },
        native_key: None,
        qt_name: None,
        size: 1,
        attachments: 0,
        qshm_attachments: None,
        owner_uid: 0,
        permissions: 0o600,
        age: Duration::ZERO,
        state: State::Stale,
        maker,
        lock: LockStatus::Unknown,
        lock_state: lock_state.map(Into::into),
    };
    assert!(segment(Maker::Other, None).is_foreign());
    assert!(
        !segment(Maker::Other, Some("/dev/shm/qshm-lock.s.1.2")).is_foreign(),
        "known to qshm"
    );
    assert!(!segment(Maker::Qt, None).is_foreign());
}

#[test]
fn a_fast_lock_word_says_free_held_or_holder_died() {
    let state = TestState::new(3, LockMode::Fast, Origin::Qshm);
    let words = state.1.words();
    assert_eq!(lock_status::posix(Some(&state.peek()), None).0, LockStatus::Free);
    let me = state.1.label().expect("a slot").word();
    words.fast.store(me, std::sync::atomic::Ordering::SeqCst);
    let (status, probe) = lock_status::posix(Some(&state.peek()), None);
    assert_eq!(
        (status, probe.is_none()),
        (LockStatus::Held, true),
        "this process lives"
    );
    // the label of a slot nobody holds: its process is gone
    words.fast.store(me ^ 1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        lock_status::posix(Some(&state.peek()), None).0,
        LockStatus::HolderDied
    );
    assert_eq!(
        lock_status::system_v(Some(&state.peek()), None),
        LockStatus::HolderDied
    );
    words.fast.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        lock_status::posix(None, None).0,
        LockStatus::Unknown,
        "no lock state, no semaphore"
    );
}

/// A test segment, removed at the end.
struct Remove(NativeIpcKey);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = SharedMemory::force_remove(&self.0);
    }
}

#[test]
fn a_segment_and_its_lock_as_admin_sees_them() {
    let key = format!("qshm-admin-unit-{}", std::process::id());
    for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
        let mut shm = SharedMemory::with_key_type(&key, kind);
        let _remove = Remove(shm.native_ipc_key().clone());
        shm.create(100, AccessMode::ReadWrite).unwrap();
        assert!(exists(shm.native_ipc_key()));
        let seen = segment(shm.native_ipc_key()).unwrap().expect("found");
        assert_eq!(seen.kind(), kind);
        assert_eq!(seen.state, State::Live, "{kind}");
        assert_eq!(
            seen.maker,
            Maker::Qshm {
                lock_mode: LockMode::QtCompatible
            },
            "{kind}"
        );
        assert_eq!(
            seen.qt_name.as_ref().map(|n| n.letters.as_str()),
            Some("qshmadminunit")
        );
        assert_eq!(seen.lock, LockStatus::Free, "{kind}");
        assert!(seen.lock_state.is_some());
        if kind == KeyType::PosixRealtime {
            assert_eq!(
                (seen.attachments, seen.qshm_attachments),
                (1, Some(1)),
                "this process"
            );
        }
        let guard = shm.lock().unwrap();
        let seen = segment(shm.native_ipc_key()).unwrap().expect("found");
        assert_eq!(
            seen.lock,
            LockStatus::Held,
            "{kind}: held by this (living) process"
        );
        drop(guard);
        let listed = scan().unwrap();
        assert!(listed.segments.iter().any(|s| s.os_id == seen.os_id));
        shm.detach().unwrap();
        assert!(!exists(shm.native_ipc_key()));
        assert!(segment(shm.native_ipc_key()).unwrap().is_none());
    }
}

#[test]
fn flock_holders_and_mappers_are_seen_by_device_and_inode() {
    // in /dev/shm, where the segments are (other file systems may report other devices)
    let path = format!("{}/qshm-admin-test-{}", crate::sys::SHM_DIR, std::process::id());
    struct RemoveFile(String);
    impl Drop for RemoveFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = RemoveFile(path.clone());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let fd: std::os::fd::OwnedFd = file.into();
    assert!(os::flock(&fd, libc::LOCK_SH).unwrap());
    let st = os::fstat(&fd).unwrap();
    let id = (st.dev, st.ino);
    assert_eq!(procfs::flock_holders().get(&id).copied(), Some(1));
    assert_eq!(procfs::mappers_under(crate::sys::SHM_DIR).get(&id), None);
    os::ftruncate(&fd, 4096).unwrap();
    use std::os::fd::AsRawFd;
    let ptr = os::mmap_shared(fd.as_raw_fd(), 4096, false).unwrap();
    let mappers = procfs::mappers_under(crate::sys::SHM_DIR).get(&id).copied();
    // SAFETY: ptr is the 4096-byte mapping made just above, used by nobody else.
    unsafe { os::munmap(ptr, 4096) }.unwrap();
    assert_eq!(mappers, Some(1), "this process maps it");
}

/// A qshm segment is known as qshm's from its creation on (its lock state comes before
/// its name), whoever locks first, for `info` and for admin, native key included (else
/// `rm --stale` would keep it as another program's).
#[test]
fn a_qshm_segment_is_qshm_from_its_creation_on() {
    let native = NativeIpcKey::new(
        format!("/qshm-admin-made-{}", std::process::id()),
        KeyType::PosixRealtime,
    );
    let mut creator = SharedMemory::with_native_key(native.clone());
    let _remove = Remove(native.clone());
    creator.create(64, AccessMode::ReadWrite).unwrap();
    let qt_compatible = Maker::Qshm {
        lock_mode: LockMode::QtCompatible,
    };
    let seen = segment(&native).unwrap().expect("found");
    assert_eq!(seen.maker, qt_compatible, "before any lock");
    assert!(seen.lock_state.is_some(), "made with the segment");
    let mut attacher = SharedMemory::with_native_key(native.clone());
    attacher.attach(AccessMode::ReadWrite).unwrap();
    drop(attacher.lock().unwrap());
    assert!(creator.info().unwrap().made_by_qshm, "the creator's handle");
    assert!(attacher.info().unwrap().made_by_qshm, "the attacher's handle");
    let seen = segment(&native).unwrap().expect("found");
    assert_eq!(seen.maker, qt_compatible, "after the attacher's lock");
    assert!(!seen.is_foreign());
}
