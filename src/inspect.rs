//! Machine-wide inspection for tools (`qshm ls`, `qshm rm --stale`): every System V and
//! POSIX segment, which are Qt-style, which are stale, and orphans (lock state,
//! semaphores and key files whose segment is gone).
//!
//! Looking never disturbs live users: attachment counts come from the kernel
//! (`/proc/sysvipc/shm`), flock holders from `/proc/locks` and mappers from
//! `/proc/*/maps`. (Taking a segment's flock just to test it would make a concurrent
//! last detach believe another user is left, and leak the segment.)
//!
//! Removal ([`remove_stale`]) re-checks each object right before removing it, the way the
//! library reclaims a stale segment in `create`: System V segments under their key
//! file's `flock`, POSIX segments under their exclusive `flock` with a fresh `/proc`
//! scan. Objects younger than a couple of seconds are left alone, since a creator may be
//! between two steps of making them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::key::{KeyType, NativeIpcKey};
use crate::sys::lock_state::{LOCK_STATE_PREFIX, SegmentId, name_tag};
use crate::sys::named_file::NamedFile;
use crate::sys::procfs::{self, Mapped, device};
use crate::sys::{self, os, posix};

/// Prefix of Qt's (and qshm's) shared-memory native keys.
const SEGMENT_PREFIX: &str = "qipc_sharedmemory_";
/// Prefix of Qt's semaphore native keys.
const SEMAPHORE_PREFIX: &str = "qipc_systemsem_";
/// A System V segment nobody ever attached to, or an empty POSIX segment, younger than
/// this is being created right now, not stale.
const NEW_GRACE_SECS: i64 = 10;
/// Orphans younger than this may belong to a creator between two steps.
const ORPHAN_GRACE_SECS: i64 = 2;

/// What is known about a segment's users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Someone is attached (or holds qshm's attachment lock).
    Live,
    /// Just created and not attached yet: its creator is between two steps.
    New,
    /// Nobody is attached: every user died (or, for POSIX, Qt left it behind).
    Stale,
    /// Another user's POSIX segment that no qshm process holds: whether one of their
    /// processes maps it cannot be seen without privileges.
    Unknown,
}

impl State {
    /// `live`, `new`, `stale` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "live",
            State::New => "new",
            State::Stale => "stale",
            State::Unknown => "unknown",
        }
    }
}

/// One segment found on the machine.
#[derive(Clone, Debug)]
pub struct SegmentEntry {
    /// System V or POSIX.
    pub kind: KeyType,
    /// The native key, when known (System V: the Qt key file whose `ftok` key it has).
    pub native_key: Option<String>,
    /// The letters of the legacy key, read back from a Qt-style name (`qipc_…`): Qt keeps
    /// only ASCII letters, so this is a hint, not the key.
    pub key_hint: Option<String>,
    /// The OS's name: `shmid N key 0x…` or the `/dev/shm` path.
    pub os_id: String,
    /// Size in bytes.
    pub size: u64,
    /// System V: attachments counted by the kernel. POSIX: processes mapping it.
    pub attachments: u64,
    /// POSIX: qshm attachments (holders of the segment file's `flock`); None for System V.
    pub lock_holders: Option<u64>,
    /// Owner's uid.
    pub owner_uid: u32,
    /// Owner's user name (the uid when it has none).
    pub owner: String,
    /// Permission bits.
    pub permissions: u32,
    /// Seconds since creation (System V) or the last status change (POSIX).
    pub age_secs: u64,
    /// Live, new, stale or unknown.
    pub state: State,
    /// Named like Qt's / qshm's segments (`qipc_sharedmemory_…`).
    pub qt_style: bool,
    /// Neither Qt-style nor known to qshm (no qshm lock state): another program's
    /// segment, which `remove_stale` leaves alone unless asked to include foreign ones.
    pub foreign: bool,
    shmid: Option<i32>,
}

impl SegmentEntry {
    /// No live user.
    pub fn is_stale(&self) -> bool {
        self.state == State::Stale
    }

    /// The key to use with [`SharedMemory::with_native_key`](crate::SharedMemory::with_native_key).
    pub fn native_ipc_key(&self) -> Option<NativeIpcKey> {
        self.native_key
            .as_ref()
            .map(|k| NativeIpcKey::new(k.clone(), self.kind))
    }
}

