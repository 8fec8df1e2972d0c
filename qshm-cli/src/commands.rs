//! create, write, cat, stat, rm, lock and key (and the helpers `watch` shares).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use qshm::admin::{self, LockStatus, SegmentInfo, SharedMemoryExt as _};
use qshm::{AccessMode, KeyType, LockMode, SharedMemory, SharedMemoryError, SystemSemaphore};

use crate::human::{self, plural};
use crate::interrupt::{self, Interrupt};
use crate::{CliResult, Failure, Target, list, print_all, progress, say, type_name};

/// The options of `qshm create`.
pub struct CreateArgs {
    pub size: Option<usize>,
    pub mode: u32,
    pub fill: Option<u8>,
    pub from: Option<PathBuf>,
    pub hold: Option<Duration>,
}

pub fn create(target: &Target, args: CreateArgs) -> CliResult {
    // Before anything exists: a Ctrl-C from now on ends in a clean detach.
    let interrupt = interrupt::install()?;
    let limit = args.size.unwrap_or(isize::MAX as usize);
    let data = match &args.from {
        Some(path) => progress::read_input(path, limit, &interrupt, || {
            Failure::input(format!(
                "{} has more than SIZE ({limit}) bytes: give a larger SIZE or none",
                progress::name(path)
            ))
        })?,
        None => Vec::new(),
    };
    let size = args.size.unwrap_or(data.len());
    let mut shm = target.handle().with_permissions(args.mode);
    shm.create(size, AccessMode::ReadWrite)
        .map_err(|e| match e.kind() {
            SharedMemoryError::AlreadyExists => Failure::from(e).with_hint(&format!(
                "someone uses it (see `{}`); `{}` removes it anyway",
                target.command("stat", ""),
                target.command("rm", "")
            )),
            // the SIZE the user gave does not fit: bad input, with what to do
            SharedMemoryError::OutOfResources => Failure::input(e.to_string())
                .with_hint("give a smaller SIZE, or free memory (`qshm ls`, `df -h /dev/shm`)"),
            _ => Failure::from(e),
        })?;
    if args.fill.is_some() || !data.is_empty() {
        let mut bytes = interrupt.lock(
            &target.shown,
            &target.native,
            |t| shm.lock_timeout(t),
            Failure::from,
        )?;
        if let Some(byte) = args.fill {
            bytes.fill(byte);
        }
        bytes[..data.len()].copy_from_slice(&data);
    }
    say(format_args!(
        "created {} native={} size={} type={}",
        target.shown,
        shm.native_ipc_key(),
        shm.size(),
        shm.native_ipc_key().kind()
    ));
    hold_for(&interrupt, args.hold);
    shm.detach()?;
    say(format_args!("detached"));
    Ok(())
}

/// Where `len` bytes at `offset` go, if they fit within `size` (writes never shrink).
fn write_range(offset: usize, len: usize, size: usize) -> Result<std::ops::Range<usize>, Failure> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(Failure::input(format!(
            "{len} bytes at offset {offset} do not fit in the segment ({size} bytes)"
        ))),
    }
}

/// What a read of up to `len` bytes (`None`: all) at `offset` gets: what exists, like
/// `head -c`; only an offset past the end is an error.
pub fn read_range(offset: usize, len: Option<usize>, size: usize) -> Result<std::ops::Range<usize>, Failure> {
    let Some(room) = size.checked_sub(offset) else {
        return Err(Failure::input(format!(
            "offset {offset} is past the end of the segment ({size} bytes)"
        )));
    };
    Ok(offset..offset + len.map_or(room, |len| len.min(room)))
}

