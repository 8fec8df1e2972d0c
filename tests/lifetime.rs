//! Lifetime and visibility as ordinary users, containers and every Qt order see them
//! (issue 19): each test pins one finding of the review of the lazy lock objects and of the
//! `/proc`-based liveness, and failed on that code.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory};
use support::actor;
use support::qt::find_qt_python;
use support::*;

/// Trials that clean up machine-wide (`rm --stale`) run alone: trials that leave a stale
/// segment for a moment on purpose (a process killed at a chosen point, then a look at
/// what it left) would otherwise see it removed by them, as the owner's `rm --stale`
/// rightly does.
static MACHINE_WIDE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A trial that runs beside other trials, never beside a machine-wide clean-up.
fn beside_cleanups(
    name: impl Into<String>,
    test: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    Trial::test(name, move || {
        let _beside = MACHINE_WIDE.read().unwrap_or_else(|e| e.into_inner());
        test()
    })
}

const T: Duration = Duration::from_secs(30);
const REPLY: Duration = Duration::from_secs(10);

fn main() {
    run_child_role(child_main);
    let python = find_qt_python();
    let mut trials = Vec::new();
    trials.push(with_qt(
        "posix::a_qt_process_that_attached_first_and_left_never_splits_the_lock".into(),
        qt_attached_first_and_left,
        &python,
    ));
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(with_qt(
            format!("{k}::a_0666_segment_qt_locked_first_stays_lockable_by_another_user"),
            move |py| qt_locked_first(py, kind),
            &python,
        ));
        trials.push(with_qt(
            format!("{k}::a_qt_waiter_on_a_dead_qshm_holder_goes_on_as_the_readme_says"),
            move |py| qt_waits_on_dead_qshm_holder(py, kind),
            &python,
        ));
        trials.push(beside_cleanups(
            format!("{k}::another_user_locking_first_never_locks_out_the_owner"),
            move || other_user_locked_first(kind),
        ));
        trials.push(beside_cleanups(
            format!("{k}::the_first_lock_after_reclaiming_a_crashed_segment_does_not_wait"),
            move || first_lock_after_reclaim(kind),
        ));
        trials.push(with_qt(
            format!("{k}::qshm_extras_left_when_qt_detaches_last_are_listed_and_cleaned"),
            move |py| qt_detaches_last(py, kind),
            &python,
        ));
        trials.push(beside_cleanups(
            format!("{k}::racing_creates_leave_nothing_as_root_as_a_user_and_in_a_pid_namespace"),
            move || racing_creates(kind),
        ));
        trials.push(with_qt(
            format!("{k}::a_living_qt_holder_in_another_pid_namespace_keeps_the_lock"),
            move |py| qt_holder_across_pid_namespaces(py, kind),
            &python,
        ));
        trials.push(with_qt(
            format!("{k}::fast::an_attacher_in_a_container_never_joins_a_qt_mapper_it_cannot_see"),
            move |py| fast_attacher_in_container_beside_qt(py, kind),
            &python,
        ));
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            trials.push(beside_cleanups(
                format!("{k}::{}::one_lock_across_pid_namespaces", mode_name(mode)),
                move || one_lock_across_pid_namespaces(kind, mode),
            ));
        }
    }
    trials.push(with_qt(
        "posix::qt::a_qt_attach_before_the_segment_then_its_exit_never_splits_the_lock".into(),
        qt_attach_before_segment_then_exit,
        &python,
    ));
    trials.push(beside_cleanups(
        "posix::a_full_dev_shm_after_create_never_stops_the_lock",
        full_dev_shm_after_create,
    ));
    trials.push(with_qt(
        "systemv::a_qt_segment_whose_creator_was_killed_is_attached_and_read".into(),
        qt_creator_killed,
        &python,
    ));
    trials.push(beside_cleanups(
        "systemv::a_native_key_segment_removed_behind_qshms_back_leaves_no_semaphore_set",
        removed_behind_back_leaves_no_set,
    ));
    trials.push(beside_cleanups(
        "systemv::a_set_an_attach_made_goes_once_another_program_removes_the_segment_and_key_file",
        set_made_by_attach_goes_with_foreign_segment,
    ));
    trials.push(Trial::test(
        "posix::roots_rm_stale_removes_another_users_stale_segment",
        root_removes_other_users_stale,
    ));
    trials.push(Trial::test(
        "posix::rm_stale_judges_files_by_qshms_evidence_not_mode_bits",
        mode_bits_are_no_evidence,
    ));
    trials.push(Trial::test(
        "posix::qt::a_semaphores_second_name_a_killed_creator_left_without_its_lock_state_goes_with_rm_stale",
        || second_name_without_lock_state_is_swept(true),
    ));
    trials.push(Trial::test(
        "posix::qt::a_semaphores_second_name_a_killed_creator_left_without_its_lock_state_goes_at_the_next_create",
        || second_name_without_lock_state_is_swept(false),
    ));
    trials.push(beside_cleanups(
        "posix::qt::a_create_racing_the_last_detach_never_splits_the_lock",
        create_racing_last_detach,
    ));
    trials.push(beside_cleanups(
        "systemv::qt::a_create_racing_a_detach_after_removal_behind_its_back_never_splits_the_lock",
        create_racing_detach_after_removal,
    ));
    for mode in [LockMode::QtCompatible, LockMode::Fast] {
        trials.push(beside_cleanups(
            format!(
                "posix::{}::a_creator_killed_before_it_names_the_segment_leaves_nothing_after_the_next_create",
                mode_name(mode)
            ),
            move || creator_killed_before_naming_segment(mode),
        ));
    }
    trials.push(beside_cleanups(
        "posix::fast::a_last_detacher_killed_as_it_destroys_never_leaves_the_segment_without_its_lock",
        destroyer_killed_mid_destroy,
    ));
    trials.push(beside_cleanups(
        "systemv::fast::a_last_detacher_killed_as_it_destroys_never_leaves_the_segment_without_its_lock",
        sysv_destroyer_killed_mid_destroy,
    ));
    trials.push(beside_cleanups(
        "posix::fast::a_create_sweeping_lock_states_never_takes_one_from_a_named_segment",
        sweep_racing_a_killed_creator,
    ));
    trials.push(beside_cleanups(
        "posix::fast::a_creator_killed_as_it_names_the_segment_never_leaves_it_without_its_lock",
        creator_killed_naming_segment,
    ));
    trials.push(beside_cleanups(
        "posix::a_fork_childs_mapping_keeps_the_segment",
        fork_child_keeps_segment,
    ));
    for mode in [LockMode::QtCompatible, LockMode::Fast] {
        trials.push(beside_cleanups(
            format!(
                "systemv::{}::a_removed_segment_freed_as_a_fork_child_leaves_is_cleaned_by_the_last_detach",
                mode_name(mode)
            ),
            move || removed_segment_freed_by_fork_child(mode),
        ));
    }
    trials.push(
        beside_cleanups(
            "systemv::ls_in_a_pid_namespace_without_its_own_proc_never_calls_a_living_users_semaphore_an_orphan",
            living_semaphore_user_behind_a_foreign_proc,
        )
        .with_ignored_flag(!is_root()),
    );
    trials.push(beside_cleanups(
        "posix::attachments_are_counted_in_one_consistent_read",
        consistent_attachment_counts,
    ));
    trials.push(beside_cleanups(
        "posix::a_mapper_in_another_pid_namespace_keeps_the_segment",
        mapper_in_other_pid_namespace,
    ));
    trials.push(Trial::test(
        "posix::rm_stale_in_a_container_keeps_a_segment_the_host_maps_cleaned",
        rm_stale_in_container_keeps_host_mapping,
    ));
    trials.push(Trial::test(
        "posix::another_users_lease_never_stalls_ls_rm_or_attach",
        foreign_lease_never_stalls,
    ));
    run_suite(&Arguments::from_args(), trials, Passes::AsUserAndInPidNamespace);
}

/// A trial that needs real Qt 6 (`python`): reported ignored without it. Trials whose name
/// says "cleaned" run `rm --stale` themselves: alone, not beside other trials' clean-ups.
fn with_qt(
    name: String,
    f: impl Fn(&Path) -> Result<(), Failed> + Send + 'static,
    python: &Option<PathBuf>,
) -> Trial {
    let py = python.clone();
    let missing = py.is_none();
    let run = move || match &py {
        Some(py) => f(py),
        None => Ok(()),
    };
    let trial = if name.ends_with("_cleaned") {
        Trial::test(name, run)
    } else {
        beside_cleanups(name, run)
    };
    trial.with_ignored_flag(missing)
}

