//! Security: default modes, another user's access, key files never followed through
//! symlinks, read-only mappings that really fault (tests/processes.rs covers SIGSEGV).

mod support;

use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::process::CommandExt;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, SharedMemory, SharedMemoryError, SystemSemaphore};
use support::*;

fn main() {
    run_child_role(child_main);
    let mut trials = Vec::new();
    // Tests that switch users need temporary users: skipped (ignored, with one SKIP line)
    // only when they cannot be made at all.
    let no_users = users_unavailable();
    if let Some(why) = &no_users {
        eprintln!("*** SKIP: tests as another user: {why} ***");
    }
    let as_other_user = |name: String, test: Box<dyn FnOnce() -> Result<(), Failed> + Send>| {
        Trial::test(name, test).with_ignored_flag(no_users.is_some())
    };
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(format!("{k}::created_0600_by_default"), move || {
            default_modes(kind)
        }));
        trials.push(as_other_user(
            format!("{k}::another_user_is_denied"),
            Box::new(move || other_user(kind)),
        ));
    }
    trials.push(as_other_user(
        "temporary_users_are_distinct_and_removed".to_owned(),
        Box::new(distinct_users),
    ));
    trials.push(Trial::test(
        "systemv::key_file_symlink_is_refused",
        symlinked_key_file,
    ));
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind) = (&args[0], parse_kind(&args[1]));
    match role {
        "attach" => {
            let mode = if args[2] == "ro" {
                AccessMode::ReadOnly
            } else {
                AccessMode::ReadWrite
            };
            let mut shm = handle(key, kind, LockMode::QtCompatible);
            match shm.attach(mode) {
                Ok(()) => say("OK"),
                Err(e) => say(format!("ERR {:?}", e.kind())),
            }
            0
        }
        _ => 2,
    }
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn sysv_perms(table: &str, key: i32) -> Option<u32> {
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()?.parse::<i32>().ok()? == key).then(|| u32::from_str_radix(f.get(2)?, 8).ok())?
    })
}

fn default_modes(kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("mode");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    drop(shm.lock()?); // lock state exists now
    check(
        shm.info()?.permissions == 0o600,
        format!("segment mode {:o}", shm.info()?.permissions),
    )?;
    let lock_mode = std::fs::metadata(shm.lock_state_path().ok_or("no lock state")?)?.mode() & 0o777;
    check(lock_mode == 0o600, format!("lock state mode {lock_mode:o}"))?;
    let sem = SystemSemaphore::legacy_native_key(&key, kind);
    match kind {
        KeyType::SystemV => {
            let k = SharedMemory::system_v_key(&sem).ok_or("no semaphore key file")?;
            let perms = sysv_perms("/proc/sysvipc/sem", k).ok_or("no semaphore")?;
            check(perms & 0o777 == 0o600, format!("semaphore mode {perms:o}"))?;
            for path in [shm.native_key(), sem.native()] {
                let m = std::fs::symlink_metadata(path)?;
                check(
                    m.file_type().is_file() && m.mode() & 0o777 == 0o640,
                    format!("key file {path}"),
                )?;
            }
        }
        KeyType::PosixRealtime => {
            let path = format!("/dev/shm/sem.{}", sem.native().trim_start_matches('/'));
            let mode = std::fs::metadata(&path)?.mode() & 0o777;
            check(mode == 0o600, format!("semaphore {path} mode {mode:o}"))?;
        }
        _ => unreachable!("these tests use KINDS: System V and POSIX"),
    }
    Ok(())
}

/// Why no temporary user can be made here (None: they can).
fn users_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (to run useradd)".to_owned());
    }
    for tool in ["useradd", "userdel"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn attach_as(user: &TempUser, key: &str, kind: KeyType, mode: &str) -> Result<String, Failed> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, "attach")
        .args([key, kind_name(kind), mode])
        .uid(user.uid)
        .gid(user.gid);
    let out = cmd.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn other_user(kind: KeyType) -> Result<(), Failed> {
    let user = TempUser::try_create()?;
    let key = unique_key("perm");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut private = handle(&key, kind, LockMode::QtCompatible);
    private.create(64, AccessMode::ReadWrite)?;
    let rw = attach_as(&user, &key, kind, "rw")?;
    check(
        rw == "ERR PermissionDenied",
        format!("0600 segment, other user read-write: {rw}"),
    )?;
    let ro = attach_as(&user, &key, kind, "ro")?;
    check(
        ro == "ERR PermissionDenied",
        format!("0600 segment, other user read-only: {ro}"),
    )?;
    private.detach()?;

    let mut shared = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o644);
    shared.create(64, AccessMode::ReadWrite)?;
    let ro = attach_as(&user, &key, kind, "ro")?;
    check(ro == "OK", format!("0644 segment, other user read-only: {ro}"))?;
    let rw = attach_as(&user, &key, kind, "rw")?;
    check(
        rw == "ERR PermissionDenied",
        format!("0644 segment, other user read-write: {rw}"),
    )?;
    Ok(())
}

fn symlinked_key_file() -> Result<(), Failed> {
    let key = unique_key("symlink");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let native = SharedMemory::legacy_native_key(&key, KeyType::SystemV);
    let victim = std::env::temp_dir().join(format!("{key}-victim"));
    let _ = std::fs::remove_file(&victim);
    symlink(&victim, native.native())?;
    let mut shm = SharedMemory::with_native_key(native.clone());
    let result = shm.create(64, AccessMode::ReadWrite);
    let victim_exists = victim.exists();
    let _ = std::fs::remove_file(native.native());
    let err = result
        .err()
        .ok_or("create through a symlinked key file must fail")?;
    check(err.kind() == SharedMemoryError::KeyError, format!("{err}"))?;
    check(err.to_string().contains("symbolic link"), format!("{err}"))?;
    check(!victim_exists, "the symlink's target must not be created")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Two users at once (as the parallel tests make them) get different names, and each
/// is gone when dropped.
fn distinct_users() -> Result<(), Failed> {
    let a = TempUser::try_create()?;
    let b = TempUser::try_create()?;
    check(
        a.name != b.name && a.uid != b.uid,
        format!("{} and {}", a.name, b.name),
    )?;
    let names = [a.name.clone(), b.name.clone()];
    check(names.iter().all(|n| user_exists(n)), "both exist")?;
    drop(a);
    drop(b);
    check(
        !names.iter().any(|n| user_exists(n)),
        format!("{names:?} removed"),
    )
}
