//! What Qt's `QSharedMemory` does not have, across real processes (the test binary
//! re-executes itself in a child role): typed views under the lock, lock-free atomics,
//! change notification, and the single-instance example (`examples/single_instance.rs`,
//! compiled into this binary and run as its own `main` in child processes).

mod support;

#[allow(dead_code)]
#[path = "../examples/single_instance.rs"]
mod single_instance;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use qshm::{AccessMode, Generation, KeyType, LockMode, SharedMemory, SharedMemoryError};
use support::qt::{find_qt_python, qt_peer};
use support::*;

const T: Duration = Duration::from_secs(30);

/// The child role that runs the example's own `main`.
const SINGLE_INSTANCE: &str = "single-instance";

/// A struct as a Qt program would put it in a segment.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
#[repr(C)]
struct Quote {
    bid: u64,
    ask: u64,
    volume: u32,
    flags: u32,
}

const MODES: [LockMode; 2] = [LockMode::QtCompatible, LockMode::Fast];

fn main() -> ExitCode {
    if std::env::var(CHILD_ENV).as_deref() == Ok(SINGLE_INSTANCE) {
        return single_instance::main();
    }
    run_child_role(child_main);
    let args = Arguments::from_args();
    let python = find_qt_python();
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(
            format!("{k}::typed_views_written_here_read_in_another_process"),
            move || typed_views(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::two_processes_increment_one_atomic_without_the_lock"),
            move || atomics_exact_total(kind),
        ));
        for mode in MODES {
            let m = mode_name(mode);
            trials.push(Trial::test(
                format!("{k}::{m}::notify_wakes_a_sleeping_waiter_in_another_process"),
                move || notify_wakes_waiter(kind, mode),
            ));
            trials.push(Trial::test(
                format!("{k}::{m}::a_waiter_killed_with_sigkill_stalls_nobody"),
                move || killed_waiter(kind, mode),
            ));
        }
        trials.push(Trial::test(
            format!("{k}::single_instance_a_killed_instance_does_not_block_the_next"),
            move || single_instance_after_kill(kind),
        ));
        let name = format!("{k}::notification_on_a_qt_segment_leaves_the_qt_process_unaffected");
        trials.push(match python.clone() {
            Some(py) => Trial::test(name, move || notify_on_qt_segment(&py, kind)),
            None => Trial::test(name, || Ok(())).with_ignored_flag(true),
        });
        let py = python.clone();
        trials.push(match py {
            Some(py) => Trial::test(
                format!("{k}::single_instance_and_a_qt_instance_exclude_each_other"),
                move || single_instance_against_qt(&py, kind),
            ),
            None => Trial::test(
                format!("{k}::single_instance_and_a_qt_instance_exclude_each_other"),
                || Ok(()),
            )
            .with_ignored_flag(true),
        });
    }
    trials.push(Trial::test(
        "typed_views_and_atomics_refuse_what_does_not_fit_or_align",
        refusals,
    ));
    trials.push(Trial::test(
        "posix::qt::readers_of_another_user_wait_for_changes_but_neither_lock_nor_notify",
        readers_of_another_user,
    ));
    run_suite(&args, trials, Passes::AsUser)
}

