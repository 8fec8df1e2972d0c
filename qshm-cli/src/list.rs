//! `qshm ls`: every segment on the machine, and orphans.

use std::fmt::Write as _;

use qshm::inspect::{self, Scan, SegmentEntry, State};

use crate::{CliResult, print_all};

/// Letters alone cannot tell `fm2` from `fm3` (Qt keeps only the letters of a legacy
/// key); `letters#sha1[..6]` can. The hash is the one in the name, so `qshm key KEY`
/// shows the same hint.
pub fn hint(letters: Option<&str>, name: &str) -> Option<String> {
    let letters = letters?;
    let base = name.rsplit('/').next().unwrap_or(name);
    let hash = base.get(base.len().checked_sub(40)?..)?;
    Some(match hash.get(..6) {
        Some(start) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => format!("{letters}#{start}"),
        _ => letters.to_owned(),
    })
}

fn segment_hint(s: &SegmentEntry) -> Option<String> {
    hint(s.key_hint.as_deref(), s.native_key.as_deref().unwrap_or(&s.os_id))
}

pub fn ls(json: bool) -> CliResult {
    let scan = inspect::scan()?;
    let text = if json { as_json(&scan) } else { as_table(&scan) };
    print_all(&text)
}

fn as_json(scan: &Scan) -> String {
    let segments: Vec<serde_json::Value> = scan
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "type": s.kind.as_str(),
                "native_key": s.native_key,
                "key_hint": segment_hint(s),
                "os_id": s.os_id,
                "size": s.size,
                "attachments": s.attachments,
                "lock_holders": s.lock_holders,
                "owner": s.owner,
                "uid": s.owner_uid,
                "permissions": format!("{:04o}", s.permissions),
                "age_secs": s.age_secs,
                "state": s.state.as_str(),
                "stale": s.is_stale(),
                "qt_style": s.qt_style,
                "foreign": s.foreign,
            })
        })
        .collect();
    let orphans: Vec<serde_json::Value> = scan
        .orphans
        .iter()
        .map(|o| {
            serde_json::json!({
                "kind": o.kind.as_str(),
                "type": o.key_type.as_str(),
                "path": o.path,
                "key_hint": hint(o.key_hint.as_deref(), &o.path),
                "detail": o.detail,
            })
        })
        .collect();
    let doc = serde_json::json!({ "segments": segments, "orphans": orphans });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

fn state_label(s: &SegmentEntry) -> &'static str {
    match (s.state, s.foreign) {
        (State::Stale, false) => "STALE",
        (State::Stale, true) => "stale*",
        (state, _) => state.as_str(),
    }
}

fn as_table(scan: &Scan) -> String {
    let mut text = String::new();
    let hint = |h: Option<String>| h.unwrap_or_else(|| "-".to_owned());
    let hints = scan
        .segments
        .iter()
        .map(|s| hint(segment_hint(s)).chars().count());
    let hint_width = hints.max().unwrap_or(0).clamp(8, 32);
    let owners = scan.segments.iter().map(|s| s.owner.chars().count());
    let owner_width = owners.max().unwrap_or(0).clamp(5, 16);
    let _ = writeln!(
        text,
        "{:<7} {:<hint_width$} {:>10} {:>6} {:<owner_width$} {:<4} {:>5}  {:<7} NATIVE KEY / OS ID",
        "TYPE", "KEY HINT", "SIZE", "ATTACH", "OWNER", "PERM", "AGE", "STATE"
    );
    for s in &scan.segments {
        let _ = writeln!(
            text,
            "{:<7} {:<hint_width$} {:>10} {:>6} {:<owner_width$} {:04o} {:>5}  {:<7} {}",
            s.kind.as_str(),
            hint(segment_hint(s)),
            s.size,
            s.attachments,
            s.owner,
            s.permissions,
            age(s.age_secs),
            state_label(s),
            s.native_key.as_deref().unwrap_or(&s.os_id)
        );
    }
    for o in &scan.orphans {
        let detail = o.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        let _ = writeln!(
            text,
            "orphan  {:<hint_width$} {} {}{detail}",
            hint(self::hint(o.key_hint.as_deref(), &o.path)),
            o.kind.as_str(),
            o.path
        );
    }
    let stale = scan.segments.iter().filter(|s| s.is_stale()).count();
    let foreign = scan.segments.iter().filter(|s| s.is_stale() && s.foreign).count();
    let _ = write!(
        text,
        "{}, {stale} stale, {}",
        plural(scan.segments.len(), "segment"),
        plural(scan.orphans.len(), "orphan")
    );
    if stale > foreign || !scan.orphans.is_empty() {
        text.push_str("; `qshm rm --stale` removes the STALE ones and the orphans");
    }
    if foreign > 0 {
        text.push_str("; stale* are other programs' (`qshm rm --stale --all`)");
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

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_letters_and_the_start_of_the_hash() {
        let name = "/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3";
        assert_eq!(hint(Some("market"), name).as_deref(), Some("market#5c9f73"));
        let path = "/tmp/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3";
        assert_eq!(hint(Some("market"), path).as_deref(), Some("market#5c9f73"));
        assert_eq!(hint(None, name), None);
        assert_eq!(hint(Some("x"), "/short"), None);
    }
}
