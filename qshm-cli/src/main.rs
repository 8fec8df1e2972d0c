//! `qshm`: see, inspect and clean shared-memory segments — Qt-style keys included.
//!
//! Every command prints at most one error line, `qshm: <what happened>: <what to do>`,
//! and exits with 0 (ok), 1 (bad input: a range, a file, a size, a key), 2 (usage,
//! from clap), 3 (no such segment), 4 (already exists), 5 (permission denied),
//! 6 (anything else) or 130 (interrupted by a signal: see interrupt.rs).

mod commands;
mod demo;
mod human;
mod interrupt;
mod list;
mod ls_json;
mod progress;
mod size;
mod watch;

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError, admin};

/// See, inspect and clean shared-memory segments; keys work as in Qt's QSharedMemory.
///
/// KEY is a legacy key, as passed to `QSharedMemory(key)`, turned into the native key
/// Qt 6 derives (System V unless --posix). With --native (or when it reads as one) KEY
/// is a native key string as Qt's `QNativeIpcKey::toString` prints it, e.g.
/// `posix:/name`, `systemv:/tmp/file` or `systemv-84:/tmp/file` (System V with ftok
/// project id 84); --legacy reads such a string as a legacy key after all.
#[derive(Parser, Debug)]
#[command(name = "qshm", version, about, long_about)]
#[command(
    after_help = "Exit codes: 0 ok, 1 bad input, 2 usage, 3 not found, 4 already exists, \
                        5 permission denied, 6 other error, 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How KEY is read (the commands that take a KEY).
#[derive(Args, Debug, Clone, Copy)]
struct KeyFlags {
    /// KEY names a POSIX segment (shm_open, /dev/shm)
    #[arg(long, conflicts_with = "sysv", requires = "key")]
    posix: bool,
    /// KEY names a System V segment (shmget) — the default, as for Qt's legacy keys
    #[arg(long, requires = "key")]
    sysv: bool,
    /// KEY is a native key: `posix:/name`, `systemv:/path`, `systemv-84:/path` (Qt's
    /// string form), or a bare `/name` or `/path` of the --posix/--sysv type
    #[arg(long, requires = "key", conflicts_with = "legacy")]
    native: bool,
    /// KEY is a legacy key even if it reads as a native key string (`posix:/x`)
    #[arg(long, requires = "key")]
    legacy: bool,
}

/// Which lock is used (the commands that lock or create).
#[derive(Args, Debug, Clone, Copy)]
struct LockFlag {
    /// Lock with qshm's fast lock (LockMode::Fast; qshm peers only) instead of Qt's semaphore
    #[arg(long)]
    fast: bool,
}

/// Which bytes of a segment a command prints.
#[derive(Args, Debug, Clone, Copy)]
struct ByteRange {
    /// First byte to print (a size: 4096, 64K, 1.5M)
    #[arg(long, default_value = "0", value_parser = size::parse, allow_negative_numbers = true)]
    offset: usize,
    /// How many bytes (default: to the end)
    #[arg(long, value_parser = size::parse, allow_negative_numbers = true)]
    len: Option<usize>,
}

/// How KEY is read and which lock is used.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyOpts {
    pub posix: bool,
    pub sysv: bool,
    pub native: bool,
    pub legacy: bool,
    pub fast: bool,
}

