//! Frames: 4 MiB frames from one writer to 1, 2 and 4 reader processes — qshm's
//! `FrameWriter` -> `FrameReader::read_next`, the same frames through a pipe and a Unix
//! socket per reader, iceoryx2's publish-subscribe (with `--features iceoryx2`), and the
//! floor: `memcpy` of 4 MiB frames into 3 buffers in turn in one process, in the same run.
//!
//! Every reader ends with the frame in its own buffer (iceoryx2's subscribers copy the
//! sample out, as qshm's readers do), and the writer copies each frame in once per
//! channel (the pipe and socket writers once per reader: that is how they fan out). The
//! latest-value channels (qshm, iceoryx2 with safe overflow) never make the writer wait,
//! so readers skip frames; the pipe and socket deliver every frame, so the writer waits
//! for the slowest reader. Figures per run: frames per second per reader (the mean over
//! readers), the bytes all readers copied per second (GB/s), and frames the writer
//! published per second.

use std::os::fd::RawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qshm::{AccessMode, FrameReader, FrameWriter, KeyType, LockMode, SharedMemory};

use crate::locks::Mapping;
use crate::stats::{note, row};
use crate::{key, wait_all};

pub const FRAME: usize = 4 << 20;
pub const QSHM: &str = "qshm FrameWriter -> FrameReader::read_next";
pub const PIPE: &str = "pipe per reader (every frame to every reader)";
pub const SOCKET: &str = "Unix stream socket per reader (every frame to every reader)";
pub const ICEORYX2: &str = "iceoryx2 publish-subscribe (safe overflow, subscriber copies out)";
pub const MEMCPY: &str = "floor: memcpy of 4 MiB frames into 3 buffers in turn, one process";

/// The control words: start flag 0, ready count 4, stop flag 8, per reader i the frames
/// (64 + 8 i) it read.
const CTL_LEN: usize = 4096;
const FRAMES_AT: usize = 64;

fn spawn_child(args: &[String], stdin: Stdio) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .arg("child")
        .arg("frames")
        .args(args)
        .stdin(stdin)
        .spawn()
        .expect("spawn child")
}

/// The transports compared.
fn subjects() -> Vec<&'static str> {
    let mut v = vec![QSHM, PIPE, SOCKET];
    if cfg!(feature = "iceoryx2") {
        v.push(ICEORYX2);
    }
    v
}

pub fn measure(runs: usize, window: Duration, readers: &[usize]) {
    if !cfg!(feature = "iceoryx2") {
        note(
            "iceoryx2 is not measured in this build: `cargo run --release --features iceoryx2 -- measure --only frames` \
             (needs libclang for its bindgen build: apt install libclang-dev)",
        );
    }
    let frame: Vec<u8> = (0..FRAME).map(|i| (i * 7) as u8).collect();
    // the floor, in this run: memcpy of a frame into one of 3 private buffers in turn (the
    // working set of a channel's 3 buffers), pages touched before
    let mut private = vec![vec![0u8; FRAME]; 3];
    let memcpy: Vec<f64> = (0..runs)
        .map(|_| {
            let n = 300;
            let t = Instant::now();
            for i in 0..n {
                private[i % 3].copy_from_slice(std::hint::black_box(&frame));
                std::hint::black_box(&private[i % 3]);
            }
            (n * FRAME) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    for &r in readers {
        let x = Some(r as f64);
        let subjects = subjects();
        let mut fps = vec![Vec::new(); subjects.len()];
        let mut gbps = vec![Vec::new(); subjects.len()];
        let mut writer_fps = vec![Vec::new(); subjects.len()];
        for _ in 0..runs {
            for (i, what) in subjects.iter().enumerate() {
                let (per_reader, published) = run(what, r, window, &frame);
                fps[i].push(per_reader);
                gbps[i].push(per_reader * r as f64 * FRAME as f64 / 1e9);
                writer_fps[i].push(published);
            }
        }
        for (i, what) in subjects.iter().enumerate() {
            row("frames_reader_fps", what, x, &fps[i], "frames/s");
            row("frames_copy_GBps", what, x, &gbps[i], "GB/s");
            row("frames_writer_fps", what, x, &writer_fps[i], "frames/s");
        }
        row("frames_copy_GBps", MEMCPY, x, &memcpy, "GB/s");
        let fps_floor: Vec<f64> = memcpy.iter().map(|g| g * 1e9 / FRAME as f64).collect();
        row("frames_reader_fps", MEMCPY, x, &fps_floor, "frames/s");
    }
}

/// One run of `what` with `r` readers for `window`: frames per second per reader, and
/// frames the writer published per second.
fn run(what: &str, r: usize, window: Duration, frame: &[u8]) -> (f64, f64) {
    let ctl = Mapping::create(&key("framectl"), CTL_LEN);
    let ready = ctl.u32_at(4);
    let stop = ctl.u32_at(8);
    let wait_ready = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline, "readers did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let reader_args = |i: usize, extra: &[String]| {
        let mut v = vec![what_tag(what).to_string(), ctl.name().to_string(), i.to_string()];
        v.extend_from_slice(extra);
        v
    };
    let mut published = 0u64;
    let elapsed;
    match what {
        QSHM => {
            let k = key("frames");
            let mut shm =
                SharedMemory::with_key_type(&k, KeyType::PosixRealtime).with_lock_mode(LockMode::Fast);
            shm.create(
                FrameWriter::segment_size(FRAME).expect("size"),
                AccessMode::ReadWrite,
            )
            .expect("create");
            let mut writer = FrameWriter::new(shm, FRAME).expect("writer");
            writer.publish(frame).expect("publish"); // readers start with a frame
            let children: Vec<Child> = (0..r)
                .map(|i| spawn_child(&reader_args(i, std::slice::from_ref(&k)), Stdio::null()))
                .collect();
            wait_ready(r as u32);
            ctl.u32_at(0).store(1, Ordering::Release);
            let t = Instant::now();
            while t.elapsed() < window {
                writer.publish(frame).expect("publish");
                published += 1;
            }
            elapsed = t.elapsed();
            stop.store(1, Ordering::Release);
            writer.publish(frame).expect("publish"); // wakes readers asleep in read_next
            wait_all(children, Duration::from_secs(60));
        }
        PIPE | SOCKET => {
            let mut fds = Vec::new();
            let children: Vec<Child> = (0..r)
                .map(|i| {
                    let (ours, theirs) = channel(what);
                    fds.push(ours);
                    let child = spawn_child(&reader_args(i, &[theirs.to_string()]), Stdio::null());
                    // SAFETY: our copy of the child's end, closed once here.
                    unsafe { libc::close(theirs) };
                    child
                })
                .collect();
            wait_ready(r as u32);
            ctl.u32_at(0).store(1, Ordering::Release);
            let t = Instant::now();
            while t.elapsed() < window {
                for &fd in &fds {
                    write_all(fd, frame);
                }
                published += 1;
            }
            elapsed = t.elapsed();
            stop.store(1, Ordering::Release);
            for fd in fds {
                // SAFETY: our ends, closed once: the readers see end of file
                unsafe { libc::close(fd) };
            }
            wait_all(children, Duration::from_secs(60));
        }
        #[cfg(feature = "iceoryx2")]
        ICEORYX2 => {
            let name = key("ice");
            let publisher = crate::iceoryx::Publisher::new(&name, FRAME);
            let children: Vec<Child> = (0..r)
                .map(|i| spawn_child(&reader_args(i, std::slice::from_ref(&name)), Stdio::null()))
                .collect();
            wait_ready(r as u32);
            ctl.u32_at(0).store(1, Ordering::Release);
            let t = Instant::now();
            while t.elapsed() < window {
                publisher.publish(frame);
                published += 1;
            }
            elapsed = t.elapsed();
            stop.store(1, Ordering::Release);
            wait_all(children, Duration::from_secs(60));
        }
        other => panic!("unknown frame transport {other}"),
    }
    let secs = elapsed.as_secs_f64();
    let read: u64 = ctl
        .u64s_at(FRAMES_AT, r)
        .iter()
        .map(|c| c.load(Ordering::Acquire))
        .sum();
    (read as f64 / r as f64 / secs, published as f64 / secs)
}

fn what_tag(what: &str) -> &'static str {
    match what {
        QSHM => "qshm",
        PIPE => "pipe",
        SOCKET => "socket",
        ICEORYX2 => "iceoryx2",
        other => panic!("unknown frame transport {other}"),
    }
}