/// The state `qshm ls` gives the segment of native key `native`, if it lists it.
fn scanned_state(native: &str) -> Result<Option<qshm::admin::State>, qshm::Error> {
    Ok(qshm::admin::scan()?
        .segments
        .into_iter()
        .find(|s| s.native_key.as_ref().is_some_and(|k| k.native() == native))
        .map(|s| s.state))
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn child_main(role: &str, args: &[String]) -> i32 {
    match role {
        "actor" => actor::qshm_actor(args),
        "raw-map" => {
            // map a POSIX segment file the way a program that is not qshm does, until a line
            let path = std::ffi::CString::new(args[0].as_str()).unwrap();
            // SAFETY: path is NUL-terminated.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            assert!(fd >= 0, "open {:?}", args[0]);
            // SAFETY: a fresh shared mapping of one page.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            // SAFETY: fd is ours; the mapping keeps the file.
            unsafe { libc::close(fd) };
            assert_ne!(ptr, libc::MAP_FAILED);
            say("MAPPED");
            wait_for_stdin_line();
            0
        }
        "rm-stale" => {
            // qshm ls, then rm --stale: say the state of the segment of native key args[0],
            // then whether it was removed
            let state = scanned_state(&args[0]).ok().flatten();
            say(format!("STATE {state:?}"));
            match qshm::admin::remove_stale(true) {
                Ok(removal) => {
                    let removed = removal
                        .segments
                        .iter()
                        .any(|s| s.native_key.as_ref().is_some_and(|k| k.native() == args[0]));
                    say(if removed { "REMOVED" } else { "KEPT" });
                    0
                }
                Err(e) => {
                    say(format!("ERR {e}"));
                    1
                }
            }
        }
        "lease-hold" => {
            // make a file and hold a write lease on it for ever (another user's program)
            let path = std::ffi::CString::new(args[0].as_str()).unwrap();
            // SAFETY: path is NUL-terminated.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644) };
            assert!(fd >= 0);
            // SAFETY: fd is ours.
            unsafe { libc::ftruncate(fd, 4096) };
            // SAFETY: F_SETLEASE takes an int; SIGIO is ignored so a break does not kill us.
            let ok = unsafe {
                libc::signal(libc::SIGIO, libc::SIG_IGN);
                libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK)
            };
            say(if ok == 0 { "LEASED" } else { "NOLEASE" });
            wait_for_stdin_line();
            0
        }
        "racer" => racer(&args[0], parse_kind(&args[1]), args[2].parse().unwrap()),
        "create-die" => {
            // create and keep the segment until killed
            let mut shm = SharedMemory::with_key_type(&args[0], parse_kind(&args[1]));
            shm.create(64, AccessMode::ReadWrite).expect("create");
            say("CREATED");
            wait_for_stdin_line();
            0
        }
        "create-fast-hold" | "create-qt-hold" => {
            // say who we are, create a segment, then hold it until a line
            say(format!("PID {}", std::process::id()));
            let mode = if role == "create-qt-hold" {
                LockMode::QtCompatible
            } else {
                LockMode::Fast
            };
            let mut shm = SharedMemory::with_key_type(&args[0], KeyType::PosixRealtime).with_lock_mode(mode);
            shm.create(64, AccessMode::ReadWrite).expect("create");
            say("CREATED");
            wait_for_stdin_line();
            0
        }
        "create-fast-detach" => {
            // create a Fast segment, then on a line detach as its last user
            say(format!("PID {}", std::process::id()));
            let kind = args.get(1).map_or(KeyType::PosixRealtime, |k| parse_kind(k));
            let mut shm = SharedMemory::with_key_type(&args[0], kind).with_lock_mode(LockMode::Fast);
            shm.create(64, AccessMode::ReadWrite).expect("create");
            say("CREATED");
            wait_for_stdin_line();
            shm.detach().expect("detach");
            say("DETACHED");
            0
        }
        "create-fast-report" => {
            // say who we are, create a Fast segment, say how that went, wait for a line
            say(format!("PID {}", std::process::id()));
            let mut shm =
                SharedMemory::with_key_type(&args[0], KeyType::PosixRealtime).with_lock_mode(LockMode::Fast);
            let made = shm.create(64, AccessMode::ReadWrite);
            say(format!("MADE {:?}", made.err().map(|e| e.kind())));
            wait_for_stdin_line();
            0
        }
        "create-detach" => {
            // create (Qt-compatible), then on a line detach as the last user
            let kind = args.get(1).map_or(KeyType::PosixRealtime, |k| parse_kind(k));
            let mut shm = SharedMemory::with_key_type(&args[0], kind);
            shm.create(64, AccessMode::ReadWrite).expect("create");
            say("CREATED");
            wait_for_stdin_line();
            shm.detach().expect("detach");
            say("DETACHED");
            0
        }
        "fork-keeps" => fork_keeps(&args[0]),
        "scan-without-own-proc" => scan_without_own_proc(&args[0]),
        "semaphore-user" => {
            // open the System V semaphore of native key args[0], take and give a unit (so
            // that this process is its last user), say so, and wait
            let key = NativeIpcKey::new(args[0].clone(), KeyType::SystemV);
            let sem = qshm::SystemSemaphore::with_native_key(key, 1, qshm::SemaphoreMode::Open)
                .expect("open the semaphore");
            sem.acquire().expect("acquire");
            sem.release(1).expect("release");
            say(format!("USED {}", std::process::id()));
            wait_for_stdin_line();
            0
        }
        "fork-then-detach-removed" => fork_then_detach_removed(&args[0], parse_mode(&args[1])),
        "fill-and-lock" => fill_and_lock(&args[0]),
        other => {
            eprintln!("unknown role {other}");
            2
        }
    }
}

/// 4(a): qshm creates; a Qt process attaches (without locking), qshm locks, the Qt process
/// leaves; another Qt process attaches; qshm and Qt add to a counter under their locks at
/// once: exact, ten rounds. (Before, the first Qt process made Qt's semaphore at its
/// attach, qshm opened it at its first lock, and the Qt process unlinked it at its exit:
/// the next Qt process made another one. Two semaphores, lost increments.)
fn qt_attached_first_and_left(py: &Path) -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    for round in 0..10 {
        let key = unique_key("qtfirst");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut a = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("qshm actor")?;
        check(
            actor::ask(&mut a, "create 64", REPLY).as_deref() == Some("OK"),
            "create",
        )?;
        let mut first = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
        check(
            actor::ask(&mut first, "attach", REPLY).as_deref() == Some("OK"),
            "Qt attaches",
        )?;
        check(
            actor::ask(&mut a, "lock", REPLY)
                .unwrap_or_default()
                .starts_with("OK"),
            "qshm locks",
        )?;
        first.send("exit");
        first.wait(T);
        let mut second = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
        check(
            actor::ask(&mut second, "attach", REPLY).as_deref() == Some("OK"),
            "Qt attaches",
        )?;
        let before = actor::read(&mut a, REPLY).ok_or("read")?;
        a.send("burst 2000");
        second.send("burst 2000");
        for peer in [&mut a, &mut second] {
            let reply = peer.try_line(T).unwrap_or_default();
            check(reply.starts_with("OK"), format!("burst: {reply}"))?;
        }
        let value = actor::read(&mut a, REPLY).ok_or("read")? - before;
        check(
            value == 4000,
            format!("round {round}: 4000 increments made {value}"),
        )?;
        for mut peer in [a, second] {
            peer.send("exit");
            peer.wait(T);
        }
    }
    Ok(())
}

/// 4(b): a Qt process locks a 0666 qshm segment first; another user's qshm process can
/// still lock it. (Before, Qt made the semaphore at its first lock, 0600.)
fn qt_locked_first(py: &Path, kind: KeyType) -> Result<(), Failed> {
    let Some(user) = TempUser::create("a_0666_segment_qt_locked_first") else {
        return Ok(());
    };
    let key = unique_key("qtlockfirst");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind).with_permissions(0o666);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
    check(
        actor::ask(&mut qt, "attach", REPLY).as_deref() == Some("OK"),
        "Qt attaches",
    )?;
    check(
        actor::ask(&mut qt, "lock", REPLY)
            .unwrap_or_default()
            .starts_with("OK"),
        "Qt locks",
    )?;
    let mut other =
        actor::qshm(Some(&user), &key, kind, LockMode::QtCompatible, REPLY).ok_or("user actor")?;
    check(
        actor::ask(&mut other, "attach", REPLY).as_deref() == Some("OK"),
        "the user attaches",
    )?;
    let reply = actor::ask(&mut other, "lock", REPLY).unwrap_or_default();
    check(
        reply.starts_with("OK"),
        format!("another user after Qt's first lock: {reply}"),
    )?;
    for mut peer in [qt, other] {
        peer.send("exit");
        peer.wait(T);
    }
    shm.detach()?;
    Ok(())
}

/// A qshm process dies holding the Qt-compatible lock while a Qt process waits in `lock()`
/// (README, "Dead holders"). System V: the kernel undoes the dead holder's unit and Qt goes
/// on by itself. POSIX: `sem_wait` knows no labels, so Qt waits until a qshm process locks
/// the segment, which takes the dead holder's unit over and gives it back, and then goes on.
fn qt_waits_on_dead_qshm_holder(py: &Path, kind: KeyType) -> Result<(), Failed> {
    const STILL: Duration = Duration::from_millis(700);
    let key = unique_key("qtwaitsdead");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut holder = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("qshm actor")?;
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
    // both attach first: Qt's attach() takes the lock too
    for (peer, who) in [(&mut holder, "the qshm holder"), (&mut qt, "Qt")] {
        check(
            actor::ask(peer, "attach", REPLY).as_deref() == Some("OK"),
            format!("{who} attaches"),
        )?;
    }
    check(
        actor::ask(&mut holder, "hold", REPLY).as_deref() == Some("HELD"),
        "the qshm actor holds the lock",
    )?;
    qt.send("lock");
    check(qt.try_line(STILL).is_none(), "Qt waits while the holder lives")?;
    holder.kill9();
    if kind == KeyType::PosixRealtime {
        let early = qt.try_line(STILL);
        check(
            early.is_none(),
            format!("POSIX: Qt went on before any qshm lock: {early:?}"),
        )?;
        let guard = shm
            .lock_timeout(REPLY)?
            .ok_or("qshm did not take the dead holder's lock over")?;
        check(guard.previous_owner_died(), "qshm is told of the dead holder")?;
        drop(guard);
    }
    let reply = qt.try_line(REPLY).unwrap_or_default();
    check(
        reply.starts_with("OK"),
        format!("Qt's lock after the holder died: {reply:?}"),
    )?;
    let value = u64::from_le_bytes(shm.lock()?[..8].try_into()?);
    check(value == 1, format!("Qt's increment: counter {value}, expected 1"))?;
    qt.send("exit");
    qt.wait(T);
    shm.detach()?;
    Ok(())
}

