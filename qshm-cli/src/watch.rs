//! `qshm watch`: print a segment's bytes now and whenever they change, until Ctrl-C or
//! until the segment is removed.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::Duration;

use qshm::admin::SharedMemoryExt as _;
use qshm::{AccessMode, Generation, KeyType, SharedMemory};

use crate::commands::{hex_dump, read_locked, read_range};
use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, Target};

/// How long one wait for a change lasts before the signal flag and the segment's
/// existence are looked at again (the wait sleeps in the kernel meanwhile).
const SLICE: Duration = Duration::from_millis(100);

/// Exit code when the segment is removed while watched: 3, as for any segment not found.
const REMOVED: u8 = 3;

pub fn watch(target: &Target, offset: usize, len: Option<usize>, hex: bool) -> CliResult {
    let interrupt = interrupt::install()?;
    let mut shm = target.attach(AccessMode::ReadOnly)?;
    let span = read_range(offset, len, shm.size())?;
    let mut seen = shm
        .generation()
        .map_err(|e| Failure::from(e).with_hint("qshm watch needs qshm's change counter"))?;
    let identity = Identity::of(&shm);
    eprintln!(
        "qshm: watching {:?} ({} from offset {offset}); Ctrl-C to stop",
        target.shown,
        crate::human::bytes(span.len())
    );
    let mut printed: Option<Vec<u8>> = None;
    loop {
        let copy = read_locked(target, &shm, &interrupt, span.clone())?;
        // a notification without a change in the watched bytes prints nothing
        if printed.as_deref() != Some(&copy[..]) {
            print_change(&copy, offset, seen, hex)?;
            printed = Some(copy);
        }
        match next_change(&shm, seen, &interrupt, &identity)? {
            Next::Changed(now) => seen = now,
            Next::Interrupted => break,
            Next::Removed => {
                shm.detach()?;
                return Err(Failure::with_code(
                    format!(
                        "the segment of {:?} was removed (`qshm rm`, or its creator's last detach); stopped watching",
                        target.shown
                    ),
                    REMOVED,
                ));
            }
        }
    }
    shm.detach()?;
    Ok(())
}

enum Next {
    Changed(Generation),
    Interrupted,
    Removed,
}

/// Sleep until the generation moves on from `seen`, a signal comes or the segment is
/// removed.
fn next_change(
    shm: &SharedMemory,
    seen: Generation,
    interrupt: &Interrupt,
    identity: &Identity,
) -> Result<Next, Failure> {
    loop {
        if interrupt.raised() {
            return Ok(Next::Interrupted);
        }
        let now = shm.wait_for_change(seen, SLICE)?;
        if now != seen {
            return Ok(Next::Changed(now));
        }
        if identity.removed(shm) {
            return Ok(Next::Removed);
        }
    }
}

/// What tells that the watched segment was removed: its file in `/dev/shm` is gone or
/// is another file (POSIX), or the kernel has marked it for destruction, which makes its
/// key `IPC_PRIVATE` (System V; qshm's keys never are).
enum Identity {
    Posix { path: PathBuf, dev: u64, ino: u64 },
    SystemV,
    Unknown,
}

impl Identity {
    fn of(shm: &SharedMemory) -> Identity {
        match shm.native_ipc_key().kind() {
            KeyType::PosixRealtime => {
                let path = PathBuf::from(format!("/dev/shm/{}", shm.native_key().trim_start_matches('/')));
                match std::fs::metadata(&path) {
                    Ok(m) => Identity::Posix {
                        path,
                        dev: m.dev(),
                        ino: m.ino(),
                    },
                    Err(_) => Identity::Unknown,
                }
            }
            KeyType::SystemV | KeyType::SystemVWithId(_) => Identity::SystemV,
            _ => Identity::Unknown,
        }
    }

    fn removed(&self, shm: &SharedMemory) -> bool {
        match self {
            Identity::Posix { path, dev, ino } => {
                std::fs::metadata(path).map_or(true, |m| (m.dev(), m.ino()) != (*dev, *ino))
            }
            Identity::SystemV => shm
                .info()
                .map_or(true, |info| info.os_id.ends_with(" key 0x00000000")),
            Identity::Unknown => false,
        }
    }
}

fn print_change(bytes: &[u8], offset: usize, generation: Generation, hex: bool) -> CliResult {
    let mut out = std::io::stdout().lock();
    if hex {
        writeln!(out, "# generation {}", generation.value())?;
        out.write_all(hex_dump(bytes, offset).as_bytes())?;
    } else {
        out.write_all(bytes)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