/// Child roles. Arguments: key, key type, lock mode, then role-specific ones.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind, mode) = (&args[0], parse_kind(&args[1]), parse_mode(&args[2]));
    let mut shm = handle(key, kind, mode);
    match role {
        "typed-read" => {
            shm.attach(AccessMode::ReadOnly).expect("attach");
            let data = shm.lock_read().expect("lock_read");
            let q = data.as_type_at::<Quote>(16).expect("as_type_at");
            say(format!("QUOTE {} {} {} {}", q.bid, q.ask, q.volume, q.flags));
            let ids = data.as_slice_of_at::<u32>(64, 4).expect("as_slice_of_at");
            say(format!("IDS {ids:?}"));
            let err = data.as_type_at::<Quote>(12).expect_err("misaligned");
            say(format!("MISALIGNED {:?}", err.kind()));
            0
        }
        "atomic-add" => {
            let rounds: u64 = args[3].parse().unwrap();
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let atomics = shm.atomics().expect("atomics");
            let counter = atomics.atomic_u64(8).expect("atomic_u64");
            say("READY");
            wait_for_stdin_line(); // start together
            for _ in 0..rounds {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            say("DONE");
            0
        }
        "wait-change" => {
            let changes: usize = args[3].parse().unwrap();
            shm.attach(AccessMode::ReadOnly).expect("attach");
            let mut seen = shm.generation().expect("generation");
            say(format!("WAITING {}", seen.value()));
            for _ in 0..changes {
                let now = shm.wait_for_change(seen, T).expect("wait_for_change");
                if now == seen {
                    say("TIMEOUT");
                    return 1;
                }
                let byte = shm.lock_read().expect("lock_read")[0];
                say(format!("CHANGED {} {byte}", now.value()));
                seen = now;
            }
            0
        }
        "reader" => {
            if let Err(e) = shm.attach(AccessMode::ReadOnly) {
                say(format!("ATTACH {:?} {e}", e.kind()));
                return 2;
            }
            let seen = match shm.generation() {
                Ok(g) => g,
                Err(e) => {
                    say(format!("ERROR {:?} {e}", e.kind()));
                    return 1;
                }
            };
            let lock = shm.lock_read().map(drop).map_err(|e| e.kind());
            say(format!("LOCK {lock:?}"));
            let notify = shm.notify_all().map(drop).map_err(|e| e.kind());
            say(format!("NOTIFY {notify:?}"));
            say(format!("WAITING {}", seen.value()));
            match shm.wait_for_change(seen, T) {
                Ok(now) if now != seen => {
                    say(format!("CHANGED {}", now.value()));
                    0
                }
                Ok(_) => {
                    say("TIMEOUT");
                    1
                }
                Err(e) => {
                    say(format!("ERROR {:?} {e}", e.kind()));
                    1
                }
            }
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn typed_views(kind: KeyType) -> Result<(), Failed> {
    let fx = setup("typed", kind, LockMode::QtCompatible, 100)?;
    {
        let mut data = fx.shm.lock()?;
        *data.as_type_mut_at::<Quote>(16)? = Quote {
            bid: 10_842,
            ask: 10_844,
            volume: 7,
            flags: 0xf00d,
        };
        data.as_slice_of_mut_at::<u32>(64, 4)?
            .copy_from_slice(&[1, 2, 3, 0xdead_beef]);
        // the whole-segment slice: 100 bytes hold 12 whole u64s, the rest is left out
        check(
            data.as_slice_of::<u64>()?.len() == 12,
            "12 whole u64s in 100 bytes",
        )?;
        check(
            data.as_slice_of_mut::<Quote>()?.len() == 4,
            "4 whole Quotes (24 bytes) in 100 bytes",
        )?;
    }
    let mut reader = Peer::spawn("typed-read", &fx.args(&[]));
    check(
        reader.expect("QUOTE", T) == "10842 10844 7 61453",
        "the other process reads the struct this one wrote",
    )?;
    check(
        reader.expect("IDS", T) == format!("{:?}", [1u32, 2, 3, 0xdead_beef]),
        "and the slice",
    )?;
    check(
        reader.expect("MISALIGNED", T) == "InvalidSize",
        "a misaligned offset is InvalidSize there too",
    )?;
    check(reader.wait(T).success(), "reader exits cleanly")?;
    fx.finish().map_err(Failed::from)
}

fn refusals() -> Result<(), Failed> {
    let mut fx = setup("refuse", KeyType::PosixRealtime, LockMode::Fast, 20)?;
    {
        let mut data = fx.shm.lock()?;
        let err = data.as_type_at::<Quote>(0).expect_err("24 bytes in 20");
        check(
            err.kind() == SharedMemoryError::InvalidSize,
            format!("too big: {err:?}"),
        )?;
        check(
            err.to_string()
                .contains("Quote (24 bytes, alignment 8) at offset 0 does not fit"),
            format!("the message says what did not fit: {err}"),
        )?;
        let err = data.as_type_mut_at::<u64>(4).expect_err("misaligned");
        check(
            err.kind() == SharedMemoryError::InvalidSize && err.to_string().contains("misaligned"),
            format!("misaligned: {err}"),
        )?;
        check(
            data.as_slice_of_at::<u32>(8, 4).is_err() && data.as_slice_of_at::<u32>(8, 3).is_ok(),
            "exact slices: 3 u32s fit at 8, 4 do not",
        )?;
        check(data.as_slice_of::<()>().is_err(), "no slice of a zero-sized type")?;
        check(
            fx.shm.error() == SharedMemoryError::InvalidSize,
            "the last error is recorded (Qt's error())",
        )?;
        check(
            data.as_type_at::<u8>(usize::MAX).is_err(),
            "an offset past the end is an error, not a panic",
        )?;
    }
    {
        let atomics = fx.shm.atomics()?;
        check(atomics.len() == 20, "every byte as an AtomicU8")?;
        check(
            atomics.atomic_u32(16).is_ok() && atomics.atomic_u64(8).is_ok(),
            "aligned words that fit",
        )?;
        for (what, result) in [
            ("u64 at 16 (past the end)", atomics.atomic_u64(16).err()),
            ("u64 at 4 (misaligned)", atomics.atomic_u64(4).err()),
            ("u32 at 2 (misaligned)", atomics.atomic_u32(2).err()),
            ("u32 at usize::MAX", atomics.atomic_u32(usize::MAX).err()),
        ] {
            let kind = result.map(|e| e.kind());
            check(
                kind == Some(SharedMemoryError::InvalidSize),
                format!("{what}: {kind:?}"),
            )?;
        }
    }
    let mut reader = SharedMemory::with_key_type(&fx.key, fx.kind);
    reader.attach(AccessMode::ReadOnly)?;
    let err = reader.atomics().expect_err("read-only");
    check(
        err.kind() == SharedMemoryError::PermissionDenied,
        format!("atomics on a read-only attachment: {err:?}"),
    )?;
    reader.detach()?;
    let mut unattached = SharedMemory::new("never-attached");
    check(
        unattached.atomics().map(|_| ()).unwrap_err().kind() == SharedMemoryError::LockError,
        "atomics when not attached",
    )?;
    check(
        unattached.notify_all().unwrap_err().kind() == SharedMemoryError::LockError,
        "notify when not attached",
    )?;
    fx.finish().map_err(Failed::from)
}

fn atomics_exact_total(kind: KeyType) -> Result<(), Failed> {
    const ROUNDS: u64 = 200_000;
    let mut fx = setup("atomic", kind, LockMode::QtCompatible, 64)?;
    let rounds = ROUNDS.to_string();
    let mut peers: Vec<Peer> = (0..2)
        .map(|_| Peer::spawn("atomic-add", &fx.args(&[&rounds])))
        .collect();
    for p in &mut peers {
        p.expect("READY", T);
    }
    for p in &mut peers {
        p.send("go");
    }
    for p in &mut peers {
        p.expect("DONE", T);
        check(p.wait(T).success(), "an incrementer exits cleanly")?;
    }
    let total = fx.shm.atomics()?.atomic_u64(8)?.load(Ordering::SeqCst);
    check(
        total == 2 * ROUNDS,
        format!(
            "two processes added {ROUNDS} each without the lock: total {total}, not {}",
            2 * ROUNDS
        ),
    )?;
    fx.finish().map_err(Failed::from)
}

/// Wait until process `pid` sleeps in the futex system call (it waits without polling).
/// The bound only catches a waiter that never gets there.
fn asleep_in_futex(pid: u32) -> Result<(), Failed> {
    let deadline = Instant::now() + T;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr = last.split_whitespace().next().and_then(|n| n.parse::<i64>().ok());
        if nr == Some(libc::SYS_futex) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("process {pid} never slept in futex(2); /proc/{pid}/syscall: {last:?}").into())
}

fn write_and_notify(shm: &SharedMemory, byte: u8) -> Result<Generation, Failed> {
    let mut data = shm.lock()?;
    data[0] = byte;
    Ok(data.unlock_and_notify()?)
}

fn notify_wakes_waiter(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let fx = setup("notify", kind, mode, 64)?;
    let mut waiter = Peer::spawn("wait-change", &fx.args(&["2"]));
    let seen: u32 = waiter.expect("WAITING", T).parse()?;
    check(
        fx.shm.generation()?.value() == seen,
        "both processes see one generation",
    )?;
    for byte in [7u8, 8] {
        asleep_in_futex(waiter.child.id())?;
        let now = write_and_notify(&fx.shm, byte)?;
        check(
            waiter.expect("CHANGED", T) == format!("{} {byte}", now.value()),
            format!("the waiter woke to generation {} and read {byte}", now.value()),
        )?;
    }
    check(waiter.wait(T).success(), "waiter exits cleanly")?;
    check(
        fx.shm.wait_for_change(fx.shm.generation()?, Duration::ZERO)? == fx.shm.generation()?,
        "a zero timeout returns at once, unchanged",
    )?;
    fx.finish().map_err(Failed::from)
}

fn killed_waiter(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let fx = setup("killwait", kind, mode, 64)?;
    let mut doomed = Peer::spawn("wait-change", &fx.args(&["1"]));
    let mut other = Peer::spawn("wait-change", &fx.args(&["1"]));
    doomed.expect("WAITING", T);
    other.expect("WAITING", T);
    asleep_in_futex(doomed.child.id())?;
    asleep_in_futex(other.child.id())?;
    doomed.kill9();
    write_and_notify(&fx.shm, 1)?;
    check(
        other.expect("CHANGED", T).ends_with(" 1"),
        "the other waiter woke",
    )?;
    check(other.wait(T).success(), "it exits cleanly")?;
    // and a later waiter is not stalled by the dead one either
    let mut late = Peer::spawn("wait-change", &fx.args(&["1"]));
    late.expect("WAITING", T);
    asleep_in_futex(late.child.id())?;
    write_and_notify(&fx.shm, 2)?;
    check(late.expect("CHANGED", T).ends_with(" 2"), "a later waiter woke")?;
    check(late.wait(T).success(), "it exits cleanly")?;
    fx.finish().map_err(Failed::from)
}

/// Another user who may only read a segment (0644) waits for its changes (its mapping of
/// the lock state is read-only, which a futex wait needs no more), but may neither take
/// its lock nor announce changes: it could corrupt neither the lock words nor the counter.
fn readers_of_another_user() -> Result<(), Failed> {
    let Some(user) = TempUser::create("readers_of_another_user") else {
        return Ok(());
    };
    let kind = KeyType::PosixRealtime;
    let key = unique_key("reader");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o644);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut reader = user.spawn("reader", &[&key, kind_name(kind), "qt"]);
    check(
        reader.expect("LOCK", T) == "Err(PermissionDenied)",
        "a reader may not take the lock",
    )?;
    check(
        reader.expect("NOTIFY", T) == "Err(PermissionDenied)",
        "a reader may not notify",
    )?;
    check(reader.expect("WAITING", T) == "0", "it sees the counter")?;
    std::thread::sleep(Duration::from_millis(50));
    let now = shm.notify_all()?;
    check(
        reader.expect("CHANGED", T) == now.value().to_string(),
        "the owner's notification wakes the reader",
    )?;
    check(reader.wait(T).success(), "the reader exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &[]);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// The example, as its own `main`, in a child process: `[KEY, --posix]`.
fn instance(key: &str, kind: KeyType) -> Peer {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.env(CHILD_ENV, SINGLE_INSTANCE).arg(key);
    if kind == KeyType::PosixRealtime {
        cmd.arg("--posix");
    }
    Peer::spawn_command(&mut cmd)
}

fn refused(key: &str, kind: KeyType, why: &str) -> Result<(), Failed> {
    let mut second = instance(key, kind);
    let status = second.wait(T);
    check(
        status.code() == Some(3),
        format!("{why}: a second instance must refuse (exit 3), got {status}"),
    )
}

fn single_instance_after_kill(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("single");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut first = instance(&key, kind);
    first.expect("running:", T);
    let recorded = sysv_keys(&key, kind);
    refused(&key, kind, "while the first runs")?;
    first.kill9(); // a crash: nothing detached, the segment survives
    let mut next = instance(&key, kind);
    next.expect("running:", T);
    refused(&key, kind, "while the next runs")?;
    next.send("");
    next.expect("quitting", T);
    check(next.wait(T).success(), "the next instance quits cleanly")?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn single_instance_against_qt(py: &std::path::PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("singleqt");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    // a Qt instance of the app holds the key: the example refuses
    let mut qt = qt_peer(py, "create", &key, kind, &["--size", "1"]);
    qt.expect("READY", T);
    let recorded = sysv_keys(&key, kind);
    refused(&key, kind, "while a Qt instance runs")?;
    qt.send("detach");
    qt.expect("DETACHED", T);
    check(qt.wait(T).success(), "the Qt instance exits cleanly")?;
    // the example runs: Qt's create(1) fails with AlreadyExists
    let mut ours = instance(&key, kind);
    ours.expect("running:", T);
    let mut qt = qt_peer(py, "create", &key, kind, &["--size", "1"]);
    let status = qt.wait(T);
    check(
        !status.success(),
        format!("Qt's create must fail while the example runs: {status}"),
    )?;
    ours.send("");
    check(ours.wait(T).success(), "the example quits cleanly")?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// Qt makes the segment and stays attached; two qshm processes notify and wait on it (the
/// qshm owner adds the lock state); Qt reads and locks as before.
fn notify_on_qt_segment(py: &std::path::PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qtnotify");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = qt_peer(py, "create", &key, kind, &["--size", "64", "--text", "q"]);
    qt.expect("READY", T);
    let recorded = sysv_keys(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.attach(AccessMode::ReadWrite)?;
    let mut waiter = Peer::spawn("wait-change", &[&key, kind_name(kind), "qt", "1"]);
    waiter.expect("WAITING", T);
    asleep_in_futex(waiter.child.id())?;
    write_and_notify(&shm, b'Z')?;
    check(
        waiter.expect("CHANGED", T).ends_with(&format!(" {}", b'Z')),
        "the qshm waiter woke",
    )?;
    check(waiter.wait(T).success(), "it exits cleanly")?;
    let mut reader = qt_peer(py, "read", &key, kind, &["--len", "1"]);
    check(
        reader.expect("DATA", T) == "5a",
        "a Qt process reads, under Qt's lock, what qshm wrote and notified",
    )?;
    check(reader.wait(T).success(), "the Qt reader exits cleanly")?;
    qt.send("detach");
    qt.expect("DETACHED", T);
    check(qt.wait(T).success(), "the Qt creator exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}
