//! `qshm ls`: every segment on the machine, and orphans.

use std::fmt::Write as _;

use qshm::admin::{self, LockStatus, Maker, Orphan, OrphanKind, OsId, QtName, Scan, Segment, State};
use qshm::{LockMode, NativeIpcKey};

use crate::{CliResult, print_all};

/// Letters alone cannot tell `fm2` from `fm3` (Qt keeps only the letters of a legacy
/// key); `letters#sha1[..6]` can. `qshm key KEY` shows the same hint.
pub fn hint(name: Option<&QtName>) -> Option<String> {
    let name = name?;
    Some(format!(
        "{}#{}",
        name.letters,
        name.sha1.get(..6).unwrap_or(&name.sha1)
    ))
}

/// The `ls` hint of a native key Qt derived from a legacy key.
pub fn key_hint(key: &NativeIpcKey) -> Option<String> {
    hint(QtName::of(key).as_ref())
}

/// The user name of `uid`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pwd and found are valid places to write, buf is buf.len() bytes long.
    let rc = unsafe { libc::getpwuid_r(uid, pwd.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return uid.to_string();
    }
    // SAFETY: on success found points to pwd, whose pw_name points into buf (both live).
    let name = unsafe { std::ffi::CStr::from_ptr((*found).pw_name) };
    name.to_str().map_or_else(|_| uid.to_string(), str::to_owned)
}

/// `shmid N key 0x…` (System V) or the file (POSIX).
pub fn os_id(id: &OsId) -> String {
    match id {
        OsId::SystemV { shmid, key, removed } => {
            let mut text = format!("shmid {shmid} key {:#010x}", *key as u32);
            if *removed {
                text.push_str(" (removed; gone when its users detach)");
            }
            text
        }
        OsId::Posix { path, .. } => path.display().to_string(),
        _ => "?".to_owned(),
    }
}

/// The native key, or else the OS's name.
fn name(s: &Segment) -> String {
    s.native_key
        .as_ref()
        .map_or_else(|| os_id(&s.os_id), |k| k.native().to_owned())
}

pub fn ls(json: bool) -> CliResult {
    let scan = admin::scan()?;
    let text = if json { as_json(&scan) } else { as_table(&scan) };
    print_all(&text)
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Live => "live",
        State::New => "new",
        State::Stale => "stale",
        _ => "unknown",
    }
}

fn lock_name(lock: LockStatus) -> &'static str {
    match lock {
        LockStatus::Free => "free",
        LockStatus::Held => "held",
        LockStatus::HolderDied => "dead-holder",
        _ => "unknown",
    }
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::QtCompatible => "qt-compatible",
        LockMode::Fast => "fast",
    }
}

fn maker_name(maker: Maker) -> &'static str {
    match maker {
        Maker::Qshm { .. } => "qshm",
        Maker::Qt => "qt",
        _ => "other",
    }
}

fn segment_json(s: &Segment) -> serde_json::Value {
    let lock_mode = match s.maker {
        Maker::Qshm { lock_mode } => Some(mode_name(lock_mode)),
        _ if s.lock == LockStatus::Unknown => None,
        _ => Some(mode_name(LockMode::QtCompatible)),
    };
    serde_json::json!({
        "type": s.kind().as_str(),
        "native_key": s.native_key.as_ref().map(NativeIpcKey::native),
        "key_hint": hint(s.qt_name.as_ref()),
        "os_id": os_id(&s.os_id),
        "size": s.size,
        "attachments": s.attachments,
        "lock_holders": s.qshm_attachments,
        "owner": user_name(s.owner_uid),
        "uid": s.owner_uid,
        "permissions": format!("{:04o}", s.permissions),
        "age_secs": s.age.as_secs(),
        "state": state_name(s.state),
        "stale": s.is_stale(),
        "lock": lock_name(s.lock),
        "lock_mode": lock_mode,
        "lock_state": s.lock_state,
        "made_by": maker_name(s.maker),
        "qt_style": s.qt_name.is_some(),
        "foreign": s.is_foreign(),
    })
}

/// What an orphan is, and more about it.
pub fn orphan_kind(o: &Orphan) -> (&'static str, Option<String>) {
    match o.kind {
        OrphanKind::LockState(_) => ("lock state", None),
        OrphanKind::KeyFile => ("key file", None),
        OrphanKind::SystemVSemaphore { semid, key } => (
            "semaphore",
            Some(format!("semid {semid} key {:#010x}", key as u32)),
        ),
        OrphanKind::UnfinishedSemaphore => (
            "semaphore",
            Some("glibc's temporary file of an unfinished sem_open".to_owned()),
        ),
        OrphanKind::MaybeUnfinishedSemaphore => (
            "semaphore*",
            Some(
                "named like glibc's temporary file of an unfinished sem_open, or a semaphore named so"
                    .to_owned(),
            ),
        ),
        _ => ("semaphore", None),
    }
}

