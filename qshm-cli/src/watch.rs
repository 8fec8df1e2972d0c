//! `qshm watch`: print a segment's bytes now and at every change notification.

use std::io::Write as _;
use std::time::Duration;

use qshm::{AccessMode, Generation, SharedMemory};

use crate::commands::{hex_dump, read_locked, read_range};
use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, Target};

/// How long one wait for a change lasts before the signal flag is looked at again (the
/// wait sleeps in the kernel meanwhile).
const SLICE: Duration = Duration::from_millis(100);

pub fn watch(target: &Target, offset: usize, len: Option<usize>, hex: bool) -> CliResult {
    let interrupt = interrupt::install()?;
    let mut shm = target.attach(AccessMode::ReadOnly)?;
    let span = read_range(offset, len, shm.size())?;
    let mut seen = shm
        .generation()
        .map_err(|e| Failure::from(e).with_hint("qshm watch needs qshm's change counter"))?;
    eprintln!(
        "qshm: watching {:?} ({} bytes from offset {offset}); Ctrl-C to stop",
        target.shown,
        span.len()
    );
    loop {
        let copy = read_locked(target, &shm, &interrupt, span.clone())?;
        print_change(&copy, offset, seen, hex)?;
        match next_change(&shm, seen, &interrupt)? {
            Some(now) => seen = now,
            None => break,
        }
    }
    shm.detach()?;
    Ok(())
}

/// Sleep until the generation moves on from `seen`; `None` when a signal came first.
fn next_change(
    shm: &SharedMemory,
    seen: Generation,
    interrupt: &Interrupt,
) -> Result<Option<Generation>, Failure> {
    loop {
        if interrupt.raised() {
            return Ok(None);
        }
        let now = shm.wait_for_change(seen, SLICE)?;
        if now != seen {
            return Ok(Some(now));
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
