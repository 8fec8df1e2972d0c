//! `qshm demo`: Qt's classic shared-memory example, in the terminal. A producer and a
//! consumer process exchange messages through one segment under the lock.
//!
//! Segment layout: bytes 0..8 the number of the latest message (u64, `BYE` at the end),
//! 8..16 the number the consumer acknowledged, 16..20 the text length, 20.. the text.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qshm::{AccessMode, SharedMemory, SharedMemoryError};

use crate::{CliResult, Failure};

const BYE: u64 = u64::MAX;
const TIMEOUT: Duration = Duration::from_secs(20);

fn get(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn put(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

fn say(who: &str, line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{who}] {line}");
    let _ = out.flush();
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 6,
    }
}

/// The producer: create the segment, start the consumer, send `messages` messages.
pub fn run(messages: u32) -> CliResult {
    let key = format!("qshm-demo-{}", std::process::id());
    let mut shm = SharedMemory::new(&key);
    shm.create(4096, AccessMode::ReadWrite)?;
    say(
        "producer",
        format!(
            "created segment {key:?} ({} bytes) at {}",
            shm.size(),
            shm.native_key()
        ),
    );
    let exe = std::env::current_exe()?;
    let mut consumer = Command::new(exe)
        .args(["demo-consumer", &key])
        .stdin(Stdio::null())
        .spawn()?;
    let result = produce(&shm, messages);
    let status = consumer.wait()?;
    result?;
    if !status.success() {
        return Err(fail(format!("the consumer failed: {status}")));
    }
    shm.detach()?;
    let mut probe = SharedMemory::new(&key);
    match probe.attach(AccessMode::ReadOnly) {
        Err(e) if e.kind() == SharedMemoryError::NotFound => say(
            "producer",
            "both detached: the segment is destroyed (attach now says NotFound)".into(),
        ),
        _ => return Err(fail("the segment outlived its last user")),
    }
    Ok(())
}

fn produce(shm: &SharedMemory, messages: u32) -> CliResult {
    let texts = [
        "hello from the producer",
        "shared memory, Qt style",
        "under a system-wide lock",
        "no copies, no sockets",
    ];
    for n in 1..=u64::from(messages) {
        let text = format!("{} (#{n})", texts[(n as usize - 1) % texts.len()]);
        {
            let mut bytes = shm.lock()?;
            let len = text.len().min(bytes.len() - 20);
            bytes[16..20].copy_from_slice(&(len as u32).to_ne_bytes());
            bytes[20..20 + len].copy_from_slice(&text.as_bytes()[..len]);
            put(&mut bytes, 0, n);
        }
        say("producer", format!("wrote message #{n}: {text:?}"));
        wait_for_ack(shm, n)?;
    }
    shm.lock().map(|mut bytes| put(&mut bytes, 0, BYE))?;
    wait_for_ack(shm, BYE)?;
    say("producer", "consumer said goodbye".into());
    Ok(())
}

fn wait_for_ack(shm: &SharedMemory, n: u64) -> CliResult {
    let start = Instant::now();
    loop {
        if let Some(bytes) = shm.lock_read_timeout(Duration::from_millis(100))?
            && get(&bytes, 8) == n
        {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            return Err(fail(format!("no acknowledgement for message #{n}")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The consumer: attach, print each new message, acknowledge it.
pub fn consumer(key: &str) -> CliResult {
    let mut shm = SharedMemory::new(key);
    shm.attach(AccessMode::ReadWrite)?;
    say("consumer", format!("attached to {key:?}, {} bytes", shm.size()));
    let mut last = 0;
    let start = Instant::now();
    loop {
        {
            let mut bytes = shm.lock()?;
            let n = get(&bytes, 0);
            if n != last {
                last = n;
                if n == BYE {
                    put(&mut bytes, 8, BYE);
                    break;
                }
                let len = u32::from_ne_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
                let text = String::from_utf8_lossy(&bytes[20..20 + len.min(bytes.len() - 20)]).into_owned();
                put(&mut bytes, 8, n);
                drop(bytes);
                say("consumer", format!("read  message #{n}: {text:?}"));
            }
        }
        if start.elapsed() > TIMEOUT {
            return Err(fail("the producer went quiet"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    shm.detach()?;
    say("consumer", "detached, bye".into());
    Ok(())
}