/// 4(c): another user locks a 0666 segment first; the owner's other processes still lock
/// it. (Before, the other user made Qt's semaphore, and the owner's qshm refused it.)
fn other_user_locked_first(kind: KeyType) -> Result<(), Failed> {
    let Some(user) = TempUser::create("another_user_locking_first") else {
        return Ok(());
    };
    let key = unique_key("userfirst");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind).with_permissions(0o666);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut other =
        actor::qshm(Some(&user), &key, kind, LockMode::QtCompatible, REPLY).ok_or("user actor")?;
    check(
        actor::ask(&mut other, "attach", REPLY).as_deref() == Some("OK"),
        "the user attaches",
    )?;
    check(
        actor::ask(&mut other, "lock", REPLY)
            .unwrap_or_default()
            .starts_with("OK"),
        "the user locks",
    )?;
    let mut owner = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("actor")?;
    check(
        actor::ask(&mut owner, "attach", REPLY).as_deref() == Some("OK"),
        "the owner attaches",
    )?;
    let reply = actor::ask(&mut owner, "lock", REPLY).unwrap_or_default();
    check(
        reply.starts_with("OK"),
        format!("the owner after another user's first lock: {reply}"),
    )?;
    for mut peer in [other, owner] {
        peer.send("exit");
        peer.wait(T);
    }
    shm.detach()?;
    Ok(())
}

/// 4(e): a holder is killed holding the lock; the next `create` reclaims the stale
/// segment, and its first lock does not wait for the dead holder (before: about 2 s).
fn first_lock_after_reclaim(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("reclaim");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut holder = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("actor")?;
    check(
        actor::ask(&mut holder, "create 64", REPLY).as_deref() == Some("OK"),
        "create",
    )?;
    check(
        actor::ask(&mut holder, "hold", REPLY).as_deref() == Some("HELD"),
        "hold",
    )?;
    holder.kill9();
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(64, AccessMode::ReadWrite)?;
    let started = Instant::now();
    let guard = shm.lock_timeout(Duration::from_secs(5))?.ok_or("no lock")?;
    let took = started.elapsed();
    drop(guard);
    check(
        took < Duration::from_millis(500),
        format!("the first lock took {took:?}"),
    )
}

/// 4(d): in a private 1 MiB `/dev/shm`, a Qt-compatible POSIX segment is created, then
/// `/dev/shm` fills up: its lock keeps working (before, the lock state and the semaphore
/// came at the first lock, and every lock failed with ENOSPC).
fn full_dev_shm_after_create() -> Result<(), Failed> {
    let key = unique_key("fullafter");
    let Some(out) = run_in_small_dev_shm("a_full_dev_shm_after_create", "1m", "fill-and-lock", &[&key])
    else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check(
        out.status.success() && text.contains("LOCKED 100"),
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

fn fill_and_lock(key: &str) -> i32 {
    let mut shm = SharedMemory::with_key_type(key, KeyType::PosixRealtime);
    shm.create(4096, AccessMode::ReadWrite).expect("create");
    // fill what is left of /dev/shm
    let filler = "/dev/shm/qshm-test-filler";
    let file = std::fs::File::create(filler).expect("filler");
    let mut size = 0u64;
    for step in [1 << 20, 64 << 10, 4 << 10] {
        use std::os::fd::AsRawFd;
        // SAFETY: the file is ours; posix_fallocate only reserves its pages.
        while unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, (size + step) as libc::off_t) } == 0 {
            size += step;
        }
    }
    let mut locked = 0;
    for _ in 0..100 {
        match shm.lock() {
            Ok(mut data) => {
                data[0] = data[0].wrapping_add(1);
                locked += 1;
            }
            Err(e) => {
                say(format!("LOCK {e}"));
                break;
            }
        }
    }
    say(format!("LOCKED {locked} (filler {size} bytes)"));
    let _ = std::fs::remove_file(filler);
    0
}

/// 5(a): a Qt process creates a System V segment, writes, and is killed: nobody is
/// attached, its data is intact, and qshm attaches and reads it as a Qt process would
/// (before: "its creator died while making it").
fn qt_creator_killed(py: &Path) -> Result<(), Failed> {
    let kind = KeyType::SystemV;
    let key = unique_key("qtkilled");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
    check(
        actor::ask(&mut qt, "create 64", REPLY).as_deref() == Some("OK"),
        "Qt creates",
    )?;
    check(
        actor::ask(&mut qt, "burst 3", REPLY)
            .unwrap_or_default()
            .starts_with("OK"),
        "Qt writes",
    )?;
    qt.kill9();
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.attach(AccessMode::ReadOnly)?;
    let value = u64::from_le_bytes(shm.lock_read()?[..8].try_into()?);
    check(value == 3, format!("read {value}"))?;
    shm.detach()?;
    Ok(())
}

/// 5(b): a native-key segment and its key file are removed behind qshm's back (Qt's own
/// test fixture does this); qshm's last detach still removes the semaphore set it used,
/// by its id (before: one set leaked per such segment).
fn removed_behind_back_leaves_no_set() -> Result<(), Failed> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("qshm-test-behind-{}", std::process::id()));
    let native = NativeIpcKey::new(path.to_str().unwrap(), KeyType::SystemV);
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&native);
    let mut shm = SharedMemory::with_native_key(native.clone());
    shm.create(64, AccessMode::ReadWrite)?;
    drop(shm.lock()?);
    let numeric = SharedMemory::system_v_key(&native).ok_or("numeric key")?;
    // SAFETY: semget and shmget take plain values.
    let (semid, shmid) = unsafe { (libc::semget(numeric, 0, 0), libc::shmget(numeric, 0, 0)) };
    check(semid >= 0 && shmid >= 0, "the segment and its semaphore set")?;
    // SAFETY: IPC_RMID with a null buffer.
    unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
    std::fs::remove_file(&path)?;
    shm.detach()?;
    let sets = std::fs::read_to_string("/proc/sysvipc/sem")?;
    let left = sets
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&semid.to_string()));
    check(!left, format!("semaphore set {semid} left behind"))
}

/// Qt 5.15 with a native System V key: it makes the segment and no semaphore; qshm's
/// attach makes the set (Qt's semaphore key of a native key is the key itself); qshm
/// detaches first, so it keeps the set for the attached program; that program detaches
/// last and removes the segment and the key file (as Qt 5.15 does), which leaves the set's
/// numeric key unreachable by any path. The next qshm create of any key still removes the
/// set, by the record its lock state keeps. Before: the lock state (made before the set)
/// recorded none, so the set stayed for good, and a later key file whose inode shared 16
/// bits with the old one met it (CI red A/8 on 3e4cfea, qt_versions native_key).
fn set_made_by_attach_goes_with_foreign_segment() -> Result<(), Failed> {
    // (a key file whose numeric key no other live object has)
    let path = sysv_key_file("foreign", KeyType::SystemV);
    let native = NativeIpcKey::new(path.as_str(), KeyType::SystemV);
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&native);
    let numeric = SharedMemory::system_v_key(&native).ok_or("numeric key")?;
    // the other program: its segment, attached, and no semaphore
    // SAFETY: shmget takes plain values.
    let shmid = unsafe { libc::shmget(numeric, 64, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    check(
        shmid >= 0,
        format!("the other program's segment: {}", std::io::Error::last_os_error()),
    )?;
    // SAFETY: attaching a segment we made, anywhere the kernel picks; detached below.
    let at = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
    check(at as isize != -1, "the other program attaches")?;
    let mut shm = SharedMemory::with_native_key(native.clone());
    shm.attach(AccessMode::ReadOnly)?;
    drop(shm.lock_read()?);
    let semid = *sysv_ids("/proc/sysvipc/sem", numeric)
        .first()
        .ok_or("qshm's attach made no semaphore set")?;
    shm.detach()?;
    check(
        sysv_ids("/proc/sysvipc/sem", numeric).contains(&semid),
        "the set stays while the other program is attached",
    )?;
    // the other program detaches last: it removes the segment and the key file
    // SAFETY: `at` is the attachment made above, not used after; IPC_RMID takes no buffer.
    unsafe {
        libc::shmdt(at);
        libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
    }
    std::fs::remove_file(&path)?;
    // the next create of any key
    let other = unique_key("foreign-next");
    cleanup.key(&other, KeyType::SystemV);
    let mut next = SharedMemory::with_key_type(&other, KeyType::SystemV);
    next.create(16, AccessMode::ReadWrite)?;
    next.detach()?;
    let left = std::fs::read_to_string("/proc/sysvipc/sem")?
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&semid.to_string()));
    check(
        !left,
        format!("semaphore set {semid} (key {numeric:#x}) left behind"),
    )
}

/// A Qt program polling `attach()` before the segment exists (a consumer started before
/// its qshm producer): Qt 6's failed attach makes Qt's POSIX semaphore and keeps it, as its
/// creator; qshm's create finds it in use and shares it; when the Qt process exits it
/// unlinks the semaphore's name (Qt's creator always does), while the qshm creator keeps
/// using it. The next qshm attacher must still meet the creator on one lock. Before: it
/// made a second semaphore under the free name, and both held "the" lock at once (the
/// POSIX mixed-order matrix: `[(Qt, Attach), (A, Create), (Qt, Exit), (User, Attach)]`,
/// lost increments when the two bursts overlapped).
fn qt_attach_before_segment_then_exit(py: &Path) -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("qtfirst");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
    let said = actor::ask(&mut qt, "attach", REPLY);
    check(
        said.as_deref().is_some_and(|s| s.starts_with("ERR")),
        format!("Qt's attach before the segment: {said:?}"),
    )?;
    let mut creator = SharedMemory::with_key_type(&key, kind);
    creator.create(64, AccessMode::ReadWrite)?;
    qt.send("exit");
    qt.wait(T);
    let mut attacher = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("qshm actor")?;
    let said = actor::ask(&mut attacher, "attach", REPLY);
    check(said.as_deref() == Some("OK"), format!("the attacher: {said:?}"))?;
    let held = creator.lock()?;
    let tried = actor::ask(&mut attacher, "trylock", REPLY);
    drop(held);
    let after = actor::ask(&mut attacher, "trylock", REPLY);
    attacher.send("exit");
    attacher.wait(T);
    check(
        tried.as_deref() == Some("BUSY"),
        format!("while the creator held the lock, the attacher's try_lock: {tried:?} (two locks)"),
    )?;
    check(
        after.as_deref() == Some("OK"),
        format!("once the creator let go, the attacher's try_lock: {after:?}"),
    )
}

