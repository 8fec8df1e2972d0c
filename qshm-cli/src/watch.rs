//! `qshm watch`: print a segment's bytes now and whenever they change, until Ctrl-C or
//! until the segment is removed.

use std::io::Write as _;
use std::time::Duration;

use qshm::{AccessMode, Generation, Removal, SharedMemory};

use crate::commands::{hex_dump, read_locked, read_range};
use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, Target};

/// How long one wait for a change lasts before the signal flag and the segment's
/// removal ([`SharedMemory::removal`]) are looked at again (the wait sleeps in the
/// kernel meanwhile).
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
        match next_change(&shm, seen, &interrupt)? {
            Next::Changed(now) => seen = now,
            Next::Interrupted => break,
            Next::Removed(how) => {
                shm.detach()?;
                let what = match how {
                    Removal::LockStateRemoved => {
                        "lost its lock state in /dev/shm (systemd-logind's RemoveIPC=yes at its owner's logout, \
                         or rm): writers that attach from now on notify apart (watch again to see them)"
                    }
                    Removal::Replaced => {
                        "was removed, and the key names a new segment now (watch again to follow that one)"
                    }
                    _ => {
                        "was removed (`qshm rm`, `ipcrm`, `rm` of its file, or systemd-logind's RemoveIPC=yes at its owner's logout)"
                    }
                };
                return Err(Failure::with_code(
                    format!("the segment of {:?} {what}; stopped watching", target.shown),
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
    Removed(Removal),
}

/// Sleep until the generation moves on from `seen`, a signal comes or the segment is
/// removed.
fn next_change(shm: &SharedMemory, seen: Generation, interrupt: &Interrupt) -> Result<Next, Failure> {
    loop {
        if interrupt.raised() {
            return Ok(Next::Interrupted);
        }
        let now = shm.wait_for_change(seen, SLICE)?;
        if now != seen {
            return Ok(Next::Changed(now));
        }
        let removal = shm.removal()?;
        if removal.is_removed() {
            return Ok(Next::Removed(removal));
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
