//! `qshm ls`: every segment on the machine, and orphans, as a table that fits 100
//! columns (`--wide` adds the native keys); `--json` is ls_json.rs.

use std::fmt::Write as _;

use qshm::NativeIpcKey;
use qshm::admin::{self, LockStatus, Orphan, OrphanKind, OsId, QtName, Scan, Segment, State};

use crate::human::{age, plural};
use crate::ls_json::{self, lock_name, state_name};
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
    admin::user_name(uid).unwrap_or_else(|| uid.to_string())
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

/// What the KEY column shows: the key hint of a name Qt derived from a legacy key, else
/// the native key or the OS's name (which is then short).
fn key_column(s: &Segment) -> String {
    hint(s.qt_name.as_ref()).unwrap_or_else(|| name(s))
}

pub fn ls(json: bool, wide: bool) -> CliResult {
    let scan = admin::scan()?;
    let text = if json {
        ls_json::document(&scan)
    } else {
        table(&scan, wide)
    };
    print_all(&text)
}

/// What an orphan is, and more about it (for `ls` and `rm --stale`).
pub fn orphan_kind(o: &Orphan) -> (&'static str, Option<String>) {
    match o.kind {
        OrphanKind::LockState(_) => ("lock state", None),
        OrphanKind::KeyFile => ("key file", None),
        OrphanKind::SystemVSemaphore { semid, key } => (
            "semaphore",
            Some(format!("semid {semid} key {:#010x}", key as u32)),
        ),
        OrphanKind::UnfinishedSemaphore => ("semaphore", Some("unfinished sem_open".to_owned())),
        OrphanKind::MaybeUnfinishedSemaphore => ("semaphore*", None),
        _ => ("semaphore", None),
    }
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

/// An orphan's STATE: `new` (younger than 2 s: maybe work in progress, left alone),
/// `stale*` (maybe another program's), else `STALE` (`qshm rm --stale` removes it).
fn orphan_state(o: &Orphan) -> &'static str {
    if o.is_new() {
        "new"
    } else if o.is_foreign() {
        "stale*"
    } else {
        "STALE"
    }
}

fn table(scan: &Scan, wide: bool) -> String {
    let mut text = String::new();
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
    let keys: Vec<String> = scan.segments.iter().map(key_column).collect();
    let key_width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0).max(3);
    let _ = write!(
        text,
        "{:<type_width$} {:>10} {:>6} {:<owner_width$} {:<4} {:>5}  {:<type_width$} {:<11} ",
        "TYPE", "SIZE", "ATTACH", "OWNER", "PERM", "AGE", "STATE", "LOCK"
    );
    if wide {
        let _ = writeln!(text, "{:<key_width$}  NATIVE KEY / OS ID", "KEY");
    } else {
        text.push_str("KEY\n");
    }
    for ((s, owner), key) in scan.segments.iter().zip(&owners).zip(&keys) {
        let _ = write!(
            text,
            "{:<type_width$} {:>10} {:>6} {owner:<owner_width$} {:04o} {:>5}  {:<type_width$} {:<11} ",
            s.kind().as_str(),
            s.size,
            s.attachments,
            s.permissions,
            age(s.age.as_secs()),
            state_label(s),
            lock_label(s.lock),
        );
        if wide {
            let _ = writeln!(text, "{key:<key_width$}  {}", name(s));
        } else {
            let _ = writeln!(text, "{key}");
        }
    }
    if !scan.orphans.is_empty() {
        let _ = writeln!(text, "{:<10} {:>5}  {:<6} PATH", "ORPHAN", "AGE", "STATE");
    }
    for o in &scan.orphans {
        let (kind, detail) = orphan_kind(o);
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        let _ = write!(
            text,
            "{kind:<10} {:>5}  {:<6} {}{detail}",
            age(o.age.as_secs()),
            orphan_state(o),
            o.path.display()
        );
        match hint(o.qt_name.as_ref()).filter(|_| wide) {
            Some(hint) => {
                let _ = writeln!(text, "  key hint {hint}");
            }
            None => text.push('\n'),
        }
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
    let new = scan.orphans.iter().filter(|o| o.is_new()).count();
    if new > 0 {
        let _ = write!(text, " ({new} new)");
    }
    let foreign_orphans = scan
        .orphans
        .iter()
        .filter(|o| o.is_foreign() && !o.is_new())
        .count();
    let removable_orphans = scan.orphans.len() - foreign_orphans - new;
    if stale > foreign || removable_orphans > 0 {
        text.push_str("; `qshm rm --stale` removes the STALE ones");
    }
    if dead > 0 {
        text.push_str("; a DEAD-HOLDER lock goes to its next locker");
    }
    if foreign > 0 || foreign_orphans > 0 {
        text.push_str("; stale* may be other programs' (`qshm rm --stale --all`)");
    }
    if new > 0 {
        text.push_str("; new orphans may still be in the making (left alone for 2 s)");
    }
    text.push('\n');
    text
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
