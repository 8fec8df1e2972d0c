//! Machine-wide inspection for tools (`qshm ls`, `qshm rm --stale`): every System V and
//! POSIX segment, which ones are Qt-style, which are stale, and leftovers.
//!
//! Nothing here takes locks that live users could trip over: flock holders are read from
//! `/proc/locks` and mappers from `/proc/*/maps`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::key::{KeyType, NativeIpcKey};
use crate::sys::{self, os, posix};

/// One segment found on the machine.
#[derive(Clone, Debug)]
pub struct SegmentEntry {
    /// System V or POSIX.
    pub kind: KeyType,
    /// The native key, when known (System V: the key file that maps to it).
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
    /// POSIX: processes holding qshm's attachment flock (None for System V).
    pub lock_holders: Option<u64>,
    /// Owner's uid and name.
    pub owner_uid: u32,
    pub owner: String,
    /// Permission bits.
    pub permissions: u32,
    /// Seconds since creation (System V) or last change (POSIX).
    pub age_secs: u64,
    /// No live user: every user died or (POSIX) Qt left it behind.
    pub stale: bool,
    /// Named like Qt's / qshm's segments (`qipc_sharedmemory_…`).
    pub qt_style: bool,
    shmid: Option<i32>,
}

impl SegmentEntry {
    /// The key to use with [`SharedMemory::with_native_key`](crate::SharedMemory::with_native_key).
    pub fn native_ipc_key(&self) -> Option<NativeIpcKey> {
        self.native_key
            .as_ref()
            .map(|k| NativeIpcKey::new(k.clone(), self.kind))
    }
}

/// A file or object left without its segment.
#[derive(Clone, Debug)]
pub struct Leftover {
    /// What it is: "lock state", "key file".
    pub what: &'static str,
    /// Its path.
    pub path: String,
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
        .strip_prefix("qipc_sharedmemory_")
        .or_else(|| name.strip_prefix("qipc_systemsem_"))?;
    let letters = rest.get(..rest.len().checked_sub(40)?)?;
    Some(letters.to_owned())
}

/// Qt key files in the temp directory, by the System V key `ftok` gives them.
fn key_files() -> HashMap<i32, String> {
    let dir = crate::key::qt_temp_dir();
    let mut map = HashMap::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return map;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("qipc_") {
            continue;
        }
        let path = format!("{dir}/{name}");
        if let Ok(c) = os::cstring(&path)
            && let Ok(key) = sys::sysv::ftok_key(&c)
        {
            map.insert(key, path);
        }
    }
    map
}

/// Lines of `/proc/sysvipc/shm` (or `sem`): whitespace-separated fields.
fn sysv_table(table: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Inodes under `/dev/shm` with flock holders, and how many (from `/proc/locks`).
fn flock_holders() -> HashMap<u64, u64> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut map = HashMap::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  READ  1234 00:1b:56 0 EOF" ("->" marks waiters)
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.get(2) == Some(&"->") {
            continue;
        }
        if let Some(ino) = fields
            .get(5)
            .and_then(|d| d.rsplit(':').next())
            .and_then(|i| i.parse().ok())
        {
            *map.entry(ino).or_insert(0) += 1;
        }
    }
    map
}

/// For every file under `/dev/shm`: the number of processes mapping it (by inode).
fn shm_mappers() -> HashMap<u64, u64> {
    let mut map: HashMap<u64, u64> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut seen = HashSet::new();
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(ino), Some(path)) = (f.nth(4), f.next()) else {
                continue;
            };
            if path.starts_with(posix::SHM_DIR)
                && let Ok(ino) = ino.parse::<u64>()
                && seen.insert(ino)
            {
                *map.entry(ino).or_insert(0) += 1;
            }
        }
    }
    map
}

/// Every shared-memory segment on the machine (all of System V; POSIX files in
/// `/dev/shm` other than semaphores and qshm lock state).
pub fn segments() -> io::Result<Vec<SegmentEntry>> {
    let now = now_secs();
    let files = key_files();
    let mut out = Vec::new();
    for f in sysv_table("shm") {
        let field = |i: usize| f.get(i).map(String::as_str).unwrap_or("0");
        let key: i32 = field(0).parse().unwrap_or(0);
        let nattch: u64 = field(6).parse().unwrap_or(0);
        let uid: u32 = field(7).parse().unwrap_or(0);
        let ctime: i64 = field(13).parse().unwrap_or(0);
        let native = files.get(&key).cloned();
        let name = native.as_deref().and_then(|p| p.rsplit('/').next()).unwrap_or("");
        out.push(SegmentEntry {
            kind: KeyType::SystemV,
            key_hint: key_hint(name),
            qt_style: name.starts_with("qipc_sharedmemory_"),
            native_key: native.clone(),
            os_id: format!("shmid {} key {:#010x}", field(1), key as u32),
            size: field(3).parse().unwrap_or(0),
            attachments: nattch,
            lock_holders: None,
            owner_uid: uid,
            owner: owner_name(uid),
            permissions: u32::from_str_radix(field(2), 8).unwrap_or(0) & 0o777,
            age_secs: (now - ctime).max(0) as u64,
            stale: nattch == 0,
            shmid: field(1).parse().ok(),
        });
    }
    let holders = flock_holders();
    let mappers = shm_mappers();
    for entry in std::fs::read_dir(posix::SHM_DIR)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("sem.") || name.starts_with("qshm-lock.") {
            continue;
        }
        let path = format!("{}/{name}", posix::SHM_DIR);
        let Ok(st) = os::cstring(&path).and_then(|c| os::lstat(&c)) else {
            continue;
        };
        if st.mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let lock_holders = holders.get(&st.ino).copied().unwrap_or(0);
        let attachments = mappers.get(&st.ino).copied().unwrap_or(0);
        out.push(SegmentEntry {
            kind: KeyType::PosixRealtime,
            native_key: Some(format!("/{name}")),
            key_hint: key_hint(name),
            qt_style: name.starts_with("qipc_sharedmemory_"),
            os_id: path,
            size: st.size,
            attachments,
            lock_holders: Some(lock_holders),
            owner_uid: st.uid,
            owner: owner_name(st.uid),
            permissions: st.mode & 0o777,
            age_secs: (now - st.ctime_ns / 1_000_000_000).max(0) as u64,
            stale: lock_holders == 0 && attachments == 0,
            shmid: None,
        });
    }
    Ok(out)
}