/// 5(c): qshm creates, a Qt process attaches, qshm detaches, the Qt process detaches last.
/// What qshm made (lock state, Qt's semaphore, key file) may stay, as Qt's own leftovers
/// do (a POSIX Qt segment is never removed by Qt), but `qshm ls` shows it and root's
/// `rm --stale` (or the next create) removes it: after both, nothing is left.
fn qt_detaches_last(py: &Path, kind: KeyType) -> Result<(), Failed> {
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    let key = unique_key("qtlast");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let recorded = sysv_keys(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = [recorded, sysv_keys(&key, kind)].concat();
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("Qt actor")?;
    check(
        actor::ask(&mut qt, "attach", REPLY).as_deref() == Some("OK"),
        "Qt attaches",
    )?;
    shm.detach()?;
    qt.send("exit");
    qt.wait(T);
    let left = leftovers(&key, kind, &recorded);
    if !left.is_empty() {
        // orphans younger than 2 s may be someone's work in progress
        std::thread::sleep(Duration::from_millis(2100));
        let scan = qshm::admin::scan()?;
        let listed = scan.segments.len() + scan.orphans.len();
        check(listed > 0, format!("left {left:?}, but `ls` shows nothing"))?;
        qshm::admin::remove_stale(false)?;
        let native = native(&key, kind);
        if kind == KeyType::PosixRealtime && !sees_every_process() {
            // In a PID namespace (this suite's third pass) a POSIX segment nobody visible
            // maps may still be mapped from another namespace: `rm --stale` keeps it, `ls`
            // cannot tell, and only `qshm rm KEY` removes it (then its extras are orphans).
            let state = scanned_state(native.native())?;
            check(
                state == Some(qshm::admin::State::Unknown),
                format!("in a PID namespace, the segment Qt left: {state:?}"),
            )?;
            SharedMemory::force_remove(&native)?;
            std::thread::sleep(Duration::from_millis(2100));
            qshm::admin::remove_stale(false)?;
        }
    }
    let after = leftovers(&key, kind, &recorded);
    check(
        after.is_empty(),
        format!("left after rm --stale: {after:?} (before: {left:?})"),
    )
}

/// 6: root's `rm --stale` removes another user's stale POSIX segment (its README says so;
/// before, only root's own were judged).
fn root_removes_other_users_stale() -> Result<(), Failed> {
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    let Some(user) = TempUser::create("roots_rm_stale_removes_another_users") else {
        return Ok(());
    };
    let kind = KeyType::PosixRealtime;
    let key = unique_key("userstale");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut maker = user.spawn("create-die", &[&key, kind_name(kind)]);
    maker.expect("CREATED", T);
    maker.kill9();
    let removal = qshm::admin::remove_stale(false)?;
    let native = native(&key, kind);
    let removed = removal.segments.iter().any(|s| {
        s.native_key
            .as_ref()
            .is_some_and(|k| k.native() == native.native())
    });
    if !sees_every_process() {
        // in a PID namespace (this suite's third pass), the other user's processes of
        // other namespaces could map it: kept, and `ls` cannot tell
        check(
            !removed && qshm::admin::exists(&native),
            "removed from a PID namespace",
        )?;
        let state = scanned_state(native.native())?;
        return check(
            state == Some(qshm::admin::State::Unknown),
            format!("in a PID namespace, another user's stale segment: {state:?}"),
        );
    }
    check(removed, format!("kept: {:?}", removal.kept_foreign.len()))?;
    check(!qshm::admin::exists(&native), "still there")
}

/// A creator gives Qt's semaphore its second name before it names the lock state (so that
/// nobody can take that name first: `sys/posix/mod.rs`, step 4); one killed in between
/// leaves the second name without a lock state, which `rm --stale` (`by_rm_stale`) or the
/// key's next create removes. strace kills the creator as it names the lock state (its
/// third `linkat`: the semaphore's Qt name, its second name, the lock state).
fn second_name_without_lock_state_is_swept(by_rm_stale: bool) -> Result<(), Failed> {
    const TEST: &str = "a_semaphores_second_name_a_killed_creator_left_without_its_lock_state_is_swept";
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    if !strace_available(TEST) {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("keepleft");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = native(&key, kind);
    let sem_file = sem_path(&qshm::SystemSemaphore::legacy_native_key(&key, kind));
    let state_prefix = posix_lock_state_prefix(&native);
    let keep_prefix = state_prefix.replacen("qshm-lock.p.", "qshm-lock.k.", 1);
    let mut maker = Peer::spawn_command(
        Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=linkat"])
            .args(["-e", "inject=linkat:signal=KILL:when=3"])
            .arg(std::env::current_exe()?)
            .args([key.as_str(), kind_name(kind)])
            .env(CHILD_ENV, "create-die"),
    );
    maker.wait(T);
    let left = shm_dir_names_starting(&keep_prefix);
    let states = shm_dir_names_starting(&state_prefix);
    let remove_left = || {
        for name in shm_dir_names_starting(&keep_prefix) {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
    };
    if left.len() != 1 || !states.is_empty() || !Path::new(&sem_file).exists() {
        remove_left();
        return Err(format!(
            "the killed creator left second names {left:?}, lock states {states:?}, semaphore: {}",
            Path::new(&sem_file).exists()
        )
        .into());
    }
    let result = if by_rm_stale {
        // orphans younger than 2 s may be someone's work in progress
        std::thread::sleep(Duration::from_millis(2100));
        let listed = qshm::admin::scan()?
            .orphans
            .iter()
            .any(|o| o.path.to_str().is_some_and(|p| p.ends_with(&left[0])));
        qshm::admin::remove_stale(false)?;
        check(listed, format!("`ls` does not list {} as an orphan", left[0])).and_then(|()| {
            check(
                !Path::new(&sem_file).exists(),
                format!("the semaphore {sem_file} was left after rm --stale"),
            )
        })
    } else {
        let mut next = handle(&key, kind, LockMode::QtCompatible);
        next.create(64, AccessMode::ReadWrite)?;
        drop(next.lock()?);
        Ok(())
    };
    let after = shm_dir_names_starting(&keep_prefix);
    let states = shm_dir_names_starting(&state_prefix);
    remove_left();
    result?;
    // (after the next create, its own second name, beside its lock state)
    let lone: Vec<&String> = after
        .iter()
        .filter(|k| !states.contains(&k.replacen("qshm-lock.k.", "qshm-lock.p.", 1)))
        .collect();
    check(
        !after.contains(&left[0]) && lone.is_empty(),
        format!("second names left: {after:?} (lock states: {states:?})"),
    )
}

/// 6: files are judged by qshm's evidence (a lock state naming them), never by mode bits
/// other programs use too: root's `rm --stale` (without `--all`) keeps a root file that
/// merely carries the set-group-ID or sticky bit.
fn mode_bits_are_no_evidence() -> Result<(), Failed> {
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    let paths: Vec<String> = ["sgid", "sticky"]
        .iter()
        .map(|t| format!("/dev/shm/qshm-test-modebits-{t}-{}", std::process::id()))
        .collect();
    struct Remove(Vec<String>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _remove = Remove(paths.clone());
    for (path, mode) in paths.iter().zip([0o2600, 0o1600]) {
        std::fs::write(path, [0u8; 64])?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    // old enough to be judged
    std::thread::sleep(Duration::from_millis(2100));
    qshm::admin::remove_stale(false)?;
    for path in &paths {
        check(std::path::Path::new(path).exists(), format!("{path} was removed"))?;
    }
    Ok(())
}

/// 6: a `fork()`ed child's mapping keeps a POSIX segment alive when the parent detaches
/// (before, the parent's detach destroyed it under the child's mapping).
fn fork_child_keeps_segment() -> Result<(), Failed> {
    let key = unique_key("forkkeeps");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::PosixRealtime);
    let mut child = Peer::spawn("fork-keeps", &[&key]);
    let said = child.expect("RESULT", T);
    child.wait(T);
    check(said == "kept", format!("after the parent's detach: {said}"))
}

/// The `fork-keeps` role: create, fork a child that keeps the mapping, detach in the
/// parent, and say whether the segment still exists.
fn fork_keeps(key: &str) -> i32 {
    let mut shm = SharedMemory::with_key_type(key, KeyType::PosixRealtime);
    shm.create(64, AccessMode::ReadWrite).expect("create");
    let native = shm.native_ipc_key().clone();
    let (mut to_child, from_parent) = {
        let mut fds = [0; 2];
        // SAFETY: fds is an array of two ints for pipe().
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[1], fds[0])
    };
    // SAFETY: fork in a single-threaded child process of the test; the child only reads
    // a pipe and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte from our pipe end.
        unsafe { libc::read(from_parent, byte.as_mut_ptr().cast(), 1) };
        // SAFETY: end the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    shm.detach().expect("detach");
    let kept = qshm::admin::exists(&native);
    // SAFETY: writing one byte to our pipe end, then reaping our child.
    unsafe {
        libc::write(to_child, [1u8].as_ptr().cast(), 1);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    to_child = -1;
    let _ = to_child;
    let _ = SharedMemory::force_remove(&native);
    say(format!("RESULT {}", if kept { "kept" } else { "destroyed" }));
    0
}

/// CI run 0533/2 (`removal systemv::fast::ipcrm_while_attached…`): a last detach of a
/// System V segment removed behind its back (`ipcrm`) left its lock state and key file.
/// Another thread of the process had forked a child (it inherits every attachment), so the
/// detach found the segment still attached and waited for the child to exec; when it did,
/// the kernel freed the removed segment, and the detach, which only took "attached 0
/// times" for the end of its wait, not "gone", kept what was left for a segment that no
/// longer existed.
fn removed_segment_freed_by_fork_child(mode: LockMode) -> Result<(), Failed> {
    let kind = KeyType::SystemV;
    let key = unique_key("forkfreed");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut child = Peer::spawn("fork-then-detach-removed", &[&key, mode_name(mode)]);
    child.expect("CREATED", T);
    let recorded = sysv_keys(&key, kind);
    child.send("go");
    let detached = child.expect("DETACHED", T);
    let status = child.wait(T);
    check(status.success(), format!("the child: {status}"))?;
    check(detached == "Ok(())", format!("the detach said {detached}"))?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// The `fork-then-detach-removed` role: create a System V segment, fork a child that keeps
/// the attachment it inherits until the parent's detach waits for it, remove the segment
/// (`IPC_RMID`, as `ipcrm` does), detach, and say what the detach returned.
fn fork_then_detach_removed(key: &str, mode: LockMode) -> i32 {
    let mut shm = handle(key, KeyType::SystemV, mode);
    shm.create(64, AccessMode::ReadWrite).expect("create");
    say("CREATED");
    wait_for_stdin_line();
    let shmid: i32 = shm
        .info()
        .expect("info")
        .os_id
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .expect("shmid");
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints for pipe().
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (to_child, from_parent) = (fds[1], fds[0]);
    // SAFETY: this role's process runs no other thread that could hold a lock across the
    // fork; the child only reads its pipe and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte from our pipe end, then ending without the parent's
        // destructors.
        unsafe {
            libc::read(from_parent, byte.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: IPC_RMID ignores the buffer; the segment stays until its last detach.
    let removed = unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
    assert_eq!(removed, 0, "IPC_RMID");
    // the child leaves while the detach below waits for it
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: one byte to our pipe end; then reap our child.
        unsafe {
            libc::write(to_child, [1u8].as_ptr().cast(), 1);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    });
    let detached = shm.detach().map_err(|e| e.kind());
    release.join().expect("release");
    say(format!("DETACHED {detached:?}"));
    0
}

/// `qshm ls` called a Qt System V semaphore an orphan ("its segment is gone and its last
/// user died"), and `rm --stale` would remove it, while its last user was alive: the check
/// looked up `semctl(GETPID)` in `/proc`, but under `unshare -p` without `--mount-proc`
/// (or in a container given the host's `/proc`) the kernel reports that pid in this
/// process's PID namespace while `/proc` lists another's. The last user here is the
/// namespace's process whose pid names no process in the host's `/proc`.
fn living_semaphore_user_behind_a_foreign_proc() -> Result<(), Failed> {
    let key = unique_key("procguard");
    let native = qshm::SystemSemaphore::legacy_native_key(&key, KeyType::SystemV);
    let sem = qshm::SystemSemaphore::with_native_key(native.clone(), 1, qshm::SemaphoreMode::Create)?;
    let exe = std::env::current_exe()?;
    // a PID namespace of its own, and the host's /proc
    let mut scanner = Peer::spawn_command(
        Command::new("unshare")
            .args(["-pf", "--kill-child"])
            .arg(exe)
            .env(CHILD_ENV, "scan-without-own-proc")
            .arg(native.native()),
    );
    let said = scanner.expect("SCANNED", T);
    let status = scanner.wait(T);
    sem.remove()?;
    check(status.success(), format!("the scanner: {status}"))?;
    // "listed LISTED, last user PID (in its namespace), PID in this /proc: EXISTS"
    let host_has_pid = said.ends_with("true");
    check(
        !host_has_pid,
        format!("the set-up failed: the last user's pid names a process here ({said})"),
    )?;
    check(
        said.starts_with("listed false"),
        format!("the living user's semaphore was taken for an orphan: {said}"),
    )
}

/// The `scan-without-own-proc` role (PID 1 of a PID namespace that sees the host's
/// `/proc`): start throw-away processes until the next pid names no process in this
/// `/proc`, start the semaphore's user there, then look at the orphans as `qshm ls` does.
fn scan_without_own_proc(native: &str) -> i32 {
    let mut tries = 0;
    loop {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        if !Path::new(&format!("/proc/{}", pid + 1)).exists() {
            break;
        }
        tries += 1;
        assert!(tries < 500, "no free pid found");
    }
    let mut user = Peer::spawn("semaphore-user", &[native]);
    let used = user.expect("USED", T);
    let pid: u32 = used.parse().expect("pid");
    let scan = qshm::admin::scan().expect("scan");
    let listed = scan.orphans.iter().any(|o| {
        matches!(o.kind, qshm::admin::OrphanKind::SystemVSemaphore { .. }) && o.path.as_os_str() == native
    });
    let exists = Path::new(&format!("/proc/{pid}")).exists();
    say(format!(
        "SCANNED listed {listed}, last user {pid}, pid in this /proc: {exists}"
    ));
    user.finish();
    0
}

/// 6: the number of qshm attachments of a segment comes from one consistent view, however
/// many file locks others take meanwhile (before: `/proc/locks` was read in pieces, and a
/// segment of 2 was counted from 0 to 6).
fn consistent_attachment_counts() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("counts");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut other = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("actor")?;
    check(
        actor::ask(&mut other, "attach", REPLY).as_deref() == Some("OK"),
        "attach",
    )?;
    // churn: many other file locks come and go meanwhile
    let churn_keys: Vec<String> = (0..4).map(|i| unique_key(&format!("churn{i}"))).collect();
    for k in &churn_keys {
        cleanup.key(k, kind);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = {
        let stop = stop.clone();
        let keys = churn_keys.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for k in &keys {
                    let mut s = SharedMemory::with_key_type(k, KeyType::PosixRealtime);
                    let _ = s.create(64, AccessMode::ReadWrite);
                }
            }
        })
    };
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..50 {
        let segment = qshm::admin::segment(shm.native_ipc_key())?.ok_or("listed")?;
        *seen.entry(segment.qshm_attachments).or_insert(0) += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churner.join().map_err(|_| "churner")?;
    other.send("exit");
    other.wait(T);
    check(
        seen.len() == 1 && seen.contains_key(&Some(2)),
        format!("2 attachments counted as {seen:?}"),
    )
}

/// 1: processes race to create-or-attach, lock and detach one key, as root, as another
/// user, and each inside a PID namespace of its own (where `/proc` shows only it): no two
/// hold the lock at once, every lock is had within 5 s, and no
/// round leaves a segment behind (before: `/proc` walks took unreadable processes for
/// mappers and kept segments for ever).
fn racing_creates(kind: KeyType) -> Result<(), Failed> {
    // bench/stress.sh runs more (QSHM_RACE_ROUNDS)
    let rounds = std::env::var("QSHM_RACE_ROUNDS").unwrap_or_else(|_| "150".to_owned());
    let user = TempUser::create("racing_creates");
    let mut setups: Vec<(&str, Option<&TempUser>, bool)> = if is_root() {
        vec![("root", None, false), ("root, own PID namespace", None, true)]
    } else {
        vec![("an ordinary user (this pass)", None, false)]
    };
    if let Some(user) = &user {
        setups.push(("another user", Some(user), false));
    }
    for (who, user, pid_ns) in setups {
        let key = unique_key("race");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let exe = std::env::current_exe()?;
        let mut racers: Vec<Peer> = (0..4)
            .map(|_| {
                let mut cmd = if pid_ns {
                    in_own_pid_namespace(&exe)
                } else {
                    std::process::Command::new(&exe)
                };
                cmd.env(CHILD_ENV, "racer")
                    .args([key.as_str(), kind_name(kind), rounds.as_str()]);
                if let Some(user) = user {
                    use std::os::unix::process::CommandExt;
                    cmd.uid(user.uid).gid(user.gid);
                }
                Peer::spawn_command(&mut cmd)
            })
            .collect();
        for r in &mut racers {
            let done = r.expect("DONE", Duration::from_secs(120));
            check(done.starts_with("ok"), format!("{who}: a racer: {done}"))?;
            r.wait(T);
        }
        let left = leftovers(&key, kind, &[]);
        eprintln!(
            "racing creates left behind ({}, {who}): {rounds} rounds of 4 racers, {} left",
            kind_name(kind),
            left.len()
        );
        check(
            left.is_empty(),
            format!("{who}: left after {rounds} rounds of 4 racers: {left:?}"),
        )?;
    }
    Ok(())
}

fn racer(key: &str, kind: KeyType, rounds: u32) -> i32 {
    let mut errors = Vec::new();
    for _ in 0..rounds {
        let mut shm = SharedMemory::with_key_type(key, kind).with_permissions(0o666);
        let attached = match shm.create(64, AccessMode::ReadWrite) {
            Ok(()) => true,
            Err(_) => shm.attach(AccessMode::ReadWrite).is_ok(),
        };
        if attached {
            match shm.lock_timeout(Duration::from_secs(5)) {
                Ok(Some(mut data)) => {
                    // byte 1 says someone is inside: nobody else may be
                    if data[1] != 0 {
                        errors.push("two holders of the lock at once".to_owned());
                    }
                    data[1] = 1;
                    data[0] = data[0].wrapping_add(1);
                    std::thread::yield_now();
                    data[1] = 0;
                }
                Ok(None) => errors.push("lock timed out".to_owned()),
                Err(e) => errors.push(e.to_string()),
            }
            if let Err(e) = shm.detach() {
                errors.push(e.to_string());
            }
        }
    }
    errors.truncate(3);
    say(format!(
        "DONE {}",
        if errors.is_empty() {
            "ok".to_owned()
        } else {
            format!("{errors:?}")
        }
    ));
    0
}

/// The last detacher of a Qt-compatible POSIX segment is slowed down (strace) right at
/// the unlink of Qt's semaphore; meanwhile this process creates the key anew, and another
/// process attaches to the new segment: while this process holds the lock, the other's
/// `try_lock` must be busy. Before, the destroyer unlinked the segment's name first and the
/// semaphore after: a creator in between shared the old semaphore, which the destroyer
/// then unlinked, and the next attacher made another one. Two semaphores, two holders
/// (found by the create-or-attach loop of tests/hardening.rs as an ordinary user).
fn create_racing_last_detach() -> Result<(), Failed> {
    if !strace_available("a_create_racing_the_last_detach") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("lastdetach");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let sem = sem_path(&SharedMemory::with_key_type(&key, kind).semaphore_key());
    let exe = std::env::current_exe()?;
    let mut destroyer = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &sem])
            .args(["-e", "trace=unlink,unlinkat"])
            .args(["-e", "inject=unlink,unlinkat:delay_enter=1500000"])
            .arg(exe)
            .arg(&key)
            .env(CHILD_ENV, "create-detach"),
    );
    destroyer.expect("CREATED", T);
    destroyer.send("go");
    // create the key anew as soon as the old segment is gone
    let mut mine = SharedMemory::with_key_type(&key, kind);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        check(Instant::now() < deadline, "never created the key anew")?;
        match mine.create(64, AccessMode::ReadWrite) {
            Ok(()) => break,
            Err(e) if e.kind() == qshm::SharedMemoryError::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    destroyer.expect("DETACHED", T);
    destroyer.wait(T);
    let mut other = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("actor")?;
    check(
        actor::ask(&mut other, "attach", REPLY).as_deref() == Some("OK"),
        "the other process attaches",
    )?;
    let held = mine.lock()?;
    let answer = actor::ask(&mut other, "trylock", REPLY);
    drop(held);
    check(
        answer.as_deref() == Some("BUSY"),
        format!("another process's try_lock while this one holds the lock: {answer:?} (two semaphores)"),
    )?;
    check(
        actor::ask(&mut other, "trylock", REPLY).as_deref() == Some("OK"),
        "and it gets the lock once it is free",
    )?;
    other.send("exit");
    other.wait(T);
    Ok(())
}

/// A Fast-mode creator is killed while it names its segment (strace holds it right after
/// the `linkat` of the segment's name): whoever comes next attaches with the segment's lock,
/// or finds no segment. Before, the segment was named first and its lock state after it:
/// killed in between, the segment had a name and no lock state, and every Fast-mode attach
/// failed with `LockError` (taking it for another program's), while anyone attached kept
/// it from being reclaimed (seen once in 1000 crash trials of `bench/stress.sh`).
fn creator_killed_naming_segment() -> Result<(), Failed> {
    if !strace_available("a_creator_killed_as_it_names_the_segment") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("namekill");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = native(&key, kind);
    let segment = shm_path(&native);
    let exe = std::env::current_exe()?;
    let mut creator = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &segment])
            .args(["-e", "trace=linkat"])
            .args(["-e", "inject=linkat:delay_exit=3000000"])
            .arg(exe)
            .arg(&key)
            .env(CHILD_ENV, "create-fast-hold"),
    );
    let pid: i32 = creator.expect("PID", T).parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&segment).exists() {
        check(Instant::now() < deadline, "the creator never named its segment")?;
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill takes plain values; pid is the creator's.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    creator.wait(T);
    let mut next = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    match next.attach(AccessMode::ReadWrite) {
        Ok(()) => {
            check(!next.lock()?.previous_owner_died(), "nobody held the lock")?;
            next.detach()?;
        }
        Err(e) if e.kind() == qshm::SharedMemoryError::NotFound => {}
        Err(e) => return Err(format!("attach after the creator was killed: {e}").into()),
    }
    // and the key works: create (reclaiming the stale one) and lock
    let mut again = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    again.create(64, AccessMode::ReadWrite)?;
    drop(again.lock()?);
    again.detach()?;
    // what the killed creator made for its unnamed file (a lock state nobody has open)
    // is removed by the next create of the key, as the crash trials require
    let left = shm_dir_names_starting(&posix_lock_state_prefix(&native));
    check(
        left.is_empty(),
        format!("left after the next create and detach: {left:?}"),
    )
}

