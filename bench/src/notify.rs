//! Change notification between two processes: how long from `notify_all` in one to the
//! return of `wait_for_change` in the other, against the usual ways of waking another
//! process (an `eventfd`, a pipe) and the bare shared futex, measured in one run.
//!
//! qshm's async wake-up (`changed().await`, feature `async`) is measured the same way with
//! both processes in a tokio current-thread runtime: its one-way figure includes the hop
//! through the process's bridge thread (see `src/async_wait`).
//!
//! Each is a ping-pong of two processes on two CPUs, both sleeping in the kernel while
//! they wait: one round trip is two wake-ups, so a one-way figure is half a round trip.

use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use qshm::{AccessMode, KeyType, LockMode, SharedMemory};

use crate::locks::Mapping;
use crate::stats::{percentile, row};
use crate::{allowed_cpus, key, pin, unpin, wait_all};

pub const QSHM_FAST: &str = "qshm notify_all -> wait_for_change (Fast, POSIX)";
pub const QSHM_QT: &str = "qshm notify_all -> wait_for_change (Qt-compatible, System V)";
pub const QSHM_ASYNC: &str = "qshm notify_all -> changed().await on tokio (Fast, POSIX)";
pub const EVENTFD: &str = "eventfd ping-pong (write -> blocking read)";
pub const PIPE: &str = "pipe ping-pong (write -> blocking read)";
pub const FUTEX: &str = "floor: bare FUTEX_WAKE -> FUTEX_WAIT on a MAP_SHARED word";

const WAIT: Duration = Duration::from_secs(10);

/// One way of waking the other process: the parent's side of a run.
#[allow(clippy::large_enum_variant)] // two per measurement, never moved in a loop
enum Channel {
    Qshm(SharedMemory),
    QshmAsync(SharedMemory, tokio::runtime::Runtime),
    Fds { ping: RawFd, pong: RawFd },
    Futex(Mapping),
}

fn child_cmd(args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.arg("child").arg("notify").args(args);
    cmd
}