/// Our end and the reader's end (inherited: no CLOEXEC) of a pipe or socket.
fn channel(what: &str) -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    let (ours, theirs) = if what == PIPE {
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            0,
            "pipe"
        );
        // the largest pipe buffer an unprivileged process may ask for by default
        // SAFETY: plain values on our own descriptor.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) };
        (fds[1], fds[0])
    } else {
        // SAFETY: as above.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair");
        for fd in fds {
            let size: libc::c_int = 4 << 20;
            // SAFETY: size is a valid c_int for the call.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
        }
        (fds[0], fds[1])
    };
    // only the reader's end is inherited, by the one child spawned next (then closed here)
    // SAFETY: plain values on our own descriptor.
    unsafe { libc::fcntl(theirs, libc::F_SETFD, 0) };
    (ours, theirs)
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is valid for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        bytes = &bytes[n as usize..];
    }
}

/// Read a whole frame into `buf`; false at end of file.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the rest of buf is valid for writing.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

/// A reader: `TAG CTL INDEX ARG` (ARG: the key, the descriptor or the service name).
pub fn child(args: &[String]) {
    let ctl = Mapping::open(&args[1]);
    let me: usize = args[2].parse().expect("index");
    let counter = &ctl.u64s_at(FRAMES_AT + 8 * me, 1)[0];
    let start = ctl.u32_at(0);
    let stop = ctl.u32_at(8);
    let mut buf = vec![0u8; FRAME];
    let begin = |ready: &std::sync::atomic::AtomicU32| {
        ready.fetch_add(1, Ordering::AcqRel);
        while start.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
    };
    let mut frames = 0u64;
    match args[0].as_str() {
        "qshm" => {
            let mut shm = SharedMemory::with_key_type(&args[3], KeyType::PosixRealtime);
            shm.attach(AccessMode::ReadOnly).expect("attach");
            let mut reader = FrameReader::new(shm).expect("reader");
            begin(ctl.u32_at(4));
            while stop.load(Ordering::Acquire) == 0 {
                if reader
                    .read_next(&mut buf, Duration::from_millis(100))
                    .expect("read")
                    .is_some()
                    && stop.load(Ordering::Acquire) == 0
                {
                    frames += 1;
                }
            }
        }
        "pipe" | "socket" => {
            let fd: RawFd = args[3].parse().expect("fd");
            begin(ctl.u32_at(4));
            while read_exact(fd, &mut buf) {
                if stop.load(Ordering::Acquire) == 0 {
                    frames += 1;
                }
            }
        }
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => {
            let subscriber = crate::iceoryx::Subscriber::new(&args[3]);
            begin(ctl.u32_at(4));
            while stop.load(Ordering::Acquire) == 0 {
                if subscriber.take_into(&mut buf) {
                    frames += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        }
        other => panic!("unknown frames child {other}"),
    }
    counter.store(frames, Ordering::Release);
}
