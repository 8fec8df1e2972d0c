//! Segments removed behind their users' back, across real processes: `ipcrm`, `rm` of
//! the `/dev/shm` file, `qshm rm` (`force_remove`) and systemd-logind's `RemoveIPC=yes`
//! (simulated as logind's `clean_ipc_by_uid` does it: the user's System V segments nobody
//! is attached to, all the user's System V semaphore sets and all the user's files in
//! `/dev/shm`, at once) are reported by `SharedMemory::removal` in every attached
//! process, for both key types (logind leaves a System V segment that is attached, but
//! its lock state goes: `LockStateRemoved`); a segment removed and made again is
//! `Replaced` for the old handle and `Present` for the new one; other processes attaching
//! and detaching is no removal. After each case nothing of the key is left.

mod support;

use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, Opened, Removal, SharedMemory, SharedMemoryError};
use support::*;

const T: Duration = Duration::from_secs(30);

const MODES: [LockMode; 2] = [LockMode::QtCompatible, LockMode::Fast];

fn main() {
    run_child_role(child_main);
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        for mode in MODES {
            let m = mode_name(mode);
            trials.push(Trial::test(
                format!("{k}::{m}::qshm_rm_while_attached_is_reported_in_every_attached_process"),
                move || removed_by(kind, mode, Remover::ForceRemove),
            ));
            let (name, how) = match kind {
                KeyType::PosixRealtime => ("rm_of_the_dev_shm_file", Remover::Unlink),
                _ => ("ipcrm", Remover::Ipcrm),
            };
            trials.push(Trial::test(
                format!("{k}::{m}::{name}_while_attached_is_reported_in_every_attached_process"),
                move || removed_by(kind, mode, how),
            ));
            trials.push(
                Trial::test(
                    format!("{k}::{m}::remove_ipc_at_logout_is_reported_and_open_or_create_recovers"),
                    move || remove_ipc_at_logout(kind, mode),
                )
                .with_ignored_flag(!is_root()),
            );
        }
        trials.push(Trial::test(
            format!("{k}::removed_and_made_again_is_replaced_for_the_old_handle_only"),
            move || replaced(kind),
        ));
        let (name, how) = match kind {
            KeyType::PosixRealtime => ("rm_of_the_file", Remover::Unlink),
            _ => ("ipcrm", Remover::Ipcrm),
        };
        trials.push(Trial::test(
            format!("{k}::after_{name}_and_a_new_segment_the_old_detach_leaves_the_new_lock_alone"),
            move || old_detach_leaves_new_lock(kind, how),
        ));
        trials.push(Trial::test(
            format!("{k}::a_removed_lock_state_is_reported_in_every_attached_process"),
            move || lock_state_removed(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::others_attaching_and_detaching_is_no_removal"),
            move || others_come_and_go(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::a_handle_that_is_not_attached_is_not_found"),
            move || not_attached(kind),
        ));
    }
    run_suite(&args, trials, Passes::AsUser)
}

/// Child roles. Arguments: key, key type, lock mode.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind, mode) = (&args[0], parse_kind(&args[1]), parse_mode(&args[2]));
    match role {
        // attach; at each line on stdin print what `removal` says; end at EOF
        "watch" => {
            let mut shm = handle(key, kind, mode);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            say("ATTACHED");
            while read_line() {
                say(format!("REMOVAL {:?}", shm.removal()));
            }
            0
        }
        // attach; try the lock, and again at a line on stdin
        "try-lock" => {
            let mut shm = handle(key, kind, mode);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            for round in 0..2 {
                if round > 0 {
                    read_line();
                }
                let took = shm.try_lock().expect("try_lock").is_some();
                say(format!("TRY {}", if took { "took it" } else { "busy" }));
            }
            0
        }
        // attach, detach, open_or_create, detach: comes and goes
        "come-and-go" => {
            let mut shm = handle(key, kind, mode);
            shm.attach(AccessMode::ReadOnly).expect("attach");
            shm.detach().expect("detach");
            let opened = shm
                .open_or_create(64, AccessMode::ReadWrite)
                .expect("open_or_create");
            say(format!("OPENED {opened:?}"));
            0
        }
        // another user's program: open_or_create, then (told so) report the removal, lock,
        // detach and open_or_create again
        "logged-in" => {
            let mut shm = handle(key, kind, mode);
            let opened = shm
                .open_or_create(64, AccessMode::ReadWrite)
                .expect("open_or_create");
            shm.lock().expect("lock")[0] = b'1';
            say(format!("OPENED {opened:?}"));
            read_line();
            say(format!("REMOVAL {:?}", shm.removal()));
            // the old segment still works for this process alone
            let lock = shm
                .lock_timeout(Duration::from_secs(5))
                .map(|g| g.map(|g| g[0]))
                .map_err(|e| e.kind());
            say(format!("LOCK {lock:?}"));
            shm.detach().expect("detach");
            let again = shm
                .open_or_create(64, AccessMode::ReadWrite)
                .expect("open_or_create again");
            let fresh = shm.lock().expect("lock the new segment")[0];
            say(format!("AGAIN {again:?} {:?} {fresh}", shm.removal()));
            read_line();
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

/// One line from stdin; false at its end.
fn read_line() -> bool {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0)
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

/// How a segment is removed behind its users' back.
#[derive(Clone, Copy, Debug)]
enum Remover {
    /// `qshm rm KEY`: `SharedMemoryExt::force_remove`.
    ForceRemove,
    /// `ipcrm -m SHMID` (System V).
    Ipcrm,
    /// `rm /dev/shm/NAME` (POSIX).
    Unlink,
}

fn remove(how: Remover, shm: &SharedMemory) -> Result<(), Failed> {
    match how {
        Remover::ForceRemove => {
            check(
                SharedMemory::force_remove(shm.native_ipc_key())?,
                "force_remove found it",
            )?;
        }
        Remover::Ipcrm => {
            let os_id = shm.info()?.os_id; // "shmid N key 0x..."
            let shmid = os_id.split_whitespace().nth(1).ok_or("no shmid")?.to_owned();
            let status = std::process::Command::new("ipcrm")
                .args(["-m", &shmid])
                .status()?;
            check(status.success(), format!("ipcrm -m {shmid}: {status}"))?;
        }
        Remover::Unlink => std::fs::remove_file(shm_path(shm.native_ipc_key()))?,
    }
    Ok(())
}

fn removed_by(kind: KeyType, mode: LockMode, how: Remover) -> Result<(), Failed> {
    let fx = setup("removed", kind, mode, 4096)?;
    let mut watcher = Peer::spawn("watch", &fx.args(&[]));
    watcher.expect("ATTACHED", T);
    check(fx.shm.removal()? == Removal::Present, "present before")?;
    watcher.send("look");
    check(
        watcher.expect("REMOVAL", T) == "Ok(Present)",
        "present in the other process",
    )?;
    remove(how, &fx.shm)?;
    check(
        fx.shm.removal()? == Removal::Removed,
        format!("{how:?}: removed for this handle"),
    )?;
    check(fx.shm.is_removed()?, "is_removed")?;
    watcher.send("look");
    let seen = watcher.expect("REMOVAL", T);
    check(
        seen == "Ok(Removed)",
        format!("{how:?}: the other process sees {seen}"),
    )?;
    // tools find who still maps it (while the key file exists: qshm rm removes it)
    if !matches!(how, Remover::ForceRemove) || kind == KeyType::PosixRealtime {
        let removed = qshm::admin::removed_in_use(fx.shm.native_ipc_key());
        let pids: Vec<u32> = removed.iter().flat_map(|r| r.mapped_by.clone()).collect();
        check(
            removed.len() == 1 && pids.contains(&watcher.child.id()) && pids.contains(&std::process::id()),
            format!("{how:?}: removed_in_use {removed:?}"),
        )?;
    }
    // nobody new finds it; the attached keep their bytes (and this one its lock)
    let err = handle(&fx.key, kind, mode)
        .attach(AccessMode::ReadOnly)
        .unwrap_err();
    check(
        err.kind() == SharedMemoryError::NotFound,
        format!("attach after: {err:?}"),
    )?;
    fx.shm.lock()?[0] = 1;
    watcher.finish();
    // the creator's detach, last, frees what was left of it
    fx.finish().map_err(Into::into)
}

fn replaced(kind: KeyType) -> Result<(), Failed> {
    let mut fx = setup("replaced", kind, LockMode::QtCompatible, 64)?;
    fx.shm.lock()?[0] = b'o';
    check(SharedMemory::force_remove(fx.shm.native_ipc_key())?, "removed")?;
    let mut newer = handle(&fx.key, kind, LockMode::QtCompatible);
    check(
        newer.open_or_create(64, AccessMode::ReadWrite)? == Opened::Created,
        "a new segment under the key",
    )?;
    newer.lock()?[0] = b'n';
    check(
        fx.shm.removal()? == Removal::Replaced,
        "replaced for the old handle",
    )?;
    check(newer.removal()? == Removal::Present, "present for the new one")?;
    // (System V: qshm rm took the key file, and the new one may have another inode, so
    // another numeric key: the old segment is not found by this key any more)
    // (Another trial's child, between its fork and its exec, maps what this process maps:
    // CI once saw it as a second mapper. It execs a moment later, so wait for it.)
    if kind == KeyType::PosixRealtime {
        let only_us = || {
            let removed = qshm::admin::removed_in_use(newer.native_ipc_key());
            let ok = removed.len() == 1 && removed[0].mapped_by == [std::process::id()];
            (ok, removed)
        };
        let mut seen = only_us();
        for _ in 0..100 {
            if seen.0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            seen = only_us();
        }
        check(
            seen.0,
            format!("the old one, still in use beside the new one: {:?}", seen.1),
        )?;
    }
    check(
        fx.shm.lock_read()?[0] == b'o',
        "the old handle keeps its own bytes",
    )?;
    // the old handle's detach leaves the new segment alone
    let recorded_old = fx.recorded.clone();
    fx.shm.detach()?;
    check(
        qshm::admin::removed_in_use(newer.native_ipc_key()).is_empty(),
        "none once its last user detached",
    )?;
    let mut third = handle(&fx.key, kind, LockMode::QtCompatible);
    third.attach(AccessMode::ReadOnly)?;
    check(third.lock_read()?[0] == b'n', "the key's segment is the new one")?;
    drop(third);
    let recorded = [recorded_old, sysv_keys(&fx.key, kind)].concat();
    drop(newer);
    let left = leftovers(&fx.key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// Removed by hand (`rm`, `ipcrm`: the segment alone; Qt's semaphore of the key stays),
/// then made again: the new segment shares the key's semaphore, so the old segment's
/// last detach must leave it, or the next Qt-compatible attacher would make a second
/// semaphore and lock apart from the new segment's holders. (Failed for POSIX before.)
fn old_detach_leaves_new_lock(kind: KeyType, how: Remover) -> Result<(), Failed> {
    let mut fx = setup("oldnew", kind, LockMode::QtCompatible, 64)?;
    fx.shm.lock()?[0] = b'o'; // Qt's semaphore exists now
    remove(how, &fx.shm)?;
    let mut newer = handle(&fx.key, kind, LockMode::QtCompatible);
    check(
        newer.open_or_create(64, AccessMode::ReadWrite)? == Opened::Created,
        "made again",
    )?;
    let semaphore = newer.semaphore_key();
    let recorded_old = fx.recorded.clone();
    fx.shm.detach()?;
    let sem_there = match kind {
        KeyType::PosixRealtime => std::path::Path::new(&sem_path(&semaphore)).exists(),
        _ => SharedMemory::system_v_key(&semaphore)
            .is_some_and(|k| !sysv_ids("/proc/sysvipc/sem", k).is_empty()),
    };
    check(
        sem_there,
        "the key's semaphore, which the new segment locks, is still there",
    )?;
    // one lock: a holder of the new segment keeps a new attacher out (in another process)
    let held = newer.lock()?;
    let mut third = Peer::spawn("try-lock", &fx.args(&[]));
    check(
        third.expect("TRY", T) == "busy",
        "the new segment's holder keeps a new attacher out",
    )?;
    drop(held);
    third.send("again");
    check(third.expect("TRY", T) == "took it", "and lets it in after")?;
    check(third.wait(T).success(), "it exits cleanly")?;
    let recorded = [recorded_old, sysv_keys(&fx.key, kind)].concat();
    drop(newer);
    let left = leftovers(&fx.key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// Only qshm's lock state is removed (what RemoveIPC=yes does to an attached System V
/// segment): the segment is present, but its handles, in every process, are told that
/// newcomers no longer share their lock state.
fn lock_state_removed(kind: KeyType) -> Result<(), Failed> {
    let fx = setup("lockstategone", kind, LockMode::Fast, 64)?;
    let mut watcher = Peer::spawn("watch", &fx.args(&[]));
    watcher.expect("ATTACHED", T);
    let path = fx.shm.lock_state_path().ok_or("a lock state")?;
    std::fs::remove_file(&path)?;
    check(
        fx.shm.removal()? == Removal::LockStateRemoved,
        "this handle is told",
    )?;
    check(fx.shm.is_removed()?, "is_removed")?;
    watcher.send("look");
    let seen = watcher.expect("REMOVAL", T);
    check(
        seen == "Ok(LockStateRemoved)",
        format!("the other process sees {seen}"),
    )?;
    watcher.finish();
    fx.finish().map_err(Into::into)
}

fn others_come_and_go(kind: KeyType) -> Result<(), Failed> {
    let fx = setup("comeandgo", kind, LockMode::QtCompatible, 64)?;
    for _ in 0..3 {
        let mut other = Peer::spawn("come-and-go", &fx.args(&[]));
        check(
            other.expect("OPENED", T) == "Attached",
            "it attached to this segment",
        )?;
        check(other.wait(T).success(), "it detached cleanly")?;
        check(fx.shm.removal()? == Removal::Present, "no removal")?;
    }
    fx.finish().map_err(Into::into)
}

fn not_attached(kind: KeyType) -> Result<(), Failed> {
    let shm = SharedMemory::with_key_type(&unique_key("notattached"), kind);
    let err = shm.removal().unwrap_err();
    check(err.kind() == SharedMemoryError::NotFound, format!("{err:?}"))?;
    check(shm.is_removed().is_err(), "is_removed too")
}

/// What systemd-logind does with `RemoveIPC=yes` when the last session of `uid` ends
/// (`clean_ipc_by_uid` in systemd's `clean-ipc.c`): remove every System V segment the user
/// owns that nobody is attached to, every System V semaphore set the user owns, and every
/// file of the user in `/dev/shm` (POSIX segments, glibc's semaphores, qshm's lock state).
fn remove_ipc_of(uid: u32) -> Result<usize, Failed> {
    let mut removed = 0;
    for (table, shm) in [("/proc/sysvipc/shm", true), ("/proc/sysvipc/sem", false)] {
        let text = std::fs::read_to_string(table)?;
        let header: Vec<&str> = text.lines().next().unwrap_or("").split_whitespace().collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (id_col, uid_col) = (
            column(if shm { "shmid" } else { "semid" }).ok_or("no id column")?,
            column("uid").ok_or("no uid column")?,
        );
        let nattch_col = column("nattch");
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            let number = |c: usize| f.get(c).and_then(|v| v.parse::<u64>().ok());
            let owned = number(uid_col) == Some(u64::from(uid));
            // logind leaves a segment that is attached
            let attached = shm && nattch_col.and_then(number).is_some_and(|n| n > 0);
            let Some(id) = f.get(id_col).and_then(|v| v.parse::<i32>().ok()) else {
                continue;
            };
            if !owned || attached {
                continue;
            }
            // SAFETY: IPC_RMID takes no buffer (null) and acts on the id only.
            let rc = unsafe {
                if shm {
                    libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut())
                } else {
                    libc::semctl(id, 0, libc::IPC_RMID)
                }
            };
            check(rc == 0, format!("IPC_RMID of {table} id {id}"))?;
            removed += 1;
        }
    }
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir("/dev/shm")?.flatten() {
        if entry.metadata().is_ok_and(|m| m.uid() == uid && m.is_file()) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn remove_ipc_at_logout(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let Some(user) = TempUser::create("RemoveIPC at logout") else {
        return Ok(());
    };
    let key = unique_key("removeipc");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut program = user.spawn("logged-in", &[&key, kind_name(kind), mode_name(mode)]);
    check(
        program.expect("OPENED", T) == "Created",
        "the user's program made it",
    )?;
    let recorded = sysv_keys(&key, kind);
    // the user logs out; the program (a service started as the user) keeps running
    let removed = remove_ipc_of(user.uid)?;
    check(removed >= 1, format!("RemoveIPC removed {removed} objects"))?;
    program.send("look");
    let seen = program.expect("REMOVAL", T);
    // POSIX: its file went. System V: logind leaves an attached segment, but its lock
    // state (a /dev/shm file of the user) went, and with it what newcomers would share
    let want = match kind {
        KeyType::PosixRealtime => "Ok(Removed)",
        _ => "Ok(LockStateRemoved)",
    };
    check(seen == want, format!("the program sees {seen}, not {want}"))?;
    // the old segment still locks for this process: the lock state and glibc's semaphore
    // stay mapped; System V's semaphore set, removed too, is made again (as Qt does)
    let lock = program.expect("LOCK", T);
    check(
        lock == "Ok(Some(49))",
        format!("{kind:?} {mode:?}: lock after removal: {lock}"),
    )?;
    let again = program.expect("AGAIN", T);
    check(
        again == "Created Ok(Present) 0",
        format!("open_or_create after detaching: {again}"),
    )?;
    let recorded = [recorded, sysv_keys(&key, kind)].concat();
    program.send("bye");
    check(program.wait(T).success(), "the program exits cleanly")?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}
