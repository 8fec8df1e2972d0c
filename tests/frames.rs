//! Frame channels across real processes (the test binary re-executes itself in child
//! roles): whole frames only, however fast the writer; one writer per channel; a writer
//! killed in the middle of a frame (stopped there, then `SIGKILL`ed) leaves the previous
//! frame readable and its place to the next writer; readers of another user who may
//! only read the segment; a co-writer garbling the channel's words never crashes or hangs
//! a reader. The channel's layout (`src/frames/layout.rs`) is pinned here where a test
//! must look at or scribble on its words.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{
    AccessMode, FrameReader, FrameWriter, KeyType, LockMode, Peer as Role, SharedMemory, SharedMemoryError,
};
use support::*;

const T: Duration = Duration::from_secs(30);
/// The layout's offsets: the writer's role word, the newest frame's number, buffer i's stamp.
const WRITER_AT: usize = 8;
const LATEST_AT: usize = 64;
fn stamp_at(i: usize) -> usize {
    128 + 64 * i
}

fn main() {
    run_child_role(child_main);
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(
            format!("{k}::readers_in_two_processes_see_only_whole_frames_of_a_writer_that_never_waits"),
            move || whole_frames(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::a_writer_killed_in_the_middle_of_a_frame_leaves_the_previous_one_readable"),
            move || killed_mid_frame(kind),
        ));
    }
    trials.push(Trial::test(
        "posix::one_writer_per_channel_in_this_and_other_processes",
        one_writer,
    ));
    trials.push(Trial::test(
        "posix::typed_frames_and_refusals",
        typed_frames_and_refusals,
    ));
    trials.push(Trial::test(
        "posix::a_co_writer_garbling_the_channel_never_crashes_or_hangs_a_reader",
        garbled_channel,
    ));
    trials.push(Trial::test(
        "posix::readers_of_another_user_read_and_wait_for_frames_but_may_not_write",
        readers_of_another_user,
    ));
    run_suite(&args, trials, Passes::AsUser)
}

// ------------------------------------------------------------------ frames and checks

/// Frame `number`'s length (8 to `max`) and bytes: its number, then bytes that depend on
/// the number and the position, so a frame mixed from two frames is seen.
fn frame_len(number: u64, max: usize) -> usize {
    let mixed = number.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    8 + (mixed as usize) % (max - 7)
}

fn make_frame(number: u64, max: usize, buf: &mut Vec<u8>) {
    let len = frame_len(number, max);
    buf.clear();
    buf.extend_from_slice(&number.to_le_bytes());
    let seed = number.wrapping_mul(31) as u8;
    buf.extend((8..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(7))));
}

/// Whether `bytes` are frame `number` exactly.
fn whole(number: u64, max: usize, bytes: &[u8]) -> bool {
    let mut expected = Vec::new();
    make_frame(number, max, &mut expected);
    bytes == expected.as_slice()
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

/// Arguments for a child role: key, key type, then `extra`.
fn child_args<'a>(fx: &'a Fixture, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![fx.key.as_str(), kind_name(fx.kind)];
    v.extend_from_slice(extra);
    v
}

/// A fresh `shm` handle attached to `key`.
fn attached(key: &str, kind: KeyType, access: AccessMode) -> SharedMemory {
    let mut shm = SharedMemory::with_key_type(key, kind);
    shm.attach(access).expect("attach");
    shm
}

// ------------------------------------------------------------------ child roles

