//! `qshm demo`: Qt's classic shared-memory example, in the terminal. A producer process
//! creates a segment and starts a consumer process (this program again, as the hidden
//! `demo-consumer` command); they exchange messages through the segment under its lock.
//!
//! The segment holds one [`Mailbox`], a `#[repr(C)]` struct read and written through the
//! lock guards' typed views (`as_type_mut`), as a Qt program would share a struct. Each
//! side wakes the other with a change notification after its write
//! (`unlock_and_notify`) and sleeps until the next one (`wait_for_change`) instead of
//! polling. Each side prints while it holds the lock, so the transcript comes out in order.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qshm::admin::SharedMemoryExt as _;
use qshm::{AccessMode, KeyType, LockMode, SharedMemory, SharedMemoryError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, KeyOpts, Target, say, type_flag, type_name};

const BYE: u64 = u64::MAX;
/// Room for the text: the mailbox fills a 4096-byte segment exactly (no padding).
const TEXT: usize = 4096 - 20;
/// Give up when the other side makes no progress for this long.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long each side waits for the lock, or a change, before it looks around again.
const SLICE: Duration = Duration::from_millis(100);

/// What the two processes share.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Mailbox {
    /// The number of the latest message (`BYE` at the end).
    latest: u64,
    /// The number the consumer acknowledged.
    acked: u64,
    /// How many bytes of `text` are the message.
    len: u32,
    text: [u8; TEXT],
}

impl Mailbox {
    fn text(&self) -> String {
        let len = (self.len as usize).min(TEXT);
        String::from_utf8_lossy(&self.text[..len]).into_owned()
    }
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
        let mut guard = interrupt.lock(key, shm.native_ipc_key(), |t| shm.lock_timeout(t), Failure::from)?;
        let mailbox = guard.as_type_mut::<Mailbox>()?;
        let len = text.len().min(TEXT);
        mailbox.text[..len].copy_from_slice(&text.as_bytes()[..len]);
        mailbox.len = len as u32;
        mailbox.latest = n;
        tell("producer", format_args!("wrote message #{n}: {text:?}"));
        guard.unlock_and_notify()?;
        wait_for_ack(shm, n, interrupt, consumer)?;
    }
    let mut guard = interrupt.lock(key, shm.native_ipc_key(), |t| shm.lock_timeout(t), Failure::from)?;
    guard.as_type_mut::<Mailbox>()?.latest = BYE;
    tell(
        "producer",
        format_args!("no more messages: asked the consumer to finish"),
    );
    guard.unlock_and_notify()?;
    wait_for_ack(shm, BYE, interrupt, consumer)
}

/// Sleep until the consumer acknowledged message `n`.
fn wait_for_ack(shm: &SharedMemory, n: u64, interrupt: &Interrupt, consumer: &mut Child) -> CliResult {
    let start = Instant::now();
    loop {
        // the generation first, then the look: a change in between is not slept through
        let seen = shm.generation()?;
        if let Some(guard) = shm.lock_read_timeout(SLICE)?
            && guard.as_type::<Mailbox>()?.acked == n
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
        shm.wait_for_change(seen, SLICE)?;
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
        let seen = shm.generation()?;
        if let Some(mut guard) = shm.lock_timeout(SLICE)? {
            let mailbox = guard.as_type_mut::<Mailbox>()?;
            let n = mailbox.latest;
            if n == BYE {
                mailbox.acked = BYE;
                guard.unlock_and_notify()?;
                break;
            }
            if n != last {
                tell(
                    "consumer",
                    format_args!("read  message #{n}: {:?}", mailbox.text()),
                );
                mailbox.acked = n;
                guard.unlock_and_notify()?;
                last = n;
                progress = Instant::now();
                continue;
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
        shm.wait_for_change(seen, SLICE)?;
    }
    shm.detach()?;
    tell("consumer", format_args!("detached, bye"));
    Ok(())
}