/// What kind of orphan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanKind {
    /// A qshm lock-state file (`/dev/shm/qshm-lock.…`) whose segment is gone.
    LockState,
    /// A Qt semaphore (`qipc_systemsem_…`) whose segment is gone and whose users are dead.
    Semaphore,
    /// A Qt key file (`$TMPDIR/qipc_…`) with no System V object behind it.
    KeyFile,
}

impl OrphanKind {
    /// `lock state`, `semaphore` or `key file`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanKind::LockState => "lock state",
            OrphanKind::Semaphore => "semaphore",
            OrphanKind::KeyFile => "key file",
        }
    }
}

/// Something left behind without its segment.
#[derive(Clone, Debug)]
pub struct Orphan {
    /// What it is.
    pub kind: OrphanKind,
    /// System V or POSIX (lock-state files: the type of the key they were made for is
    /// not recorded; they are reported as POSIX, where they live).
    pub key_type: KeyType,
    /// The file: lock-state file, POSIX semaphore file, or key file (System V).
    pub path: String,
    /// The legacy-key letters, for Qt-style names.
    pub key_hint: Option<String>,
    /// More about it (System V semaphores: `semid N key 0x…`).
    pub detail: Option<String>,
}

/// Everything found by one look at the machine.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every shared-memory segment (all of System V; POSIX files in `/dev/shm` other than
    /// semaphores and qshm lock state).
    pub segments: Vec<SegmentEntry>,
    /// Lock state, semaphores and key files whose segment is gone.
    pub orphans: Vec<Orphan>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The user name of `uid` (or the number when it has none).
pub fn owner_name(uid: u32) -> String {
    os::user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// The legacy-key letters of a Qt-style name, e.g. `qipc_sharedmemory_market5c9f…` → `market`.
pub fn key_hint(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix(SEGMENT_PREFIX)
        .or_else(|| name.strip_prefix(SEMAPHORE_PREFIX))?;
    let letters = rest.get(..rest.len().checked_sub(40)?)?;
    let hash = &rest[letters.len()..];
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) || !letters.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    Some(letters.to_owned())
}

/// The part of a Qt-style name after its prefix (letters and hash), shared by a segment
/// and its semaphore.
fn qt_suffix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).filter(|s| !s.is_empty())
}

/// Whether the segment of `key` exists right now (without attaching to it).
pub fn exists(key: &NativeIpcKey) -> bool {
    match key.kind() {
        KeyType::SystemV => sys::sysv::numeric_key(key).is_some_and(|k| os::shmget(k, 0, 0).is_ok()),
        KeyType::PosixRealtime => posix::shm_file_name(key.native()).is_ok_and(|name| {
            os::cstring(&format!("{}/{name}", posix::SHM_DIR))
                .and_then(|c| os::lstat(&c))
                .is_ok_and(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
        }),
    }
}

/// For a POSIX segment file: (qshm attachments holding its flock, processes mapping it).
pub fn posix_users(path: &str) -> (u64, u64) {
    let Ok(st) = os::cstring(path).and_then(|c| os::lstat(&c)) else {
        return (0, 0);
    };
    let holders = flock_holders().get(&(st.dev, st.ino)).copied().unwrap_or(0);
    let mappers = shm_mappers().get(&(st.dev, st.ino)).copied().unwrap_or(0);
    (holders, mappers)
}

/// One row of `/proc/sysvipc/shm`.
struct ShmRow {
    key: i32,
    id: i32,
    perms: u32,
    size: u64,
    cpid: i32,
    nattch: u64,
    uid: u32,
    atime: i64,
    ctime: i64,
}

/// One row of `/proc/sysvipc/sem`.
struct SemRow {
    key: i32,
    id: i32,
}

fn sysv_rows(table: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn shm_rows() -> Vec<ShmRow> {
    sysv_rows("shm")
        .into_iter()
        .filter_map(|f| {
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
            Some(ShmRow {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
                perms: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: f.get(3)?.parse().ok()?,
                cpid: f.get(4)?.parse().ok()?,
                nattch: f.get(6)?.parse().ok()?,
                uid: f.get(7)?.parse().ok()?,
                atime: num(11).unwrap_or(0),
                ctime: num(13).unwrap_or(0),
            })
        })
        .collect()
}

fn sem_rows() -> Vec<SemRow> {
    sysv_rows("sem")
        .into_iter()
        .filter_map(|f| {
            Some(SemRow {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
            })
        })
        .collect()
}

/// A Qt key file in the temp directory.
struct KeyFile {
    path: String,
    name: String,
    ftok: i32,
    ctime: i64,
}

/// Qt key files (`qipc_…`) in Qt's temp directory, with the System V key `ftok` gives.
fn key_files() -> Vec<KeyFile> {
    let dir = crate::key::qt_temp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(SEGMENT_PREFIX) && !name.starts_with(SEMAPHORE_PREFIX) {
            continue;
        }
        let path = format!("{dir}/{name}");
        let Ok(c) = os::cstring(&path) else { continue };
        let Ok(st) = os::lstat(&c) else { continue };
        if st.mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        if let Ok(ftok) = sys::sysv::ftok_key(&c) {
            out.push(KeyFile {
                path,
                name,
                ftok,
                ctime: st.created_secs(),
            });
        }
    }
    out
}

/// flock holders by (device, inode), from `/proc/locks`.
fn flock_holders() -> HashMap<(u64, u64), u64> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut map = HashMap::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  READ  1234 00:1b:56 0 EOF" ("->" marks a waiter)
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.get(2) == Some(&"->") {
            continue;
        }
        // MAJOR:MINOR:INODE
        let Some((dev, ino)) = fields.get(5).and_then(|id| id.rsplit_once(':')) else {
            continue;
        };
        if let Some(id) = device(dev).zip(ino.parse::<u64>().ok()) {
            *map.entry(id).or_insert(0) += 1;
        }
    }
    map
}