/// Arguments: key, key type, then role-specific ones.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind) = (&args[0], parse_kind(&args[1]));
    match role {
        // MAX COUNT: publish frames 1..=COUNT as fast as possible after "go"
        "write" => {
            let max: usize = args[2].parse().unwrap();
            let count: u64 = args[3].parse().unwrap();
            let mut writer =
                FrameWriter::new(attached(key, kind, AccessMode::ReadWrite), max).expect("writer");
            say("READY");
            wait_for_stdin_line();
            let mut frame = Vec::with_capacity(max);
            for n in 1..=count {
                make_frame(n, max, &mut frame);
                assert_eq!(writer.publish(&frame).expect("publish"), n);
            }
            say("DONE");
            wait_for_stdin_line();
            0
        }
        // MAX: publish frames for ever (to be killed)
        "write-forever" => {
            let max: usize = args[2].parse().unwrap();
            let mut writer =
                FrameWriter::new(attached(key, kind, AccessMode::ReadWrite), max).expect("writer");
            let mut frames = [Vec::new(), Vec::new()];
            say(format!("READY {}", writer.next_number()));
            loop {
                let n = writer.next_number();
                // two frames made once, published in turn: the loop is almost all copying
                let frame = &mut frames[(n % 2) as usize];
                if frame.is_empty() || frame[..8] != n.to_le_bytes() {
                    make_frame(n, max, frame);
                }
                writer.publish(frame).expect("publish");
            }
        }
        // MAX COUNT: read until frame COUNT, checking each; "READ frames torn last"
        "read" => {
            let max: usize = args[2].parse().unwrap();
            let count: u64 = args[3].parse().unwrap();
            let access = if args.get(4).map(String::as_str) == Some("rw") {
                AccessMode::ReadWrite
            } else {
                AccessMode::ReadOnly
            };
            let mut reader = FrameReader::new(attached(key, kind, access)).expect("reader");
            say("READY");
            let mut buf = vec![0; reader.max_frame_len()];
            let (mut frames, mut torn, mut last) = (0u64, 0u64, 0u64);
            while last < count {
                let Some(frame) = reader.read_next(&mut buf, T).expect("read_next") else {
                    say("TIMEOUT");
                    return 1;
                };
                frames += 1;
                if frame.number <= last || !whole(frame.number, max, &buf[..frame.len]) {
                    torn += 1;
                }
                last = frame.number;
            }
            say(format!("READ {frames} {torn} {last}"));
            0
        }
        // MAX: try to become the writer; "WRITER Ok N" (then publish frame N on "go") or
        // "WRITER Err(kind)"
        "try-write" => {
            let max: usize = args[2].parse().unwrap();
            match FrameWriter::new(attached(key, kind, AccessMode::ReadWrite), max) {
                Ok(mut writer) => {
                    say(format!("WRITER Ok {}", writer.next_number()));
                    wait_for_stdin_line();
                    let n = writer.next_number();
                    let mut frame = Vec::new();
                    make_frame(n, max, &mut frame);
                    say(format!("PUBLISHED {}", writer.publish(&frame).expect("publish")));
                    wait_for_stdin_line();
                    0
                }
                Err(e) => {
                    say(format!("WRITER Err({:?})", e.kind()));
                    0
                }
            }
        }
        // SEED FROM WORDS: scribble seeded values into u64s FROM..WORDS until stdin closes
        "garble" => {
            let mut x: u64 = args[2].parse().unwrap();
            let from: usize = args[3].parse().unwrap();
            let words: usize = args[4].parse().unwrap();
            let shm = attached(key, kind, AccessMode::ReadWrite);
            let base = shm.as_mut_ptr();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = done.clone();
            std::thread::spawn(move || {
                wait_for_stdin_line();
                flag.store(true, Ordering::Relaxed);
            });
            say("READY");
            while !done.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = from + (x as usize >> 8) % (words - from);
                // small values (numbers a writer could write), huge ones, or anything
                let value = match x % 4 {
                    0 => x % 8,
                    1 => u64::MAX - (x % 3),
                    2 => (x >> 1) % 1_000_000,
                    _ => x,
                };
                // SAFETY: `at` < WORDS and the caller's WORDS u64s lie inside the
                // segment (its header and stamps), which is mapped read-write; every
                // process touches these words only atomically.
                unsafe { (*base.add(8 * at).cast::<AtomicU64>()).store(value, Ordering::Relaxed) };
            }
            0
        }
        // ROUNDS: read ROUNDS times under garbling; "RESULTS ok inconsistent invalid other slowest_ms"
        "read-garbled" => {
            let rounds: usize = args[2].parse().unwrap();
            let shm = attached(key, kind, AccessMode::ReadOnly);
            let mut reader = FrameReader::new(shm).expect("reader");
            say("READY");
            wait_for_stdin_line();
            let mut buf = vec![0; reader.max_frame_len()];
            let (mut ok, mut inconsistent, mut invalid, mut other) = (0, 0, 0, 0);
            let mut slowest = Duration::ZERO;
            for _ in 0..rounds {
                let t = Instant::now();
                let result = reader.read(&mut buf).map(drop);
                let _ = reader.wait_for_frame(Some(u64::MAX), Duration::from_millis(1));
                let _ = reader.writer();
                slowest = slowest.max(t.elapsed());
                match result.map_err(|e| e.kind()) {
                    Ok(()) => ok += 1,
                    Err(SharedMemoryError::Inconsistent) => inconsistent += 1,
                    Err(SharedMemoryError::InvalidSize) => invalid += 1,
                    Err(kind) => {
                        eprintln!("unexpected error kind {kind:?}");
                        other += 1;
                    }
                }
            }
            say(format!(
                "RESULTS {ok} {inconsistent} {invalid} {other} {}",
                slowest.as_millis()
            ));
            0
        }
        // wait for a frame (read-only user): "WRITER Err(kind)", then "FRAME n whole"
        "reader-of-another-user" => {
            let max: usize = args[2].parse().unwrap();
            let shm = attached(key, kind, AccessMode::ReadOnly);
            let mut reader = FrameReader::new(shm).expect("reader");
            let mut writer_shm = SharedMemory::with_key_type(key, kind);
            let refused = match writer_shm.attach(AccessMode::ReadWrite) {
                Err(e) => format!("Err({:?})", e.kind()),
                Ok(()) => format!(
                    "{:?}",
                    FrameWriter::new(writer_shm, max).map(drop).map_err(|e| e.kind())
                ),
            };
            say(format!("WRITER {refused}"));
            let mut buf = vec![0; max];
            let first = reader
                .read(&mut buf)
                .map(|f| f.map(|f| f.number))
                .map_err(|e| e.kind());
            say(format!("FIRST {first:?}"));
            say("WAITING");
            match reader.read_next(&mut buf, T) {
                Ok(Some(frame)) => say(format!(
                    "FRAME {} {}",
                    frame.number,
                    whole(frame.number, max, &buf[..frame.len])
                )),
                other => say(format!("FAILED {other:?}")),
            }
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

// ------------------------------------------------------------------ trials

fn whole_frames(kind: KeyType) -> Result<(), Failed> {
    const MAX: usize = 64 * 1024;
    const COUNT: u64 = 3000;
    let size = FrameWriter::segment_size(MAX).expect("size");
    let fx = setup("frames", kind, LockMode::QtCompatible, size)?;
    let count = COUNT.to_string();
    let max = MAX.to_string();
    let mut writer = Peer::spawn("write", &child_args(&fx, &[&max, &count]));
    writer.expect("READY", T);
    let mut readers: Vec<Peer> = ["ro", "rw"]
        .iter()
        .map(|access| Peer::spawn("read", &child_args(&fx, &[&max, &count, access])))
        .collect();
    for r in &mut readers {
        r.expect("READY", T);
    }
    writer.send("go");
    writer.expect("DONE", T);
    for r in &mut readers {
        let result = r.expect("READ", T);
        let fields: Vec<u64> = result.split(' ').map(|f| f.parse().unwrap()).collect();
        check(
            fields[1] == 0,
            format!(
                "a reader saw {} torn or repeated frames of {}",
                fields[1], fields[0]
            ),
        )?;
        check(
            fields[2] == COUNT,
            format!("the reader's last frame is {}, not {COUNT}", fields[2]),
        )?;
        check(r.wait(T).success(), "a reader exits cleanly")?;
    }
    writer.send("");
    check(writer.wait(T).success(), "the writer exits cleanly")?;
    fx.finish().map_err(Failed::from)
}

/// The stamps of the `buffers` buffers of the channel in `shm` (this process's mapping).
fn stamps(shm: &SharedMemory, buffers: usize) -> Vec<u64> {
    (0..buffers)
        .map(|i| {
            // SAFETY: the stamps lie in the segment's first cache lines, inside the
            // mapping; they are only ever touched atomically.
            unsafe { (*shm.as_ptr().add(stamp_at(i)).cast::<AtomicU64>()).load(Ordering::SeqCst) }
        })
        .collect()
}

fn word(shm: &SharedMemory, at: usize) -> u64 {
    // SAFETY: as in stamps(): a header word inside the mapping, touched atomically only.
    unsafe { (*shm.as_ptr().add(at).cast::<AtomicU64>()).load(Ordering::SeqCst) }
}

fn signal(peer: &Peer, sig: i32) {
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(peer.child.id() as i32, sig) };
}

