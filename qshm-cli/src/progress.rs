//! Reading input files and writing output in chunks, with a progress bar on stderr for
//! transfers over 1 MiB when stderr is a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::Failure;
use crate::interrupt::Interrupt;

/// Transfers above this many bytes get a progress bar.
const BAR_ABOVE: u64 = 1 << 20;
/// Chunk size for reads and writes.
const CHUNK: usize = 1 << 20;

fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if total <= BAR_ABOVE || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    Some(bar)
}

/// The size of a regular file (`None` for stdin, pipes and the like).
pub fn file_len(path: &Path) -> Option<u64> {
    if path == Path::new("-") {
        return None;
    }
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// How to call `path` in messages (`-` is standard input).
pub fn name(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Read all of `path` (`-`: standard input); more than `limit` bytes is `too_big()`.
pub fn read_input(
    path: &Path,
    limit: usize,
    interrupt: &Interrupt,
    too_big: impl FnOnce() -> Failure,
) -> Result<Vec<u8>, Failure> {
    let shown = name(path);
    let cannot = |e: std::io::Error| Failure::input(format!("cannot read {shown}: {e}"));
    let mut reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(cannot)?)
    };
    let expected = file_len(path).unwrap_or(0);
    let bar = bar(expected, &format!("reading {shown}"));
    let mut data = Vec::with_capacity(expected.min(limit as u64) as usize);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        if interrupt.raised() {
            return Err(Failure::interrupted(format!("interrupted while reading {shown}")));
        }
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cannot(e)),
        };
        if data.len() + n > limit {
            return Err(too_big());
        }
        data.extend_from_slice(&chunk[..n]);
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(data)
}

/// Write `data` to `out` in chunks (a bar for large data; a signal stops it).
pub fn write_output(out: &mut impl Write, data: &[u8], interrupt: &Interrupt) -> Result<(), Failure> {
    let bar = bar(data.len() as u64, "writing");
    for chunk in data.chunks(CHUNK) {
        if interrupt.raised() {
            return Err(Failure::interrupted("interrupted".to_owned()));
        }
        out.write_all(chunk)?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    out.flush()?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}
