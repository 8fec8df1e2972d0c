//! Actors: long-lived processes that take commands, one per line, and answer each with
//! one line: the qshm actor (this test binary in the `actor` role) and the Qt 6 actor
//! (`interop/qt_actor.py`), which speak the same protocol (see that script). The counter
//! the `lock` and `burst` commands add to is the little-endian u64 at offset 0.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qshm::{AccessMode, KeyType, LockMode, SharedMemory};

use super::{Peer, TempUser, kind_name, mode_name, parse_kind, parse_mode, say};

/// A qshm actor on legacy key `key` (as `user`, if given), segments it creates `0666`; `None`
/// if it did not start within `wait`.
pub(crate) fn qshm(
    user: Option<&TempUser>,
    key: &str,
    kind: KeyType,
    mode: LockMode,
    wait: Duration,
) -> Option<Peer> {
    let args = [key, kind_name(kind), mode_name(mode)];
    let peer = match user {
        Some(user) => user.spawn("actor", &args),
        None => Peer::spawn("actor", &args),
    };
    started(peer, wait)
}

/// A qshm actor as [`qshm`] (root), but in a PID namespace of its own, where it is PID 1
/// and sees no other process (a container sharing IPC and `/dev/shm` with the host);
/// `None` if it did not start within `wait`.
pub(crate) fn qshm_in_own_pid_namespace(
    key: &str,
    kind: KeyType,
    mode: LockMode,
    wait: Duration,
) -> Option<Peer> {
    let exe = std::env::current_exe().ok()?;
    let peer = Peer::spawn_command(
        // killing the peer (unshare) kills the actor too
        super::in_own_pid_namespace(exe)
            .env(super::CHILD_ENV, "actor")
            .args([key, kind_name(kind), mode_name(mode)]),
    );
    started(peer, wait)
}

/// A Qt 6 actor (PyQt6 `python`) on legacy key `key`; `None` if it did not start.
pub(crate) fn qt(python: &Path, key: &str, kind: KeyType, wait: Duration) -> Option<Peer> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_actor.py");
    let peer =
        Peer::spawn_command(
            Command::new(python)
                .arg(script)
                .args(["--key", key, "--type", kind_name(kind)]),
        );
    started(peer, wait)
}

/// A Qt 6 actor as [`qt`], but in a PID namespace of its own (see
/// [`qshm_in_own_pid_namespace`]); `None` if it did not start.
pub(crate) fn qt_in_own_pid_namespace(
    python: &Path,
    key: &str,
    kind: KeyType,
    wait: Duration,
) -> Option<Peer> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_actor.py");
    let peer = Peer::spawn_command(super::in_own_pid_namespace(python).arg(script).args([
        "--key",
        key,
        "--type",
        kind_name(kind),
    ]));
    started(peer, wait)
}

fn started(mut peer: Peer, wait: Duration) -> Option<Peer> {
    (peer.try_line(wait).as_deref() == Some("READY")).then_some(peer)
}

/// Send `command`; its answer, or `None` after `wait`.
pub(crate) fn ask(peer: &mut Peer, command: &str, wait: Duration) -> Option<String> {
    peer.send(command);
    peer.try_line(wait)
}

/// The counter's value read under the lock, if the actor could read it.
pub(crate) fn read(peer: &mut Peer, wait: Duration) -> Option<u64> {
    ask(peer, "read", wait)?.strip_prefix("VALUE ")?.parse().ok()
}

