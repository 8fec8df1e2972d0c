//! The lock core trusts nothing another process can write (issue 18): each test pins one
//! finding of the review of the robust-mutex lock state, and each failed on that code.
//!
//! * Another user scribbles random and pointer-shaped values into every file of a
//!   segment it can open for writing (the lock state, Qt's semaphore, and System V
//!   semaphore values) while root locks and unlocks it: root never dies of a signal and
//!   never waits past its timeout; and a user who may only read the segment can write
//!   none of them.
//! * No 8-byte word of a lock file looks like an address of the process holding the lock.
//! * Root's `rm --stale` on another user's segment whose lock a dead process held takes no
//!   lock of theirs.
//! * A semaphore planted under root's key and swapped the instant root opens it (strace
//!   delays root there) is never used.
//! * Two handles of one process never both hold a lock, even without a lock state.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SystemSemaphore};
use support::*;

const T: Duration = Duration::from_secs(30);
/// How long the hostile writer and the locker run side by side.
const SCRIBBLE_MS: &str = "1000";
/// The locker's timeout per lock.
const LOCK_TIMEOUT_MS: u64 = 100;

fn main() {
    run_child_role(child_main);
    // without root there is no second user to be hostile, no mount and no strace of
    // another user's process: those trials are reported ignored (the unprivileged pass)
    let root = is_root();
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            let m = mode_name(mode);
            for (owner, perms) in [(Owner::Root, 0o644), (Owner::Root, 0o666), (Owner::User, 0o600)] {
                trials.push(
                    Trial::test(
                        format!(
                            "{k}::{m}::{}_{perms:o}_segment_scribbled_by_another_user_never_crashes_root",
                            owner.name()
                        ),
                        move || scribbled(kind, mode, owner, perms),
                    )
                    .with_ignored_flag(!root),
                );
            }
            trials.push(Trial::test(
                format!("{k}::{m}::no_word_of_a_lock_file_looks_like_an_address_of_its_holder"),
                move || no_addresses(kind, mode),
            ));
        }
    }
    trials.push(
        Trial::test(
            "posix::qt::a_planted_semaphore_swapped_at_open_is_never_used",
            planted_semaphore_swapped,
        )
        .with_ignored_flag(!root),
    );
    trials.push(
        Trial::test(
            "posix::qt::two_handles_of_one_process_never_both_hold_a_lock_without_lock_state",
            same_process_without_lock_state,
        )
        .with_ignored_flag(!root),
    );
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Root,
    User,
}

impl Owner {
    fn name(self) -> &'static str {
        match self {
            Owner::Root => "roots",
            Owner::User => "another_users",
        }
    }
}