impl KeyOpts {
    fn new(flags: KeyFlags, lock: Option<LockFlag>) -> KeyOpts {
        KeyOpts {
            posix: flags.posix,
            sysv: flags.sysv,
            native: flags.native,
            legacy: flags.legacy,
            fast: lock.is_some_and(|l| l.fast),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a segment and keep it alive (for --hold SECONDS, or until Ctrl-C)
    Create {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
        /// Size in bytes, or with a unit K, M, G or T: powers of 1024 (K = Ki = KiB = 1024
        /// bytes; KB, MB, ... are refused as ambiguous); `1.5M` is fine. The segment is
        /// exactly this size, as Qt makes it. Default with --from: the file's size
        #[arg(value_parser = size::parse_nonzero, required_unless_present = "from", allow_negative_numbers = true)]
        size: Option<usize>,
        /// Permission bits, octal
        #[arg(long, default_value = "0600", value_parser = parse_mode)]
        mode: u32,
        /// Fill every byte with this value (0-255 or 0x00-0xff)
        #[arg(long, value_parser = parse_byte, value_name = "BYTE", allow_negative_numbers = true)]
        fill: Option<u8>,
        /// Copy this file into the start of the segment (`-`: standard input)
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Keep the segment this long, then detach (default: until Ctrl-C): seconds (5, 0.5)
        /// or a duration with units (500ms, 2m, 1h, 1h30m)
        #[arg(long, value_parser = human::parse_duration, value_name = "DURATION", allow_negative_numbers = true)]
        hold: Option<Duration>,
    },
    /// Write text or a file into a segment, under the lock
    #[command(group(clap::ArgGroup::new("data").args(["text", "from"]).required(true)))]
    Write {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
        /// The text to write
        #[arg(long)]
        text: Option<String>,
        /// The file to write (`-`: standard input)
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Byte offset to write at (a size: 4096, 64K, 1.5M)
        #[arg(long, default_value = "0", value_parser = size::parse, allow_negative_numbers = true)]
        offset: usize,
    },
    /// Print a segment's bytes, read under the lock
    Cat {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
        #[command(flatten)]
        range: ByteRange,
        /// Hex dump instead of raw bytes
        #[arg(long)]
        hex: bool,
    },
    /// Print a segment's bytes now and every time they change, until Ctrl-C
    ///
    /// Wakes on the change notifications of qshm writers (`qshm write`,
    /// `SharedMemory::notify_all`, `LockGuard::unlock_and_notify`); it sleeps in between,
    /// without polling. Reads under the lock. Changes that come faster than it prints are
    /// coalesced: it prints the latest bytes. Qt programs do not notify.
    Watch {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
        #[command(flatten)]
        range: ByteRange,
        /// Hex dump (with a `# generation N` line before each) instead of raw bytes and a
        /// newline
        #[arg(long)]
        hex: bool,
    },
    /// Native key, backend, size, attachments, permissions, owner, lock state
    Stat {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
    },
    /// List every System V and POSIX segment on the machine, and orphans
    ///
    /// KEY HINT tells which legacy key a Qt-style segment was made for: the letters Qt
    /// keeps in the native key (it drops digits and every other character), `#`, and the
    /// first 6 hex digits of the key's SHA-1, so `fm2` and `fm3` show different hints.
    /// `qshm key KEY` prints the hint of KEY.
    ///
    /// The table fits 100 columns: KEY is the key hint, or the native key of a segment
    /// Qt did not name; --wide adds every native key. Orphans younger than 2 s are
    /// listed as `new` (their maker may be between two steps; `rm --stale` leaves them).
    Ls {
        /// Machine-readable output (a stable schema: see README.md, "JSON output")
        #[arg(long, conflicts_with = "wide")]
        json: bool,
        /// Add the NATIVE KEY / OS ID column (and the key hints of orphans)
        #[arg(long, short = 'w')]
        wide: bool,
    },
    /// Remove a segment with its lock state and semaphore, or (--stale) every dead one
    #[command(group(clap::ArgGroup::new("key_flags").args(["posix", "sysv", "native"]).multiple(true).conflicts_with("stale")))]
    #[command(override_usage = "qshm rm [--posix|--sysv] [--native] <KEY>\n       qshm rm --stale [--all]")]
    Rm {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        #[arg(required_unless_present = "stale", conflicts_with = "stale")]
        key: Option<String>,
        #[command(flatten)]
        flags: KeyFlags,
        /// Remove every stale Qt/qshm segment and orphan (never a live one)
        #[arg(long)]
        stale: bool,
        /// With --stale: also other programs' stale segments (System V nobody is attached
        /// to, files in /dev/shm nobody maps)
        #[arg(long, requires = "stale", conflicts_with = "key")]
        all: bool,
    },
    /// Hold the segment's lock (for testing other programs)
    Lock {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
        /// Release it after this long (default: at Ctrl-C): seconds (5, 0.5) or a duration
        /// with units (500ms, 2m, 1h)
        #[arg(long, value_parser = human::parse_duration, value_name = "DURATION", allow_negative_numbers = true)]
        hold: Option<Duration>,
    },
    /// Print the native keys Qt derives for KEY (both types, or the one --posix/--sysv
    /// names), or what a native KEY names
    Key {
        /// The key: legacy, as in QSharedMemory(KEY), or native with --native
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
    },
    /// Two processes exchange messages through a segment under the lock
    Demo {
        /// Use a POSIX segment (default: System V)
        #[arg(long)]
        posix: bool,
        #[command(flatten)]
        lock: LockFlag,
        /// Number of messages
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=10_000))]
        messages: u32,
    },
    /// The consumer side of `qshm demo` (started by it)
    #[command(hide = true)]
    DemoConsumer {
        key: String,
        #[command(flatten)]
        flags: KeyFlags,
        #[command(flatten)]
        lock: LockFlag,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0600"))
}