/// Start the other side of `what` for `rounds` round trips; the parent's channel.
fn start(what: &str, rounds: u64) -> (Channel, Child) {
    let rounds = rounds.to_string();
    match what {
        QSHM_FAST | QSHM_QT | QSHM_ASYNC => {
            let (kind, mode, tag) = match what {
                QSHM_FAST => (KeyType::PosixRealtime, LockMode::Fast, "fast"),
                QSHM_ASYNC => (KeyType::PosixRealtime, LockMode::Fast, "async"),
                _ => (KeyType::SystemV, LockMode::QtCompatible, "qt"),
            };
            let k = key("notify");
            let mut shm = SharedMemory::with_key_type(&k, kind).with_lock_mode(mode);
            shm.create(4096, AccessMode::ReadWrite).expect("create");
            let child = child_cmd(&["qshm".into(), rounds, k, tag.into()])
                .spawn()
                .expect("spawn");
            if what == QSHM_ASYNC {
                (Channel::QshmAsync(shm, runtime()), child)
            } else {
                (Channel::Qshm(shm), child)
            }
        }
        EVENTFD => {
            // SAFETY: eventfd takes plain values; without EFD_CLOEXEC the child inherits them.
            let (ping, pong) = unsafe { (libc::eventfd(0, 0), libc::eventfd(0, 0)) };
            assert!(
                ping >= 0 && pong >= 0,
                "eventfd: {}",
                std::io::Error::last_os_error()
            );
            let child = child_cmd(&[
                "fds".into(),
                rounds,
                ping.to_string(),
                pong.to_string(),
                "8".into(),
            ])
            .spawn()
            .expect("spawn");
            (Channel::Fds { ping, pong }, child)
        }
        PIPE => {
            let child = child_cmd(&["fds".into(), rounds, "0".into(), "1".into(), "1".into()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn");
            let ping = child.stdin.as_ref().expect("stdin").as_raw_fd();
            let pong = child.stdout.as_ref().expect("stdout").as_raw_fd();
            (Channel::Fds { ping, pong }, child)
        }
        FUTEX => {
            let map = Mapping::create(&key("futex"), 4096);
            let child = child_cmd(&["futex".into(), rounds, map.name().to_owned()])
                .spawn()
                .expect("spawn");
            (Channel::Futex(map), child)
        }
        other => panic!("unknown channel {other}"),
    }
}

/// A tokio runtime on this thread, as an async program waiting for a change would have.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

/// Write the 8-byte (eventfd) or 1-byte (pipe) token to `fd`.
fn send(fd: RawFd, width: usize) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: one is valid for width <= 8 bytes.
    let n = unsafe { libc::write(fd, one.as_ptr().cast(), width) };
    assert_eq!(n, width as isize, "write: {}", std::io::Error::last_os_error());
}

/// Block until the token arrives on `fd`.
fn receive(fd: RawFd, width: usize) {
    let mut buf = [0u8; 8];
    // SAFETY: buf is valid for width <= 8 bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), width) };
    assert_eq!(n, width as isize, "read: {}", std::io::Error::last_os_error());
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: word is a live u32 in a MAP_SHARED mapping; FUTEX_WAIT (shared) only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above; FUTEX_WAKE does not touch the word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// The parent's turn: make the word odd, wake the child, sleep until it made it even.
fn futex_ping(word: &AtomicU32) {
    let mine = word.fetch_add(1, Ordering::SeqCst) + 1;
    futex_wake(word);
    while word.load(Ordering::SeqCst) == mine {
        futex_wait(word, mine);
    }
}

/// One round trip from the parent's side.
fn round_trip(channel: &Channel, width: usize) {
    match channel {
        Channel::Qshm(shm) => {
            let sent = shm.notify_all().expect("notify");
            let got = shm.wait_for_change(sent, WAIT).expect("wait");
            assert_ne!(got, sent, "no answer within {WAIT:?}");
        }
        Channel::QshmAsync(shm, rt) => {
            let sent = shm.notify_all().expect("notify");
            // (the child answers within the benchmark's time; a lost answer hangs it visibly)
            let got = rt.block_on(shm.changed(sent)).expect("changed");
            assert_ne!(got, sent);
        }
        Channel::Fds { ping, pong } => {
            send(*ping, width);
            receive(*pong, width);
        }
        Channel::Futex(map) => futex_ping(map.u32_at(0)),
    }
}

/// One-way wake-up times (µs, half of each round trip) of `rounds` round trips after
/// a tenth as many for warming up; per run the median and p99.
pub fn measure(runs: usize, rounds: u64) {
    let cpus = allowed_cpus();
    pin(&cpus, 0);
    let subjects = [QSHM_FAST, QSHM_QT, QSHM_ASYNC, EVENTFD, PIPE, FUTEX];
    let mut medians = vec![Vec::new(); subjects.len()];
    let mut p99s = vec![Vec::new(); subjects.len()];
    let warm = rounds / 10;
    for _ in 0..runs {
        for (i, what) in subjects.iter().enumerate() {
            let (channel, child) = start(what, warm + rounds);
            let width = if *what == PIPE { 1 } else { 8 };
            for _ in 0..warm {
                round_trip(&channel, width);
            }
            let mut samples = Vec::with_capacity(rounds as usize);
            for _ in 0..rounds {
                let t = Instant::now();
                round_trip(&channel, width);
                samples.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
            wait_all(vec![child], Duration::from_secs(120));
            if let Channel::Fds { ping, pong } = channel
                && *what == EVENTFD
            {
                // SAFETY: the eventfds are ours and closed once, here.
                unsafe {
                    libc::close(ping);
                    libc::close(pong);
                }
            }
            samples.sort_by(f64::total_cmp);
            medians[i].push(percentile(&samples, 0.5));
            p99s[i].push(percentile(&samples, 0.99));
        }
    }
    for (i, what) in subjects.iter().enumerate() {
        row("notify_wake_median_us", what, None, &medians[i], "us");
        row("notify_wake_p99_us", what, None, &p99s[i], "us");
    }
    unpin(&cpus);
}

/// The child's side: `qshm ROUNDS KEY MODE`, `fds ROUNDS PING PONG WIDTH`, `futex ROUNDS NAME`.
pub fn child(args: &[String]) {
    pin(&allowed_cpus(), 1);
    let rounds: u64 = args[1].parse().expect("rounds");
    match args[0].as_str() {
        "qshm" => {
            let (kind, mode) = match args[3].as_str() {
                "fast" | "async" => (KeyType::PosixRealtime, LockMode::Fast),
                _ => (KeyType::SystemV, LockMode::QtCompatible),
            };
            let mut shm = SharedMemory::with_key_type(&args[2], kind).with_lock_mode(mode);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let rt = (args[3] == "async").then(runtime);
            // the parent makes the generation odd, we make it even
            let mut seen = shm.generation().expect("generation");
            let mut answered = 0;
            while answered < rounds {
                if seen.value() % 2 == 1 {
                    seen = shm.notify_all().expect("notify");
                    answered += 1;
                } else if let Some(rt) = &rt {
                    seen = rt.block_on(shm.changed(seen)).expect("changed");
                } else {
                    seen = shm.wait_for_change(seen, WAIT).expect("wait");
                }
            }
        }
        "fds" => {
            let (ping, pong): (RawFd, RawFd) = (args[2].parse().expect("fd"), args[3].parse().expect("fd"));
            let width: usize = args[4].parse().expect("width");
            for _ in 0..rounds {
                receive(ping, width);
                send(pong, width);
            }
        }
        "futex" => {
            let map = Mapping::open(&args[2]);
            let word = map.u32_at(0);
            for _ in 0..rounds {
                loop {
                    let now = word.load(Ordering::SeqCst);
                    if now % 2 == 1 {
                        break;
                    }
                    futex_wait(word, now);
                }
                // answer without waiting: after the last answer nobody pings again
                word.fetch_add(1, Ordering::SeqCst);
                futex_wake(word);
            }
        }
        other => panic!("unknown notify child {other}"),
    }
}
