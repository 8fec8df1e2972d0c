//! System V key types with another `ftok` project id (Qt's `QNativeIpcKey::Type(n)`,
//! `systemv-n:`): two ids on one key file are two segments and two semaphores, each with
//! its own lock state, and destroying one never takes the key file from the other.

mod support;

use qshm::{AccessMode, KeyType, NativeIpcKey, SemaphoreMode, SharedMemory, SystemSemaphore};
use support::*;

fn t() -> KeyType {
    SYSTEM_V_T
}

/// A key file path of its own in the test's temporary directory.
fn key_path(tag: &str) -> String {
    format!("{}/{}", std::env::temp_dir().display(), unique_key(tag))
}

#[test]
fn two_project_ids_on_one_native_key_file_are_two_segments() {
    let path = key_path("ids");
    let q = NativeIpcKey::new(path.as_str(), KeyType::SystemV);
    let t = NativeIpcKey::new(path.as_str(), t());
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&q);
    cleanup.native_key(&t);
    let mut first = SharedMemory::with_native_key(t.clone());
    first.create(64, AccessMode::ReadWrite).unwrap();
    let mut second = SharedMemory::with_native_key(q.clone());
    second
        .create(128, AccessMode::ReadWrite)
        .expect("another id is another segment");
    first.lock().unwrap()[0] = b'T';
    second.lock().unwrap()[0] = b'Q';
    // the numeric keys differ only in the top byte, where ftok puts the id
    let (kt, kq) = (
        SharedMemory::system_v_key(&t).unwrap(),
        SharedMemory::system_v_key(&q).unwrap(),
    );
    assert_eq!(
        (kt as u32 >> 24, kq as u32 >> 24),
        (u32::from(b'T'), u32::from(b'Q'))
    );
    assert_eq!(kt & 0x00ff_ffff, kq & 0x00ff_ffff);
    // two lock states (named after the numeric key and the segment id)
    let (state_t, state_q) = (
        first.lock_state_path().unwrap(),
        second.lock_state_path().unwrap(),
    );
    assert_ne!(state_t, state_q);
    // the creator of the key file goes first: the file stays, the other segment is found
    drop(first);
    assert!(
        std::path::Path::new(&path).exists(),
        "the key file of a live segment was removed"
    );
    let mut reader = SharedMemory::with_native_key(q.clone());
    reader.attach(AccessMode::ReadOnly).unwrap();
    assert_eq!((reader.size(), reader.lock_read().unwrap()[0]), (128, b'Q'));
    let mut gone = SharedMemory::with_native_key(t.clone());
    assert_eq!(
        gone.attach(AccessMode::ReadOnly).unwrap_err().kind(),
        qshm::SharedMemoryError::NotFound
    );
    drop((reader, second));
    assert!(!state_t.exists() && !state_q.exists(), "lock states left");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn two_project_ids_of_one_legacy_key_share_qts_key_files_and_leave_nothing() {
    let key = unique_key("legacy-ids");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    cleanup.key(&key, t());
    let mut q = SharedMemory::with_key_type(&key, KeyType::SystemV);
    let mut t_shm = SharedMemory::with_key_type(&key, t());
    assert_eq!(
        q.native_key(),
        t_shm.native_key(),
        "Qt derives one path for every System V id"
    );
    assert_eq!(t_shm.native_ipc_key().kind(), t());
    assert_eq!(
        t_shm.semaphore_key().kind(),
        t(),
        "the lock's semaphore has the segment's id"
    );
    q.create(16, AccessMode::ReadWrite).unwrap();
    t_shm.create(16, AccessMode::ReadWrite).unwrap();
    // both locks work at once: two semaphores
    let (guard_q, guard_t) = (q.lock().unwrap(), t_shm.lock().unwrap());
    drop((guard_q, guard_t));
    let recorded: Vec<_> = sysv_keys_of(q.native_ipc_key())
        .into_iter()
        .chain(sysv_keys_of(t_shm.native_ipc_key()))
        .collect();
    let (nq, nt) = (q.native_ipc_key().clone(), t_shm.native_ipc_key().clone());
    drop(q);
    assert!(
        std::path::Path::new(nt.native()).exists(),
        "the other id's key file went"
    );
    drop(t_shm);
    let mut left = leftovers_of(&nq, &recorded);
    left.extend(leftovers_of(&nt, &recorded));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn semaphores_of_two_project_ids_are_two_semaphores() {
    let path = key_path("sem-ids");
    let q = NativeIpcKey::new(path.as_str(), KeyType::SystemV);
    let t = NativeIpcKey::new(path.as_str(), t());
    let sem_q = SystemSemaphore::with_native_key(q, 0, SemaphoreMode::Create).unwrap();
    let sem_t = SystemSemaphore::with_native_key(t, 2, SemaphoreMode::Create).unwrap();
    assert_eq!((sem_q.value().unwrap(), sem_t.value().unwrap()), (0, 2));
    assert!(sem_t.try_acquire().unwrap());
    assert!(!sem_q.try_acquire().unwrap());
    drop(sem_t);
    assert!(
        std::path::Path::new(&path).exists(),
        "the key file of a live semaphore went"
    );
    drop(sem_q);
    assert!(
        !std::path::Path::new(&path).exists(),
        "the creators' key file was left"
    );
}

#[test]
fn string_forms_with_a_project_id_name_the_segment_qt_names() {
    let path = key_path("string");
    let key: NativeIpcKey = format!("systemv-84:{path}").parse().unwrap();
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&key);
    let mut shm = SharedMemory::with_native_key(key.clone());
    shm.create(8, AccessMode::ReadWrite).unwrap();
    assert_eq!(shm.native_ipc_key().to_string(), format!("systemv-84:{path}"));
    let numeric = SharedMemory::system_v_key(&key).unwrap();
    assert_eq!(numeric as u32 >> 24, 84);
    drop(shm);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_posix_key_whose_semaphore_name_is_too_long_is_refused_as_qt_refuses_it() {
    // Qt 6.11: create() of a 197-letter POSIX legacy key fails with KeyError ("unable to
    // set key on lock (QSystemSemaphore::handle: key too long)"); 196 letters work. qshm
    // used to create the segment, whose lock then failed and which Qt could not attach.
    let prefix = unique_key("long").replace(|c: char| !c.is_ascii_alphabetic(), "");
    let letters = |n: usize| format!("{prefix}{}", "a".repeat(n - prefix.len()));
    let mut cleanup = Cleanup::default();
    let fits = letters(196);
    cleanup.key(&fits, KeyType::PosixRealtime);
    let mut shm = SharedMemory::with_key_type(&fits, KeyType::PosixRealtime);
    shm.create(16, AccessMode::ReadWrite).unwrap();
    drop(shm.lock().expect("a 196-letter key locks"));
    drop(shm);
    let long = letters(197);
    cleanup.key(&long, KeyType::PosixRealtime);
    let mut shm = SharedMemory::with_key_type(&long, KeyType::PosixRealtime);
    let err = shm.create(16, AccessMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), qshm::SharedMemoryError::KeyError);
    assert!(err.to_string().contains("sem_open takes at most 251"), "{err}");
    assert!(
        !std::path::Path::new(&shm_path(shm.native_ipc_key())).exists(),
        "a segment was made"
    );
    // attach and a semaphore of that key too
    assert_eq!(
        shm.attach(AccessMode::ReadOnly).unwrap_err().kind(),
        qshm::SharedMemoryError::KeyError
    );
    let sem_key = SystemSemaphore::legacy_native_key(&long, KeyType::PosixRealtime);
    let sem = SystemSemaphore::with_native_key(sem_key, 1, SemaphoreMode::Create);
    assert_eq!(sem.unwrap_err().kind(), qshm::SharedMemoryError::KeyError);
}