/// The `actor` role: args key, kind, mode.
pub(crate) fn qshm_actor(args: &[String]) -> i32 {
    let (kind, mode) = (parse_kind(&args[1]), parse_mode(&args[2]));
    let mut shm = SharedMemory::with_key_type(&args[0], kind)
        .with_lock_mode(mode)
        .with_permissions(0o666);
    say("READY");
    let wait = Duration::from_secs(5);
    // a child forked by `fork`: it holds what it inherited until the next command
    let mut forked: Option<ForkedChild> = None;
    let add = |shm: &SharedMemory| -> Result<bool, String> {
        match shm.lock_timeout(wait) {
            Ok(Some(mut data)) => {
                let value = u64::from_le_bytes(data[..8].try_into().unwrap()).wrapping_add(1);
                data[..8].copy_from_slice(&value.to_le_bytes());
                Ok(data.previous_owner_died())
            }
            Ok(None) => Err("ERR Timeout".to_owned()),
            Err(e) => Err(format!("ERR {:?}", e.kind())),
        }
    };
    loop {
        let mut line = String::new();
        let ended = std::io::stdin().read_line(&mut line).unwrap_or(0) == 0;
        // the child forked before this command (or the end) execs a moment into it
        if let Some(child) = forked.take() {
            child.release();
        }
        if ended {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.first().copied() {
            Some("fork") => {
                forked = Some(ForkedChild::fork());
                "FORKED".to_owned()
            }
            Some("create") => match shm.create(words[1].parse().unwrap(), AccessMode::ReadWrite) {
                Ok(()) => "OK".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some("attach") => match shm.attach(AccessMode::ReadWrite) {
                Ok(()) => "OK".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some(cmd @ ("lock" | "burst")) => {
                let rounds: u64 = if cmd == "burst" {
                    words[1].parse().unwrap()
                } else {
                    1
                };
                let mut died = 0;
                let mut failed = None;
                for _ in 0..rounds {
                    match add(&shm) {
                        Ok(d) => died += u64::from(d),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                failed.unwrap_or(format!("OK died={died}"))
            }
            Some("read") => match shm.lock_read_timeout(wait) {
                Ok(Some(data)) => format!("VALUE {}", u64::from_le_bytes(data[..8].try_into().unwrap())),
                Ok(None) => "ERR Timeout".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some("trylock") => match shm.try_lock() {
                Ok(Some(_unlocked_at_once)) => "OK".to_owned(),
                Ok(None) => "BUSY".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some("hold") => match shm.lock_timeout(wait) {
                Ok(Some(guard)) => {
                    // held until the process dies (its holder kills it now)
                    std::mem::forget(guard);
                    "HELD".to_owned()
                }
                Ok(None) => "ERR Timeout".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some("semaphores") => format!("SEMS{}", mapped_semaphores()),
            Some("detach") => match shm.detach() {
                Ok(()) => "OK".to_owned(),
                Err(e) => format!("ERR {:?}", e.kind()),
            },
            Some("exit") | None => break,
            Some(other) => format!("ERR unknown command {other}"),
        };
        say(reply);
    }
    drop(shm);
    ForkedChild::reap_all();
    0
}

/// The inodes of the POSIX semaphore files this process maps, each after a space:
/// processes that share a lock map one common inode, and the matrix compares the lists.
/// A semaphore is told by its mapping, not its name: a one-page shared mapping of a file
/// in `/dev/shm` that is not a Qt segment (`qipc_sharedmemory_*`, the matrix's are one
/// page too) or a qshm lock state. Its name may be `sem.*`, glibc's temporary name for a
/// new one, or `#N` (a file qshm made unnamed and then linked).
pub(crate) fn mapped_semaphores() -> String {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut inodes: Vec<&str> = maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (range, inode, path) = (fields.first()?, fields.get(4)?, fields.get(5)?);
            let (start, end) = range.split_once('-')?;
            let length = u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?;
            let semaphore = length == page
                && path.starts_with("/dev/shm/")
                && !path.starts_with("/dev/shm/qipc_sharedmemory_")
                && !path.starts_with("/dev/shm/qshm-lock.");
            semaphore.then_some(*inode)
        })
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes.iter().map(|i| format!(" {i}")).collect()
}

/// A child `fork`ed by an actor (another thread of a program forking to run a tool): it
/// keeps every mapping and attachment it inherited until, released, it `exec`s `true`
/// [`EXEC_DELAY`] later. If the actor dies first, its end of the pipe closes and the child
/// goes on the same way.
struct ForkedChild {
    to_child: libc::c_int,
}

/// How long a released child takes to `exec`: the actor's next command (a detach, an
/// exit) runs meanwhile, with the child still holding what it inherited.
const EXEC_DELAY: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};

impl ForkedChild {
    fn fork() -> ForkedChild {
        let program = c"/bin/true";
        let argv = [program.as_ptr(), std::ptr::null()];
        let mut fds = [0; 2];
        // SAFETY: fds is an array of two ints for pipe2.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (from_actor, to_child) = (fds[0], fds[1]);
        // SAFETY: the child calls only async-signal-safe functions (read, nanosleep,
        // execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut byte = 0u8;
            // SAFETY: as above; argv is NUL-terminated and outlives the exec.
            unsafe {
                libc::close(to_child);
                libc::read(from_actor, (&raw mut byte).cast(), 1);
                libc::nanosleep(&EXEC_DELAY, std::ptr::null_mut());
                libc::execv(program.as_ptr(), argv.as_ptr());
                libc::_exit(0);
            }
        }
        // SAFETY: the child's end, which this process does not use.
        unsafe { libc::close(from_actor) };
        ForkedChild { to_child }
    }

    /// Let the child go on to `exec`.
    fn release(self) {
        // SAFETY: our end of the pipe: one byte, then closed.
        unsafe {
            libc::write(self.to_child, [1u8].as_ptr().cast(), 1);
            libc::close(self.to_child);
        }
    }

    /// Reap every child that has ended or ends now.
    fn reap_all() {
        // SAFETY: waits for this process's children only; none is waited for elsewhere.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    }
}
