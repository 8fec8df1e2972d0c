//! Message queues: 64-byte messages between two processes on two CPUs — qshm's
//! `Producer` -> `Consumer`, a pipe, a Unix stream socket, and the floor: two atomics on a
//! shared word (one side stores, the other loads), measured in one run.
//!
//! Throughput: the producer sends a million messages (a tenth in a quick run) as fast as
//! the channel takes them, the consumer receives and counts; messages per second from the
//! start flag to the last message received. Latency: a ping-pong of one message each way
//! (a second channel back: qshm a second queue, the pipe a second pipe, the socket its
//! other direction, the floor a second word), one way = half a round trip; per run the
//! median and p99. The floor's throughput is its ping-pong rate: a word holds one
//! message, so the producer waits for each to be taken.

use std::os::fd::RawFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qshm::{AccessMode, Consumer, KeyType, LockMode, Producer, SharedMemory};

use crate::locks::Mapping;
use crate::stats::{percentile, row};
use crate::{allowed_cpus, key, pin, unpin, wait_all};

pub const MESSAGE: usize = 64;
const CAPACITY: usize = 1024;
pub const QSHM: &str = "qshm Producer -> Consumer";
pub const PIPE: &str = "pipe (one write and one read per message)";
pub const SOCKET: &str = "Unix stream socket (one send and one receive per message)";
pub const FLOOR: &str = "floor: two atomics on a shared word (store, then load; spin, yield every 100)";
const WAIT: Duration = Duration::from_secs(10);

/// One end of a channel in one process.
enum End {
    Qshm {
        tx: Option<Producer>,
        rx: Option<Consumer>,
    },
    Fds {
        send: RawFd,
        recv: RawFd,
    },
    Word {
        map: Mapping,
        mine: usize,
        theirs: usize,
    },
}

fn queue_segment(k: &str, create: bool) -> SharedMemory {
    let mut shm = SharedMemory::with_key_type(k, KeyType::PosixRealtime).with_lock_mode(LockMode::Fast);
    if create {
        let size = Producer::segment_size(MESSAGE, CAPACITY).expect("size");
        shm.create(size, AccessMode::ReadWrite).expect("create");
    } else {
        shm.attach(AccessMode::ReadWrite).expect("attach");
    }
    shm
}

impl End {
    fn send(&mut self, msg: &[u8; MESSAGE]) {
        match self {
            End::Qshm { tx, .. } => tx.as_mut().expect("producer").send(msg).expect("send"),
            End::Fds { send, .. } => {
                // SAFETY: msg is valid for MESSAGE bytes.
                let n = unsafe { libc::write(*send, msg.as_ptr().cast(), MESSAGE) };
                assert_eq!(n, MESSAGE as isize, "write");
            }
            End::Word { map, mine, .. } => {
                let word = &map.u64s_at(*mine, 1)[0];
                // the sequence number is the message (a word holds one at a time)
                let seq = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
                word.store(seq, Ordering::Release);
            }
        }
    }

    /// Receive one message into `buf`; false at end of stream.
    fn recv(&mut self, buf: &mut [u8; MESSAGE], expect: u64) -> bool {
        match self {
            End::Qshm { rx, .. } => matches!(
                rx.as_mut().expect("consumer").recv_timeout(buf, WAIT),
                Ok(Some(_))
            ),
            End::Fds { recv, .. } => {
                let mut got = 0;
                while got < MESSAGE {
                    // SAFETY: the rest of buf is valid for writing.
                    let n = unsafe { libc::read(*recv, buf[got..].as_mut_ptr().cast(), MESSAGE - got) };
                    if n <= 0 {
                        return false;
                    }
                    got += n as usize;
                }
                true
            }
            End::Word { map, theirs, .. } => {
                let word: &AtomicU64 = &map.u64s_at(*theirs, 1)[0];
                let mut seq = word.load(Ordering::Acquire);
                let mut spins = 0u32;
                while seq < expect {
                    // yield now and then: with more runnable processes than cores, a pure
                    // spin waits for the scheduler's tick
                    spins += 1;
                    if spins % 100 == 0 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                    seq = word.load(Ordering::Acquire);
                }
                buf[..8].copy_from_slice(&seq.to_le_bytes()); // the message is the number
                true
            }
        }
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .arg("child")
        .arg("queue")
        .args(args)
        .spawn()
        .expect("spawn child")
}

/// Start the child (`sink` or `echo` `rounds` messages) with the other end of a channel
/// both ways for `what`; our end, once the child answered a first message.
fn start(what: &str, mode: &str, rounds: u64) -> (End, Child) {
    let (mut end, args, theirs) = channel(what);
    let mut child_args = vec![mode.to_string(), rounds.to_string()];
    child_args.extend(args);
    let child = spawn(&child_args);
    for fd in theirs {
        // SAFETY: our copies of the child's descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    let mut hello = [0u8; MESSAGE];
    hello[..8].copy_from_slice(&1u64.to_le_bytes());
    end.send(&hello);
    assert!(end.recv(&mut hello, 1), "the child did not answer");
    (end, child)
}

/// Our end, the child's arguments, and the child's descriptors (to close after the spawn).
fn channel(what: &str) -> (End, Vec<String>, Vec<RawFd>) {
    match what {
        QSHM => {
            let (k1, k2) = (key("queue"), key("queue"));
            let tx = Producer::new(queue_segment(&k1, true), MESSAGE, CAPACITY).expect("producer");
            let rx = Consumer::new(queue_segment(&k2, true), MESSAGE, CAPACITY).expect("consumer");
            (
                End::Qshm {
                    tx: Some(tx),
                    rx: Some(rx),
                },
                vec!["qshm".into(), k1, k2],
                vec![],
            )
        }
        PIPE => {
            let (mut a, mut b) = ([0; 2], [0; 2]);
            // SAFETY: room for two descriptors each; the child's ends are inherited.
            unsafe {
                assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
                assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
            }
            (
                End::Fds {
                    send: a[1],
                    recv: b[0],
                },
                vec!["fds".into(), a[0].to_string(), b[1].to_string()],
                vec![a[0], b[1]],
            )
        }
        SOCKET => {
            let mut s = [0; 2];
            // SAFETY: room for two descriptors; the child's end is inherited.
            assert_eq!(
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()) },
                0
            );
            (
                End::Fds {
                    send: s[0],
                    recv: s[0],
                },
                vec!["fds".into(), s[1].to_string(), s[1].to_string()],
                vec![s[1]],
            )
        }
        FLOOR => {
            let map = Mapping::create(&key("qfloor"), 4096);
            let name = map.name().to_string();
            (
                End::Word {
                    map,
                    mine: 0,
                    theirs: 128,
                },
                vec!["word".into(), name],
                vec![],
            )
        }
        other => panic!("unknown queue subject {other}"),
    }
}

