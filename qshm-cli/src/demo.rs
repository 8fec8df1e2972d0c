//! `qshm demo`: Qt's classic shared-memory example, in the terminal. A producer process
//! creates a segment and starts a consumer process (this program again, as the hidden
//! `demo-consumer` command); they exchange messages through the segment under its lock.
//!
//! Segment layout: bytes 0..8 the number of the latest message (u64, `BYE` at the end),
//! 8..16 the number the consumer acknowledged, 16..20 the text length, 20.. the text.
//! Each side prints while it holds the lock, so the transcript comes out in order.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qshm::{AccessMode, KeyType, LockMode, SharedMemory, SharedMemoryError};

use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, KeyOpts, Target, say, type_flag, type_name};

const BYE: u64 = u64::MAX;
const HEADER: usize = 20;
/// Give up when the other side makes no progress for this long.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long each side waits for the lock before it looks around again.
const SLICE: Duration = Duration::from_millis(100);

fn get(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn put(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

fn tell(who: &str, line: std::fmt::Arguments<'_>) {
    say(format_args!("[{who}] {line}"));
}

/// The producer: create the segment, start the consumer, send `messages` messages.
pub fn run(opts: KeyOpts, messages: u32) -> CliResult {
    let interrupt = interrupt::install()?;
    let key = format!("qshm-demo-{}", std::process::id());
    let kind = if opts.posix {
        KeyType::PosixRealtime
    } else {
        KeyType::SystemV
    };
    let mode = if opts.fast {
        LockMode::Fast
    } else {
        LockMode::QtCompatible
    };
    let mut shm = SharedMemory::with_key_type(&key, kind).with_lock_mode(mode);
    shm.create(4096, AccessMode::ReadWrite)?;
    tell(
        "producer",
        format_args!(
            "created segment {key:?} ({} bytes, {}) at {}",
            shm.size(),
            type_name(kind),
            shm.native_key()
        ),
    );
    let mut args = vec![
        "demo-consumer".to_owned(),
        key.clone(),
        type_flag(kind).to_owned(),
    ];
    if opts.fast {
        args.push("--fast".to_owned());
    }
    let mut consumer = Command::new(std::env::current_exe()?)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()?;
    let produced = produce(&shm, &key, messages, &interrupt, &mut consumer);
    if produced.is_err() {
        let _ = consumer.kill();
    }
    let status = consumer.wait()?;
    produced?;
    if !status.success() {
        return Err(Failure::other(format!("the consumer failed: {status}")));
    }
    tell("producer", format_args!("the consumer said goodbye and detached"));
    let lock_state = shm.lock_state_path();
    shm.detach()?;
    let mut probe = SharedMemory::with_key_type(&key, kind);
    let gone =
        matches!(probe.attach(AccessMode::ReadOnly), Err(e) if e.kind() == SharedMemoryError::NotFound);
    let key_file = kind == KeyType::SystemV && Path::new(shm.native_key()).exists();
    if !gone || key_file || lock_state.is_some_and(|p| p.exists()) {
        return Err(Failure::other(
            "the segment (or its key file or lock state) outlived its last user".to_owned(),
        ));
    }
    tell(
        "producer",
        format_args!("detached too: the last user gone, the segment is destroyed (attach says NotFound)"),
    );
    Ok(())
}

fn produce(
    shm: &SharedMemory,
    key: &str,
    messages: u32,
    interrupt: &Interrupt,
    consumer: &mut Child,
) -> CliResult {
    let texts = [
        "hello from the producer",
        "shared memory, Qt style",
        "under a system-wide lock",
        "no copies, no sockets",
    ];
    for n in 1..=u64::from(messages) {
        let text = format!("{} (#{n})", texts[(n as usize - 1) % texts.len()]);
        {
            let mut bytes =
                interrupt.lock(key, shm.native_ipc_key(), |t| shm.lock_timeout(t), Failure::from)?;
            let len = text.len().min(bytes.len() - HEADER);
            bytes[16..20].copy_from_slice(&(len as u32).to_ne_bytes());
            bytes[HEADER..HEADER + len].copy_from_slice(&text.as_bytes()[..len]);
            put(&mut bytes, 0, n);
            tell("producer", format_args!("wrote message #{n}: {text:?}"));
        }
        wait_for_ack(shm, n, interrupt, consumer)?;
    }
    {
        let mut bytes = interrupt.lock(key, shm.native_ipc_key(), |t| shm.lock_timeout(t), Failure::from)?;
        put(&mut bytes, 0, BYE);
        tell(
            "producer",
            format_args!("no more messages: asked the consumer to finish"),
        );
    }
    wait_for_ack(shm, BYE, interrupt, consumer)
}

fn wait_for_ack(shm: &SharedMemory, n: u64, interrupt: &Interrupt, consumer: &mut Child) -> CliResult {
    let start = Instant::now();
    loop {
        if let Some(bytes) = shm.lock_read_timeout(SLICE)?
            && get(&bytes, 8) == n
        {
            return Ok(());
        }
        if interrupt.raised() {
            return Err(Failure::interrupted("interrupted".to_owned()));
        }
        if let Some(status) = consumer.try_wait()? {
            return Err(Failure::other(format!("the consumer quit early: {status}")));
        }
        if start.elapsed() > TIMEOUT {
            return Err(Failure::other(format!("no acknowledgement for message #{n}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The consumer: attach, print each new message, acknowledge it.
pub fn consumer(target: &Target) -> CliResult {
    let interrupt = interrupt::install()?;
    let producer = std::os::unix::process::parent_id();
    let mut shm = target.attach(AccessMode::ReadWrite)?;
    tell(
        "consumer",
        format_args!("attached to {:?}, {} bytes", target.shown, shm.size()),
    );
    let mut last = 0;
    let mut progress = Instant::now();
    loop {
        if let Some(mut bytes) = shm.lock_timeout(SLICE)? {
            let n = get(&bytes, 0);
            if n == BYE {
                put(&mut bytes, 8, BYE);
                break;
            }
            if n != last {
                let len = u32::from_ne_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
                let end = HEADER + len.min(bytes.len() - HEADER);
                let text = String::from_utf8_lossy(&bytes[HEADER..end]).into_owned();
                tell("consumer", format_args!("read  message #{n}: {text:?}"));
                put(&mut bytes, 8, n);
                last = n;
                progress = Instant::now();
            }
        }
        if interrupt.raised() {
            return Err(Failure::interrupted("interrupted".to_owned()));
        }
        if std::os::unix::process::parent_id() != producer {
            return Err(Failure::other("the producer is gone".to_owned()));
        }
        if progress.elapsed() > TIMEOUT {
            return Err(Failure::other("the producer went quiet".to_owned()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    shm.detach()?;
    tell("consumer", format_args!("detached, bye"));
    Ok(())
}
