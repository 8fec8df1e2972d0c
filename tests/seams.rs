//! Where processes, lock modes and non-qshm programs meet (issue #11): the lock mode
//! belongs to the segment, no detach deletes a segment another process maps, the lock
//! state follows the segment's permissions, exact sizes, birth times, and clean-up after
//! a segment was removed behind qshm's back. Programs that are not qshm are played by
//! child roles that use the OS directly, as Qt does (`tests/qt_interop.rs` uses real Qt).

mod support;

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError};
use support::*;

const T: Duration = Duration::from_secs(30);

fn main() {
    run_child_role(child_main);
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(
            format!("{k}::an_explicit_other_lock_mode_is_refused_at_attach"),
            move || conflicting_mode_refused(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::attachers_adopt_the_creators_lock_mode"),
            move || attachers_adopt_mode(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::changing_the_lock_mode_while_attached_never_gives_two_guards"),
            move || no_mode_switch_while_attached(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::size_is_exactly_what_create_asked"),
            move || exact_size(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::removed_behind_our_back_last_detach_cleans_companions"),
            move || removed_behind_our_back(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::lock_rights_follow_write_rights_whoever_locks_first"),
            move || readers_can_lock(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::an_attacher_names_the_lock_state_before_its_first_lock"),
            move || lock_state_named_before_first_lock(kind),
        ));
    }
    for mode in [LockMode::QtCompatible, LockMode::Fast] {
        trials.push(Trial::test(
            format!(
                "posix::{}::detach_never_unlinks_a_segment_another_process_maps",
                mode_name(mode)
            ),
            move || mapped_segment_survives(mode),
        ));
    }
    trials.push(Trial::test(
        "posix::fast_mode_is_refused_next_to_a_non_qshm_mapper",
        fast_refused_next_to_foreign_mapper,
    ));
    trials.push(Trial::test(
        "posix::fast_mode_is_refused_on_a_segment_qshm_did_not_create",
        fast_refused_on_foreign_segment,
    ));
    trials.push(Trial::test("posix::created_time_is_the_birth_time", birth_time));
    trials.push(Trial::test(
        "detach_of_an_unattached_handle_records_no_error",
        detach_unattached,
    ));
    trials.push(Trial::test("default_key_types_are_qts", default_key_types));
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn child_main(role: &str, args: &[String]) -> i32 {
    match role {
        // A non-qshm program (as Qt's POSIX attach does): shm_open, fstat, mmap, close.
        "raw-map" => {
            let name = CString::new(args[0].as_str()).unwrap();
            // SAFETY: plain libc calls on our own descriptor and mapping.
            unsafe {
                let fd = libc::shm_open(name.as_ptr(), libc::O_RDWR, 0);
                if fd < 0 {
                    say("FAILED open");
                    return 1;
                }
                let mut st: libc::stat = std::mem::zeroed();
                libc::fstat(fd, &mut st);
                let len = st.st_size as usize;
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                libc::close(fd);
                if p == libc::MAP_FAILED {
                    say("FAILED mmap");
                    return 1;
                }
            }
            // like a Qt process: Qt keeps its segment's semaphore open while attached
            // (the handle stays open until exit)
            if let Some(sem) = args.get(1)
                && sem_open_create(sem, false, 0o600).is_err()
            {
                say("FAILED sem_open");
                return 1;
            }
            say("MAPPED");
            wait_for_stdin_line();
            0
        }
        // A non-qshm creator (as Qt's POSIX create does): shm_open O_EXCL 0600, ftruncate.
        "raw-create" => {
            let name = CString::new(args[0].as_str()).unwrap();
            // SAFETY: plain libc calls on our own descriptor.
            unsafe {
                let fd = libc::shm_open(name.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600);
                if fd < 0 || libc::ftruncate(fd, 4096) != 0 {
                    say("FAILED");
                    return 1;
                }
                libc::close(fd);
            }
            say("CREATED");
            0
        }
        "attach-lock-read" => {
            let (key, kind) = (&args[0], parse_kind(&args[1]));
            let mut shm = SharedMemory::with_key_type(key, kind);
            match shm.attach(AccessMode::ReadOnly) {
                Ok(()) => match shm.lock_read() {
                    Ok(data) => say(format!("READ {}", data[0])),
                    Err(e) => say(format!("LOCK {:?} {e}", e.kind())),
                },
                Err(e) => say(format!("ATTACH {:?} {e}", e.kind())),
            }
            0
        }
        "lock-read-default" => {
            // another process of the owner, with a handle of default permissions, locks first
            let (key, kind) = (&args[0], parse_kind(&args[1]));
            let mut shm = SharedMemory::with_key_type(key, kind);
            shm.attach(AccessMode::ReadOnly).expect("attach");
            drop(shm.lock_read().expect("lock_read"));
            say("LOCKED");
            0
        }
        "try-lock" => {
            let (key, kind) = (&args[0], parse_kind(&args[1]));
            let mut shm = SharedMemory::with_key_type(key, kind);
            if let Err(e) = shm.attach(AccessMode::ReadWrite) {
                say(format!("ATTACH {:?}", e.kind()));
                return 1;
            }
            match shm.try_lock() {
                Ok(Some(_)) => say("FREE"),
                Ok(None) => say("BUSY"),
                Err(e) => say(format!("ERROR {e}")),
            }
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

// ------------------------------------------------------------------ 1. the mode is the segment's

fn conflicting_mode_refused(kind: KeyType) -> Result<(), Failed> {
    for (made, asked) in [
        (LockMode::QtCompatible, LockMode::Fast),
        (LockMode::Fast, LockMode::QtCompatible),
    ] {
        let key = unique_key("modeclash");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut a = handle(&key, kind, made);
        a.create(4096, AccessMode::ReadWrite)?;
        let mut b = handle(&key, kind, asked);
        let err = b.attach(AccessMode::ReadWrite).err().ok_or(format!(
            "attach asking for {asked:?} on a {made:?} segment succeeded"
        ))?;
        check(err.kind() == SharedMemoryError::LockError, format!("{err}"))?;
        let text = err.to_string();
        check(
            text.contains("Fast") && text.contains("QtCompatible"),
            format!("the message names both modes: {text}"),
        )?;
        a.detach()?;
    }
    Ok(())
}

fn attachers_adopt_mode(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("adopt");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut a = handle(&key, kind, LockMode::Fast);
    a.create(64, AccessMode::ReadWrite)?;
    let guard = a.lock()?;
    // a handle that asks for nothing adopts the segment's mode (here: another process)
    let mut b = Peer::spawn("try-lock", &[&key, kind_name(kind)]);
    let line = b.line(T);
    b.wait(T);
    check(
        line == "BUSY",
        format!("an attacher with the default mode: {line}"),
    )?;
    drop(guard);
    let mut c = SharedMemory::with_key_type(&key, kind);
    c.attach(AccessMode::ReadWrite)?;
    check(
        c.lock_mode() == LockMode::Fast,
        format!("lock_mode() after attach: {:?}", c.lock_mode()),
    )?;
    drop(c);
    a.detach()?;
    Ok(())
}

/// `lock_state_path()` and `info().lock_state_file` name the segment's lock state as soon
/// as one exists, whichever handle made it, also on a handle that has not locked yet (a
/// Qt-compatible POSIX attacher finds it only at its first lock).
fn lock_state_named_before_first_lock(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("statepath");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut a = handle(&key, kind, LockMode::QtCompatible);
    a.create(64, AccessMode::ReadWrite)?;
    let mut b = SharedMemory::with_key_type(&key, kind);
    b.attach(AccessMode::ReadWrite)?;
    drop(a.lock()?); // the lock state exists from here on, made by a
    let made = a.lock_state_path().ok_or("the locker names no lock state")?;
    check(
        b.lock_state_path().as_ref() == Some(&made),
        format!(
            "attacher before its first lock: {:?}, locker: {made:?}",
            b.lock_state_path()
        ),
    )?;
    check(
        b.info()?.lock_state_file.as_ref() == Some(&made),
        "info().lock_state_file of the attacher",
    )?;
    let mut c = SharedMemory::with_key_type(&key, kind);
    c.attach(AccessMode::ReadOnly)?;
    check(
        c.lock_state_path().as_ref() == Some(&made),
        format!("a later attacher: {:?}", c.lock_state_path()),
    )?;
    drop((b, c));
    a.detach()?;
    Ok(())
}

/// The reproduction: safe code that got two live guards (two `&mut [u8]` to the
/// same pages) in one process by switching a handle's lock mode after attach.
fn no_mode_switch_while_attached(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("switch");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut a = handle(&key, kind, LockMode::QtCompatible);
    a.create(4096, AccessMode::ReadWrite)?;
    // exactly as reported: attach asking for Fast, then switch to QtCompatible
    let mut b = handle(&key, kind, LockMode::Fast);
    if b.attach(AccessMode::ReadWrite).is_ok() {
        let _ = b.set_lock_mode(LockMode::QtCompatible);
        two_guards(&a, &b)?;
    }
    // and a handle that adopted the mode, switched back and forth
    let mut c = SharedMemory::with_key_type(&key, kind);
    c.attach(AccessMode::ReadWrite)?;
    let _ = c.set_lock_mode(LockMode::Fast);
    let _ = c.set_lock_mode(LockMode::QtCompatible);
    let _ = c.set_lock_mode(LockMode::Fast);
    two_guards(&a, &c)
}

/// Thread 1 holds `a`'s lock; `b.try_lock()` on another thread must not succeed.
fn two_guards(a: &SharedMemory, b: &SharedMemory) -> Result<(), Failed> {
    let held = a.lock()?;
    let second = std::thread::scope(|s| s.spawn(|| b.try_lock().map(|g| g.is_some())).join());
    drop(held);
    check(
        matches!(second, Ok(Ok(false))),
        format!("a second guard while the first is held: {second:?}"),
    )
}

// ------------------------------------------------------------------ 2. never delete a mapped segment

fn mapped_segment_survives(mode: LockMode) -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("mapped");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, mode);
    shm.create(64, AccessMode::ReadWrite)?;
    let native = shm.native_ipc_key().clone();
    let mut other = Peer::spawn("raw-map", &[native.native()]);
    other.expect("MAPPED", T);
    shm.detach()?;
    let exists = std::path::Path::new(&shm_path(&native)).exists();
    other.finish();
    check(
        exists,
        "the last qshm detach unlinked a segment another process maps",
    )
}

/// Removes a POSIX semaphore a test made outside qshm.
struct RemoveSemaphore(NativeIpcKey);

impl Drop for RemoveSemaphore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(sem_path(&self.0));
    }
}

/// A process mapping a Fast segment the way Qt does (with Qt's semaphore of the key open)
/// keeps Fast-mode attachers out.
fn fast_refused_next_to_foreign_mapper() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("fastforeign");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::Fast);
    shm.create(64, AccessMode::ReadWrite)?;
    let native = shm.native_ipc_key().clone();
    let semaphore = shm.semaphore_key();
    let _remove_semaphore = RemoveSemaphore(semaphore.clone());
    let mut other = Peer::spawn("raw-map", &[native.native(), semaphore.native()]);
    other.expect("MAPPED", T);
    let mut late = handle(&key, kind, LockMode::Fast);
    let result = late.attach(AccessMode::ReadWrite);
    other.finish();
    let err = result
        .err()
        .ok_or("a Fast-mode attach went ahead while a non-qshm process maps the segment")?;
    check(err.kind() == SharedMemoryError::LockError, format!("{err}"))
}

fn fast_refused_on_foreign_segment() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("qtmade");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = SharedMemory::legacy_native_key(&key, kind);
    let mut maker = Peer::spawn("raw-create", &[native.native()]);
    maker.expect("CREATED", T);
    maker.wait(T);
    let mut fast = handle(&key, kind, LockMode::Fast);
    let err = fast
        .attach(AccessMode::ReadWrite)
        .err()
        .ok_or("Fast mode on a segment a non-qshm program created")?;
    check(err.kind() == SharedMemoryError::LockError, format!("{err}"))?;
    let mut plain = SharedMemory::with_key_type(&key, kind);
    plain.attach(AccessMode::ReadWrite)?;
    check(
        plain.lock_mode() == LockMode::QtCompatible,
        "a foreign segment is locked the Qt way",
    )?;
    drop(plain.lock()?);
    Ok(())
}

// ------------------------------------------------------------------ 3. lock state permissions

/// The lock belongs to those who may write the segment, whoever locked first: on a 0666
/// segment another user may attach read-only and lock for reading; on a 0644 one another
/// user may attach and read, but not lock (`PermissionDenied`): a reader able to write the
/// lock words could break the writers' exclusion or shrink what they map.
fn readers_can_lock(kind: KeyType) -> Result<(), Failed> {
    let Some(user) = TempUser::create("lock_rights_follow_write_rights") else {
        return Ok(());
    };
    for (perms, expected) in [(0o666, "READ 0"), (0o644, "LOCK PermissionDenied")] {
        let key = unique_key("shared");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = SharedMemory::with_key_type(&key, kind).with_permissions(perms);
        shm.create(64, AccessMode::ReadWrite)?;
        // the owner's second process, with a default (0600) handle, locks first
        let mut owner = Peer::spawn("lock-read-default", &[&key, kind_name(kind)]);
        owner.expect("LOCKED", T);
        owner.wait(T);
        let out = user.run("attach-lock-read", &[&key, kind_name(kind)]);
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        check(
            line.starts_with(expected),
            format!("another user on a {perms:04o} segment: {line}"),
        )?;
        shm.detach()?;
    }
    Ok(())
}

// ------------------------------------------------------------------ 5. exact sizes

fn exact_size(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("exact");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(100, AccessMode::ReadWrite)?;
    check(shm.size() == 100, format!("size() {}", shm.size()))?;
    check(
        shm.info()?.size == 100,
        format!("the OS object's size {}", shm.info()?.size),
    )?;
    check(shm.lock()?.len() == 100, "the guard's slice is the segment")?;
    let mut other = SharedMemory::with_key_type(&key, kind);
    other.attach(AccessMode::ReadOnly)?;
    check(other.size() == 100, format!("attach sees {}", other.size()))?;
    Ok(())
}

// ------------------------------------------------------------------ 6. birth time

fn birth_time() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("btime");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(64, AccessMode::ReadWrite)?;
    let created = shm.info()?.created_unix;
    std::thread::sleep(Duration::from_millis(1100));
    shm.lock()?[0] = 1; // tmpfs moves ctime and mtime on writes through a mapping
    let meta = std::fs::metadata(shm_path(shm.native_ipc_key()))?;
    let later = shm.info()?.created_unix;
    check(
        later == created,
        format!("created moved from {created} to {later} (ctime {})", meta.ctime()),
    )
}