/// POSIX: a creator is killed after it named the segment's lock state and before it named
/// the segment (strace holds it at the entry of `linkat`). Its lock state then belongs to
/// a file that is gone and nobody has it open; the next create of the key removes it (it
/// used to stay until `qshm rm --stale`, which the crash trials counted as a leak).
fn creator_killed_before_naming_segment(mode: LockMode) -> Result<(), Failed> {
    if !strace_available("a_creator_killed_before_it_names_the_segment") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("prenamekill");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = native(&key, kind);
    let segment = shm_path(&native);
    let prefix = posix_lock_state_prefix(&native);
    let exe = std::env::current_exe()?;
    let role = if mode == LockMode::Fast {
        "create-fast-hold"
    } else {
        "create-qt-hold"
    };
    let mut creator = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &segment])
            .args(["-e", "trace=linkat"])
            .args(["-e", "inject=linkat:delay_enter=3000000"])
            .arg(exe)
            .arg(&key)
            .env(CHILD_ENV, role),
    );
    let pid: i32 = creator.expect("PID", T).parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while shm_dir_names_starting(&prefix).is_empty() {
        check(
            Instant::now() < deadline,
            "the creator never named its lock state",
        )?;
        std::thread::sleep(Duration::from_millis(1));
    }
    // linkat is entered only after the lock state has its name: give it a moment to get there
    std::thread::sleep(Duration::from_millis(200));
    check(
        !std::path::Path::new(&segment).exists(),
        "the segment was named before the kill",
    )?;
    // SAFETY: kill takes plain values; pid is the creator's.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    creator.wait(T);
    let mut again = SharedMemory::with_key_type(&key, kind).with_lock_mode(mode);
    again.create(64, AccessMode::ReadWrite)?;
    check(
        !again.lock()?.previous_owner_died(),
        "nobody held the new segment's lock",
    )?;
    again.detach()?;
    let left = leftovers(&key, kind, &[]);
    check(
        left.is_empty(),
        format!("left after the next create and detach: {left:?}"),
    )
}

