//! `qshm ls --json`: the machine-readable listing, a stable schema.
//!
//! The schema is the table in README.md ("JSON output of `qshm ls --json`"), which the
//! CLI tests check every field against. Changing a field's name, type or meaning raises
//! [`SCHEMA`]; adding a field does not.

use qshm::admin::{LockStatus, Maker, Orphan, OrphanKind, OsId, Scan, Segment, State};
use qshm::{LockMode, NativeIpcKey};
use serde_json::{Value, json};

use crate::list::{hint, os_id, user_name};

/// The schema's version, the document's `schema` field.
pub const SCHEMA: u32 = 1;

pub fn document(scan: &Scan) -> String {
    let doc = json!({
        "schema": SCHEMA,
        "segments": scan.segments.iter().map(segment).collect::<Vec<_>>(),
        "orphans": scan.orphans.iter().map(orphan).collect::<Vec<_>>(),
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

pub fn state_name(state: State) -> &'static str {
    match state {
        State::Live => "live",
        State::New => "new",
        State::Stale => "stale",
        _ => "unknown",
    }
}

pub fn lock_name(lock: LockStatus) -> &'static str {
    match lock {
        LockStatus::Free => "free",
        LockStatus::Held => "held",
        LockStatus::HolderDied => "dead_holder",
        _ => "unknown",
    }
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::QtCompatible => "qt_compatible",
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

fn segment(s: &Segment) -> Value {
    let lock_mode = match s.maker {
        Maker::Qshm { lock_mode } => Some(mode_name(lock_mode)),
        _ if s.lock == LockStatus::Unknown => None,
        _ => Some(mode_name(LockMode::QtCompatible)),
    };
    let (shmid, path) = match &s.os_id {
        OsId::SystemV { shmid, .. } => (Some(*shmid), None),
        OsId::Posix { path, .. } => (None, Some(path.display().to_string())),
        _ => (None, None),
    };
    json!({
        "type": s.kind().as_str(),
        "native_key": s.native_key.as_ref().map(NativeIpcKey::native),
        "key_hint": hint(s.qt_name.as_ref()),
        "os_id": os_id(&s.os_id),
        "shmid": shmid,
        "path": path,
        "size": s.size,
        "attachments": s.attachments,
        "qshm_attachments": s.qshm_attachments,
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

/// The `kind` of an orphan in the JSON document.
pub fn orphan_kind_id(kind: OrphanKind) -> &'static str {
    match kind {
        OrphanKind::LockState(_) => "lock_state",
        OrphanKind::KeyFile => "key_file",
        OrphanKind::PosixSemaphore => "posix_semaphore",
        OrphanKind::SystemVSemaphore { .. } => "systemv_semaphore",
        OrphanKind::UnfinishedSemaphore => "unfinished_semaphore",
        OrphanKind::MaybeUnfinishedSemaphore => "maybe_semaphore",
        _ => "other",
    }
}

fn orphan(o: &Orphan) -> Value {
    let semid = match o.kind {
        OrphanKind::SystemVSemaphore { semid, .. } => Some(semid),
        _ => None,
    };
    json!({
        "kind": orphan_kind_id(o.kind),
        "type": o.kind.key_type().as_str(),
        "path": o.path,
        "key_hint": hint(o.qt_name.as_ref()),
        "semid": semid,
        "age_secs": o.age.as_secs(),
        "new": o.is_new(),
        "foreign": o.is_foreign(),
    })
}