/// Stop the writer while it copies a frame (a stamp is odd), then kill it there.
fn killed_mid_frame(kind: KeyType) -> Result<(), Failed> {
    const MAX: usize = 16 << 20; // copying one takes long enough to be caught at it
    let size = FrameWriter::segment_size(MAX).expect("size");
    let fx = setup("framekill", kind, LockMode::QtCompatible, size)?;
    let max = MAX.to_string();
    let mut writer = Peer::spawn("write-forever", &child_args(&fx, &[&max]));
    writer.expect("READY", T);
    // a whole frame before the one it is caught copying
    let deadline = Instant::now() + T;
    while word(&fx.shm, LATEST_AT) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut caught = None;
    for _ in 0..500 {
        let deadline = Instant::now() + T;
        while !stamps(&fx.shm, 3).iter().any(|s| s % 2 == 1) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        signal(&writer, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(2)); // the stop takes effect
        let now = stamps(&fx.shm, 3);
        if let Some(busy) = now.iter().position(|s| s % 2 == 1) {
            caught = Some((busy, now[busy] >> 1));
            break;
        }
        signal(&writer, libc::SIGCONT);
    }
    let Some((busy, copying)) = caught else {
        return Err("never caught the writer in the middle of a frame in 500 tries".into());
    };
    writer.kill9();
    let latest = word(&fx.shm, LATEST_AT);
    check(
        copying == latest + 1,
        format!(
            "the writer was copying frame {copying} into buffer {busy}; the newest whole one is {latest}"
        ),
    )?;
    let mut reader = FrameReader::new(attached(&fx.key, kind, AccessMode::ReadOnly))?;
    check(
        reader.writer()? == Role::Died,
        "the reader sees that the writer died",
    )?;
    let (frame, bytes) = reader.read_vec()?.ok_or("no frame after the kill")?;
    check(
        frame.number == latest && whole(latest, MAX, &bytes),
        format!(
            "after the kill the reader reads frame {} whole ({} bytes), the newest published",
            frame.number, frame.len
        ),
    )?;
    // the next writer takes the dead one's place and goes on with the frame it lost
    let mut next = Peer::spawn("try-write", &child_args(&fx, &[&max]));
    check(
        next.expect("WRITER", T) == format!("Ok {}", latest + 1),
        "a new writer takes over from the dead one",
    )?;
    next.send("go");
    check(
        next.expect("PUBLISHED", T) == (latest + 1).to_string(),
        "it publishes",
    )?;
    let (frame, bytes) = reader.read_vec()?.ok_or("no frame")?;
    check(
        frame.number == latest + 1 && whole(latest + 1, MAX, &bytes),
        format!("the reader reads the new writer's frame {} whole", frame.number),
    )?;
    next.send("");
    check(next.wait(T).success(), "the new writer exits cleanly")?;
    drop(reader);
    fx.finish().map_err(Failed::from)
}