/// qshm lock-state files and Qt key files whose segment is gone (and nobody maps).
pub fn leftovers() -> io::Result<Vec<Leftover>> {
    let segments = segments()?;
    let used: HashSet<String> = segments
        .iter()
        .filter_map(|s| s.native_ipc_key())
        .map(|k| crate::lock::companion_name(&k))
        .collect();
    let mappers = shm_mappers();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(posix::SHM_DIR)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("qshm-lock.") || used.contains(name) {
            continue;
        }
        let path = format!("{}/{name}", posix::SHM_DIR);
        let Ok(st) = os::cstring(&path).and_then(|c| os::lstat(&c)) else {
            continue;
        };
        if mappers.get(&st.ino).copied().unwrap_or(0) == 0 {
            out.push(Leftover {
                what: "lock state",
                path,
            });
        }
    }
    let live_keys: HashSet<String> = segments.iter().filter_map(|s| s.native_key.clone()).collect();
    let now = now_secs();
    for (_, path) in key_files() {
        let name = path.rsplit('/').next().unwrap_or("");
        if !name.starts_with("qipc_sharedmemory_") || live_keys.contains(&path) {
            continue;
        }
        // skip files a creator may be using this very moment
        let Ok(st) = os::cstring(&path).and_then(|c| os::lstat(&c)) else {
            continue;
        };
        if now - st.ctime_ns / 1_000_000_000 >= 5 {
            out.push(Leftover {
                what: "key file",
                path,
            });
        }
    }
    Ok(out)
}

/// The Qt semaphore that belongs to a segment's native key (same suffix, semaphore prefix;
/// for a non-Qt name, the same native key).
fn semaphore_of(key: &NativeIpcKey) -> NativeIpcKey {
    let native = key.native().replacen("qipc_sharedmemory_", "qipc_systemsem_", 1);
    NativeIpcKey::new(native, key.kind())
}

/// Remove every stale segment (with its lock state, Qt semaphore and key file) and every
/// leftover. Live segments are never touched. Returns what was removed.
pub fn remove_stale() -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for seg in segments()?.into_iter().filter(|s| s.stale) {
        let key = seg.native_ipc_key();
        let mut cleanup = || {
            if let Some(key) = &key {
                crate::lock::remove_companion(key);
                sys::remove_semaphore_if_exists(&semaphore_of(key));
            }
        };
        let gone = match seg.kind {
            KeyType::SystemV => match seg.shmid {
                Some(id) => sys::sysv::remove_if_stale(id, seg.native_key.as_deref(), &mut cleanup),
                None => false,
            },
            KeyType::PosixRealtime => match os::cstring(&seg.os_id) {
                Ok(c) => matches!(
                    posix::probe_existing(&seg.os_id, &c, &mut cleanup),
                    Ok(posix::Probe::Gone)
                ),
                Err(_) => false,
            },
        };
        if gone {
            removed.push(format!("stale segment {}", seg.os_id));
        }
    }
    for left in leftovers()? {
        if os::cstring(&left.path).and_then(|c| os::unlink(&c)).is_ok() {
            removed.push(format!("{} {}", left.what, left.path));
        }
    }
    Ok(removed)
}

/// Processes mapping the POSIX segment file `path` right now.
pub fn posix_mappers(path: &str) -> u64 {
    let Ok(st) = os::cstring(path).and_then(|c| os::lstat(&c)) else {
        return 0;
    };
    shm_mappers().get(&st.ino).copied().unwrap_or(0)
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
        assert_eq!(key_hint("other"), None);
        assert_eq!(key_hint("qipc_sharedmemory_short"), None);
    }

    #[test]
    fn semaphore_of_swaps_the_prefix() {
        let k = NativeIpcKey::new("/qipc_sharedmemory_x0000", KeyType::PosixRealtime);
        assert_eq!(semaphore_of(&k).native(), "/qipc_systemsem_x0000");
        let k = NativeIpcKey::new("/custom", KeyType::PosixRealtime);
        assert_eq!(semaphore_of(&k).native(), "/custom");
    }
}
