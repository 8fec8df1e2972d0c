//! Message queues across real processes (the test binary re-executes itself in child
//! roles): messages whole and in order through a small queue that fills and empties; a
//! producer stopped in the middle of a message and killed there, and a consumer killed
//! while the producer waits for room, are reported (`Disconnected`) and replaced without
//! losing or tearing a message; one producer and one consumer at a time; a producer of
//! another user; a co-writer garbling the indices. The queue's layout
//! (`src/queue/layout.rs`) is pinned here where a test must look at its words.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{
    AccessMode, Consumer, KeyType, LockMode, Peer as Role, Producer, SharedMemory, SharedMemoryError,
};
use support::*;

const T: Duration = Duration::from_secs(30);
/// The layout: the producer's index (tail), where slot `i` starts, its stride.
const TAIL_AT: usize = 64;
const SLOTS_AT: usize = 192;
fn slot_at(max_message: usize, capacity: usize, index: u64) -> usize {
    SLOTS_AT + (8 + max_message).next_multiple_of(8) * (index % capacity as u64) as usize
}

fn main() {
    run_child_role(child_main);
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for kind in KINDS {
        trials.push(Trial::test(
            format!(
                "{}::messages_arrive_whole_and_in_order_through_a_queue_that_fills_and_empties",
                kind_name(kind)
            ),
            move || in_order(kind),
        ));
    }
    trials.push(Trial::test(
        "posix::a_producer_killed_in_the_middle_of_a_message_is_reported_and_replaced",
        killed_producer,
    ));
    trials.push(Trial::test(
        "posix::a_consumer_killed_while_the_producer_waits_is_reported_and_replaced",
        killed_consumer,
    ));
    trials.push(Trial::test(
        "posix::a_last_message_sent_as_the_producer_leaves_arrives_before_disconnected",
        last_message_before_leaving,
    ));
    trials.push(Trial::test(
        "posix::one_producer_and_one_consumer_at_a_time_and_refusals",
        roles_and_refusals,
    ));
    trials.push(Trial::test(
        "posix::a_producer_of_another_user_and_a_user_who_may_only_read",
        another_user,
    ));
    trials.push(Trial::test(
        "posix::a_co_writer_garbling_the_queue_never_crashes_or_hangs_its_ends",
        garbled_queue,
    ));
    run_suite(&args, trials, Passes::AsUser)
}

// ------------------------------------------------------------------ messages

/// Message `index`'s length (8 to `max`) for the `seed`ed sequence, and its bytes: the
/// index, then bytes that depend on it.
fn message_len(index: u64, max: usize, seed: u64) -> usize {
    let mixed = (index ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    8 + (mixed as usize) % (max - 7)
}

fn make_message(index: u64, max: usize, seed: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&index.to_le_bytes());
    // one byte value per message (a torn message mixes two), written fast even in a
    // debug build, so a producer of large messages spends its time copying them
    buf.resize(message_len(index, max, seed), index.wrapping_mul(13) as u8 | 1);
}

/// The index of a whole message of the sequence, or `None` for a torn or foreign one.
fn index_of(bytes: &[u8], max: usize, seed: u64) -> Option<u64> {
    let index = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let mut expected = Vec::new();
    make_message(index, max, seed, &mut expected);
    (bytes == expected.as_slice()).then_some(index)
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn attached(key: &str, kind: KeyType) -> SharedMemory {
    let mut shm = SharedMemory::with_key_type(key, kind);
    shm.attach(AccessMode::ReadWrite).expect("attach");
    shm
}

fn child_args<'a>(key: &'a str, kind: KeyType, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![key, kind_name(kind)];
    v.extend_from_slice(extra);
    v
}

// ------------------------------------------------------------------ child roles