fn one_writer() -> Result<(), Failed> {
    const MAX: usize = 256;
    let kind = KeyType::PosixRealtime;
    let size = FrameWriter::segment_size(MAX).expect("size");
    let fx = setup("onewriter", kind, LockMode::Fast, size)?;
    let max = MAX.to_string();
    let mut first = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), MAX)?;
    first.publish(b"one")?;
    let err = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), MAX).unwrap_err();
    check(
        err.kind() == SharedMemoryError::AlreadyExists && err.to_string().contains("this process"),
        format!("a second writer in this process: {err}"),
    )?;
    let mut other = Peer::spawn("try-write", &child_args(&fx, &[&max]));
    check(
        other.expect("WRITER", T) == "Err(AlreadyExists)",
        "a writer in another process is refused while the first lives",
    )?;
    check(other.wait(T).success(), "it exits")?;
    // the first gives the role up: the next one goes on with frame 2
    let shm = first.into_inner();
    let mut other = Peer::spawn("try-write", &child_args(&fx, &[&max]));
    check(
        other.expect("WRITER", T) == "Ok 2",
        "after into_inner another process may write, from frame 2",
    )?;
    let err = FrameWriter::new(shm, MAX).unwrap_err();
    check(
        err.kind() == SharedMemoryError::AlreadyExists,
        format!("and now this process is refused: {err}"),
    )?;
    // killed while holding the role: taken over
    other.kill9();
    let mut again = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), MAX)?;
    check(
        again.publish(b"two")? == 2,
        "the role of a killed writer is taken over",
    )?;
    let err = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), 128).unwrap_err();
    check(err.kind() == SharedMemoryError::AlreadyExists, "still one writer")?;
    drop(again);
    let err = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), 128).unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize
            && err.to_string().contains("made for 3 buffers of 256 bytes"),
        format!("another shape is refused: {err}"),
    )?;
    check(
        word(&fx.shm, WRITER_AT) as u32 == u32::MAX,
        "the role word says the last writer left",
    )?;
    fx.finish().map_err(Failed::from)
}