pub fn write(target: &Target, text: Option<String>, from: Option<PathBuf>, offset: usize) -> CliResult {
    let interrupt = interrupt::install()?;
    let shm = target.attach(AccessMode::ReadWrite)?;
    let room = shm.size().saturating_sub(offset);
    let data = match (text, &from) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => {
            // refuse a file that cannot fit before reading it
            if let Some(len) = progress::file_len(path) {
                write_range(offset, usize::try_from(len).unwrap_or(usize::MAX), shm.size())?;
            }
            progress::read_input(path, room, &interrupt, || {
                Failure::input(format!(
                    "{} has more than the {room} bytes from offset {offset} to the end of the segment",
                    progress::name(path)
                ))
            })?
        }
        (None, None) => Vec::new(),
    };
    let span = write_range(offset, data.len(), shm.size())?;
    let mut bytes = interrupt.lock(
        &target.shown,
        &target.native,
        |t| shm.lock_timeout(t),
        |e| target.lock_failure(&shm, e),
    )?;
    bytes[span].copy_from_slice(&data);
    // wake `qshm watch` and other waiters; a segment without a lock state we may add has
    // none (nobody can wait on it), which is no failure of the write
    match bytes.unlock_and_notify() {
        Err(e) if !(e.operation() == "notify" && e.kind() == SharedMemoryError::LockError) => {
            return Err(target.lock_failure(&shm, e));
        }
        _ => {}
    }
    print_all(&format!(
        "wrote {} at offset {offset}\n",
        human::bytes(data.len())
    ))
}

/// The bytes `span` of the segment, copied under the lock (a signal ends the wait).
pub fn read_locked(
    target: &Target,
    shm: &SharedMemory,
    interrupt: &Interrupt,
    span: std::ops::Range<usize>,
) -> Result<Vec<u8>, Failure> {
    let bytes = interrupt.lock(
        &target.shown,
        &target.native,
        |t| shm.lock_read_timeout(t),
        |e| target.lock_failure(shm, e),
    )?;
    Ok(bytes[span].to_vec())
}

pub fn cat(target: &Target, offset: usize, len: Option<usize>, hex: bool) -> CliResult {
    let interrupt = interrupt::install()?;
    let mut shm = target.attach(AccessMode::ReadOnly)?;
    let span = read_range(offset, len, shm.size())?;
    let copy = read_locked(target, &shm, &interrupt, span)?;
    // a slow reader of our output must not keep the segment alive
    shm.detach()?;
    let mut out = std::io::stdout().lock();
    if hex {
        // like `hexdump -n 0`: nothing asked, nothing printed
        let dump = if len == Some(0) {
            String::new()
        } else {
            hex_dump(&copy, offset)
        };
        progress::write_output(&mut out, dump.as_bytes(), &interrupt)
    } else {
        progress::write_output(&mut out, &copy, &interrupt)
    }
}