fn parse_byte(s: &str) -> Result<u8, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("{s:?} is not a byte value (0-255 or 0x00-0xff)"))
}

/// A failure: one line for the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// Bad input (exit code 1).
    pub fn input(message: String) -> Failure {
        Failure { message, code: 1 }
    }

    /// Anything else (exit code 6).
    pub fn other(message: String) -> Failure {
        Failure { message, code: 6 }
    }

    /// A failure with its own exit code (one of those listed at the top of this file).
    pub fn with_code(message: String, code: u8) -> Failure {
        Failure { message, code }
    }

    /// Interrupted by a signal (exit code 130); says so at once, before any clean-up.
    pub fn interrupted(message: String) -> Failure {
        interrupt::tell(&message);
        Failure {
            message: String::new(),
            code: 130,
        }
    }

    pub fn with_hint(mut self, hint: &str) -> Failure {
        let _ = write!(self.message, ": {hint}");
        self
    }
}

impl From<qshm::Error> for Failure {
    fn from(e: qshm::Error) -> Failure {
        let code = match e.kind() {
            SharedMemoryError::NotFound => 3,
            SharedMemoryError::AlreadyExists => 4,
            SharedMemoryError::PermissionDenied => 5,
            SharedMemoryError::InvalidSize | SharedMemoryError::KeyError => 1,
            _ => 6,
        };
        let mut failure = Failure {
            message: e.to_string(),
            code,
        };
        if e.kind() == SharedMemoryError::PermissionDenied {
            failure = failure.with_hint("run as the segment's owner (see `qshm ls`) or as root");
        }
        failure
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        // a reader that stopped reading (`qshm cat KEY | head`) is not an error
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure {
                message: String::new(),
                code: 0,
            };
        }
        Failure::other(e.to_string())
    }
}

type CliResult = Result<(), Failure>;