#[derive(
    qshm::zerocopy::FromBytes, qshm::zerocopy::IntoBytes, qshm::zerocopy::Immutable, Debug, PartialEq,
)]
#[repr(C)]
struct Pose {
    x: f64,
    y: f64,
    seq: u64,
}

fn typed_frames_and_refusals() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let fx = setup("typed", kind, LockMode::QtCompatible, 4096)?;
    let reader_before = FrameReader::new(attached(&fx.key, kind, AccessMode::ReadOnly)).unwrap_err();
    check(
        reader_before.kind() == SharedMemoryError::NotFound,
        format!("a reader before the writer: {reader_before}"),
    )?;
    for (buffers, max) in [(1, 64), (65, 64), (3, 0), (3, 4096)] {
        let err = FrameWriter::with_buffers(attached(&fx.key, kind, AccessMode::ReadWrite), max, buffers)
            .unwrap_err();
        check(
            err.kind() == SharedMemoryError::InvalidSize,
            format!("{buffers} buffers of {max}: {err}"),
        )?;
    }
    let err = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadOnly), 64).unwrap_err();
    check(
        err.kind() == SharedMemoryError::PermissionDenied,
        format!("a writer attached read-only: {err}"),
    )?;
    let mut writer = FrameWriter::with_buffers(attached(&fx.key, kind, AccessMode::ReadWrite), 64, 4)?;
    let mut reader = FrameReader::new(attached(&fx.key, kind, AccessMode::ReadOnly))?;
    check(reader.read_value::<Pose>()?.is_none(), "no frame yet")?;
    check(reader.latest()?.is_none(), "no frame yet (latest)")?;
    let pose = Pose {
        x: 1.5,
        y: -2.0,
        seq: 7,
    };
    let n = writer.publish_value(&pose)?;
    let (frame, got) = reader.read_value::<Pose>()?.ok_or("a frame")?;
    check(frame.number == n && got == pose, format!("{frame:?} {got:?}"))?;
    writer.publish(&[1, 2, 3])?;
    let err = reader.read_value::<Pose>().unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize,
        format!("a 3-byte frame is not a Pose: {err}"),
    )?;
    let err = reader.read(&mut [0u8; 2]).unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize,
        format!("a buffer too small: {err}"),
    )?;
    let err = writer.publish(&[0u8; 65]).unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize,
        format!("a frame too long: {err}"),
    )?;
    check(
        reader
            .wait_for_frame(Some(2), Duration::from_millis(20))?
            .is_none(),
        "no newer frame: the wait times out",
    )?;
    check(
        reader.wait_for_frame(Some(1), Duration::ZERO)? == Some(2),
        "a newer one: returns at once",
    )?;
    check(reader.writer()? == Role::Alive, "the writer lives")?;
    drop(writer);
    check(reader.writer()? == Role::Left, "the writer left")?;
    drop(reader);
    fx.finish().map_err(Failed::from)
}

