//! `SystemSemaphore` as Qt's `QSystemSemaphore`: keys set after construction, the last
//! call's error, an empty key, the creator's key file, and a release after the creator
//! removed the semaphore.

mod support;

use qshm::{KeyType, NativeIpcKey, SemaphoreMode, SharedMemoryError, SystemSemaphore};
use support::*;

/// A System V key file path of its own, in the test's temporary directory.
fn sysv_key(tag: &str, kind: KeyType) -> NativeIpcKey {
    NativeIpcKey::new(
        format!("{}/{}", std::env::temp_dir().display(), unique_key(tag)),
        kind,
    )
}

fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

#[test]
fn an_empty_key_constructs_and_fails_at_acquire_as_in_qt() {
    for kind in [KeyType::SystemV, KeyType::PosixRealtime, SYSTEM_V_T] {
        // Qt: QSystemSemaphore(QNativeIpcKey(type)) has error() == NoError
        let sem = SystemSemaphore::with_native_key(NativeIpcKey::new("", kind), 1, SemaphoreMode::Create)
            .expect("an empty key makes a handle, as in Qt");
        assert_eq!(sem.error(), SharedMemoryError::NoError);
        assert_eq!(sem.error_string(), "");
        // ... and "QSystemSemaphore::handle: key is empty" at the first operation
        let err = sem.acquire().unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError);
        assert_eq!(sem.error(), SharedMemoryError::KeyError);
        assert!(
            sem.error_string().contains("key is empty"),
            "{}",
            sem.error_string()
        );
        assert_eq!(sem.release(1).unwrap_err().kind(), SharedMemoryError::KeyError);
        // release(0) does nothing and records nothing, as Qt's
        sem.release(0).unwrap();
        assert_eq!(sem.error(), SharedMemoryError::KeyError);
    }
    let legacy = SystemSemaphore::new("", 0, SemaphoreMode::Open).unwrap();
    assert_eq!(legacy.key(), None);
    assert_eq!(
        legacy.try_acquire().unwrap_err().kind(),
        SharedMemoryError::KeyError
    );
}

#[test]
fn keys_are_set_after_construction_and_errors_are_the_last_calls() {
    let key = unique_key("setkey");
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&SystemSemaphore::legacy_native_key(&key, KeyType::SystemV));
    let mut sem = SystemSemaphore::new("", 0, SemaphoreMode::Open).unwrap();
    assert!(sem.acquire().is_err());
    sem.set_key(&key, 1, SemaphoreMode::Create).unwrap();
    // a successful call clears the error
    assert_eq!(sem.error(), SharedMemoryError::NoError);
    assert_eq!(sem.key(), Some(key.as_str()));
    assert_eq!(
        *sem.native_ipc_key(),
        SystemSemaphore::legacy_native_key(&key, KeyType::SystemV)
    );
    assert!(sem.try_acquire().unwrap());
    assert!(!sem.try_acquire().unwrap());
    assert_eq!(sem.error(), SharedMemoryError::NoError);
    // the same key in Open mode: nothing happens (the unit stays taken)
    let same = sem.native_ipc_key().clone();
    sem.set_native_key(same, 5, SemaphoreMode::Open).unwrap();
    assert_eq!(sem.value().unwrap(), 0);
    // another key: the old semaphore, made by this handle, is removed with its key file
    let old_file = sem.native_key().to_owned();
    let posix = SystemSemaphore::platform_safe_key(&unique_key("setnative"), KeyType::PosixRealtime);
    cleanup.native_key(&posix);
    sem.set_native_key(posix.clone(), 2, SemaphoreMode::Create)
        .unwrap();
    assert!(!exists(&old_file), "the old semaphore's key file was left");
    assert_eq!(sem.key(), None);
    assert_eq!(*sem.native_ipc_key(), posix);
    assert_eq!(sem.value().unwrap(), 2);
    // a key that cannot work: the key is kept, the error recorded, the next call retries
    let missing = NativeIpcKey::new("/nonexistent-qshm-dir/sem", KeyType::SystemV);
    let err = sem
        .set_native_key(missing.clone(), 1, SemaphoreMode::Open)
        .unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::KeyError);
    assert_eq!(*sem.native_ipc_key(), missing);
    assert_eq!(sem.error(), SharedMemoryError::KeyError);
    assert_eq!(sem.acquire().unwrap_err().kind(), SharedMemoryError::KeyError);
}

#[test]
fn the_creator_of_a_system_v_semaphore_removes_the_key_file_it_made() {
    for kind in [KeyType::SystemV, SYSTEM_V_T] {
        let key = sysv_key("creatorfile", kind);
        let mut cleanup = Cleanup::default();
        cleanup.native_key(&key);
        let creator = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Create).unwrap();
        let opener = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Open).unwrap();
        assert!(exists(key.native()));
        drop(opener); // not the creator: nothing goes
        assert!(exists(key.native()));
        let numeric = qshm::SharedMemory::system_v_key(&key).unwrap();
        drop(creator);
        assert!(!exists(key.native()), "{kind}: the creator left its key file");
        assert!(
            sysv_ids("/proc/sysvipc/sem", numeric).is_empty(),
            "{kind}: semaphore left"
        );
    }
    // a Qt-named (legacy) key file too
    let legacy = unique_key("creatorfile-legacy");
    let creator = SystemSemaphore::new(&legacy, 0, SemaphoreMode::Create).unwrap();
    let file = creator.native_key().to_owned();
    drop(creator);
    assert!(!exists(&file));
}