fn as_json(scan: &Scan) -> String {
    let segments: Vec<serde_json::Value> = scan.segments.iter().map(segment_json).collect();
    let orphans: Vec<serde_json::Value> = scan
        .orphans
        .iter()
        .map(|o| {
            let (kind, detail) = orphan_kind(o);
            serde_json::json!({
                "kind": kind,
                "type": o.kind.key_type().as_str(),
                "path": o.path,
                "key_hint": hint(o.qt_name.as_ref()),
                "detail": detail,
                "age_secs": o.age.as_secs(),
            })
        })
        .collect();
    let doc = serde_json::json!({ "segments": segments, "orphans": orphans });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

fn state_label(s: &Segment) -> &'static str {
    match (s.state, s.is_foreign()) {
        (State::Stale, false) => "STALE",
        (State::Stale, true) => "stale*",
        (state, _) => state_name(state),
    }
}

fn lock_label(lock: LockStatus) -> &'static str {
    match lock {
        LockStatus::HolderDied => "DEAD-HOLDER",
        LockStatus::Free | LockStatus::Held => lock_name(lock),
        _ => "-",
    }
}

fn as_table(scan: &Scan) -> String {
    let mut text = String::new();
    let hint_of = |s: &Segment| hint(s.qt_name.as_ref()).unwrap_or_else(|| "-".to_owned());
    let hint_width = scan
        .segments
        .iter()
        .map(|s| hint_of(s).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, 32);
    // "systemv-84" is wider than "systemv" and "posix"
    let type_width = scan
        .segments
        .iter()
        .map(|s| s.kind().as_str().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let owners: Vec<String> = scan.segments.iter().map(|s| user_name(s.owner_uid)).collect();
    let owner_width = owners
        .iter()
        .map(|o| o.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 16);
    let _ = writeln!(
        text,
        "{:<type_width$} {:<hint_width$} {:>10} {:>6} {:<owner_width$} {:<4} {:>5}  {:<7} {:<11} NATIVE KEY / OS ID",
        "TYPE", "KEY HINT", "SIZE", "ATTACH", "OWNER", "PERM", "AGE", "STATE", "LOCK"
    );
    for (s, owner) in scan.segments.iter().zip(&owners) {
        let _ = writeln!(
            text,
            "{:<type_width$} {:<hint_width$} {:>10} {:>6} {owner:<owner_width$} {:04o} {:>5}  {:<7} {:<11} {}",
            s.kind().as_str(),
            hint_of(s),
            s.size,
            s.attachments,
            s.permissions,
            age(s.age.as_secs()),
            state_label(s),
            lock_label(s.lock),
            name(s)
        );
    }
    for o in &scan.orphans {
        let (kind, detail) = orphan_kind(o);
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        let hint = hint(o.qt_name.as_ref()).unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            text,
            "orphan  {hint:<hint_width$} {kind} {}{detail}",
            o.path.display()
        );
    }
    text.push_str(&summary(scan));
    text
}

fn summary(scan: &Scan) -> String {
    let stale = scan.segments.iter().filter(|s| s.is_stale()).count();
    let foreign = scan
        .segments
        .iter()
        .filter(|s| s.is_stale() && s.is_foreign())
        .count();
    let dead = scan
        .segments
        .iter()
        .filter(|s| s.lock == LockStatus::HolderDied)
        .count();
    let mut text = format!("{}, {stale} stale, ", plural(scan.segments.len(), "segment"));
    if dead > 0 {
        let _ = write!(text, "{} held by a dead process, ", plural(dead, "lock"));
    }
    text.push_str(&plural(scan.orphans.len(), "orphan"));
    let foreign_orphans = scan.orphans.iter().filter(|o| o.is_foreign()).count();
    if stale > foreign || scan.orphans.len() > foreign_orphans || dead > 0 {
        text.push_str("; `qshm rm --stale` removes the STALE ones and the orphans");
        if dead > 0 {
            text.push_str(" and frees DEAD-HOLDER locks");
        }
    }
    if foreign > 0 {
        text.push_str("; stale* are other programs' (`qshm rm --stale --all`)");
    }
    if foreign_orphans > 0 {
        text.push_str("; semaphore* may be another program's (`qshm rm --stale --all`)");
    }
    text.push('\n');
    text
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qshm::{KeyType, SharedMemory};

    #[test]
    fn hints_are_letters_and_the_start_of_the_hash() {
        for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
            let key = SharedMemory::legacy_native_key("market", kind);
            assert_eq!(key_hint(&key).as_deref(), Some("market#5c9f73"));
        }
        let native = NativeIpcKey::new("/short", KeyType::PosixRealtime);
        assert_eq!(key_hint(&native), None);
    }

    #[test]
    fn root_has_a_name_and_nobody_a_number() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
    }
}