fn garbled_channel() -> Result<(), Failed> {
    const MAX: usize = 4096;
    let kind = KeyType::PosixRealtime;
    let size = FrameWriter::segment_size(MAX).expect("size");
    let fx = setup("garble", kind, LockMode::QtCompatible, size)?;
    let mut writer = FrameWriter::new(attached(&fx.key, kind, AccessMode::ReadWrite), MAX)?;
    let mut frame = Vec::new();
    make_frame(1, MAX, &mut frame);
    writer.publish(&frame)?;
    // the newest frame's number, every stamp and length (a reader tries each read for at
    // most a second, so few rounds); then the whole header too
    let words = (128 + 3 * 64) / 8;
    for (from, rounds) in [(LATEST_AT / 8, 12), (0, 300)] {
        let mut reader = Peer::spawn("read-garbled", &child_args(&fx, &[&rounds.to_string()]));
        reader.expect("READY", T);
        let seed = (88172645463325252u64 + from as u64).to_string();
        let mut garbler = Peer::spawn(
            "garble",
            &child_args(&fx, &[&seed, &from.to_string(), &words.to_string()]),
        );
        garbler.expect("READY", T);
        reader.send("go");
        let results = reader.expect("RESULTS", Duration::from_secs(600));
        let fields: Vec<u64> = results.split(' ').map(|f| f.parse().unwrap()).collect();
        check(reader.wait(T).success(), "the reader exits cleanly (no crash)")?;
        check(
            fields[3] == 0,
            format!("only Inconsistent and InvalidSize errors: {results}"),
        )?;
        check(
            fields[4] < 10_000,
            format!("no call waited past its bound: slowest {} ms", fields[4]),
        )?;
        garbler.send("stop");
        check(garbler.wait(T).success(), "the garbler exits")?;
        println!(
            "garbled words {from}..{words}: {} reads whole, {} Inconsistent, {} InvalidSize, slowest {} ms",
            fields[0], fields[1], fields[2], fields[4]
        );
    }
    drop(writer);
    fx.finish().map_err(Failed::from)
}

fn readers_of_another_user() -> Result<(), Failed> {
    const MAX: usize = 1024;
    let Some(user) = TempUser::create("frames: readers of another user") else {
        return Ok(());
    };
    let kind = KeyType::PosixRealtime;
    let key = unique_key("framereader");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o644);
    shm.create(
        FrameWriter::segment_size(MAX).expect("size"),
        AccessMode::ReadWrite,
    )?;
    let mut writer = FrameWriter::new(shm, MAX)?;
    let mut frame = Vec::new();
    make_frame(1, MAX, &mut frame);
    writer.publish(&frame)?;
    let max = MAX.to_string();
    let mut reader = user.spawn("reader-of-another-user", &[&key, kind_name(kind), &max]);
    check(
        reader.expect("WRITER", T) == "Err(PermissionDenied)",
        "a user who may only read may not write frames",
    )?;
    check(
        reader.expect("FIRST", T) == "Ok(Some(1))",
        "it reads the first frame",
    )?;
    reader.expect("WAITING", T);
    std::thread::sleep(Duration::from_millis(50));
    make_frame(2, MAX, &mut frame);
    writer.publish(&frame)?;
    check(
        reader.expect("FRAME", T) == "2 true",
        "it reads the frame it waited for, whole",
    )?;
    check(reader.wait(T).success(), "the reader exits cleanly")?;
    drop(writer);
    let left = leftovers(&key, kind, &[]);
    check(left.is_empty(), format!("left behind: {left:?}"))
}