fn close(end: End) {
    if let End::Fds { send, recv } = end {
        // SAFETY: our descriptors, closed once (the socket's two are one).
        unsafe {
            libc::close(send);
            if recv != send {
                libc::close(recv);
            }
        }
    }
}

/// The child's end: `MODE ROUNDS TAG ARGS...`: answer a first message, then (MODE `sink`)
/// receive ROUNDS or (`echo`) answer each of ROUNDS.
pub fn child(args: &[String]) {
    pin(&allowed_cpus(), 1);
    let echo = args[0] == "echo";
    let rounds: u64 = args[1].parse().expect("rounds");
    let mut end = match args[2].as_str() {
        "qshm" => {
            let rx = Consumer::new(queue_segment(&args[3], false), MESSAGE, CAPACITY).expect("consumer");
            let tx = Producer::new(queue_segment(&args[4], false), MESSAGE, CAPACITY).expect("producer");
            End::Qshm {
                tx: Some(tx),
                rx: Some(rx),
            }
        }
        "fds" => End::Fds {
            recv: args[3].parse().expect("fd"),
            send: args[4].parse().expect("fd"),
        },
        "word" => End::Word {
            map: Mapping::open(&args[3]),
            mine: 128,
            theirs: 0,
        },
        other => panic!("unknown queue child {other}"),
    };
    let mut buf = [0u8; MESSAGE];
    assert!(end.recv(&mut buf, 1), "no first message");
    end.send(&buf);
    for i in 2..=rounds + 1 {
        assert!(end.recv(&mut buf, i), "the stream ended early");
        if echo {
            end.send(&buf);
        }
    }
}

pub fn measure(runs: usize, messages: u64, pingpongs: u64) {
    let cpus = allowed_cpus();
    pin(&cpus, 0);
    let subjects = [QSHM, PIPE, SOCKET, FLOOR];
    let n = subjects.len();
    let (mut rates, mut medians, mut p99s) = (vec![vec![]; n], vec![vec![]; n], vec![vec![]; n]);
    for _ in 0..runs {
        for (i, what) in subjects.iter().enumerate() {
            // throughput (the floor's is its ping-pong rate, below)
            if *what != FLOOR {
                let (mut end, child) = start(what, "sink", messages);
                let msg = [7u8; MESSAGE];
                let t = Instant::now();
                for _ in 0..messages {
                    end.send(&msg);
                }
                wait_all(vec![child], Duration::from_secs(120));
                rates[i].push(messages as f64 / t.elapsed().as_secs_f64() / 1e6);
                close(end);
            }
            // latency: ping-pong (message 1 was the handshake)
            let (mut end, child) = start(what, "echo", pingpongs);
            let mut msg = [7u8; MESSAGE];
            let mut back = [0u8; MESSAGE];
            let mut samples = Vec::with_capacity(pingpongs as usize);
            let total = Instant::now();
            for seq in 2..=pingpongs + 1 {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                let t = Instant::now();
                end.send(&msg);
                assert!(end.recv(&mut back, seq), "no answer");
                samples.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
            let secs = total.elapsed().as_secs_f64();
            close(end);
            wait_all(vec![child], Duration::from_secs(120));
            if *what == FLOOR {
                // one message per handoff: two per round trip
                rates[i].push(2.0 * pingpongs as f64 / secs / 1e6);
            }
            samples.sort_by(f64::total_cmp);
            medians[i].push(percentile(&samples, 0.5));
            p99s[i].push(percentile(&samples, 0.99));
        }
    }
    for (i, what) in subjects.iter().enumerate() {
        row("queue_Mmsgs", what, None, &rates[i], "M messages/s");
        row("queue_latency_median_us", what, None, &medians[i], "us");
        row("queue_latency_p99_us", what, None, &p99s[i], "us");
    }
    unpin(&cpus);
}