/// Arguments: key, key type, max message, capacity, then role-specific ones.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind) = (&args[0], parse_kind(&args[1]));
    let max: usize = args[2].parse().unwrap();
    let cap: usize = args[3].parse().unwrap();
    match role {
        // SEED FROM COUNT: after "go", send messages FROM..FROM+COUNT (blocking), "DONE"
        "produce" => {
            let (seed, from, count): (u64, u64, u64) = (
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
                args[6].parse().unwrap(),
            );
            let mut tx = match Producer::new(attached(key, kind), max, cap) {
                Ok(tx) => tx,
                Err(e) => {
                    say(format!("FAILED {:?} {e}", e.kind()));
                    return 1;
                }
            };
            say("READY");
            wait_for_stdin_line();
            let mut buf = Vec::new();
            for i in from..from + count {
                make_message(i, max, seed, &mut buf);
                if !tx.send_timeout(&buf, T).expect("send") {
                    say("TIMEOUT");
                    return 1;
                }
            }
            say("DONE");
            wait_for_stdin_line();
            0
        }
        // SEED: send messages 0, 1, ... for ever, never waiting (to be caught and killed)
        "produce-forever" => {
            let seed: u64 = args[4].parse().unwrap();
            let mut tx = Producer::new(attached(key, kind), max, cap).expect("producer");
            say("READY");
            let mut buf = Vec::new();
            let mut i = 0;
            loop {
                make_message(i, max, seed, &mut buf);
                if tx.try_send(&buf).expect("send") {
                    i += 1;
                }
            }
        }
        // SEED FROM COUNT: receive COUNT messages (then "GOT received bad last")
        "consume" => {
            let (seed, from, count): (u64, u64, u64) = (
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
                args[6].parse().unwrap(),
            );
            let mut rx = Consumer::new(attached(key, kind), max, cap).expect("consumer");
            say("READY");
            let mut buf = vec![0; max];
            let (mut bad, mut last) = (0u64, None);
            for n in 0..count {
                let len = match rx.recv_timeout(&mut buf, T) {
                    Ok(Some(len)) => len,
                    other => {
                        say(format!("FAILED {other:?}"));
                        return 1;
                    }
                };
                let index = index_of(&buf[..len], max, seed);
                if index != Some(from + n) {
                    bad += 1;
                }
                last = index;
            }
            say(format!("GOT {count} {bad} {last:?}"));
            wait_for_stdin_line();
            0
        }
        // ROLE: try to take that end; "END Ok" (held until stdin closes) or "END Err(kind)"
        "try-end" => {
            let shm = {
                let mut shm = SharedMemory::with_key_type(key, kind);
                match shm.attach(AccessMode::ReadWrite) {
                    Ok(()) => shm,
                    Err(e) => {
                        say(format!("END Err({:?})", e.kind()));
                        return 0;
                    }
                }
            };
            let result = match args[4].as_str() {
                "producer" => Producer::new(shm, max, cap).map(|p| Box::new(p) as Box<dyn std::any::Any>),
                _ => Consumer::new(shm, max, cap).map(|c| Box::new(c) as Box<dyn std::any::Any>),
            };
            match result {
                Ok(end) => {
                    say("END Ok");
                    wait_for_stdin_line();
                    drop(end);
                }
                Err(e) => say(format!("END Err({:?})", e.kind())),
            }
            0
        }
        // ROUNDS SIDE: try_send/try_recv under garbling; "RESULTS ok empty_or_full
        // inconsistent disconnected invalid other slowest_ms"
        "use-garbled" => {
            let rounds: usize = args[4].parse().unwrap();
            let shm = attached(key, kind);
            let mut counts = [0u64; 6];
            let mut slowest = Duration::ZERO;
            let mut tally = |r: Result<bool, qshm::Error>| match r.map_err(|e| e.kind()) {
                Ok(true) => counts[0] += 1,
                Ok(false) => counts[1] += 1,
                Err(SharedMemoryError::Inconsistent) => counts[2] += 1,
                Err(SharedMemoryError::Disconnected) => counts[3] += 1,
                Err(SharedMemoryError::InvalidSize) => counts[4] += 1,
                Err(kind) => {
                    eprintln!("unexpected {kind:?}");
                    counts[5] += 1
                }
            };
            let buf = [7u8; 16];
            let mut out = vec![0u8; max];
            if args[5] == "producer" {
                let mut tx = Producer::new(shm, max, cap).expect("producer");
                say("READY");
                wait_for_stdin_line();
                for _ in 0..rounds {
                    let t = Instant::now();
                    tally(tx.try_send(&buf));
                    tally(tx.send_timeout(&buf, Duration::from_millis(2)));
                    let _ = tx.consumer();
                    slowest = slowest.max(t.elapsed());
                }
            } else {
                let mut rx = Consumer::new(shm, max, cap).expect("consumer");
                say("READY");
                wait_for_stdin_line();
                for _ in 0..rounds {
                    let t = Instant::now();
                    tally(rx.try_recv(&mut out).map(|r| r.is_some()));
                    tally(
                        rx.recv_timeout(&mut out, Duration::from_millis(2))
                            .map(|r| r.is_some()),
                    );
                    slowest = slowest.max(t.elapsed());
                }
            }
            let c = counts;
            say(format!(
                "RESULTS {} {} {} {} {} {} {}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                slowest.as_millis()
            ));
            0
        }
        // SEED FROM WORDS: scribble u64s FROM..WORDS until stdin closes
        "garble" => {
            let mut x: u64 = args[4].parse().unwrap();
            let from: usize = args[5].parse().unwrap();
            let words: usize = args[6].parse().unwrap();
            let shm = attached(key, kind);
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
                let value = match x % 4 {
                    0 => x % 40,
                    1 => u64::MAX - (x % 3),
                    2 => (x >> 1) % 1_000_000,
                    _ => x,
                };
                // SAFETY: `at` < WORDS and the caller's WORDS u64s lie inside the
                // read-write mapping; every process touches them only atomically.
                unsafe { (*base.add(8 * at).cast::<AtomicU64>()).store(value, Ordering::Relaxed) };
                std::hint::spin_loop();
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

fn in_order(kind: KeyType) -> Result<(), Failed> {
    const MAX: usize = 64;
    const CAP: usize = 16;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("queue", kind, LockMode::QtCompatible, size)?;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    let mut producer = Peer::spawn(
        "produce",
        &child_args(&fx.key, kind, &[&max, &cap, "11", "0", "20000"]),
    );
    producer.expect("READY", T);
    let mut consumer = Peer::spawn(
        "consume",
        &child_args(&fx.key, kind, &[&max, &cap, "11", "0", "20000"]),
    );
    consumer.expect("READY", T);
    producer.send("go");
    check(
        consumer.expect("GOT", T) == "20000 0 Some(19999)",
        "the consumer gets all 20000 messages, whole and in order",
    )?;
    producer.expect("DONE", T);
    // both left: the queue is still there, reusable, and empty
    producer.send("");
    consumer.send("");
    check(
        producer.wait(T).success() && consumer.wait(T).success(),
        "both ends exit",
    )?;
    let mut rx = Consumer::new(attached(&fx.key, kind), MAX, CAP)?;
    check(rx.producer()? == Role::Left, "the producer left")?;
    let err = rx.try_recv(&mut [0; MAX]).unwrap_err();
    check(
        err.kind() == SharedMemoryError::Disconnected && err.to_string().contains("left"),
        format!("an empty queue whose producer left: {err}"),
    )?;
    drop(rx);
    fx.finish().map_err(Failed::from)
}

fn word(shm: &SharedMemory, at: usize) -> u64 {
    // SAFETY: a word of the queue's layout inside this process's mapping, which every
    // process touches only atomically.
    unsafe { (*shm.as_ptr().add(at).cast::<AtomicU64>()).load(Ordering::SeqCst) }
}

fn signal(peer: &Peer, sig: i32) {
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(peer.child.id() as i32, sig) };
}

fn killed_producer() -> Result<(), Failed> {
    // large messages, so the producer spends its time copying; lengths differ from one
    // index to the next, so a slot's length word tells which message is being written
    const MAX: usize = 4 << 20;
    const CAP: usize = 2;
    const SEED: u64 = 5;
    let kind = KeyType::PosixRealtime;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("queuekill", kind, LockMode::Fast, size)?;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    let mut rx = Consumer::new(attached(&fx.key, kind), MAX, CAP)?;
    let mut producer = Peer::spawn(
        "produce-forever",
        &child_args(&fx.key, kind, &[&max, &cap, &SEED.to_string()]),
    );
    producer.expect("READY", T);
    let mut buf = vec![0u8; MAX];
    let mut next = 0u64; // the next index the consumer expects
    let mut caught = None;
    let give_up = Instant::now() + Duration::from_secs(120);
    while Instant::now() < give_up {
        // take what is there, then look whether the producer is inside a message: the
        // slot of the next index has that message's length, the index is not published
        while let Some(len) = rx.try_recv(&mut buf)? {
            check(
                index_of(&buf[..len], MAX, SEED) == Some(next),
                format!("message {next} arrives whole"),
            )?;
            next += 1;
        }
        let tail = word(&fx.shm, TAIL_AT);
        let writing = word(&fx.shm, slot_at(MAX, CAP, tail)) == message_len(tail, MAX, SEED) as u64;
        if !writing {
            continue;
        }
        signal(&producer, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(2));
        let still = word(&fx.shm, TAIL_AT) == tail
            && word(&fx.shm, slot_at(MAX, CAP, tail)) == message_len(tail, MAX, SEED) as u64;
        if still {
            caught = Some(tail);
            break;
        }
        signal(&producer, libc::SIGCONT);
    }
    let Some(lost) = caught else {
        return Err("never caught the producer inside a message in 120 s".into());
    };
    producer.kill9();
    // what was published arrives whole; the message it was writing never does
    let err = loop {
        match rx.recv_timeout(&mut buf, T) {
            Ok(Some(len)) => {
                check(
                    index_of(&buf[..len], MAX, SEED) == Some(next),
                    format!("message {next} arrives whole after the kill"),
                )?;
                next += 1;
            }
            Ok(None) => return Err("the consumer waited out its timeout: the death was not reported".into()),
            Err(e) => break e,
        }
    };
    check(
        err.kind() == SharedMemoryError::Disconnected && err.to_string().contains("died"),
        format!("the producer's death is reported: {err}"),
    )?;
    check(
        next == lost,
        format!("every message before the lost one ({lost}) arrived, and no more: next {next}"),
    )?;
    check(rx.producer()? == Role::Died, "the producer died")?;
    // a new producer takes its place and writes the lost index again
    let mut again = Peer::spawn(
        "produce",
        &child_args(
            &fx.key,
            kind,
            &[&max, &cap, &SEED.to_string(), &lost.to_string(), "3"],
        ),
    );
    again.expect("READY", T);
    again.send("go");
    for i in lost..lost + 3 {
        let len = rx
            .recv_timeout(&mut buf, T)?
            .ok_or("no message from the new producer")?;
        check(
            index_of(&buf[..len], MAX, SEED) == Some(i),
            format!("the new producer's message {i} arrives whole"),
        )?;
    }
    again.expect("DONE", T);
    again.send("");
    check(again.wait(T).success(), "the new producer exits")?;
    drop(rx);
    fx.finish().map_err(Failed::from)
}

fn killed_consumer() -> Result<(), Failed> {
    const MAX: usize = 64;
    const CAP: usize = 8;
    const SEED: u64 = 9;
    let kind = KeyType::PosixRealtime;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("consumerkill", kind, LockMode::QtCompatible, size)?;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    let mut tx = Producer::new(attached(&fx.key, kind), MAX, CAP)?;
    check(tx.consumer()? == Role::Absent, "no consumer yet")?;
    let mut consumer = Peer::spawn(
        "consume",
        &child_args(&fx.key, kind, &[&max, &cap, &SEED.to_string(), "0", "5"]),
    );
    consumer.expect("READY", T);
    let mut buf = Vec::new();
    let mut i = 0u64;
    // fill the queue: the consumer takes 5, then the queue fills up behind it
    while i < 5 + CAP as u64 {
        make_message(i, MAX, SEED, &mut buf);
        check(tx.send_timeout(&buf, T)?, "room within the timeout")?;
        i += 1;
    }
    check(
        consumer.expect("GOT", T) == "5 0 Some(4)",
        "the consumer took 5 whole messages",
    )?;
    check(tx.len()? == CAP, "the queue is full")?;
    // the producer waits for room in another thread; the consumer is killed meanwhile
    make_message(i, MAX, SEED, &mut buf);
    let waiting = std::thread::spawn(move || {
        let result = tx.send_timeout(&buf, T);
        (tx, result)
    });
    std::thread::sleep(Duration::from_millis(100));
    consumer.kill9();
    let (tx, result) = waiting.join().expect("producer thread");
    let err = result.expect_err("a full queue whose consumer died");
    check(
        err.kind() == SharedMemoryError::Disconnected && err.to_string().contains("consumer died"),
        format!("the waiting producer is told: {err}"),
    )?;
    check(tx.consumer()? == Role::Died, "the consumer died")?;
    // a new consumer gets every message the dead one did not take, in order
    let mut next = Peer::spawn(
        "consume",
        &child_args(
            &fx.key,
            kind,
            &[&max, &cap, &SEED.to_string(), "5", &CAP.to_string()],
        ),
    );
    next.expect("READY", T);
    check(
        next.expect("GOT", T) == format!("{CAP} 0 Some({})", 4 + CAP),
        "the new consumer gets the rest, whole and in order",
    )?;
    next.send("");
    check(next.wait(T).success(), "it exits")?;
    drop(tx);
    fx.finish().map_err(Failed::from)
}

/// A producer sends one message and leaves at once, again and again, while the consumer
/// waits: the consumer must get each message before it hears that the producer left
/// (the producer's departure may be seen between its look at the queue and its sleep).
fn last_message_before_leaving() -> Result<(), Failed> {
    const MAX: usize = 16;
    const CAP: usize = 4;
    const ROUNDS: u64 = 20_000;
    let kind = KeyType::PosixRealtime;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("queuelast", kind, LockMode::Fast, size)?;
    let mut rx = Consumer::new(attached(&fx.key, kind), MAX, CAP)?;
    let key = fx.key.clone();
    // how many producers have taken the role so far (counted once each has it)
    let claimed = std::sync::Arc::new(AtomicU64::new(0));
    let claims = claimed.clone();
    let producer = std::thread::spawn(move || {
        let mut shm = Some(attached(&key, kind));
        for round in 0..ROUNDS {
            let mut tx = Producer::new(shm.take().expect("segment"), MAX, CAP).expect("producer");
            claims.fetch_add(1, Ordering::SeqCst);
            tx.send(&round.to_le_bytes()).expect("send");
            shm = Some(tx.into_inner()); // leaves right after the message
            std::thread::yield_now();
        }
    });
    let mut buf = [0u8; MAX];
    let mut next = 0u64;
    let (mut departures, mut queued, mut judged) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while next < ROUNDS && Instant::now() < deadline {
        // Producer `next` (whose message is the next to arrive) had the role before this
        // receive began: then the departure the receive may report is its own or a later
        // one, and its message, sent before it left, must have arrived first. Otherwise a
        // message found queued after `Disconnected` may be a newer producer's, which took
        // the role after the receive saw the old one gone: nothing to judge.
        let judgeable = claimed.load(Ordering::SeqCst) > next;
        match rx.recv_timeout(&mut buf, T) {
            Ok(Some(8)) => {
                let got = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                check(got == next, format!("message {got} arrived, {next} expected"))?;
                next += 1;
            }
            Ok(other) => return Err(format!("a receive gave {other:?}").into()),
            Err(e) if e.kind() == SharedMemoryError::Disconnected => {
                departures += 1;
                if !rx.is_empty()? {
                    queued += 1;
                }
                if judgeable {
                    judged += 1;
                    check(
                        rx.is_empty()?,
                        format!("Disconnected with producer {next}'s message queued: {e}"),
                    )?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!(
        "last messages: {ROUNDS} producers, {departures} departures reported ({queued} with a newer producer's message queued), {judged} judged"
    );
    producer.join().map_err(|_| "the producer thread panicked")?;
    check(next == ROUNDS, format!("{next} of {ROUNDS} messages arrived"))?;
    drop(rx);
    fx.finish().map_err(Failed::from)
}

fn roles_and_refusals() -> Result<(), Failed> {
    const MAX: usize = 32;
    const CAP: usize = 4;
    let kind = KeyType::PosixRealtime;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("queueroles", kind, LockMode::Fast, size)?;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    for (max, cap) in [(0, 4), (32, 0), (4096, 4)] {
        let err = Producer::new(attached(&fx.key, kind), max, cap).unwrap_err();
        check(
            err.kind() == SharedMemoryError::InvalidSize,
            format!("{cap} messages of {max}: {err}"),
        )?;
    }
    let mut ro = SharedMemory::with_key_type(&fx.key, kind);
    ro.attach(AccessMode::ReadOnly)?;
    let err = Consumer::new(ro, MAX, CAP).unwrap_err();
    check(
        err.kind() == SharedMemoryError::PermissionDenied,
        format!("a read-only attachment: {err}"),
    )?;
    let mut tx = Producer::new(attached(&fx.key, kind), MAX, CAP)?;
    let mut rx = Consumer::new(attached(&fx.key, kind), MAX, CAP)?;
    let err = Producer::new(attached(&fx.key, kind), MAX, CAP).unwrap_err();
    check(
        err.kind() == SharedMemoryError::AlreadyExists,
        format!("a second producer in this process: {err}"),
    )?;
    let mut other = Peer::spawn("try-end", &child_args(&fx.key, kind, &[&max, &cap, "consumer"]));
    check(
        other.expect("END", T) == "Err(AlreadyExists)",
        "a second consumer in another process",
    )?;
    check(other.wait(T).success(), "it exits")?;
    let err = Consumer::new(attached(&fx.key, kind), MAX, 2).unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize
            && err.to_string().contains("made for 4 messages of 32 bytes"),
        format!("another shape: {err}"),
    )?;
    // sizes, empty and full, values
    let err = tx.try_send(&[0; MAX + 1]).unwrap_err();
    check(err.kind() == SharedMemoryError::InvalidSize, "a message too long")?;
    check(rx.try_recv(&mut [0; MAX])?.is_none(), "empty")?;
    check(
        rx.recv_timeout(&mut [0; MAX], Duration::from_millis(20))?
            .is_none(),
        "empty: the timeout passes",
    )?;
    for n in 0..CAP as u64 {
        check(tx.send_value_timeout(&n, Duration::ZERO)?, "room")?;
    }
    check(!tx.try_send(b"x")?, "full")?;
    check(
        !tx.send_timeout(b"x", Duration::from_millis(20))?,
        "full: the timeout passes",
    )?;
    let err = rx.try_recv(&mut [0; 4]).unwrap_err();
    check(
        err.kind() == SharedMemoryError::InvalidSize && err.to_string().contains("stays queued"),
        format!("a buffer too small: {err}"),
    )?;
    for n in 0..CAP as u64 {
        check(
            rx.recv_value_timeout::<u64>(Duration::ZERO)? == Some(n),
            "the values, in order",
        )?;
    }
    check(rx.is_empty()? && tx.is_empty()?, "both ends see it empty")?;
    // the consumer leaves; another process takes its place and the queue goes on
    let shm = rx.into_inner();
    check(tx.consumer()? == Role::Left, "the consumer left")?;
    tx.send(b"after")?;
    let mut other = Peer::spawn("try-end", &child_args(&fx.key, kind, &[&max, &cap, "consumer"]));
    check(
        other.expect("END", T) == "Ok",
        "a new consumer in another process",
    )?;
    check(tx.consumer()? == Role::Alive, "it lives")?;
    other.kill9();
    check(tx.consumer()? == Role::Died, "killed: died")?;
    let mut rx = Consumer::new(shm, MAX, CAP)?;
    check(
        rx.recv_vec_timeout(T)?.as_deref() == Some(b"after".as_slice()),
        "this process takes the dead consumer's place and gets the message",
    )?;
    drop((tx, rx));
    fx.finish().map_err(Failed::from)
}

fn another_user() -> Result<(), Failed> {
    const MAX: usize = 64;
    const CAP: usize = 4;
    let Some(user) = TempUser::create("queue: a producer of another user") else {
        return Ok(());
    };
    let kind = KeyType::PosixRealtime;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let mut cleanup = Cleanup::default();
    // a segment others may write: another user produces, root consumes
    let key = unique_key("queueuser");
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o666);
    shm.create(size, AccessMode::ReadWrite)?;
    let mut rx = Consumer::new(shm, MAX, CAP)?;
    let mut producer = user.spawn("produce", &child_args(&key, kind, &[&max, &cap, "3", "0", "200"]));
    producer.expect("READY", T);
    producer.send("go");
    let mut buf = [0u8; MAX];
    for i in 0..200 {
        let len = rx.recv_timeout(&mut buf, T)?.ok_or("a message")?;
        check(
            index_of(&buf[..len], MAX, 3) == Some(i),
            format!("message {i} whole"),
        )?;
    }
    producer.expect("DONE", T);
    producer.kill9();
    let err = rx.recv_timeout(&mut buf, T).unwrap_err();
    check(
        err.kind() == SharedMemoryError::Disconnected && err.to_string().contains("died"),
        format!("another user's producer killed: {err}"),
    )?;
    drop(rx);
    // a segment others may only read: they may not use its queue
    let key = unique_key("queuereader");
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o644);
    shm.create(size, AccessMode::ReadWrite)?;
    let mut reader = user.spawn("try-end", &child_args(&key, kind, &[&max, &cap, "producer"]));
    check(
        reader.expect("END", T) == "Err(PermissionDenied)",
        "a user who may only read may not produce",
    )?;
    check(reader.wait(T).success(), "it exits")?;
    drop(shm);
    Ok(())
}

fn garbled_queue() -> Result<(), Failed> {
    const MAX: usize = 64;
    const CAP: usize = 4;
    let kind = KeyType::PosixRealtime;
    let size = Producer::segment_size(MAX, CAP).expect("size");
    let fx = setup("queuegarble", kind, LockMode::QtCompatible, size)?;
    let (max, cap) = (MAX.to_string(), CAP.to_string());
    let mut ends: Vec<Peer> = ["producer", "consumer"]
        .iter()
        .map(|side| {
            Peer::spawn(
                "use-garbled",
                &child_args(&fx.key, kind, &[&max, &cap, "500", side]),
            )
        })
        .collect();
    for end in &mut ends {
        end.expect("READY", T);
    }
    // the indices, the roles and waiting words, and every slot's length
    let words = size / 8;
    let mut garbler = Peer::spawn(
        "garble",
        &child_args(
            &fx.key,
            kind,
            &[&max, &cap, "2463534242", "8", &words.to_string()],
        ),
    );
    garbler.expect("READY", T);
    for end in &mut ends {
        end.send("go");
    }
    for end in &mut ends {
        let results = end.expect("RESULTS", Duration::from_secs(600));
        let fields: Vec<u64> = results.split(' ').map(|f| f.parse().unwrap()).collect();
        check(end.wait(T).success(), "an end exits cleanly (no crash)")?;
        check(
            fields[5] == 0,
            format!("only typed errors of the queue: {results}"),
        )?;
        check(
            fields[6] < 10_000,
            format!("no call waited past its bound: slowest {} ms", fields[6]),
        )?;
        println!(
            "garbled queue: {} done, {} empty or full, {} Inconsistent, {} Disconnected, {} InvalidSize",
            fields[0], fields[1], fields[2], fields[3], fields[4]
        );
    }
    garbler.send("stop");
    check(garbler.wait(T).success(), "the garbler exits")?;
    fx.finish().map_err(Failed::from)
}