/// For every file under `/dev/shm`: the number of processes mapping it, by (device, inode).
fn shm_mappers() -> HashMap<(u64, u64), u64> {
    let mut map: HashMap<(u64, u64), u64> = HashMap::new();
    let mut seen = HashSet::new();
    let prefix = format!("{}/", posix::SHM_DIR);
    procfs::visit_mappings(|pid, dev, ino, path| {
        if path.starts_with(&prefix)
            && let Some(dev) = dev
            && seen.insert((pid, dev, ino))
        {
            *map.entry((dev, ino)).or_insert(0) += 1;
        }
        false
    });
    map
}

/// A file in `/dev/shm`.
struct ShmFile {
    name: String,
    path: String,
    st: os::FileStat,
}

fn shm_dir_files() -> io::Result<Vec<ShmFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(posix::SHM_DIR)?.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = format!("{}/{name}", posix::SHM_DIR);
        let Ok(st) = os::cstring(&path).and_then(|c| os::lstat(&c)) else {
            continue;
        };
        if st.mode & libc::S_IFMT == libc::S_IFREG {
            out.push(ShmFile { name, path, st });
        }
    }
    Ok(out)
}

fn is_segment_file(name: &str) -> bool {
    !name.starts_with("sem.") && !name.starts_with(LOCK_STATE_PREFIX)
}

/// The identity a POSIX segment file's lock state is named after.
fn posix_id(f: &ShmFile) -> SegmentId {
    SegmentId::Posix {
        name_tag: name_tag(&f.name),
        ino: f.st.ino,
        btime_ns: f.st.btime_ns.unwrap_or(f.st.ctime_ns),
    }
}