#[test]
fn a_key_file_the_creator_did_not_make_is_left_alone() {
    // e.g. systemv:/etc/hostname: qshm never deletes a file it did not make (Qt would)
    let key = sysv_key("notmine", KeyType::SystemV);
    std::fs::write(key.native(), b"data of someone else").unwrap();
    let creator = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Create).unwrap();
    drop(creator);
    assert_eq!(std::fs::read(key.native()).unwrap(), b"data of someone else");
    std::fs::remove_file(key.native()).unwrap();
}

#[test]
fn release_after_the_creator_removed_the_semaphore_makes_it_again_and_posts() {
    for kind in [KeyType::SystemV, SYSTEM_V_T] {
        let key = sysv_key("remake", kind);
        let mut cleanup = Cleanup::default();
        cleanup.native_key(&key);
        let creator = SystemSemaphore::with_native_key(key.clone(), 0, SemaphoreMode::Create).unwrap();
        let user = SystemSemaphore::with_native_key(key.clone(), 3, SemaphoreMode::Open).unwrap();
        drop(creator); // removes the semaphore and its key file
        // Qt: EIDRM, so handle(Open) makes it again at the handle's initial value (3), +1
        user.release(1).unwrap();
        assert_eq!(user.error(), SharedMemoryError::NoError);
        let other = SystemSemaphore::with_native_key(key.clone(), 0, SemaphoreMode::Open).unwrap();
        assert_eq!(other.value().unwrap(), 4, "{kind}: the release went nowhere");
        assert!(other.try_acquire().unwrap());
        drop(other);
        // the handle that made it again now owns it: dropping it removes it and its file
        let numeric = qshm::SharedMemory::system_v_key(&key).unwrap();
        drop(user);
        assert!(
            sysv_ids("/proc/sysvipc/sem", numeric).is_empty(),
            "{kind}: semaphore left"
        );
        assert!(!exists(key.native()), "{kind}: key file left");
    }
}

#[test]
fn every_key_type_is_supported_here() {
    for kind in [KeyType::SystemV, KeyType::PosixRealtime, SYSTEM_V_T] {
        assert!(SystemSemaphore::is_key_type_supported(kind), "{kind}");
    }
}

/// Set for [`semaphore_opener_child`]: the native key string of the semaphore to open.
const OPENER_ENV: &str = "QSHM_TEST_OPEN_SEMAPHORE";

/// The child role of [`a_system_v_semaphore_removed_as_it_is_opened_is_made_again_initialised`]:
/// when started by it, say its thread id (this test's thread makes the calls), open the semaphore (initial value 1, `Open`), and say
/// its value and whether a unit could be taken. Run as a normal test, it does nothing.
#[test]
fn semaphore_opener_child() {
    let Ok(key) = std::env::var(OPENER_ENV) else {
        return;
    };
    let key: NativeIpcKey = key.parse().expect("a native key string");
    // on a line of its own: libtest has printed "test semaphore_opener_child ... "
    // SAFETY: gettid has no preconditions.
    println!("\nTID {}", unsafe { libc::gettid() });
    let sem = SystemSemaphore::with_native_key(key, 1, SemaphoreMode::Open).expect("open the semaphore");
    println!(
        "VALUE {} TAKEN {}",
        sem.value().unwrap(),
        sem.try_acquire().unwrap()
    );
}

/// Whether thread `tid` is stopped by its tracer (`/proc/<tid>/stat` state `t`).
fn traced_stop(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('t')))
        .unwrap_or(false)
}

/// A semaphore set removed (by Qt's creator, or `ipcrm`: neither takes qshm's key-file
/// lock) between an opener's `semget(IPC_CREAT | IPC_EXCL)`, which finds it, and the
/// `semget` that opens it: the opener makes it again, at its initial value. Before: the
/// second `semget` had `IPC_CREAT` too and made a new set without setting its value (0),
/// so every lock of it waited for ever. The first `semget` is held up by `strace`.
#[test]
fn a_system_v_semaphore_removed_as_it_is_opened_is_made_again_initialised() {
    if !strace_available("a_system_v_semaphore_removed_as_it_is_opened_is_made_again_initialised") {
        return;
    }
    for kind in [KeyType::SystemV, SYSTEM_V_T] {
        let key = sysv_key("openrace", kind);
        let mut cleanup = Cleanup::default();
        cleanup.native_key(&key);
        let creator = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Create).unwrap();
        let numeric = qshm::SharedMemory::system_v_key(&key).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut opener = Peer::spawn_command(
            std::process::Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null"])
                .args([
                    "-e",
                    "trace=semget",
                    "-e",
                    "inject=semget:delay_exit=3000000:when=1",
                ])
                .arg(exe)
                .args([
                    "--exact",
                    "semaphore_opener_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(OPENER_ENV, key.to_string()),
        );
        let tid: u32 = opener
            .expect("TID ", std::time::Duration::from_secs(30))
            .parse()
            .unwrap();
        // held at the exit of its first semget (which found the set) for 3 s
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !(traced_stop(tid) && {
            std::thread::sleep(std::time::Duration::from_millis(100));
            traced_stop(tid)
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the opener never stopped in semget"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for id in sysv_ids("/proc/sysvipc/sem", numeric) {
            // SAFETY: semctl(IPC_RMID) takes plain values; the set is this test's.
            assert_eq!(unsafe { libc::semctl(id, 0, libc::IPC_RMID) }, 0);
        }
        let value = opener.expect("VALUE ", std::time::Duration::from_secs(30));
        opener.wait(std::time::Duration::from_secs(30));
        assert_eq!(
            value, "1 TAKEN true",
            "{kind}: the semaphore the opener made again"
        );
        drop(creator);
    }
}