/// POSIX: the last detacher is killed while it destroys the segment (strace holds it at
/// the `unlink` of the segment's name). It used to remove the lock state first, which left
/// a named segment without one: an attacher then took it for another program's
/// (`LockError` in Fast mode; the crash trials found it). Now the name goes first, and a
/// destroyer killed at any point leaves either a stale segment with its lock state (the
/// next attacher gets in, the next create reclaims it) or an orphan lock state (swept).
fn destroyer_killed_mid_destroy() -> Result<(), Failed> {
    if !strace_available("a_last_detacher_killed_as_it_destroys") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("destroykill");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = native(&key, kind);
    let segment = shm_path(&native);
    let prefix = posix_lock_state_prefix(&native);
    let exe = std::env::current_exe()?;
    let mut destroyer = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &segment])
            .args(["-e", "trace=unlink,unlinkat"])
            .args(["-e", "inject=unlink:delay_enter=3000000"])
            .args(["-e", "inject=unlinkat:delay_enter=3000000"])
            .arg(&exe)
            .arg(&key)
            .env(CHILD_ENV, "create-fast-detach"),
    );
    let pid: i32 = destroyer.expect("PID", T).parse()?;
    destroyer.expect("CREATED", T);
    destroyer.send("detach");
    // the destroyer is at the segment's unlink within moments (the old order had removed
    // the lock state by then)
    let deadline = Instant::now() + Duration::from_millis(1500);
    while !shm_dir_names_starting(&prefix).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    check(
        std::path::Path::new(&segment).exists(),
        "the segment lost its name before the kill",
    )?;
    // SAFETY: kill takes plain values; pid is the destroyer's.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    destroyer.wait(T);
    let mut next = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    next.attach(AccessMode::ReadWrite)
        .map_err(|e| format!("attach after the destroyer was killed: {e}"))?;
    check(!next.lock()?.previous_owner_died(), "nobody held the lock")?;
    next.detach()?;
    let left = leftovers(&key, kind, &[]);
    check(left.is_empty(), format!("left after the last detach: {left:?}"))
}