/// Exactly what `hexdump -C` prints for `data` found at `offset`: offset, 16 bytes in
/// hex, the printable ones as text; a run of lines equal to the one before is one `*`;
/// the last line is the end offset.
pub fn hex_dump(data: &[u8], offset: usize) -> String {
    let mut text = String::with_capacity(data.len() * 4 + 80);
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in data.chunks(16).enumerate() {
        if line.len() == 16 && previous == Some(line) {
            if !starred {
                text.push_str("*\n");
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let _ = write!(text, "{:08x} ", offset + i * 16);
        for (j, b) in line.iter().enumerate() {
            let gap = if j == 8 { "  " } else { " " };
            let _ = write!(text, "{gap}{b:02x}");
        }
        let missing = 16 - line.len();
        let pad = missing * 3 + usize::from(line.len() <= 8);
        let _ = write!(text, "{:pad$}  |", "");
        text.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        text.push_str("|\n");
    }
    let _ = writeln!(text, "{:08x}", offset + data.len());
    text
}

/// What `stat` says about the lock, as `qshm::admin` sees it (without taking it).
fn lock_state(shm: &SharedMemory, info: &SegmentInfo, lock: Option<LockStatus>) -> String {
    let state = match &info.lock_state_file {
        Some(path) => format!("lock state {}", path.display()),
        None => "no lock state: made by a program that is not qshm".to_owned(),
    };
    let made = if info.made_by_qshm {
        ""
    } else {
        "; made by a program that is not qshm (Qt?)"
    };
    let how = match info.lock_mode {
        LockMode::Fast => format!("Fast mode, {state}"),
        LockMode::QtCompatible => format!(
            "Qt-compatible mode, semaphore {}, {state}{made}",
            shm.semaphore_key()
        ),
    };
    match lock {
        Some(LockStatus::Free) => format!("free ({how})"),
        Some(LockStatus::Held) => format!("held ({how})"),
        Some(LockStatus::HolderDied) => {
            format!("held by a process that died ({how}); its next locker takes it over (no clean-up needed)")
        }
        _ => format!("unknown ({how})"),
    }
}

/// The removed segments of the key that processes still map, in words (`None`: none).
fn removed_in_use(target: &Target) -> Option<String> {
    let removed = admin::removed_in_use(&target.native);
    if removed.is_empty() {
        return None;
    }
    let each: Vec<String> = removed
        .iter()
        .map(|r| {
            let what = match &r.os_id {
                admin::OsId::SystemV { shmid, .. } => format!("shmid {shmid}"),
                admin::OsId::Posix { path, inode } => format!("{} (inode {inode})", path.display()),
                _ => "a segment".to_owned(),
            };
            let size = r
                .size
                .map_or(String::new(), |n| format!(", {}", human::bytes(n as usize)));
            let pids: Vec<String> = r.mapped_by.iter().map(u32::to_string).collect();
            let by = if pids.len() == 1 { "process" } else { "processes" };
            format!("{what}{size}, mapped by {by} {}", pids.join(", "))
        })
        .collect();
    Some(format!(
        "{} of this key, removed while in use, {} still mapped: {} (`qshm rm`, `ipcrm`, `rm` of \
         its file, or systemd-logind's RemoveIPC=yes; its processes share it with nobody who \
         attaches from now on)",
        plural(removed.len(), "segment"),
        if removed.len() == 1 { "is" } else { "are" },
        each.join("; ")
    ))
}

pub fn stat(target: &Target) -> CliResult {
    // Attach adopting the segment's lock mode, whatever --fast says.
    let mut probe = target.adopting_handle();
    probe.attach(AccessMode::ReadOnly).map_err(|e| match e.kind() {
        SharedMemoryError::NotFound => match removed_in_use(target) {
            // the key names nothing, but processes still use what it named
            Some(removed) => Failure::with_code(
                format!(
                    "no segment for key {:?} ({}); {removed}",
                    target.shown,
                    type_name(target.native.kind())
                ),
                3,
            ),
            None => target.not_found(true),
        },
        _ => e.into(),
    })?;
    let info = probe.info()?;
    let kind = probe.native_ipc_key().kind();
    let seen = admin::segment(probe.native_ipc_key()).ok().flatten();
    let attachments = match (info.attachments, &seen) {
        (Some(n), _) => format!("{n} (this stat included)"),
        (None, Some(seen)) => format!(
            "{} processes map it, {} qshm attachments (this stat included)",
            seen.attachments,
            seen.qshm_attachments.unwrap_or(0)
        ),
        (None, None) => "unknown".to_owned(),
    };
    let lock = lock_state(&probe, &info, seen.as_ref().map(|s| s.lock));
    let age = now_secs().saturating_sub(info.created_unix.max(0) as u64);
    let mut text = String::new();
    let _ = writeln!(text, "key:          {}", probe.key().unwrap_or("(native key)"));
    let _ = writeln!(text, "native key:   {}", probe.native_ipc_key());
    let _ = writeln!(text, "backend:      {}", type_name(kind));
    let _ = writeln!(text, "os id:        {}", info.os_id);
    let _ = writeln!(text, "size:         {} bytes", info.size);
    let _ = writeln!(text, "attachments:  {attachments}");
    let _ = writeln!(text, "permissions:  {:04o}", info.permissions);
    let _ = writeln!(
        text,
        "owner:        {} (uid {})",
        list::user_name(info.owner_uid),
        info.owner_uid
    );
    let _ = writeln!(text, "created:      {} ago", human::age(age));
    let _ = writeln!(text, "lock:         {lock}");
    if let Some(removed) = removed_in_use(target) {
        let _ = writeln!(text, "removed:      {removed}");
    }
    probe.detach()?;
    print_all(&text)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn rm(target: &Target) -> CliResult {
    // who is still attached (they keep their mapping until they detach)
    let users = admin::segment(&target.native)
        .ok()
        .flatten()
        .map_or(0, |s| s.attachments);
    if !SharedMemory::force_remove(&target.native)? {
        return Err(target.not_found(false));
    }
    let mut text = format!("removed {}", target.native);
    if users > 0 {
        let _ = write!(
            text,
            " ({users} attached process{} keep{} the memory until {} detach{})",
            if users == 1 { "" } else { "es" },
            if users == 1 { "s" } else { "" },
            if users == 1 { "it" } else { "they" },
            if users == 1 { "es" } else { "" },
        );
    }
    text.push('\n');
    print_all(&text)
}

pub fn rm_stale(all: bool) -> CliResult {
    let removal = admin::remove_stale(all)?;
    let mut text = String::new();
    for s in &removal.segments {
        let os_id = list::os_id(&s.os_id);
        let _ = match (&s.native_key, s.kind()) {
            (Some(native), KeyType::SystemV | KeyType::SystemVWithId(_)) => {
                writeln!(text, "removed stale segment {} ({os_id})", native.native())
            }
            _ => writeln!(text, "removed stale segment {os_id}"),
        };
    }
    for o in &removal.orphans {
        let (kind, detail) = list::orphan_kind(o);
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        let _ = writeln!(text, "removed {kind} {}{detail}", o.path.display());
    }
    let removed = removal.segments.len() + removal.orphans.len();
    let _ = writeln!(text, "{removed} removed");
    for s in &removal.held_by_dead {
        let _ = writeln!(
            text,
            "the lock of {} is held by a process that died: its next locker takes it over",
            segment_name(s)
        );
    }
    if !removal.kept_foreign.is_empty() {
        let names: Vec<String> = removal
            .kept_foreign
            .iter()
            .map(|s| list::os_id(&s.os_id))
            .collect();
        let _ = writeln!(
            text,
            "kept {} of other programs ({}): `qshm rm --stale --all` removes them too",
            plural(names.len(), "stale segment"),
            names.join(", ")
        );
    }
    if !removal.kept_foreign_orphans.is_empty() {
        let names: Vec<String> = removal
            .kept_foreign_orphans
            .iter()
            .map(|o| o.path.display().to_string())
            .collect();
        let _ = writeln!(
            text,
            "kept {} that may be other programs' ({}): `qshm rm --stale --all` removes them too",
            plural(names.len(), "semaphore"),
            names.join(", ")
        );
    }
    print_all(&text)
}

/// The native key of a segment, or else its OS id.
fn segment_name(s: &admin::Segment) -> String {
    s.native_key
        .as_ref()
        .map_or_else(|| list::os_id(&s.os_id), |k| k.native().to_owned())
}

pub fn lock(target: &Target, hold: Option<Duration>) -> CliResult {
    let interrupt = interrupt::install()?;
    let shm = target.attach(AccessMode::ReadOnly)?;
    let guard = interrupt.lock(
        &target.shown,
        &target.native,
        |t| shm.lock_read_timeout(t),
        |e| target.lock_failure(&shm, e),
    )?;
    say(format_args!(
        "locked {}{}",
        target.shown,
        if guard.previous_owner_died() {
            " (its previous holder had died)"
        } else {
            ""
        }
    ));
    hold_for(&interrupt, hold);
    guard.unlock()?;
    say(format_args!("unlocked"));
    Ok(())
}

/// Say how long a command holds what it made or took, and hold it that long (or until
/// a signal).
fn hold_for(interrupt: &Interrupt, hold: Option<Duration>) {
    match hold {
        None => say(format_args!("holding until Ctrl-C")),
        Some(d) if d.is_zero() => return,
        Some(d) => say(format_args!(
            "holding for {} (Ctrl-C to release)",
            human::duration(d)
        )),
    }
    interrupt.wait(hold);
}

/// `qshm key posix:/x` (or `--native`): what a native key names, as the other commands read
/// it. Its lock uses the same native key for Qt's semaphore (no legacy key to derive from).
pub fn print_native_key(target: &Target) -> CliResult {
    let native = &target.native;
    let kind = native.kind();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} native key (QNativeIpcKey({:?}, {})):",
        type_name(kind),
        native.native(),
        kind
    );
    let _ = writeln!(text, "  string:     {native}");
    let sem = SharedMemory::with_native_key(native.clone()).semaphore_key();
    match kind.ftok_project_id() {
        None => {
            let name = native.native().trim_start_matches('/');
            let _ = writeln!(text, "  segment:    /dev/shm/{name}");
            let _ = writeln!(
                text,
                "  semaphore:  /dev/shm/sem.{}",
                sem.native().trim_start_matches('/')
            );
        }
        Some(id) => {
            let _ = writeln!(text, "  key file:   {}", native.native());
            let shown_id = if kind == KeyType::SystemV {
                "'Q'".to_owned()
            } else {
                id.to_string()
            };
            let _ = writeln!(text, "  semaphore:  ftok({}, {shown_id})", sem.native());
            if let Some(k) = SharedMemory::system_v_key(native) {
                let _ = writeln!(text, "  ftok key:   {:#010x} (the key file exists)", k as u32);
            }
        }
    }
    print_all(&text)
}

/// `qshm key KEY`: the native keys Qt derives for the legacy key KEY, of both key types
/// or only of `only` (`--posix`, `--sysv`).
pub fn print_keys(key: &str, only: Option<KeyType>) -> CliResult {
    if key.is_empty() {
        return Err(Failure::input(
            "the key is empty: Qt derives no native key from it".to_owned(),
        ));
    }
    let kinds: Vec<KeyType> = [KeyType::SystemV, KeyType::PosixRealtime]
        .into_iter()
        .filter(|k| only.is_none_or(|o| o == *k))
        .collect();
    let mut text = String::new();
    for &kind in &kinds {
        let shm = SharedMemory::legacy_native_key(key, kind);
        let sem = SystemSemaphore::legacy_native_key(key, kind);
        let _ = writeln!(
            text,
            "{} (QSharedMemory({key:?}){}):",
            type_name(kind),
            if kind == KeyType::SystemV {
                ", Qt's default"
            } else {
                " with QNativeIpcKey::Type::PosixRealtime"
            }
        );
        let _ = writeln!(text, "  segment:    {}", shm.native());
        let _ = writeln!(text, "  semaphore:  {}", sem.native());
        let _ = writeln!(text, "  string:     {shm}");
        if let Some(k) = SharedMemory::system_v_key(&shm) {
            let _ = writeln!(text, "  ftok key:   {:#010x} (the key file exists)", k as u32);
        }
    }
    let posix = SharedMemory::legacy_native_key(key, KeyType::PosixRealtime);
    if let Some(hint) = list::key_hint(&posix) {
        let _ = writeln!(text, "`qshm ls` key hint: {hint}");
    }
    let _ = writeln!(text, "Qt 6.6 platformSafeKey({key:?}) (not a legacy key):");
    for &kind in &kinds {
        let _ = writeln!(
            text,
            "  {:<11} {}",
            format!("{}:", type_name(kind)),
            SharedMemory::platform_safe_key(key, kind)
        );
    }
    print_all(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_matches_hexdump_c() {
        let dump = hex_dump(b"EURUSD 1.0842\0\0\0\x01", 0);
        assert_eq!(
            dump,
            "00000000  45 55 52 55 53 44 20 31  2e 30 38 34 32 00 00 00  |EURUSD 1.0842...|\n\
             00000010  01                                                |.|\n\
             00000011\n"
        );
        let short = hex_dump(b"abc", 32);
        assert_eq!(
            short,
            "00000020  61 62 63                                          |abc|\n00000023\n"
        );
        assert_eq!(hex_dump(b"", 4096), "00001000\n", "at the end: the offset only");
        let mut runs = vec![0u8; 64];
        runs.extend([1u8; 16]);
        runs.extend([0u8; 20]);
        assert_eq!(
            hex_dump(&runs, 0),
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000040  01 01 01 01 01 01 01 01  01 01 01 01 01 01 01 01  |................|\n\
             00000050  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             00000060  00 00 00 00                                       |....|\n\
             00000064\n"
        );
    }

    #[test]
    fn ranges_never_overflow() {
        assert_eq!(write_range(4, 4, 8).ok(), Some(4..8));
        assert!(write_range(5, 4, 8).is_err());
        assert!(write_range(usize::MAX, 2, 8).is_err());
        assert_eq!(read_range(4, None, 8).ok(), Some(4..8));
        assert_eq!(read_range(5, Some(4), 8).ok(), Some(5..8));
        assert_eq!(read_range(8, Some(usize::MAX), 8).ok(), Some(8..8));
        assert_eq!(read_range(2, Some(usize::MAX), 8).ok(), Some(2..8));
        assert!(read_range(9, Some(0), 8).is_err());
        assert!(read_range(usize::MAX, Some(usize::MAX), 8).is_err());
    }
}
