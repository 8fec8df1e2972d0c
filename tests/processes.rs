//! Multi-process behaviour of segments and locks, with real processes: the test binary
//! re-executes itself in a child role (see `child_main`).

mod support;

use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, SharedMemoryError};
use support::*;

const T: Duration = Duration::from_secs(20);

fn main() {
    run_child_role(child_main);
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(
            format!("{k}::create_write_attach_read_across_processes"),
            move || create_write_attach_read(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::second_create_is_already_exists"),
            move || second_create(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::attach_missing_is_not_found"),
            move || attach_missing(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::read_only_attach_cannot_write"),
            move || read_only(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::kill_9_every_attacher_then_create_works"),
            move || kill_all_then_create(kind),
        ));
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            let m = mode_name(mode);
            trials.push(Trial::test(
                format!("{k}::{m}::mutual_exclusion_4_processes"),
                move || mutual_exclusion(kind, mode),
            ));
            trials.push(Trial::test(
                format!("{k}::{m}::killed_holder_lock_is_recovered_and_reported"),
                move || killed_holder(kind, mode),
            ));
            trials.push(Trial::test(
                format!("{k}::{m}::try_lock_busy_and_lock_timeout"),
                move || busy_and_timeout(kind, mode),
            ));
            trials.push(Trial::test(
                format!("{k}::{m}::late_attacher_sees_the_held_lock"),
                move || late_attacher(kind, mode),
            ));
        }
    }
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

/// Child roles. Arguments: key, key type, lock mode, then role-specific ones.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind, mode) = (&args[0], parse_kind(&args[1]), parse_mode(&args[2]));
    let mut shm = handle(key, kind, mode);
    match role {
        "create-hold" => {
            let text = &args[3];
            shm.create(text.len(), AccessMode::ReadWrite).expect("create");
            shm.lock().expect("lock")[..text.len()].copy_from_slice(text.as_bytes());
            say(format!("READY {}", shm.size()));
            wait_for_stdin_line();
            0
        }
        "attach-hold" => {
            shm.attach(AccessMode::ReadWrite).expect("attach");
            say("ATTACHED");
            wait_for_stdin_line();
            0
        }
        "read" => {
            let len: usize = args[3].parse().unwrap();
            match shm.attach(AccessMode::ReadOnly) {
                Ok(()) => {
                    let data = shm.lock_read().expect("lock_read");
                    say(format!("SIZE {}", shm.size()));
                    say(format!("DATA {}", String::from_utf8_lossy(&data[..len])));
                    0
                }
                Err(e) => {
                    say(format!("ERROR {:?}", e.kind()));
                    1
                }
            }
        }
        "read-only-write" => {
            shm.attach(AccessMode::ReadOnly).expect("attach");
            let err = shm
                .lock()
                .expect_err("a read-only attachment must not lock for writing");
            say(format!("LOCK {:?}", err.kind()));
            say(format!(
                "MUTPTR {}",
                if shm.as_mut_ptr().is_null() { "null" } else { "set" }
            ));
            let ptr = shm.as_ptr() as *mut u8;
            // SAFETY: deliberately wrong: the mapping is read-only, so this write must
            // fault (SIGSEGV) — which is what the parent checks.
            unsafe { ptr.write_volatile(1) };
            say("WROTE");
            0
        }
        "increment" => {
            let rounds: u64 = args[3].parse().unwrap();
            shm.attach(AccessMode::ReadWrite).expect("attach");
            say("ATTACHED");
            wait_for_stdin_line(); // start together
            for _ in 0..rounds {
                let mut data = shm.lock().expect("lock");
                let value = u64::from_ne_bytes(data[..8].try_into().unwrap());
                std::thread::yield_now(); // widen the race window a lock must close
                data[..8].copy_from_slice(&(value + 1).to_ne_bytes());
            }
            say("DONE");
            0
        }
        "try-lock" => {
            shm.attach(AccessMode::ReadWrite).expect("attach");
            match shm.try_lock().expect("try_lock") {
                Some(_) => say("FREE"),
                None => say("BUSY"),
            }
            0
        }
        "hold-lock" => {
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let guard = shm.lock().expect("lock");
            say("LOCKED");
            wait_for_stdin_line();
            drop(guard);
            say("UNLOCKED");
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

fn args<'a>(key: &'a str, kind: KeyType, mode: LockMode, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![key, kind_name(kind), mode_name(mode)];
    v.extend_from_slice(extra);
    v
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn no_leftovers(key: &str, kind: KeyType, recorded: &[(&'static str, i32, i32)]) -> Result<(), Failed> {
    let left = leftovers(key, kind, recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn create_write_attach_read(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("rw");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mode = LockMode::QtCompatible;
    let mut a = Peer::spawn("create-hold", &args(&key, kind, mode, &["hello from A"]));
    let size: usize = a.expect("READY", T).parse()?;
    check(size == 12, format!("size {size}: not exactly what create asked"))?;
    let recorded = sysv_keys(&key, kind);
    let mut b = Peer::spawn("read", &args(&key, kind, mode, &["12"]));
    check(
        b.expect("SIZE", T) == size.to_string(),
        "attacher sees the real size",
    )?;
    check(
        b.expect("DATA", T) == "hello from A",
        "attacher reads what the creator wrote",
    )?;
    check(b.wait(T).success(), "reader exits cleanly")?;
    check(a.finish().success(), "creator exits cleanly")?;
    no_leftovers(&key, kind, &recorded)
}

fn second_create(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("dup");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut a = Peer::spawn("create-hold", &args(&key, kind, LockMode::QtCompatible, &["x"]));
    a.expect("READY", T);
    let recorded = sysv_keys(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    let err = shm
        .create(100, AccessMode::ReadWrite)
        .expect_err("second create must fail");
    check(
        err.kind() == SharedMemoryError::AlreadyExists,
        format!("got {err}"),
    )?;
    check(
        err.to_string().contains("already exists"),
        format!("message: {err}"),
    )?;
    check(!shm.is_attached(), "failed create leaves the handle detached")?;
    check(a.finish().success(), "creator exits cleanly")?;
    no_leftovers(&key, kind, &recorded)
}

fn attach_missing(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("missing");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut b = Peer::spawn("read", &args(&key, kind, LockMode::QtCompatible, &["1"]));
    check(
        b.expect("ERROR", T) == "NotFound",
        "attach of a missing key is NotFound",
    )?;
    b.wait(T);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    let err = shm
        .attach(AccessMode::ReadWrite)
        .expect_err("nothing to attach to");
    check(err.kind() == SharedMemoryError::NotFound, format!("got {err}"))?;
    check(shm.error() == SharedMemoryError::NotFound, "error() remembers it")?;
    no_leftovers(&key, kind, &[])
}

fn read_only(kind: KeyType) -> Result<(), Failed> {
    let f = setup("ro", kind, LockMode::QtCompatible, 64)?;
    let (key, shm) = (f.key.as_str(), &f.shm);
    let mut b = Peer::spawn("read-only-write", &args(key, kind, LockMode::QtCompatible, &[]));
    check(
        b.expect("LOCK", T) == "PermissionDenied",
        "lock() on read-only is PermissionDenied",
    )?;
    check(
        b.expect("MUTPTR", T) == "null",
        "no mutable pointer for read-only",
    )?;
    let status = b.wait(T);
    use std::os::unix::process::ExitStatusExt;
    check(
        status.signal() == Some(libc::SIGSEGV),
        format!("write to read-only mapping: {status:?}"),
    )?;
    check(shm.lock()?[0] == 0, "the write did not land")?;
    Ok(f.finish()?)
}

fn kill_all_then_create(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("kill");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mode = LockMode::QtCompatible;
    let mut a = Peer::spawn("create-hold", &args(&key, kind, mode, &["stale"]));
    a.expect("READY", T);
    let recorded = sysv_keys(&key, kind);
    let mut b = Peer::spawn("hold-lock", &args(&key, kind, mode, &[]));
    b.expect("LOCKED", T);
    a.kill9();
    b.kill9();
    // Every user is dead: the segment is stale and the next create replaces it.
    let mut shm = handle(&key, kind, mode);
    shm.create(100, AccessMode::ReadWrite)?;
    let guard = shm.lock_timeout(Duration::from_secs(5))?;
    check(guard.is_some(), "the new segment's lock is free")?;
    check(
        guard.as_ref().is_some_and(|g| g[..5] != *b"stale"),
        "fresh segment, not the stale one",
    )?;
    drop(guard);
    shm.detach()?;
    no_leftovers(&key, kind, &recorded)
}

fn mutual_exclusion(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    const PROCS: usize = 4;
    const ROUNDS: u64 = 2000;
    let f = setup("mutex", kind, mode, 8)?;
    let (key, shm) = (f.key.as_str(), &f.shm);
    let mut peers: Vec<Peer> = (0..PROCS)
        .map(|_| Peer::spawn("increment", &args(key, kind, mode, &[&ROUNDS.to_string()])))
        .collect();
    for p in &mut peers {
        p.expect("ATTACHED", T);
    }
    for p in &mut peers {
        p.send("go");
    }
    for p in &mut peers {
        p.expect("DONE", Duration::from_secs(120));
        check(p.wait(T).success(), "incrementer exits cleanly")?;
    }
    let total = u64::from_ne_bytes(shm.lock()?[..8].try_into()?);
    check(
        total == PROCS as u64 * ROUNDS,
        format!("counter {total}, expected {}", PROCS as u64 * ROUNDS),
    )?;
    Ok(f.finish()?)
}

fn killed_holder(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let f = setup("dead", kind, mode, 8)?;
    let (key, shm) = (f.key.as_str(), &f.shm);
    let mut holder = Peer::spawn("hold-lock", &args(key, kind, mode, &[]));
    holder.expect("LOCKED", T);
    check(shm.try_lock()?.is_none(), "held by the child")?;
    holder.kill9();
    let start = Instant::now();
    let guard = shm.lock_timeout(Duration::from_secs(5))?;
    let waited = start.elapsed();
    let guard = guard.ok_or("lock not recovered within 5 s after the holder was killed")?;
    check(
        guard.previous_owner_died(),
        "the new holder is told the previous one died",
    )?;
    check(
        waited < Duration::from_secs(2),
        format!("recovery took {waited:?}"),
    )?;
    drop(guard);
    let again = shm.try_lock()?.ok_or("lock is free again after unlock")?;
    check(!again.previous_owner_died(), "the death is reported once")?;
    drop(again);
    Ok(f.finish()?)
}

fn busy_and_timeout(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let f = setup("busy", kind, mode, 8)?;
    let (key, shm) = (f.key.as_str(), &f.shm);
    let mut holder = Peer::spawn("hold-lock", &args(key, kind, mode, &[]));
    holder.expect("LOCKED", T);
    check(
        shm.try_lock()?.is_none(),
        "try_lock is busy while another process holds it",
    )?;
    let start = Instant::now();
    check(
        shm.lock_timeout(Duration::from_millis(300))?.is_none(),
        "lock_timeout times out",
    )?;
    let waited = start.elapsed();
    check(
        waited >= Duration::from_millis(290),
        format!("returned after only {waited:?}"),
    )?;
    holder.send("release");
    holder.expect("UNLOCKED", T);
    let guard = shm
        .lock_timeout(Duration::from_secs(5))?
        .ok_or("free after release")?;
    check(!guard.previous_owner_died(), "a clean release is not a death")?;
    drop(guard);
    check(holder.finish().success(), "holder exits cleanly")?;
    Ok(f.finish()?)
}

/// Regression: tmpfs bumps a file's ctime on writes through a mapping; lock state bound
/// to ctime was re-initialised by an attacher that came after a write, breaking exclusion.
fn late_attacher(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let f = setup("late", kind, mode, 64)?;
    let (key, shm) = (f.key.as_str(), &f.shm);
    let mut guard = shm.lock()?;
    guard[..5].copy_from_slice(b"write");
    std::thread::sleep(Duration::from_millis(20)); // a later ctime
    guard[5..10].copy_from_slice(b"again");
    let mut late = Peer::spawn("try-lock", &args(key, kind, mode, &[]));
    check(late.line(T) == "BUSY", "a late attacher must see the lock held")?;
    check(late.wait(T).success(), "child exits cleanly")?;
    drop(guard);
    let mut late = Peer::spawn("try-lock", &args(key, kind, mode, &[]));
    check(late.line(T) == "FREE", "and free once released")?;
    late.wait(T);
    Ok(f.finish()?)
}