/// `ftok` keeps 16 bits of a key file's inode, so another key file can give this one's
/// numeric key under another project id. qshm cannot tell that object from one that uses
/// this very file, and removing a file in use would split that object's key: the last
/// detach keeps the (empty) key file, and the leak check knows why (at aac018e a 'Q'
/// semaphore of another test, at the numeric key of a `systemv-84` semaphore's key file,
/// turned CI red).
#[test]
fn a_key_file_whose_numeric_key_another_file_shares_is_kept_and_is_no_leak() {
    let key = unique_key("ftok-collision");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, t());
    let mut shm = SharedMemory::with_key_type(&key, t());
    shm.create(16, AccessMode::ReadWrite).unwrap();
    let native = shm.native_ipc_key().clone();
    let files = [
        native.native().to_owned(),
        shm.semaphore_key().native().to_owned(),
    ];
    let recorded = sysv_keys_of(&native);
    // a set at each file's numeric key under 'Q', as another key file would have it (one
    // that is there already is another file's: it serves, and is left to its owner)
    let others: Vec<(i32, bool)> = files
        .iter()
        .map(|file| {
            let k = SharedMemory::system_v_key(&NativeIpcKey::new(file.as_str(), KeyType::SystemV)).unwrap();
            // SAFETY: semget takes plain integers.
            let made = unsafe { libc::semget(k, 1, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
            // SAFETY: as above.
            (made, made >= 0 || unsafe { libc::semget(k, 0, 0) } >= 0)
        })
        .collect();
    drop(shm);
    let kept: Vec<bool> = files.iter().map(|f| std::path::Path::new(f).exists()).collect();
    let left = leftovers_of(&native, &recorded);
    for &(made, _) in others.iter().filter(|(made, _)| *made >= 0) {
        // SAFETY: semctl(IPC_RMID) takes plain integers and no fourth argument.
        unsafe { libc::semctl(made, 0, libc::IPC_RMID) };
    }
    for file in &files {
        let _ = std::fs::remove_file(file);
    }
    assert!(
        others.iter().all(|&(_, there)| there),
        "sets at the numeric keys: {others:?}"
    );
    assert_eq!(
        kept,
        [true, true],
        "a key file another object may use was removed"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `ftok` keeps only 16 bits of a key file's inode, so a fresh key file can get the numeric
/// key of another key file's live segment. The create then fails (as Qt's does), and its
/// error says why: the segment was made for another key file.
#[test]
fn a_create_whose_numeric_key_a_live_segment_of_another_key_file_holds_says_so() {
    // Both key files in a directory of their own on /dev/shm: tmpfs gives every new file
    // the next inode number, so at most 65 536 new files reach any low 16 bits (a disk
    // filesystem hands freed inodes out again, and makes files far more slowly).
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let scratch = Scratch(std::path::PathBuf::from(format!(
        "/dev/shm/{}",
        unique_key("ftok")
    )));
    std::fs::create_dir(&scratch.0).unwrap();
    let make = |name: &str| {
        let path = scratch.0.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
        (path.to_str().unwrap().to_owned(), inode)
    };
    // the first key file is made by qshm's create, which records it in the lock state
    let first_path = scratch.0.join("first");
    let first = NativeIpcKey::new(first_path.to_str().unwrap(), KeyType::SystemV);
    let mut live = SharedMemory::with_native_key(first.clone());
    live.create(64, AccessMode::ReadWrite).unwrap();
    let first_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&first_path).unwrap());
    let twin = (0..200_000)
        .map(|n| make(&n.to_string()))
        .find(|&(_, inode)| inode & 0xffff == first_inode & 0xffff)
        .map(|(path, _)| path)
        .expect("tmpfs numbers new files in turn");
    let second = NativeIpcKey::new(twin.as_str(), KeyType::SystemV);
    assert_eq!(
        SharedMemory::system_v_key(&second).unwrap(),
        SharedMemory::system_v_key(&first).unwrap(),
        "same device and low inode bits: one numeric key"
    );
    let err = SharedMemory::with_native_key(second)
        .create(64, AccessMode::ReadWrite)
        .expect_err("a live segment holds the numeric key");
    assert_eq!(err.kind(), qshm::SharedMemoryError::AlreadyExists);
    let text = err.to_string();
    assert!(
        text.contains("already exists")
            && text.contains("made for another key file")
            && text.contains("ftok"),
        "{text}"
    );
    // the first key's segment is untouched
    live.lock().unwrap()[0] = 7;
    assert_eq!(live.lock().unwrap()[0], 7);
}