/// A glibc `sem_open` temporary file (`sem.` and six random characters), left behind when
/// its maker was killed between creating and naming a semaphore.
fn is_glibc_temporary(name: &str) -> bool {
    name.strip_prefix("sem.")
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// True when a process other than this one maps the file `st` (or we cannot tell).
fn mapped_by_others(st: &os::FileStat) -> bool {
    let census = procfs::census(&[Mapped::File {
        dev: st.dev,
        ino: st.ino,
    }]);
    !census.mapping.is_empty()
}

fn process_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Look at the whole machine once: segments and orphans.
pub fn scan() -> io::Result<Scan> {
    let now = now_secs();
    let me = euid();
    // The tables first, the key files after: a key file made after the table was read
    // belongs to a segment that is not in it, never the other way round.
    let shm = shm_rows();
    let sems = sem_rows();
    let files = key_files();
    let holders = flock_holders();
    let mappers = shm_mappers();
    let dir = shm_dir_files()?;
    let lock_files: HashSet<&str> = dir
        .iter()
        .filter(|f| f.name.starts_with(LOCK_STATE_PREFIX))
        .map(|f| f.name.as_str())
        .collect();

    let mut segments = Vec::new();
    for row in &shm {
        // key 0 is IPC_PRIVATE (and every removed segment): never a key file's
        let file = (row.key != 0)
            .then(|| {
                files
                    .iter()
                    .find(|f| f.ftok == row.key && f.name.starts_with(SEGMENT_PREFIX))
            })
            .flatten();
        let age = (now - row.ctime).max(0);
        let state = if row.nattch > 0 {
            State::Live
        } else if row.atime == 0 && age < NEW_GRACE_SECS {
            State::New
        } else {
            State::Stale
        };
        let mut os_id = format!("shmid {} key {:#010x}", row.id, row.key as u32);
        if row.perms & u32::from(os::SHM_DEST) != 0 {
            os_id.push_str(" (removed; gone when its users detach)");
        }
        segments.push(SegmentEntry {
            kind: KeyType::SystemV,
            native_key: file.map(|f| f.path.clone()),
            key_hint: file.and_then(|f| key_hint(&f.name)),
            os_id,
            size: row.size,
            attachments: row.nattch,
            lock_holders: None,
            owner_uid: row.uid,
            owner: owner_name(row.uid),
            permissions: row.perms & 0o777,
            age_secs: age as u64,
            state,
            qt_style: file.is_some(),
            foreign: file.is_none(),
            shmid: Some(row.id),
        });
    }
    for f in dir.iter().filter(|f| is_segment_file(&f.name)) {
        let lock_holders = holders.get(&(f.st.dev, f.st.ino)).copied().unwrap_or(0);
        let attachments = mappers.get(&(f.st.dev, f.st.ino)).copied().unwrap_or(0);
        let age = (now - f.st.created_secs()).max(0);
        let state = if lock_holders > 0 || attachments > 0 {
            State::Live
        } else if f.st.size == 0 && age < NEW_GRACE_SECS {
            State::New
        } else if me != 0 && f.st.uid != me {
            State::Unknown
        } else {
            State::Stale
        };
        let native = format!("/{}", f.name);
        let qt_style = f.name.starts_with(SEGMENT_PREFIX);
        let has_lock_state = lock_files.contains(posix_id(f).lock_state_name().as_str());
        segments.push(SegmentEntry {
            kind: KeyType::PosixRealtime,
            native_key: Some(native),
            key_hint: key_hint(&f.name),
            os_id: f.path.clone(),
            size: f.st.size,
            attachments,
            lock_holders: Some(lock_holders),
            owner_uid: f.st.uid,
            owner: owner_name(f.st.uid),
            permissions: f.st.mode & 0o777,
            age_secs: age as u64,
            state,
            qt_style,
            foreign: !qt_style && !has_lock_state,
            shmid: None,
        });
    }

    let mut orphans = Vec::new();
    let old_enough = |ctime_secs: i64| now - ctime_secs >= ORPHAN_GRACE_SECS;
    let unused = |f: &ShmFile| {
        holders.get(&(f.st.dev, f.st.ino)).copied().unwrap_or(0) == 0
            && mappers.get(&(f.st.dev, f.st.ino)).copied().unwrap_or(0) == 0
            && old_enough(f.st.created_secs())
    };

    // qshm lock state whose segment is gone
    let posix_alive: HashSet<SegmentId> = dir
        .iter()
        .filter(|f| is_segment_file(&f.name))
        .map(posix_id)
        .collect();
    let sysv_alive: HashSet<(i32, i32)> = shm.iter().map(|r| (r.id, r.cpid)).collect();
    for f in dir.iter().filter(|f| f.name.starts_with(LOCK_STATE_PREFIX)) {
        let alive = match SegmentId::from_lock_state_name(&f.name) {
            Some(id @ SegmentId::Posix { .. }) => posix_alive.contains(&id),
            Some(SegmentId::SystemV { shmid, cpid, .. }) => sysv_alive.contains(&(shmid, cpid)),
            None => true, // not named by qshm: leave it alone
        };
        if !alive && unused(f) {
            orphans.push(Orphan {
                kind: OrphanKind::LockState,
                key_type: KeyType::PosixRealtime,
                path: f.path.clone(),
                key_hint: None,
                detail: None,
            });
        }
    }

    // POSIX Qt semaphores whose segment is gone and that nobody has open, and glibc's
    // temporary semaphore files whose maker died
    let posix_segments: HashSet<&str> = dir.iter().map(|f| f.name.as_str()).collect();
    for f in &dir {
        if is_glibc_temporary(&f.name) && unused(f) {
            orphans.push(Orphan {
                kind: OrphanKind::Semaphore,
                key_type: KeyType::PosixRealtime,
                path: f.path.clone(),
                key_hint: None,
                detail: Some("glibc's temporary file of an unfinished sem_open".to_owned()),
            });
            continue;
        }
        let Some(sem_name) = f.name.strip_prefix("sem.") else {
            continue;
        };
        let Some(suffix) = qt_suffix(sem_name, SEMAPHORE_PREFIX) else {
            continue;
        };
        if !posix_segments.contains(format!("{SEGMENT_PREFIX}{suffix}").as_str()) && unused(f) {
            orphans.push(Orphan {
                kind: OrphanKind::Semaphore,
                key_type: KeyType::PosixRealtime,
                path: f.path.clone(),
                key_hint: key_hint(sem_name),
                detail: None,
            });
        }
    }

    // System V: Qt semaphores whose segment is gone and whose last user died, and key
    // files with no object behind them
    let shm_keys: HashSet<i32> = shm.iter().map(|r| r.key).collect();
    let sem_ids: HashMap<i32, i32> = sems.iter().map(|r| (r.key, r.id)).collect();
    let segment_alive = |suffix: &str| {
        files
            .iter()
            .any(|f| qt_suffix(&f.name, SEGMENT_PREFIX) == Some(suffix) && shm_keys.contains(&f.ftok))
    };
    for f in &files {
        if !old_enough(f.ctime) {
            continue;
        }
        if let Some(suffix) = qt_suffix(&f.name, SEMAPHORE_PREFIX) {
            match sem_ids.get(&f.ftok) {
                Some(&id) => {
                    if !segment_alive(suffix) && last_user_dead(id) {
                        orphans.push(Orphan {
                            kind: OrphanKind::Semaphore,
                            key_type: KeyType::SystemV,
                            path: f.path.clone(),
                            key_hint: key_hint(&f.name),
                            detail: Some(format!("semid {id} key {:#010x}", f.ftok as u32)),
                        });
                    }
                }
                None => orphans.push(key_file_orphan(f)),
            }
        } else if !shm_keys.contains(&f.ftok) {
            orphans.push(key_file_orphan(f));
        }
    }
    Ok(Scan { segments, orphans })
}

fn key_file_orphan(f: &KeyFile) -> Orphan {
    Orphan {
        kind: OrphanKind::KeyFile,
        key_type: KeyType::SystemV,
        path: f.path.clone(),
        key_hint: key_hint(&f.name),
        detail: None,
    }
}

/// A System V semaphore's last operator is known and no longer running. (One that
/// nobody operated on, or whose last user lives, may be in use: a `QSystemSemaphore`
/// needs no segment.)
fn last_user_dead(semid: i32) -> bool {
    matches!(os::sem_last_pid(semid), Ok(pid) if pid > 0 && !process_alive(pid))
}

/// The Qt semaphore that belongs to a segment's native key: for a Qt-style name the
/// same suffix with the semaphore prefix, else the same native key (what qshm's
/// Qt-compatible lock uses for a native key).
fn semaphore_of(key: &NativeIpcKey) -> NativeIpcKey {
    let native = key.native().replacen(SEGMENT_PREFIX, SEMAPHORE_PREFIX, 1);
    NativeIpcKey::new(native, key.kind())
}

/// What [`remove_stale`] did.
#[derive(Clone, Debug, Default)]
pub struct Removal {
    /// One line per removed object: `stale segment …`, `lock state …`, `semaphore …`,
    /// `key file …`.
    pub removed: Vec<String>,
    /// Stale segments left alone because they are not Qt's or qshm's.
    pub kept_foreign: Vec<String>,
}

/// Remove every stale Qt/qshm segment (with its lock state, Qt semaphore and key file)
/// and every orphan; with `include_foreign`, also other programs' stale segments (any
/// System V segment nobody is attached to, any file in `/dev/shm` nobody maps or
/// locks). Live segments are never touched: each is re-checked right before removal.
pub fn remove_stale(include_foreign: bool) -> io::Result<Removal> {
    let mut out = Removal::default();
    for seg in scan()?.segments.into_iter().filter(SegmentEntry::is_stale) {
        if seg.foreign && !include_foreign {
            out.kept_foreign.push(seg.os_id);
            continue;
        }
        let key = seg.native_ipc_key();
        let semaphore = key.as_ref().filter(|_| seg.qt_style).map(semaphore_of);
        let gone = match (seg.kind, seg.shmid) {
            (KeyType::SystemV, Some(id)) => {
                sys::sysv::remove_if_stale(id, seg.native_key.as_deref(), semaphore.as_ref())
            }
            (KeyType::SystemV, None) => false,
            (KeyType::PosixRealtime, _) => {
                let gone = os::cstring(&seg.os_id)
                    .is_ok_and(|c| matches!(posix::probe_existing(&c), Ok(posix::Probe::Gone)));
                if gone && let Some(sem) = &semaphore {
                    posix::remove_semaphore_if_unused(sem, None);
                }
                gone
            }
        };
        if gone {
            out.removed.push(match (&seg.native_key, seg.kind) {
                (Some(native), KeyType::SystemV) => format!("stale segment {native} ({})", seg.os_id),
                _ => format!("stale segment {}", seg.os_id),
            });
        }
    }
    // a fresh look: removing segments also removed their companions
    for orphan in scan()?.orphans {
        if remove_orphan(&orphan) {
            let detail = orphan.detail.map(|d| format!(" ({d})")).unwrap_or_default();
            out.removed
                .push(format!("{} {}{detail}", orphan.kind.as_str(), orphan.path));
        }
    }
    Ok(out)
}

/// For a POSIX key: no process has its semaphore open. (System V: never known.)
fn posix_semaphore_unused(sem: &NativeIpcKey) -> bool {
    if sem.kind() != KeyType::PosixRealtime {
        return false;
    }
    let Ok(name) =
        posix::shm_file_name(sem.native()).or_else(|_| Ok::<_, ()>(sem.native().trim_start_matches('/')))
    else {
        return false;
    };
    let path = format!("{}/sem.{name}", posix::SHM_DIR);
    match os::cstring(&path).and_then(|c| os::lstat(&c)) {
        Ok(st) => !mapped_by_others(&st),
        Err(_) => true,
    }
}

/// Remove one orphan after checking again that it is one. Returns whether it was removed.
fn remove_orphan(orphan: &Orphan) -> bool {
    let Ok(c_path) = os::cstring(&orphan.path) else {
        return false;
    };
    match (orphan.kind, orphan.key_type) {
        (OrphanKind::LockState, _) => {
            // a lock state nobody has open or mapped any more (a lease probe)
            let Ok(file) = NamedFile::open(&c_path, libc::O_RDONLY, 0) else {
                return false;
            };
            let alone = file.alone().unwrap_or_else(|| !mapped_by_others(&file.stat));
            let removed = alone && matches!(file.unlink_if_still_named(), Ok(true));
            file.release();
            removed
        }
        (OrphanKind::Semaphore, KeyType::PosixRealtime)
            if orphan.key_hint.is_none() && orphan.detail.is_some() =>
        {
            let Ok(file) = NamedFile::open(&c_path, libc::O_RDONLY, 0) else {
                return false;
            };
            let alone = file.alone().unwrap_or_else(|| !mapped_by_others(&file.stat));
            let removed = alone && matches!(file.unlink_if_still_named(), Ok(true));
            file.release();
            removed
        }
        (OrphanKind::Semaphore, KeyType::PosixRealtime) => {
            let Some(name) = orphan
                .path
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix("sem."))
            else {
                return false;
            };
            let sem = NativeIpcKey::new(format!("/{name}"), KeyType::PosixRealtime);
            posix_semaphore_unused(&sem) && posix::remove_semaphore_if_unused(&sem, None)
        }
        (OrphanKind::Semaphore, KeyType::SystemV) => {
            // still ownerless, and still without its segment?
            let Ok(skey) = sys::sysv::ftok_key(&c_path) else {
                return false;
            };
            let segment_key = orphan.path.replacen(SEMAPHORE_PREFIX, SEGMENT_PREFIX, 1);
            let segment = NativeIpcKey::new(segment_key, KeyType::SystemV);
            match os::semget(skey, 0) {
                Ok(id) if last_user_dead(id) && !exists(&segment) => {
                    let _ = os::sem_remove(id);
                    if os::semget(skey, 0).is_err() {
                        let _ = os::unlink(&c_path);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        }
        (OrphanKind::KeyFile, _) => {
            // qshm's create/attach/detach hold the key file's exclusive flock
            let Ok(fd) = os::open(&c_path, libc::O_RDONLY | libc::O_NOFOLLOW, 0) else {
                return false;
            };
            let Ok(file) = os::fstat(&fd) else { return false };
            if !matches!(os::flock(&fd, libc::LOCK_EX | libc::LOCK_NB), Ok(true))
                || !matches!(os::lstat(&c_path), Ok(now) if now.same_file(&file))
            {
                return false;
            }
            let in_use = sys::sysv::ftok_key(&c_path)
                .map(|k| os::shmget(k, 0, 0).is_ok() || os::semget(k, 0).is_ok())
                .unwrap_or(true);
            !in_use && os::unlink(&c_path).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hints_are_the_letters_qt_kept() {
        assert_eq!(
            key_hint("qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3").as_deref(),
            Some("market")
        );
        assert_eq!(
            key_hint("qipc_systemsem_ab3ec69c85a4ff96830024afeef2d4e512181c8f7b").as_deref(),
            Some("ab")
        );
        assert_eq!(
            key_hint("qipc_sharedmemory_3ec69c85a4ff96830024afeef2d4e512181c8f7").as_deref(),
            None,
            "39 characters: not a hash"
        );
        assert_eq!(key_hint("other"), None);
        assert_eq!(key_hint("qipc_sharedmemory_short"), None);
        assert_eq!(
            key_hint("qipc_sharedmemory_a-b5c9f73af73334ffe350c60ec076e5744db0ecda3"),
            None,
            "Qt keeps only letters"
        );
    }

    #[test]
    fn key_hint_of_every_derived_key_is_its_letters() {
        for key in ["market", "a/b", "héllo wörld", "x1y2", "123"] {
            let letters: String = key.chars().filter(char::is_ascii_alphabetic).collect();
            for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
                let native = crate::SharedMemory::legacy_native_key(key, kind);
                let name = native.native().rsplit('/').next().unwrap_or("");
                assert_eq!(key_hint(name), Some(letters.clone()), "{key:?} {kind}");
            }
        }
    }

    #[test]
    fn semaphore_of_swaps_the_prefix() {
        let k = NativeIpcKey::new("/qipc_sharedmemory_x0000", KeyType::PosixRealtime);
        assert_eq!(semaphore_of(&k).native(), "/qipc_systemsem_x0000");
        let k = NativeIpcKey::new("/custom", KeyType::PosixRealtime);
        assert_eq!(semaphore_of(&k).native(), "/custom");
    }

    #[test]
    fn flock_holders_and_mappers_are_seen_by_device_and_inode() {
        // in /dev/shm, where the segments are (other file systems may report other devices)
        struct Remove(String);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let path = format!("{}/qshm-inspect-test-{}", posix::SHM_DIR, std::process::id());
        let _remove = Remove(path.clone());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let fd: std::os::fd::OwnedFd = file.into();
        assert!(os::flock(&fd, libc::LOCK_SH).unwrap());
        let st = os::fstat(&fd).unwrap();
        assert_eq!(flock_holders().get(&(st.dev, st.ino)).copied(), Some(1));
        assert_eq!(shm_mappers().get(&(st.dev, st.ino)), None);
        os::ftruncate(&fd, 4096).unwrap();
        use std::os::fd::AsRawFd;
        let ptr = os::mmap_shared(fd.as_raw_fd(), 4096, false).unwrap();
        assert_eq!(
            shm_mappers().get(&(st.dev, st.ino)).copied(),
            Some(1),
            "this process maps it"
        );
        // SAFETY: ptr is the 4096-byte mapping made just above, used by nobody else.
        unsafe { os::munmap(ptr, 4096) }.unwrap();
        drop(fd);
        let _ = std::fs::remove_file(&path);
    }
}
