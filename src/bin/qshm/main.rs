//! `qshm`: see, inspect and clean shared-memory segments — Qt-style keys included.

mod demo;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use qshm::inspect;
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError, SystemSemaphore};

/// See, inspect and clean shared-memory segments; keys work as in Qt's QSharedMemory.
///
/// KEY is a legacy key, as passed to `QSharedMemory(key)`, turned into the native key
/// Qt 6 derives (System V unless --posix). A native key string such as
/// `posix:/name` or `systemv:/tmp/file` is used as it is.
#[derive(Parser, Debug)]
#[command(name = "qshm", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    key_opts: KeyOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Copy)]
struct KeyOpts {
    /// Use POSIX keys (shm_open) for legacy keys
    #[arg(long, global = true, conflicts_with = "sysv")]
    posix: bool,
    /// Use System V keys (shmget) for legacy keys (the default, as Qt's legacy keys)
    #[arg(long, global = true)]
    sysv: bool,
    /// Lock with qshm's fast lock instead of Qt's semaphore (qshm peers only)
    #[arg(long, global = true)]
    fast: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a segment and keep it alive (--hold SECONDS, or until Ctrl-C)
    Create {
        key: String,
        /// Size in bytes (rounded up to whole pages)
        size: usize,
        /// Permission bits, octal
        #[arg(long, default_value = "0600", value_parser = parse_octal)]
        mode: u32,
        /// Fill every byte with this value (0-255)
        #[arg(long, conflicts_with = "from")]
        fill: Option<u8>,
        /// Copy this file into the segment
        #[arg(long)]
        from: Option<PathBuf>,
        /// Keep it for this many seconds, then detach (default: until Ctrl-C)
        #[arg(long)]
        hold: Option<f64>,
    },
    /// Write text or a file into a segment, under the lock
    Write {
        key: String,
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        text: Option<String>,
        #[arg(long)]
        from: Option<PathBuf>,
        /// Byte offset to write at
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Print a segment's bytes, under the lock
    Cat {
        key: String,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// How many bytes (default: to the end)
        #[arg(long)]
        len: Option<usize>,
        /// Hex dump instead of raw bytes
        #[arg(long)]
        hex: bool,
    },
    /// Native key, backend, size, attachments, permissions, owner, lock state
    Stat { key: String },
    /// List every System V and POSIX segment on the machine
    Ls {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Remove a segment with its lock and semaphore, or (--stale) every dead one
    Rm {
        #[arg(required_unless_present = "stale")]
        key: Option<String>,
        /// Remove every stale segment and leftover (never a live one)
        #[arg(long, conflicts_with = "key")]
        stale: bool,
    },
    /// Hold the segment's lock (for testing other programs)
    Lock {
        key: String,
        #[arg(long)]
        hold: f64,
    },
    /// Print the native keys Qt derives for KEY (both types)
    Key { key: String },
    /// Two processes exchange messages through a segment under the lock
    Demo {
        /// Number of messages
        #[arg(long, default_value_t = 5)]
        messages: u32,
    },
    #[command(hide = true)]
    DemoConsumer { key: String },
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0600"))
}

/// A failure: one line for the user, and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<qshm::Error> for Failure {
    fn from(e: qshm::Error) -> Failure {
        let code = match e.kind() {
            SharedMemoryError::NotFound => 3,
            SharedMemoryError::AlreadyExists => 4,
            SharedMemoryError::PermissionDenied => 5,
            _ => 6,
        };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure {
            message: e.to_string(),
            code: 6,
        }
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("qshm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let opts = cli.key_opts;
    match cli.command {
        Command::Create {
            key,
            size,
            mode,
            fill,
            from,
            hold,
        } => create(opts, &key, size, mode, fill, from, hold),
        Command::Write {
            key,
            text,
            from,
            offset,
        } => write(opts, &key, text, from, offset),
        Command::Cat {
            key,
            offset,
            len,
            hex,
        } => cat(opts, &key, offset, len, hex),
        Command::Stat { key } => stat(opts, &key),
        Command::Ls { json } => ls(json),
        Command::Rm { key, stale } => rm(opts, key.as_deref(), stale),
        Command::Lock { key, hold } => lock(opts, &key, hold),
        Command::Key { key } => print_keys(&key),
        Command::Demo { messages } => demo::run(messages),
        Command::DemoConsumer { key } => demo::consumer(&key),
    }
}

impl KeyOpts {
    fn kind(self) -> KeyType {
        if self.posix {
            KeyType::PosixRealtime
        } else {
            KeyType::SystemV
        }
    }

    fn lock_mode(self) -> LockMode {
        if self.fast {
            LockMode::Fast
        } else {
            LockMode::QtCompatible
        }
    }

    /// The native key for KEY: a native string form as is, else Qt's legacy derivation.
    fn native(self, key: &str) -> Result<NativeIpcKey, Failure> {
        if key.starts_with("systemv:") || key.starts_with("posix:") {
            return key.parse().map_err(Failure::from);
        }
        if key.is_empty() {
            return Err(Failure {
                message: "the key is empty: give a name like \"market\"".into(),
                code: 1,
            });
        }
        Ok(SharedMemory::legacy_native_key(key, self.kind()))
    }

    fn handle(self, key: &str) -> Result<SharedMemory, Failure> {
        Ok(SharedMemory::with_native_key(self.native(key)?).with_lock_mode(self.lock_mode()))
    }
}

/// Attach, turning NotFound into a hint about the other key type.
fn attach(opts: KeyOpts, key: &str, mode: AccessMode) -> Result<SharedMemory, Failure> {
    let mut shm = opts.handle(key)?;
    match shm.attach(mode) {
        Ok(()) => Ok(shm),
        Err(e) if e.kind() == SharedMemoryError::NotFound => {
            let kind = shm.native_ipc_key().kind();
            let mut message = format!("no segment for key {key:?} ({})", type_name(kind));
            if shm.key().is_some() {
                let other = match kind {
                    KeyType::SystemV => KeyType::PosixRealtime,
                    KeyType::PosixRealtime => KeyType::SystemV,
                };
                let mut probe = SharedMemory::with_key_type(key, other).with_lock_mode(LockMode::Fast);
                if probe.attach(AccessMode::ReadOnly).is_ok() {
                    let flag = if other == KeyType::PosixRealtime {
                        "--posix"
                    } else {
                        "--sysv"
                    };
                    message.push_str(&format!(": did you mean {flag}?"));
                } else {
                    message.push_str(": create it first (qshm create KEY SIZE), or see `qshm ls`");
                }
            }
            Err(Failure { message, code: 3 })
        }
        Err(e) => Err(e.into()),
    }
}

fn type_name(kind: KeyType) -> &'static str {
    match kind {
        KeyType::SystemV => "System V",
        KeyType::PosixRealtime => "POSIX",
    }
}

/// A progress bar on stderr for transfers over 1 MiB, when stderr is a terminal.
fn progress(total: usize, what: &str) -> Option<indicatif::ProgressBar> {
    if total <= 1 << 20 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    Some(bar)
}

/// Copy `src` into `dst` in chunks, advancing the progress bar.
fn copy_with_progress(dst: &mut [u8], src: &[u8], what: &str) {
    let bar = progress(src.len(), what);
    for (d, s) in dst.chunks_mut(1 << 20).zip(src.chunks(1 << 20)) {
        d.copy_from_slice(s);
        if let Some(bar) = &bar {
            bar.inc(s.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

fn read_source(text: Option<String>, from: Option<PathBuf>) -> Result<Vec<u8>, Failure> {
    match (text, from) {
        (Some(text), _) => Ok(text.into_bytes()),
        (None, Some(path)) => std::fs::read(&path).map_err(|e| Failure {
            message: format!("cannot read {}: {e}", path.display()),
            code: 6,
        }),
        (None, None) => Ok(Vec::new()),
    }
}

fn create(
    opts: KeyOpts,
    key: &str,
    size: usize,
    mode: u32,
    fill: Option<u8>,
    from: Option<PathBuf>,
    hold: Option<f64>,
) -> CliResult {
    let data = read_source(None, from)?;
    if data.len() > size {
        return Err(Failure {
            message: format!("the file has {} bytes, more than SIZE {size}", data.len()),
            code: 1,
        });
    }
    let mut shm = opts.handle(key)?.with_permissions(mode);
    shm.create(size, AccessMode::ReadWrite).map_err(|e| {
        if e.kind() == SharedMemoryError::AlreadyExists {
            Failure {
                message: format!("{e}: attach to it, or remove it with `qshm rm {key}`"),
                code: 4,
            }
        } else {
            e.into()
        }
    })?;
    {
        let mut bytes = shm.lock()?;
        if let Some(byte) = fill {
            bytes.fill(byte);
        }
        copy_with_progress(&mut bytes[..data.len()], &data, "writing");
    }
    println!(
        "created {key} native={} type={} size={}",
        shm.native_ipc_key(),
        shm.native_ipc_key().kind(),
        shm.size()
    );
    println!(
        "holding{} (Ctrl-C to release)",
        hold.map(|s| format!(" for {s} s")).unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
    wait_for_signal(hold)?;
    shm.detach()?;
    println!("detached");
    Ok(())
}

/// Sleep until SIGINT/SIGTERM/SIGHUP or `seconds` pass.
fn wait_for_signal(seconds: Option<f64>) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn out_of_range(offset: usize, len: usize, size: usize) -> Failure {
    Failure {
        message: format!(
            "bytes {offset}..{} are outside the segment (size {size})",
            offset.saturating_add(len)
        ),
        code: 1,
    }
}

fn write(opts: KeyOpts, key: &str, text: Option<String>, from: Option<PathBuf>, offset: usize) -> CliResult {
    let data = read_source(text, from)?;
    let shm = attach(opts, key, AccessMode::ReadWrite)?;
    let end = offset.checked_add(data.len()).filter(|&e| e <= shm.size());
    let Some(end) = end else {
        return Err(out_of_range(offset, data.len(), shm.size()));
    };
    let mut bytes = shm.lock()?;
    copy_with_progress(&mut bytes[offset..end], &data, "writing");
    drop(bytes);
    println!("wrote {} bytes at offset {offset}", data.len());
    Ok(())
}

fn cat(opts: KeyOpts, key: &str, offset: usize, len: Option<usize>, hex: bool) -> CliResult {
    let shm = attach(opts, key, AccessMode::ReadOnly)?;
    let len = len.unwrap_or(shm.size().saturating_sub(offset));
    let end = offset.checked_add(len).filter(|&e| e <= shm.size());
    let Some(end) = end else {
        return Err(out_of_range(offset, len, shm.size()));
    };
    let mut copy = vec![0u8; len];
    {
        let bytes = shm.lock_read()?;
        copy_with_progress(&mut copy, &bytes[offset..end], "reading");
    }
    let mut out = std::io::stdout().lock();
    if hex {
        for (i, line) in copy.chunks(16).enumerate() {
            let hexes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = line
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            writeln!(out, "{:08x}  {:<47}  |{text}|", offset + i * 16, hexes.join(" "))?;
        }
    } else {
        out.write_all(&copy)?;
    }
    Ok(())
}

fn stat(opts: KeyOpts, key: &str) -> CliResult {
    let shm = attach(opts, key, AccessMode::ReadOnly)?;
    let info = shm.info()?;
    let attachments = match info.attachments {
        Some(n) => n.to_string(),
        None => format!(
            "{} processes map it",
            inspect::posix_mappers(info.os_id.split(' ').next().unwrap_or(""))
        ),
    };
    let lock = match shm.try_lock_read() {
        Ok(Some(_)) => "free".to_owned(),
        Ok(None) => "held by another process".to_owned(),
        Err(e) => format!("unknown ({e})"),
    };
    let owner = inspect::owner_name(info.owner_uid);
    println!("key:          {}", shm.key().unwrap_or("(native key)"));
    println!("native key:   {}", shm.native_ipc_key());
    println!("backend:      {}", type_name(shm.native_ipc_key().kind()));
    println!("os id:        {}", info.os_id);
    println!("size:         {} bytes", info.size);
    println!("attachments:  {attachments}");
    println!("permissions:  {:04o}", info.permissions);
    println!("owner:        {owner} (uid {})", info.owner_uid);
    println!(
        "created:      {} s ago",
        now_secs().saturating_sub(info.created_unix.max(0) as u64)
    );
    println!(
        "lock:         {lock} ({:?} mode, semaphore {})",
        shm.lock_mode(),
        shm.semaphore_key()
    );
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ls(json: bool) -> CliResult {
    let segments = inspect::segments()?;
    let leftovers = inspect::leftovers()?;
    if json {
        let items: Vec<serde_json::Value> = segments
            .iter()
            .map(|s| {
                serde_json::json!({
                    "type": s.kind.as_str(),
                    "native_key": s.native_key,
                    "key_hint": s.key_hint,
                    "os_id": s.os_id,
                    "size": s.size,
                    "attachments": s.attachments,
                    "lock_holders": s.lock_holders,
                    "owner": s.owner,
                    "uid": s.owner_uid,
                    "permissions": format!("{:04o}", s.permissions),
                    "age_secs": s.age_secs,
                    "stale": s.stale,
                    "qt_style": s.qt_style,
                })
            })
            .collect();
        let left: Vec<serde_json::Value> = leftovers
            .iter()
            .map(|l| serde_json::json!({"what": l.what, "path": l.path}))
            .collect();
        let doc = serde_json::json!({"segments": items, "leftovers": left});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<7} {:<12} {:>10} {:>6} {:<10} {:<5} {:>8}  {:<6} NATIVE KEY / OS ID",
        "TYPE", "KEY HINT", "SIZE", "ATTACH", "OWNER", "PERM", "AGE", "STATE"
    );
    for s in &segments {
        println!(
            "{:<7} {:<12} {:>10} {:>6} {:<10} {:<5} {:>8}  {:<6} {}",
            s.kind.as_str(),
            s.key_hint.as_deref().unwrap_or("-"),
            s.size,
            s.attachments,
            s.owner,
            format!("{:04o}", s.permissions),
            age(s.age_secs),
            if s.stale { "STALE" } else { "live" },
            s.native_key.as_deref().unwrap_or(&s.os_id)
        );
    }
    for l in &leftovers {
        println!("leftover {}: {}", l.what, l.path);
    }
    let stale = segments.iter().filter(|s| s.stale).count();
    println!(
        "{} segments, {stale} stale, {} leftovers{}",
        segments.len(),
        leftovers.len(),
        if stale + leftovers.len() > 0 {
            " (qshm rm --stale removes them)"
        } else {
            ""
        }
    );
    Ok(())
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn rm(opts: KeyOpts, key: Option<&str>, stale: bool) -> CliResult {
    if stale {
        let removed = inspect::remove_stale()?;
        for r in &removed {
            println!("removed {r}");
        }
        println!("{} removed", removed.len());
        return Ok(());
    }
    let key = key.unwrap_or_default();
    let native = opts.native(key)?;
    if SharedMemory::force_remove(&native)? {
        println!("removed {native}");
        Ok(())
    } else {
        // maybe the user meant the other type
        let mut failure = Failure {
            message: format!("no segment for key {key:?} ({})", type_name(native.kind())),
            code: 3,
        };
        if native.legacy_key().is_some() {
            let other = if opts.posix {
                KeyType::SystemV
            } else {
                KeyType::PosixRealtime
            };
            let mut probe = SharedMemory::with_key_type(key, other).with_lock_mode(LockMode::Fast);
            if probe.attach(AccessMode::ReadOnly).is_ok() {
                failure.message.push_str(if other == KeyType::PosixRealtime {
                    ": did you mean --posix?"
                } else {
                    ": did you mean --sysv?"
                });
            }
        }
        Err(failure)
    }
}

fn lock(opts: KeyOpts, key: &str, hold: f64) -> CliResult {
    let shm = attach(opts, key, AccessMode::ReadOnly)?;
    let guard = shm.lock_read()?;
    println!(
        "locked {key}{}",
        if guard.previous_owner_died() {
            " (the previous holder had died)"
        } else {
            ""
        }
    );
    let _ = std::io::stdout().flush();
    wait_for_signal(Some(hold))?;
    guard.unlock()?;
    println!("unlocked");
    Ok(())
}

fn print_keys(key: &str) -> CliResult {
    if key.is_empty() {
        return Err(Failure {
            message: "the key is empty: Qt derives no native key from it".into(),
            code: 1,
        });
    }
    for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
        let shm = SharedMemory::legacy_native_key(key, kind);
        let sem = SystemSemaphore::legacy_native_key(key, kind);
        println!("{}:", type_name(kind));
        println!("  segment:    {}", shm.native());
        println!("  semaphore:  {}", sem.native());
        println!("  string:     {shm}");
        if let Some(k) = SharedMemory::system_v_key(&shm) {
            println!("  ftok key:   {:#010x}", k as u32);
        }
    }
    Ok(())
}