/// Child roles.
fn child_main(role: &str, args: &[String]) -> i32 {
    match role {
        "create-hold" => {
            // args: key, kind, mode, perms (octal): create, say so, wait for a line
            let mut shm = SharedMemory::with_key_type(&args[0], parse_kind(&args[1]))
                .with_lock_mode(parse_mode(&args[2]))
                .with_permissions(u32::from_str_radix(&args[3], 8).unwrap());
            shm.create(4096, AccessMode::ReadWrite).expect("create");
            drop(shm.lock().expect("lock"));
            say(format!("FILES {}", lock_files(&shm).join(" ")));
            wait_for_stdin_line();
            0
        }
        "lock-loop" => {
            // args: key, kind, milliseconds: attach and lock with a timeout in a loop
            let mut shm = SharedMemory::with_key_type(&args[0], parse_kind(&args[1]));
            shm.attach(AccessMode::ReadWrite).expect("attach");
            say("ATTACHED");
            let until = Instant::now() + Duration::from_millis(args[2].parse().unwrap());
            let timeout = Duration::from_millis(LOCK_TIMEOUT_MS);
            let (mut locks, mut timeouts, mut errors, mut slowest) = (0, 0, 0, Duration::ZERO);
            while Instant::now() < until {
                let start = Instant::now();
                match shm.lock_timeout(timeout) {
                    Ok(Some(mut data)) => {
                        data[0] = data[0].wrapping_add(1);
                        locks += 1;
                    }
                    Ok(None) => timeouts += 1,
                    Err(_) => errors += 1,
                }
                slowest = slowest.max(start.elapsed());
            }
            say(format!(
                "STATS locks={locks} timeouts={timeouts} errors={errors} slowest_ms={}",
                slowest.as_millis()
            ));
            0
        }
        "scribble" => {
            // args: milliseconds, semid (or -1), files: write garbage into whatever it may
            let until = Instant::now() + Duration::from_millis(args[0].parse().unwrap());
            let semid: i32 = args[1].parse().unwrap();
            let (wrote, denied) = scribble(until, semid, &args[2..]);
            say(format!("SCRIBBLED wrote={wrote} denied={denied}"));
            0
        }
        "hold-scan" => {
            // args: key, kind: attach, take the lock, look at the lock files while holding it
            let mut shm = SharedMemory::with_key_type(&args[0], parse_kind(&args[1]));
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let guard = shm.lock().expect("lock");
            let found = address_like_words(&lock_files(&shm));
            drop(guard);
            say(format!("ADDRESSES {}", found.join(" ")));
            0
        }
        "rm-stale" => match qshm::admin::remove_stale(false) {
            Ok(removal) => {
                say(format!("REMOVED {}", removal.segments.len()));
                0
            }
            Err(e) => {
                say(format!("ERROR {e}"));
                0
            }
        },
        "sem-hold" => {
            // take a semaphore the way a Qt program does, and wait to be killed
            let key: NativeIpcKey = args[0].parse().unwrap();
            let sem = SystemSemaphore::with_native_key(key, 1, qshm::SemaphoreMode::Open).expect("open");
            sem.acquire().expect("acquire");
            say("HELD");
            wait_for_stdin_line();
            std::mem::forget(sem);
            0
        }
        "create-lock-hold" => {
            // args: key: create (POSIX, Qt-compatible); at a line, lock; at the next, end
            let mut shm = SharedMemory::with_key_type(&args[0], KeyType::PosixRealtime);
            shm.create(64, AccessMode::ReadWrite).expect("create");
            say("CREATED");
            wait_for_stdin_line();
            let guard = match shm.lock() {
                Ok(guard) => guard,
                Err(e) => {
                    say(format!("LOCK {:?} {e}", e.kind()));
                    wait_for_stdin_line();
                    return 0;
                }
            };
            say("LOCKED");
            wait_for_stdin_line();
            drop(guard);
            0
        }
        "sem-hold-open" => planted_semaphore(&args[0]),
        "double-holder" => double_holder(&args[0]),
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

/// The files qshm made for `shm`'s segment that a hostile writer would aim at: the lock
/// state and, POSIX, Qt's semaphore.
fn lock_files(shm: &SharedMemory) -> Vec<String> {
    let mut files: Vec<String> = shm
        .lock_state_path()
        .map(|p| p.display().to_string())
        .into_iter()
        .collect();
    if shm.native_ipc_key().kind() == KeyType::PosixRealtime {
        files.push(sem_path(&shm.semaphore_key()));
    }
    files
}

/// Pointer-shaped values: addresses in this process (stack, heap, code) and round ones
/// that glibc's robust list would follow.
fn pointer_shaped(rng: &mut u64) -> u64 {
    let local = 0u64;
    let heap = Box::new(0u8);
    let choices = [
        &local as *const u64 as u64,
        &*heap as *const u8 as u64,
        pointer_shaped as *const () as u64,
        0x1337_0008,
        0x7fff_ffff_f000,
        u64::MAX,
        0,
        1,
        u64::from(u32::MAX),
        0x8000_0000,
    ];
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let pick = choices[(*rng % choices.len() as u64) as usize];
    if *rng & 1 == 0 { pick } else { *rng }
}

/// Write random and pointer-shaped words at random places of `files` (every 8-byte word
/// of the first page, many times over), and set System V semaphore `semid` to random
/// values, until `until`. Returns (writes done, files or sets it may not write).
fn scribble(until: Instant, semid: i32, files: &[String]) -> (u64, u64) {
    use std::os::unix::fs::FileExt;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let (mut wrote, mut denied) = (0, 0);
    let mut opened = Vec::new();
    for path in files {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => opened.push(file),
            Err(_) => denied += 1,
        }
    }
    if semid >= 0 {
        // SAFETY: SETVAL takes the value as the variadic int argument.
        if unsafe { libc::semctl(semid, 0, libc::SETVAL, 1) } != 0 {
            denied += 1;
        }
    }
    while Instant::now() < until {
        for file in &opened {
            for offset in (0..4096u64).step_by(8) {
                let value = pointer_shaped(&mut rng);
                if file.write_all_at(&value.to_ne_bytes(), offset).is_ok() {
                    wrote += 1;
                }
            }
        }
        if semid >= 0 {
            let value = (pointer_shaped(&mut rng) % 3) as libc::c_int;
            // SAFETY: as above.
            if unsafe { libc::semctl(semid, 0, libc::SETVAL, value) } == 0 {
                wrote += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    (wrote, denied)
}

/// The 8-byte words of `files` that lie in one of this process's mappings (hex).
fn address_like_words(files: &[String]) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect();
    let mut found = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap_or_default();
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let value = u64::from_ne_bytes(word.try_into().unwrap());
            if value != 0 && ranges.iter().any(|&(s, e)| (s..e).contains(&value)) {
                found.push(format!("{path}@{}:{value:#x}", 8 * i));
            }
        }
    }
    found
}

/// The System V semaphore set of a segment key's lock, if it has one.
fn semid_of(key: &str, kind: KeyType) -> i32 {
    if kind != KeyType::SystemV {
        return -1;
    }
    let sem = SharedMemory::with_key_type(key, kind).semaphore_key();
    let Some(numeric) = SharedMemory::system_v_key(&sem) else {
        return -1;
    };
    // SAFETY: semget takes plain values.
    unsafe { libc::semget(numeric, 0, 0) }
}

/// A locker whose lock words another user scribbles over: it must neither die of a signal
/// nor wait past its timeout. On a 0644 segment of root's, the other user may write
/// nothing (it may only read the segment).
fn scribbled(kind: KeyType, mode: LockMode, owner: Owner, perms: u32) -> Result<(), Failed> {
    let Some(user) = TempUser::create("segment_scribbled_by_another_user") else {
        return Ok(());
    };
    let key = unique_key("scribble");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mode_arg = mode_name(mode);
    let perms_arg = format!("{perms:o}");
    let mut maker = match owner {
        Owner::Root => Peer::spawn("create-hold", &[&key, kind_name(kind), mode_arg, &perms_arg]),
        Owner::User => user.spawn("create-hold", &[&key, kind_name(kind), mode_arg, &perms_arg]),
    };
    let files: Vec<String> = maker
        .expect("FILES", T)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    check(!files.is_empty(), "the lock files")?;
    let semid = semid_of(&key, kind).to_string();
    let mut scribble_args = vec![SCRIBBLE_MS, semid.as_str()];
    scribble_args.extend(files.iter().map(String::as_str));
    // root locks (a segment of its own, or another user's, explicitly) while the other
    // user scribbles
    let mut locker = Peer::spawn("lock-loop", &[&key, kind_name(kind), SCRIBBLE_MS]);
    locker.expect("ATTACHED", T);
    let mut scribbler = user.spawn("scribble", &scribble_args);
    let stats = locker.expect("STATS", T);
    let status = locker.wait(T);
    let scribbled = scribbler.expect("SCRIBBLED", T);
    scribbler.wait(T);
    check(
        status.signal().is_none() && status.success(),
        format!("root's locker died: {status:?} ({stats}; the other user {scribbled})"),
    )?;
    let slowest: u64 = stats
        .rsplit("slowest_ms=")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    check(
        slowest <= LOCK_TIMEOUT_MS + 1000,
        format!("a lock waited past its timeout: {stats}"),
    )?;
    if owner == Owner::Root && perms == 0o644 {
        check(
            scribbled.starts_with("wrote=0 "),
            format!("a reader wrote into root's lock files: {scribbled}"),
        )?;
    }
    if owner == Owner::User {
        // root's clean-up of the other user's segment, whose lock words are garbage now
        let mut cleaner = Peer::spawn("rm-stale", &[]);
        let said = cleaner.line(T);
        let status = cleaner.wait(T);
        check(
            status.signal().is_none(),
            format!("root's rm --stale died on another user's lock: {status:?} {said}"),
        )?;
    }
    maker.send("done");
    maker.wait(T);
    Ok(())
}

/// The lock files of a held lock hold no address of the holder (glibc's robust mutexes
/// kept the holder's list links, pointers into its memory, in the lock state).
fn no_addresses(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let key = unique_key("addresses");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind).with_lock_mode(mode);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut holder = Peer::spawn("hold-scan", &[&key, kind_name(kind)]);
    let found = holder.expect("ADDRESSES", T);
    holder.wait(T);
    check(found.is_empty(), format!("address-like words: {found}"))
}