fn main() -> ExitCode {
    // Bare `qshm` is a usage error that shows the whole --help (on stderr, exit 2).
    if std::env::args_os().len() <= 1 {
        let help = Cli::command().render_long_help();
        if std::io::stderr().is_terminal() {
            eprint!("{}", help.ansi());
        } else {
            eprint!("{help}");
        }
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_failure(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("qshm: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// A value clap's parsers refused is bad input: one line, exit code 1, like every other
/// bad input. Other command-line errors are usage errors (clap's message, exit code 2);
/// --help and --version exit 0.
fn parse_failure(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg.clone(),
            _ => "a value".to_owned(),
        };
        // `--offset <OFFSET>` -> `--offset`, `[SIZE]` -> `SIZE`
        let arg = arg
            .split(' ')
            .next()
            .unwrap_or("")
            .trim_matches(['[', ']', '<', '>']);
        let reason = std::error::Error::source(e).map_or_else(
            || match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => format!("{v:?} is not valid"),
                _ => "is not valid".to_owned(),
            },
            ToString::to_string,
        );
        eprintln!("qshm: {arg} {reason}");
        return ExitCode::from(1);
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Create {
            key,
            flags,
            lock,
            size,
            mode,
            fill,
            from,
            hold,
        } => commands::create(
            &KeyOpts::new(flags, Some(lock)).target(&key)?,
            commands::CreateArgs {
                size,
                mode,
                fill,
                from,
                hold,
            },
        ),
        Command::Write {
            key,
            flags,
            lock,
            text,
            from,
            offset,
        } => commands::write(&KeyOpts::new(flags, Some(lock)).target(&key)?, text, from, offset),
        Command::Cat {
            key,
            flags,
            lock,
            range,
            hex,
        } => commands::cat(
            &KeyOpts::new(flags, Some(lock)).target(&key)?,
            range.offset,
            range.len,
            hex,
        ),
        Command::Watch {
            key,
            flags,
            lock,
            range,
            hex,
        } => watch::watch(
            &KeyOpts::new(flags, Some(lock)).target(&key)?,
            range.offset,
            range.len,
            hex,
        ),
        Command::Stat { key, flags } => commands::stat(&KeyOpts::new(flags, None).target(&key)?),
        Command::Ls { json, wide } => list::ls(json, wide),
        Command::Rm {
            key,
            flags,
            stale,
            all,
        } => match key {
            Some(key) if !stale => commands::rm(&KeyOpts::new(flags, None).target(&key)?),
            _ => commands::rm_stale(all),
        },
        Command::Lock {
            key,
            flags,
            lock,
            hold,
        } => commands::lock(&KeyOpts::new(flags, Some(lock)).target(&key)?, hold),
        Command::Key { key, flags } => {
            let opts = KeyOpts::new(flags, None);
            let target = opts.target(&key)?;
            if target.legacy {
                let only = (opts.posix || opts.sysv).then(|| opts.kind());
                commands::print_keys(&key, only)
            } else {
                commands::print_native_key(&target)
            }
        }
        Command::Demo {
            posix,
            lock,
            messages,
        } => demo::run(
            KeyOpts {
                posix,
                fast: lock.fast,
                ..KeyOpts::default()
            },
            messages,
        ),
        Command::DemoConsumer { key, flags, lock } => {
            demo::consumer(&KeyOpts::new(flags, Some(lock)).target(&key)?)
        }
    }
}

/// The segment a command is about: KEY as typed, its native key, and the options.
pub struct Target {
    /// KEY as the user typed it.
    pub shown: String,
    /// The native key it stands for.
    pub native: NativeIpcKey,
    /// The lock mode the user insists on (`--fast`); `None` adopts the segment's (and
    /// creates Qt-compatible segments).
    pub mode: Option<LockMode>,
    /// KEY was a legacy key (so the other key type can be suggested).
    pub legacy: bool,
}

impl KeyOpts {
    fn kind(self) -> KeyType {
        if self.posix {
            KeyType::PosixRealtime
        } else {
            KeyType::SystemV
        }
    }

    /// Read KEY: a legacy key (Qt's derivation), or a native key: with `--native`, or
    /// when KEY reads as Qt's string form of one (`posix:/x`, `systemv-42:/x`). A KEY that
    /// starts like one (a key type and `:`) but does not read as one is refused, with the
    /// hint to say `--legacy` if a legacy key was meant.
    pub fn target(self, key: &str) -> Result<Target, Failure> {
        if key.is_empty() {
            return Err(Failure::input(
                "the key is empty: give a name like \"market\"".to_owned(),
            ));
        }
        let mode = self.fast.then_some(LockMode::Fast);
        let parsed = key.parse::<NativeIpcKey>();
        let native = match parsed {
            _ if self.legacy => None,
            Ok(native) if !key.starts_with('/') => Some(native),
            // `/name` or `/path`: a bare native key of the --posix/--sysv type
            _ if self.native && key.starts_with('/') => Some(NativeIpcKey::new(key, self.kind())),
            Err(e) if self.native || names_a_key_type(key) => {
                return Err(Failure::from(e).with_hint(&format!(
                    "{}to use {key:?} as a legacy key (QSharedMemory(\"{key}\")), add --legacy",
                    if self.native {
                        ""
                    } else {
                        "it reads as a native key string; "
                    }
                )));
            }
            _ => None,
        };
        let Some(native) = native else {
            return Ok(Target {
                shown: key.to_owned(),
                native: SharedMemory::legacy_native_key(key, self.kind()),
                mode,
                legacy: true,
            });
        };
        let asked = (self.posix || self.sysv).then(|| self.kind());
        if let Some(asked) = asked.filter(|k| k.is_system_v() != native.kind().is_system_v()) {
            return Err(Failure::input(format!(
                "{key:?} is a {} key but {} was given: drop {}",
                native.kind(),
                type_flag(asked),
                type_flag(asked)
            )));
        }
        Ok(Target {
            shown: key.to_owned(),
            native,
            mode,
            legacy: false,
        })
    }
}

impl Target {
    /// A handle (not attached) with the user's lock mode, if they asked for one.
    pub fn handle(&self) -> SharedMemory {
        let shm = SharedMemory::with_native_key(self.native.clone());
        match self.mode {
            Some(mode) => shm.with_lock_mode(mode),
            None => shm,
        }
    }

    /// A handle that adopts the segment's lock mode, whatever the user asked for.
    pub fn adopting_handle(&self) -> SharedMemory {
        SharedMemory::with_native_key(self.native.clone())
    }

    /// A command line for this segment, for hints: `qshm <sub> KEY [rest] [--posix] [--fast]`.
    pub fn command(&self, sub: &str, rest: &str) -> String {
        let mut words = format!("qshm {sub} ");
        if self.legacy {
            words.push_str(&shell_word(&self.shown));
        } else {
            words.push_str("--native ");
            words.push_str(&shell_word(&self.native.to_string()));
        }
        if !rest.is_empty() {
            words.push(' ');
            words.push_str(rest);
        }
        if self.legacy && self.native.kind() == KeyType::PosixRealtime {
            words.push_str(" --posix");
        }
        if self.mode == Some(LockMode::Fast) && sub != "rm" && sub != "stat" {
            words.push_str(" --fast");
        }
        words
    }

    /// Attach, turning NotFound into a hint about the other key type.
    pub fn attach(&self, access: AccessMode) -> Result<SharedMemory, Failure> {
        let mut shm = self.handle();
        match shm.attach(access) {
            Ok(()) => Ok(shm),
            Err(e) if e.kind() == SharedMemoryError::NotFound => Err(self.not_found(true)),
            // --fast on a Qt-compatible segment: the user's flag contradicts the segment
            Err(e) if e.kind() == SharedMemoryError::LockError && self.mode.is_some() => Err(Failure {
                code: 1,
                ..Failure::from(e).with_hint("drop --fast: without it the segment's own lock mode is used")
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// `no segment for key "x" (System V): did you mean --posix?`, or (`suggest_create`)
    /// how to make one.
    pub fn not_found(&self, suggest_create: bool) -> Failure {
        let kind = self.native.kind();
        let failure = Failure {
            message: format!("no segment for key {:?} ({})", self.shown, type_name(kind)),
            code: 3,
        };
        let other = if kind.is_system_v() {
            KeyType::PosixRealtime
        } else {
            KeyType::SystemV
        };
        if self.legacy && admin::exists(&SharedMemory::legacy_native_key(&self.shown, other)) {
            failure.with_hint(&format!("did you mean {}?", type_flag(other)))
        } else if suggest_create {
            failure.with_hint(&format!(
                "create it with `{}`, or see `qshm ls`",
                self.command("create", "SIZE")
            ))
        } else {
            failure.with_hint("see `qshm ls` for the segments that exist")
        }
    }

    /// A lock failure.
    pub fn lock_failure(&self, _shm: &SharedMemory, e: qshm::Error) -> Failure {
        Failure::from(e)
    }
}

/// `--posix` or `--sysv` (every System V type).
pub fn type_flag(kind: KeyType) -> &'static str {
    if kind.is_system_v() { "--sysv" } else { "--posix" }
}

/// `System V`, `System V (ftok id 84)` or `POSIX`.
pub fn type_name(kind: KeyType) -> String {
    match kind.ftok_project_id() {
        Some(id) if kind != KeyType::SystemV => format!("System V (ftok id {id})"),
        Some(_) => "System V".to_owned(),
        None => "POSIX".to_owned(),
    }
}

/// Whether `key` starts with a key type of Qt's string form and a colon (`posix:`,
/// `systemv-7:`, `windows:`, any case): meant as a native key string.
fn names_a_key_type(key: &str) -> bool {
    key.split_once(':').is_some_and(|(scheme, _)| {
        let scheme = scheme.to_ascii_lowercase();
        scheme == "windows" || scheme.starts_with("systemv") || scheme.parse::<KeyType>().is_ok()
    })
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Print a status line and flush it at once (readers wait for it); a closed stdout
/// does not stop a command that holds a segment.
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Print `text` on stdout (one write; a closed pipe is not an error).
pub fn print_all(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_modes() {
        assert_eq!(parse_byte("46"), Ok(46));
        assert_eq!(parse_byte("0xff"), Ok(255));
        assert!(parse_byte("256").is_err());
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("market"), "market");
        assert_eq!(shell_word("posix:/x?legacyKey=a"), "'posix:/x?legacyKey=a'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn keys_are_legacy_unless_native() {
        let opts = KeyOpts {
            posix: true,
            sysv: false,
            native: false,
            legacy: false,
            fast: false,
        };
        let t = opts.target("market").unwrap();
        assert!(t.legacy);
        assert_eq!(
            t.native.native(),
            "/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3"
        );
        let t = opts.target("posix:/abc").unwrap();
        assert!(!t.legacy);
        assert_eq!(t.native.native(), "/abc");
        let native = KeyOpts { native: true, ..opts };
        assert_eq!(
            native.target("/abc").unwrap().native.kind(),
            KeyType::PosixRealtime
        );
        assert_eq!(opts.target("systemv:/tmp/x").err().map(|f| f.code), Some(1));
        assert_eq!(opts.target("").err().map(|f| f.code), Some(1));
    }

    #[test]
    fn strings_that_read_as_native_keys_are_native_keys() {
        let opts = KeyOpts::default();
        // Qt's string form with an ftok project id: a native key, not a legacy one
        let t = opts.target("systemv-42:/tmp/x").unwrap();
        assert!(!t.legacy);
        assert_eq!(t.native.kind(), KeyType::system_v(42).unwrap());
        assert_eq!(t.native.native(), "/tmp/x");
        assert_eq!(
            opts.target("POSIX:/x").unwrap().native.kind(),
            KeyType::PosixRealtime
        );
        // starts like one but does not read as one: refused, with the way out
        for odd in ["systemv-0:/x", "windows:x", "posix:/x?other=1", "systemv-300:/x"] {
            let failure = opts.target(odd).err().unwrap_or_else(|| panic!("{odd} accepted"));
            assert_eq!(failure.code, 1, "{odd}");
            assert!(failure.message.contains("--legacy"), "{odd}: {}", failure.message);
        }
        // --legacy: the string is a legacy key after all
        let legacy = KeyOpts { legacy: true, ..opts };
        let t = legacy.target("posix:/x").unwrap();
        assert!(t.legacy);
        assert_eq!(
            t.native,
            SharedMemory::legacy_native_key("posix:/x", KeyType::SystemV)
        );
        // a colon alone does not make a native key
        assert!(opts.target("host:port").unwrap().legacy);
        assert!(opts.target("a:b").unwrap().legacy);
    }
}