// ------------------------------------------------------------------ 7. Qt's autotests

/// `qshm rm`, `ipcrm` or Qt's test clean-up remove the segment while qshm is attached: the
/// last detach still removes what belonged to it (lock state, Qt's semaphore).
fn removed_behind_our_back(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("behind");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    drop(shm.lock()?);
    let recorded = sysv_keys(&key, kind);
    let native = shm.native_ipc_key().clone();
    match kind {
        KeyType::PosixRealtime => std::fs::remove_file(shm_path(&native))?,
        KeyType::SystemV => {
            let k = SharedMemory::system_v_key(&native).ok_or("no key file")?;
            // SAFETY: plain System V calls removing the test's own segment.
            unsafe {
                let id = libc::shmget(k, 0, 0);
                check(id >= 0, "segment id")?;
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
            let _ = std::fs::remove_file(native.native());
        }
        _ => unreachable!("these tests use KINDS: System V and POSIX"),
    }
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn detach_unattached() -> Result<(), Failed> {
    let mut shm = SharedMemory::new(&unique_key("unattached"));
    check(shm.detach().is_err(), "detach of an unattached handle fails")?;
    check(
        shm.error() == SharedMemoryError::NoError,
        format!("as in Qt, it records nothing: {:?}", shm.error()),
    )
}

fn default_key_types() -> Result<(), Failed> {
    // Qt 6: QSharedMemory() holds QNativeIpcKey() of DefaultTypeForOs (POSIX on Linux);
    // setKey(key) derives the legacy key for legacyDefaultTypeForOs() (System V).
    let mut shm = SharedMemory::default();
    check(
        shm.native_ipc_key().kind() == KeyType::PosixRealtime,
        format!("default() type {:?}", shm.native_ipc_key().kind()),
    )?;
    shm.set_key("market")?;
    check(
        shm.native_ipc_key().kind() == KeyType::SystemV,
        format!("set_key type {:?}", shm.native_ipc_key().kind()),
    )?;
    let mut posix = SharedMemory::with_key_type("market", KeyType::PosixRealtime);
    posix.set_key("market2")?;
    check(
        posix.native_ipc_key().kind() == KeyType::SystemV,
        "set_key always derives Qt's legacy default type",
    )
}