/// Another user plants a 0666 semaphore file under the key of root's segment and unlinks it
/// the instant root opens it (strace holds root right after that `open`): root must never
/// lock through it. Before, root made the semaphore only at its first lock: it
/// `sem_open`ed the planted file, then checked the owner of whatever the name meant by
/// then, found nothing, and used the planted semaphore. Now the semaphore is made with
/// the segment (the name is taken before anyone can plant), and any semaphore is checked
/// on the descriptor that is mapped.
fn planted_semaphore_swapped() -> Result<(), Failed> {
    let Some(user) = TempUser::create("a_planted_semaphore_swapped_at_open_is_never_used") else {
        return Ok(());
    };
    if !strace_available("a_planted_semaphore_swapped_at_open_is_never_used") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("planted");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let sem_key = SharedMemory::with_key_type(&key, kind).semaphore_key();
    let sem_file = sem_path(&sem_key);
    let exe = std::env::current_exe()?;
    let mut root = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &sem_file])
            .args(["-e", "trace=openat", "-e", "inject=openat:delay_exit=700000"])
            .arg(exe)
            .arg(&key)
            .env(CHILD_ENV, "create-lock-hold"),
    );
    root.expect("CREATED", T);
    // the other user plants a semaphore (value 1, 0666) and keeps it open
    let mut planted = user.spawn("sem-hold-open", &[&sem_key.to_string()]);
    let plant = planted.line(T);
    root.send("lock");
    // swap: as soon as root has the planted file open, its name goes
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut swapped = false;
    while plant == "PLANTED" && Instant::now() < deadline {
        if root_has_open(root.child.id(), &sem_file) {
            planted.send("unlink");
            swapped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let said = root.line(T);
    // while root holds its lock (if it got one), the planted semaphore must be untouched
    let value = if plant == "PLANTED" {
        planted.send("value");
        planted.expect("VALUE", T)
    } else {
        "1".to_owned()
    };
    root.send("done");
    root.wait(T);
    planted.send("done");
    planted.wait(T);
    check(
        value == "1",
        format!(
            "root locked through the planted semaphore (value {value}; root said {said}; swapped {swapped})"
        ),
    )?;
    check(
        said == "LOCKED",
        format!("root's own lock: {said} (the plant: {plant})"),
    )
}

/// The `sem-hold-open` role: plant a 0666 semaphore (value 1) under a POSIX semaphore key
/// with glibc's `sem_open`, as any program could, keep it open, and answer: `unlink` (its
/// name goes), `value` (print it), anything else ends.
fn planted_semaphore(key: &str) -> i32 {
    let key: NativeIpcKey = key.parse().unwrap();
    let sem = match sem_open_create(key.native(), true, 0o666) {
        Ok(sem) => sem,
        Err(e) => {
            say(format!("NOT PLANTED {e}"));
            return 0;
        }
    };
    let file = sem_path(&key);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    say("PLANTED");
    loop {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        match line.trim() {
            "unlink" => {
                let _ = std::fs::remove_file(&file);
            }
            "value" => {
                let mut v = 0;
                // SAFETY: sem is a live semaphore handle and v a valid int to write.
                unsafe { libc::sem_getvalue(sem, &mut v) };
                say(format!("VALUE {v}"));
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_file(&file);
    0
}

/// Whether a process (or its children) has `path` open (looked up in `/proc/*/fd`).
fn root_has_open(pid: u32, path: &str) -> bool {
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for p in pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find(|l| l.starts_with("PPid:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok());
        if p != pid && ppid != Some(pid) {
            continue;
        }
        for fd in std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some(path)) {
                return true;
            }
        }
    }
    false
}

/// In a private 1 MiB `/dev/shm`: a segment another program made fills it, so that no
/// lock state can be added. Two handles of one process lock it: the second must wait
/// while the first holds the lock (before, it declared the holder dead after two seconds
/// and took the lock too).
fn same_process_without_lock_state() -> Result<(), Failed> {
    let key = unique_key("bare");
    let Some(out) = run_in_small_dev_shm(
        "two_handles_of_one_process_never_both_hold_a_lock_without_lock_state",
        "1m",
        "double-holder",
        &[&key],
    ) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check(
        out.status.success() && text.contains("SECOND waited"),
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The `double-holder` role, in a 1 MiB `/dev/shm`.
fn double_holder(key: &str) -> i32 {
    let native = SharedMemory::legacy_native_key(key, KeyType::PosixRealtime);
    let path = std::ffi::CString::new(format!("/dev/shm{}", native.native())).unwrap();
    // a segment "another program" made, leaving room for a semaphore but not a lock state
    // SAFETY: path is NUL-terminated; a new file.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600) };
    assert!(fd >= 0);
    // SAFETY: fd is ours.
    assert_eq!(unsafe { libc::posix_fallocate(fd, 0, 1024 * 1024 - 8192) }, 0);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    let mut first = SharedMemory::with_native_key(native.clone());
    first.attach(AccessMode::ReadWrite).expect("attach");
    if first.lock_state_path().is_some() {
        say("FIRST has a lock state: the test needs a fuller /dev/shm");
        return 1;
    }
    let mut second = SharedMemory::with_native_key(native.clone());
    second.attach(AccessMode::ReadWrite).expect("attach");
    let guard = first.lock().expect("first lock");
    let started = Instant::now();
    let got = std::thread::scope(|s| {
        s.spawn(|| second.lock_timeout(Duration::from_secs(4)).map(|g| g.is_some()))
            .join()
            .expect("thread")
    });
    drop(guard);
    match got {
        Ok(false) => say(format!("SECOND waited {:?}", started.elapsed())),
        Ok(true) => say(format!("SECOND took the lock after {:?}", started.elapsed())),
        Err(e) => say(format!("SECOND error {e}")),
    }
    drop((first, second));
    // SAFETY: path is NUL-terminated.
    unsafe { libc::unlink(path.as_ptr()) };
    0
}