/// System V: the last detacher is killed right after it removed the segment's lock state
/// (strace, attached to it once it created, holds it at the exit of that `unlink`). It
/// used to remove the lock state before the segment (`IPC_RMID`), which left the key's
/// segment without its lock state: a Fast attacher refused it as another program's. Now
/// the segment goes first, and what a killed destroyer leaves is an orphaned lock state
/// (the next create of any key sweeps it).
fn sysv_destroyer_killed_mid_destroy() -> Result<(), Failed> {
    if !strace_available("systemv a_last_detacher_killed_as_it_destroys") {
        return Ok(());
    }
    let kind = KeyType::SystemV;
    let key = unique_key("svdestroykill");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut destroyer = Peer::spawn("create-fast-detach", &[&key, kind_name(kind)]);
    let pid: i32 = destroyer.expect("PID", T).parse()?;
    destroyer.expect("CREATED", T);
    let recorded = sysv_keys(&key, kind);
    let Some(&(_, numeric, shmid)) = recorded.iter().find(|(table, ..)| table.ends_with("shm")) else {
        return Err("no System V segment after create".into());
    };
    let state_path = format!("/dev/shm/{}", sysv_lock_state_name(numeric, shmid));
    check(
        std::path::Path::new(&state_path).exists(),
        "no lock state after create",
    )?;
    let mut tracer = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-P", &state_path])
        .args(["-e", "trace=unlink,unlinkat"])
        .args(["-e", "inject=unlink:delay_exit=3000000"])
        .args(["-e", "inject=unlinkat:delay_exit=3000000"])
        .args(["-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500)); // strace attaches
    destroyer.send("detach");
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::path::Path::new(&state_path).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill takes plain values; pid is the destroyer's.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    destroyer.wait(T);
    let _ = tracer.wait();
    check(
        !std::path::Path::new(&state_path).exists(),
        "the destroyer never removed the lock state",
    )?;
    let mut next = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    match next.attach(AccessMode::ReadWrite) {
        Ok(()) => {
            check(!next.lock()?.previous_owner_died(), "nobody held the lock")?;
            next.detach()?;
        }
        Err(e) if e.kind() == qshm::SharedMemoryError::NotFound => {}
        Err(e) => return Err(format!("attach after the destroyer was killed: {e}").into()),
    }
    // the next create works and, with its last detach, leaves nothing
    let mut again = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    again.create(64, AccessMode::ReadWrite)?;
    again.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(
        left.is_empty(),
        format!("left after the next create and detach: {left:?}"),
    )
}

/// POSIX: a create sweeps the key's lock states that nobody has open and whose segment is
/// not the named one. Its look at the name came before a creator named its segment, and
/// that creator was killed right after, before the sweep's lease probe found its lock
/// state alone: the sweep removed the lock state of a named segment, and an attacher then
/// took the segment for another program's (`LockError` in Fast mode; the crash trials found
/// it). strace holds the creator at `linkat` and the sweeper after its look at the name,
/// then the sweeper at its own `linkat`, while this process attaches.
fn sweep_racing_a_killed_creator() -> Result<(), Failed> {
    if !strace_available("a_create_sweeping_lock_states_never_takes_one") {
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("sweeprace");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = native(&key, kind);
    let segment = shm_path(&native);
    let prefix = posix_lock_state_prefix(&native);
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // the creator: held for 1.5 s as it is about to name its segment
    let mut creator = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &segment])
            .args(["-e", "trace=linkat"])
            .args(["-e", "inject=linkat:delay_enter=1500000"])
            .arg(&exe)
            .arg(&key)
            .env(CHILD_ENV, "create-fast-hold"),
    );
    let creator_pid: i32 = creator.expect("PID", T).parse()?;
    let creators_state = loop {
        if let Some(name) = shm_dir_names_starting(&prefix).into_iter().next() {
            break name;
        }
        check(
            Instant::now() < deadline,
            "the creator never named its lock state",
        )?;
        std::thread::sleep(Duration::from_millis(1));
    };
    // the sweeper: its look at the name returns 4 s late, its own linkat waits 3 s
    let mut sweeper = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", &segment])
            .args(["-e", "trace=statx,linkat"])
            .args(["-e", "inject=statx:delay_exit=4000000:when=1"])
            .args(["-e", "inject=linkat:delay_enter=3000000"])
            .arg(&exe)
            .arg(&key)
            .env(CHILD_ENV, "create-fast-report"),
    );
    sweeper.expect("PID", T);
    while !std::path::Path::new(&segment).exists() {
        check(Instant::now() < deadline, "the creator never named its segment")?;
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill takes plain values; the pid is the creator's.
    unsafe { libc::kill(creator_pid, libc::SIGKILL) };
    creator.wait(T);
    // the sweeper is past its sweep once its own lock state has a name
    while !shm_dir_names_starting(&prefix)
        .iter()
        .any(|n| *n != creators_state)
    {
        check(
            Instant::now() < deadline,
            "the sweeper never named its lock state",
        )?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let kept = shm_dir_names_starting(&prefix).contains(&creators_state);
    let mut attacher = SharedMemory::with_key_type(&key, kind).with_lock_mode(LockMode::Fast);
    let attached = attacher.attach(AccessMode::ReadWrite);
    let made = sweeper.expect("MADE", T);
    sweeper.finish();
    check(kept, "the sweep removed the lock state of a named segment")?;
    attached.map_err(|e| format!("attach to the killed creator's segment: {e}"))?;
    check(
        made.contains("AlreadyExists"),
        format!("the sweeper's create beside an attached segment: {made}"),
    )?;
    drop(attacher.lock()?);
    attacher.detach()?;
    let left = leftovers(&key, kind, &[]);
    check(left.is_empty(), format!("left after the last detach: {left:?}"))
}

/// System V: a segment and its key file are removed behind its last user's back (as Qt's
/// own test fixture does); that user's detach then removes Qt's semaphore of the key, and
/// is slowed down (strace) right before it takes the semaphore key file's lock.
/// Meanwhile this process creates the key anew and holds the lock; then another process
/// attaches: its `try_lock` must be busy. Before, the detacher had looked for the
/// segment's key file before that lock, found none, and removed the semaphore the new
/// segment already used: the next attacher made another one (found by the
/// create-or-attach loop of tests/hardening.rs).
fn create_racing_detach_after_removal() -> Result<(), Failed> {
    if !strace_available("a_create_racing_a_detach_after_removal") {
        return Ok(());
    }
    let kind = KeyType::SystemV;
    let key = unique_key("behindrace");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let native = SharedMemory::legacy_native_key(&key, kind);
    let sem_key_file = SharedMemory::with_key_type(&key, kind).semaphore_key();
    let exe = std::env::current_exe()?;
    // its second flock of the semaphore key file (the first is at create) waits 1.5 s
    let mut detacher = Peer::spawn_command(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P", sem_key_file.native()])
            .args(["-e", "trace=flock"])
            .args(["-e", "inject=flock:delay_enter=1500000:when=2"])
            .arg(exe)
            .args([key.as_str(), kind_name(kind)])
            .env(CHILD_ENV, "create-detach"),
    );
    detacher.expect("CREATED", T);
    let numeric = SharedMemory::system_v_key(&native).ok_or("numeric key")?;
    // SAFETY: shmget takes plain values; IPC_RMID with a null buffer.
    unsafe {
        let shmid = libc::shmget(numeric, 0, 0);
        check(shmid >= 0, "the segment")?;
        libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
    }
    std::fs::remove_file(native.native())?;
    detacher.send("go");
    std::thread::sleep(Duration::from_millis(300)); // it waits for the semaphore key file now
    let mut mine = SharedMemory::with_key_type(&key, kind);
    mine.create(64, AccessMode::ReadWrite)?;
    let held = mine.lock()?;
    detacher.expect("DETACHED", T);
    detacher.wait(T);
    let mut other = actor::qshm(None, &key, kind, LockMode::QtCompatible, REPLY).ok_or("actor")?;
    check(
        actor::ask(&mut other, "attach", REPLY).as_deref() == Some("OK"),
        "the other process attaches",
    )?;
    let answer = actor::ask(&mut other, "trylock", REPLY);
    drop(held);
    check(
        answer.as_deref() == Some("BUSY"),
        format!("another process's try_lock while this one holds the lock: {answer:?} (two semaphores)"),
    )?;
    check(
        actor::ask(&mut other, "trylock", REPLY).as_deref() == Some("OK"),
        "and it gets the lock once it is free",
    )?;
    other.send("exit");
    other.wait(T);
    Ok(())
}

/// Where an actor of [`one_lock_across_pid_namespaces`] runs.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// In this test's PID namespace.
    Here,
    /// In a PID namespace of its own (PID 1 there; the rest of the machine invisible).
    OwnPidNamespace,
}

/// Two qshm processes, each here or in a PID namespace of its own (containers that share
/// IPC and `/dev/shm`, with the host or with each other), use one segment: the creator
/// holds the lock, a create of another key here sweeps orphaned lock states, and the
/// other process and a handle here still find the lock busy; once the holder is killed,
/// the other takes the lock over and is told. Before: a System V segment's lock state was
/// named by the segment's creator pid, which each PID namespace sees differently (1 in
/// the creator's, 0 where the creator is invisible): the processes used two lock states
/// (Fast: two holders at once), and a sweep in another namespace took the live segment's
/// lock state for an orphan and removed it with Qt's semaphore set (Qt-compatible: a
/// waiter re-made the set and took it beside the holder, or one that opened it as it went
/// made it uninitialised, at 0, and every locker waited for ever).
fn one_lock_across_pid_namespaces(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    if !is_root() {
        eprintln!("*** SKIP one_lock_across_pid_namespaces: needs root for unshare -p ***");
        return Ok(());
    }
    use Placement::*;
    for (creator_at, other_at) in [
        (OwnPidNamespace, Here),
        (Here, OwnPidNamespace),
        (OwnPidNamespace, OwnPidNamespace),
    ] {
        let order = format!("creator {creator_at:?}, other {other_at:?}");
        let key = unique_key("pidnslock");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let start = |at: Placement| match at {
            Here => actor::qshm(None, &key, kind, mode, REPLY),
            OwnPidNamespace => actor::qshm_in_own_pid_namespace(&key, kind, mode, REPLY),
        };
        let mut creator = start(creator_at).ok_or("the creator actor did not start")?;
        let mut other = start(other_at).ok_or("the other actor did not start")?;
        let answer = |peer: &mut Peer, command: &str| actor::ask(peer, command, REPLY).unwrap_or_default();
        check(
            answer(&mut creator, "create 64") == "OK",
            format!("{order}: create"),
        )?;
        check(answer(&mut other, "attach") == "OK", format!("{order}: attach"))?;
        check(
            answer(&mut creator, "hold") == "HELD",
            format!("{order}: the creator's lock"),
        )?;
        // a create here sweeps the lock states it takes for orphans
        let sweep_key = unique_key("pidnssweep");
        cleanup.key(&sweep_key, kind);
        let mut sweeper = SharedMemory::with_key_type(&sweep_key, kind).with_lock_mode(mode);
        sweeper.create(64, AccessMode::ReadWrite)?;
        sweeper.detach()?;
        let busy = answer(&mut other, "trylock");
        check(
            busy == "BUSY",
            format!("{order}: the other's try_lock while the creator holds the lock: {busy}"),
        )?;
        let mut here = SharedMemory::with_key_type(&key, kind).with_lock_mode(mode);
        here.attach(AccessMode::ReadWrite)?;
        check(
            here.try_lock()?.is_none(),
            format!("{order}: a try_lock here while the creator holds the lock got it"),
        )?;
        creator.kill9();
        let taken = answer(&mut other, "lock");
        check(
            taken == "OK died=1",
            format!("{order}: the other's lock after the holder was killed: {taken}"),
        )?;
        here.detach()?;
        check(answer(&mut other, "detach") == "OK", format!("{order}: detach"))?;
        other.send("exit");
        other.wait(T);
        let left = leftovers(&key, kind, &[]);
        check(left.is_empty(), format!("{order}: left behind: {left:?}"))?;
    }
    Ok(())
}

/// A real Qt process holds the lock of a segment a qshm process made; a qshm waiter, one
/// of the two in a PID namespace of its own (a container beside the host, sharing IPC and
/// `/dev/shm`), waits 4 s: the Qt holder is alive, so the waiter never gets the lock. (A
/// Qt holder writes no label; a waiter that cannot see it in `/proc` has no evidence that
/// it died.)
fn qt_holder_across_pid_namespaces(py: &Path, kind: KeyType) -> Result<(), Failed> {
    if !is_root() {
        eprintln!("*** SKIP a_living_qt_holder_in_another_pid_namespace: needs root for unshare -p ***");
        return Ok(());
    }
    use Placement::*;
    for (qt_at, waiter_at) in [(OwnPidNamespace, Here), (Here, OwnPidNamespace)] {
        let order = format!("Qt holder {qt_at:?}, qshm waiter {waiter_at:?}");
        let key = unique_key("pidnsqt");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mode = LockMode::QtCompatible;
        let mut creator = actor::qshm(None, &key, kind, mode, REPLY).ok_or("the creator did not start")?;
        let answer = |peer: &mut Peer, command: &str| actor::ask(peer, command, REPLY).unwrap_or_default();
        check(
            answer(&mut creator, "create 64") == "OK",
            format!("{order}: create"),
        )?;
        let mut qt = match qt_at {
            Here => actor::qt(py, &key, kind, REPLY),
            OwnPidNamespace => actor::qt_in_own_pid_namespace(py, &key, kind, REPLY),
        }
        .ok_or("the Qt actor did not start")?;
        check(answer(&mut qt, "attach") == "OK", format!("{order}: Qt's attach"))?;
        check(answer(&mut qt, "hold") == "HELD", format!("{order}: Qt's lock"))?;
        let mut waiter = match waiter_at {
            Here => actor::qshm(None, &key, kind, mode, REPLY),
            OwnPidNamespace => actor::qshm_in_own_pid_namespace(&key, kind, mode, REPLY),
        }
        .ok_or("the waiter did not start")?;
        check(
            answer(&mut waiter, "attach") == "OK",
            format!("{order}: the waiter's attach"),
        )?;
        // the actor's lock waits 5 s
        let got = answer(&mut waiter, "lock");
        check(
            got == "ERR Timeout",
            format!("{order}: a waiter's lock while Qt holds it: {got}"),
        )?;
        qt.kill9();
        check(answer(&mut waiter, "detach") == "OK", format!("{order}: detach"))?;
        check(answer(&mut creator, "detach") == "OK", format!("{order}: detach"))?;
        for mut peer in [waiter, creator] {
            peer.send("exit");
            peer.wait(T);
        }
    }
    Ok(())
}

/// A Fast segment a real Qt process has attached (Qt's lock, its semaphore, would not see
/// qshm's Fast lock): a qshm attacher here refuses it, and so must one in a PID namespace
/// of its own, whose `/proc` does not list the Qt process (before: it saw no foreign
/// mapper and attached, to lock beside a Qt process that does not see its lock).
fn fast_attacher_in_container_beside_qt(py: &Path, kind: KeyType) -> Result<(), Failed> {
    if !is_root() {
        eprintln!(
            "*** SKIP an_attacher_in_a_container_never_joins_a_qt_mapper: needs root for unshare -p ***"
        );
        return Ok(());
    }
    let key = unique_key("pidnsfast");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mode = LockMode::Fast;
    let answer = |peer: &mut Peer, command: &str| actor::ask(peer, command, REPLY).unwrap_or_default();
    let mut creator = actor::qshm(None, &key, kind, mode, REPLY).ok_or("the creator did not start")?;
    check(answer(&mut creator, "create 64") == "OK", "create")?;
    let mut qt = actor::qt(py, &key, kind, REPLY).ok_or("the Qt actor did not start")?;
    check(answer(&mut qt, "attach") == "OK", "Qt's attach")?;
    let mut here = actor::qshm(None, &key, kind, mode, REPLY).ok_or("an attacher did not start")?;
    let attached_here = answer(&mut here, "attach");
    let mut contained =
        actor::qshm_in_own_pid_namespace(&key, kind, mode, REPLY).ok_or("an attacher did not start")?;
    let attached_there = answer(&mut contained, "attach");
    for mut peer in [qt, here, contained, creator] {
        peer.send("exit");
        peer.wait(T);
    }
    check(
        attached_here.starts_with("ERR"),
        format!("a Fast attach here beside a Qt mapper: {attached_here}"),
    )?;
    check(
        attached_there.starts_with("ERR"),
        format!("a Fast attach in a container beside a Qt mapper it cannot see: {attached_there}"),
    )
}

/// 2: a program in another PID namespace (a container sharing `/dev/shm`) maps a POSIX
/// segment; the qshm creator outside detaches: the segment stays, and a new `create` of
/// the key does not reclaim it under the mapper (before: the lease said "open elsewhere",
/// `/proc` showed nobody, and `create` took that for stale).
fn mapper_in_other_pid_namespace() -> Result<(), Failed> {
    if !is_root() {
        eprintln!("*** SKIP a_mapper_in_another_pid_namespace: needs root for unshare -p ***");
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("pidns");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(4096, AccessMode::ReadWrite)?;
    let path = shm_path(shm.native_ipc_key());
    let exe = std::env::current_exe()?;
    let mut mapper = Peer::spawn_command(in_own_pid_namespace(exe).arg(&path).env(CHILD_ENV, "raw-map"));
    mapper.expect("MAPPED", T);
    let native = shm.native_ipc_key().clone();
    shm.detach()?;
    let kept = qshm::admin::exists(&native);
    let mut again = SharedMemory::with_key_type(&key, kind);
    let created = again.create(4096, AccessMode::ReadWrite);
    mapper.send("done");
    mapper.wait(T);
    check(
        kept,
        "the segment was destroyed under a mapper in another PID namespace",
    )?;
    check(
        created
            .as_ref()
            .is_err_and(|e| e.kind() == qshm::SharedMemoryError::AlreadyExists),
        format!("a create beside the mapper: {created:?}"),
    )
}

/// A program of the host (not qshm, as Qt: it closes the file once mapped) maps a POSIX
/// segment nobody else uses; root's `qshm rm --stale` in a container (a PID namespace of
/// its own, sharing `/dev/shm`) does not list that process in its `/proc`: `ls` says it
/// cannot tell (before: STALE, "`qshm rm --stale` removes the STALE ones"), and
/// `rm --stale` keeps the segment.
fn rm_stale_in_container_keeps_host_mapping() -> Result<(), Failed> {
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        eprintln!("*** SKIP rm_stale_in_a_container: needs root for unshare -p ***");
        return Ok(());
    }
    let kind = KeyType::PosixRealtime;
    let key = unique_key("pidnsrm");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    shm.create(4096, AccessMode::ReadWrite)?;
    let native = shm.native_ipc_key().clone();
    let mut mapper = Peer::spawn("raw-map", &[&shm_path(&native)]);
    mapper.expect("MAPPED", T);
    shm.detach()?;
    check(
        qshm::admin::exists(&native),
        "the last detach destroyed a mapped segment",
    )?;
    let exe = std::env::current_exe()?;
    let mut cleaner = Peer::spawn_command(
        in_own_pid_namespace(exe)
            .arg(native.native())
            .env(CHILD_ENV, "rm-stale"),
    );
    let state = cleaner.line(T);
    let said = cleaner.line(T);
    cleaner.wait(T);
    let kept = qshm::admin::exists(&native);
    mapper.send("done");
    mapper.wait(T);
    check(
        state == "STATE Some(Unknown)",
        format!("ls in a PID namespace of its own beside a host mapper: {state}"),
    )?;
    check(
        said == "KEPT" && kept,
        format!("rm --stale in a PID namespace of its own beside a host mapper: {said}, exists: {kept}"),
    )
}

/// 3: another user holds a write lease on a file of theirs in `/dev/shm` for ever; root's
/// `ls`, `rm --stale` and an attach to it each finish within 3 s (before: each open of it
/// waited the kernel's lease-break time, 45 s).
fn foreign_lease_never_stalls() -> Result<(), Failed> {
    let _alone = MACHINE_WIDE.write().unwrap_or_else(|e| e.into_inner());
    let Some(user) = TempUser::create("another_users_lease_never_stalls") else {
        return Ok(());
    };
    let name = format!("qshm-test-leased-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path.clone());
    let mut holder = user.spawn("lease-hold", &[&path]);
    let leased = holder.line(T);
    check(leased == "LEASED", format!("the other user's lease: {leased}"))?;
    std::thread::sleep(Duration::from_millis(2100)); // old enough to be judged
    let bound = Duration::from_secs(3);
    let started = Instant::now();
    qshm::admin::scan()?;
    check(
        started.elapsed() < bound,
        format!("ls took {:?}", started.elapsed()),
    )?;
    let started = Instant::now();
    qshm::admin::remove_stale(true)?;
    check(
        started.elapsed() < bound,
        format!("rm --stale --all took {:?}", started.elapsed()),
    )?;
    let started = Instant::now();
    let mut shm =
        SharedMemory::with_native_key(NativeIpcKey::new(format!("/{name}"), KeyType::PosixRealtime));
    let attached = shm.attach(AccessMode::ReadOnly);
    check(
        started.elapsed() < bound + Duration::from_millis(500),
        format!("attach took {:?}: {attached:?}", started.elapsed()),
    )?;
    holder.send("done");
    holder.wait(T);
    Ok(())
}
