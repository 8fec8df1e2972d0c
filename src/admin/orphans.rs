//! What crashed programs leave behind without a segment: found in one [`Look`], and
//! removed each after checking again, right before, that it still is an orphan.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;

use super::look::{Look, ShmFile, qt_name};
use super::{Orphan, OrphanKind};
use crate::key::{IpcType, KeyType, LegacyName, NativeIpcKey};
use crate::os;
use crate::sys::lock_state::{LOCK_STATE_PREFIX, LockState, SegmentId};
use crate::sys::named_file::{FileLock, NamedFile};
use crate::sys::procfs;
use crate::sys::{posix, sysv};

/// Every orphan the look shows.
pub(super) fn find(look: &Look) -> Vec<Orphan> {
    let mut out = lock_states(look);
    out.extend(posix_semaphores(look));
    out.extend(system_v(look));
    out
}

fn orphan(look: &Look, kind: OrphanKind, path: &str, name: &str, created_ns: i64) -> Orphan {
    Orphan {
        kind,
        path: path.into(),
        qt_name: qt_name(name),
        age: look.age(created_ns),
    }
}

fn created_ns(st: &os::FileStat) -> i64 {
    st.btime_ns.unwrap_or(st.ctime_ns)
}

/// Unused files in `/dev/shm`, young ones included ([`Orphan::is_new`] tells them; they
/// may be work in progress, and removal leaves them alone).
fn unused(look: &Look) -> impl Iterator<Item = &ShmFile> {
    look.files.iter().filter(|f| look.unused(f.file_id()))
}

/// Whether the segment lock state `id` belongs to is gone (`posix_alive`: the identities
/// of the POSIX segments there are).
fn segment_gone(id: SegmentId, posix_alive: &HashSet<SegmentId>) -> bool {
    match id {
        SegmentId::Posix { .. } => !posix_alive.contains(&id),
        SegmentId::SystemV { .. } => sysv::lock_state_orphaned(id),
    }
}

/// qshm lock states whose segment is gone and that nobody maps, and second names of POSIX
/// semaphores (`sys/posix/semaphore_keep.rs`) without their lock state that nobody has open.
fn lock_states(look: &Look) -> Vec<Orphan> {
    let posix_alive: HashSet<SegmentId> = look
        .files
        .iter()
        .filter(|f| f.is_segment())
        .map(ShmFile::id)
        .collect();
    let names: HashSet<&str> = look.files.iter().map(|f| f.name.as_str()).collect();
    unused(look)
        .filter_map(|f| {
            if let Some(id) = SegmentId::from_semaphore_keep_name(&f.name) {
                return (!names.contains(id.lock_state_name().as_str())).then(|| {
                    let kind = OrphanKind::LockState(KeyType::PosixRealtime);
                    orphan(look, kind, &f.path, &f.name, created_ns(&f.st))
                });
            }
            let id = SegmentId::from_lock_state_name(&f.name)?;
            let kind = match id {
                SegmentId::Posix { .. } => KeyType::PosixRealtime,
                SegmentId::SystemV { .. } => KeyType::SystemV,
            };
            segment_gone(id, &posix_alive).then(|| {
                let kind = OrphanKind::LockState(kind);
                orphan(look, kind, &f.path, &f.name, created_ns(&f.st))
            })
        })
        .collect()
}

/// The name of a glibc `sem_open` temporary file: `sem.` and six characters of glibc's
/// alphabet. (A semaphore someone named `/aB3xYz` has such a name too.)
pub(super) fn is_glibc_temporary(name: &str) -> bool {
    name.strip_prefix("sem.")
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The POSIX segment name of the Qt semaphore file `sem.<name>`, if Qt derived its name.
fn segment_of_semaphore(file_name: &str) -> Option<String> {
    let name = LegacyName::parse(file_name.strip_prefix("sem.")?)?;
    (name.ipc == IpcType::SystemSemaphore).then(|| name.for_ipc(IpcType::SharedMemory))
}

/// Qt POSIX semaphores whose segment is gone, and glibc's temporary names of semaphores,
/// that nobody maps.
fn posix_semaphores(look: &Look) -> Vec<Orphan> {
    let names: HashSet<&str> = look.files.iter().map(|f| f.name.as_str()).collect();
    unused(look)
        .filter_map(|f| {
            // glibc makes its temporary, links it to the semaphore's name and unlinks it;
            // one with a second name is a leftover of a `sem_open` killed in between,
            // whose semaphore lives on under that name. With one name it cannot be told
            // from a semaphore named with six letters and digits.
            let kind = if is_glibc_temporary(&f.name) && f.st.nlink > 1 {
                OrphanKind::UnfinishedSemaphore
            } else if is_glibc_temporary(&f.name) {
                OrphanKind::MaybeUnfinishedSemaphore
            } else if segment_of_semaphore(&f.name).is_some_and(|seg| !names.contains(seg.as_str())) {
                OrphanKind::PosixSemaphore
            } else {
                return None;
            };
            let name = f.name.strip_prefix("sem.").unwrap_or(&f.name);
            Some(orphan(look, kind, &f.path, name, created_ns(&f.st)))
        })
        .collect()
}

/// A System V semaphore's last user is known and no longer running. (One that nobody
/// operated on, or whose last user lives, may be in use: a `QSystemSemaphore` needs no
/// segment.) The kernel gives that pid in this process's PID namespace (0 for a process it
/// cannot see there), so `/proc` is asked only when it lists this namespace.
fn last_user_dead(semid: i32) -> bool {
    matches!(os::sem_last_pid(semid), Ok(pid) if pid > 0 && procfs::lists_own_namespace() && !procfs::alive(pid))
}

/// The key file of the segment whose semaphore's key file is `path`, if Qt named it.
fn segment_key_file(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    let name = LegacyName::parse(name).filter(|n| n.ipc == IpcType::SystemSemaphore)?;
    Some(format!("{dir}/{}", name.for_ipc(IpcType::SharedMemory)))
}

/// System V: Qt semaphores whose segment is gone and whose last user died, and Qt key
/// files with no object behind them.
fn system_v(look: &Look) -> Vec<Orphan> {
    // by key file (the numeric key without its top byte, the ftok project id): a key file
    // is in use under any project id
    let file_bits = |key: i32| key & 0x00ff_ffff;
    let shm_keys: HashSet<i32> = look
        .shm
        .iter()
        .filter(|r| r.key != 0)
        .map(|r| file_bits(r.key))
        .collect();
    let sem_ids: HashMap<i32, (i32, i32)> = look
        .sems
        .iter()
        .filter(|r| r.key != 0)
        .map(|r| (file_bits(r.key), (r.key, r.id)))
        .collect();
    let segment_alive = |path: &str| {
        look.key_files
            .iter()
            .any(|k| k.path == path && shm_keys.contains(&file_bits(k.ftok)))
    };
    let mut out = Vec::new();
    for f in &look.key_files {
        let created = created_ns(&f.st);
        let kind = match (segment_key_file(&f.path), sem_ids.get(&file_bits(f.ftok))) {
            (Some(segment), Some(&(key, semid))) => (!segment_alive(&segment) && last_user_dead(semid))
                .then_some(OrphanKind::SystemVSemaphore { semid, key }),
            (Some(_), None) => Some(OrphanKind::KeyFile),
            // a segment's key file; a semaphore at its key uses it too (Qt's lock of a
            // native key, or a QSystemSemaphore of the same name)
            (None, semaphore) => {
                (!shm_keys.contains(&file_bits(f.ftok)) && semaphore.is_none()).then_some(OrphanKind::KeyFile)
            }
        };
        if let Some(kind) = kind {
            out.push(orphan(look, kind, &f.path, &f.name, created));
        }
    }
    out
}

/// Remove one orphan after checking again that it is one. Returns whether it was removed.
pub(super) fn remove(orphan: &Orphan) -> bool {
    let Some(path) = orphan.path.to_str() else {
        return false;
    };
    let Ok(c_path) = os::cstring(path) else {
        return false;
    };
    match orphan.kind {
        OrphanKind::LockState(_) => {
            let name = path.rsplit('/').next().unwrap_or(path);
            if let Some(id) = SegmentId::from_semaphore_keep_name(name) {
                // a second name whose lock state never got its name (its creator was
                // killed in between); a semaphore someone has open keeps it
                return LockState::missing(id) && remove_if_unused(&c_path);
            }
            let still = match SegmentId::from_lock_state_name(name) {
                // a POSIX segment's identity (inode and birth time) never comes back
                Some(SegmentId::Posix { .. }) => true,
                Some(id) => sysv::lock_state_orphaned(id),
                None => false,
            };
            let removed = still && name.starts_with(LOCK_STATE_PREFIX) && remove_if_unused(&c_path);
            // and the second name of its POSIX semaphore (`sys/posix/semaphore_keep.rs`)
            if let (true, Some(id)) = (removed, SegmentId::from_lock_state_name(name)) {
                LockState::remove_second_name(id);
            }
            removed
        }
        OrphanKind::UnfinishedSemaphore => remove_glibc_temporary(&c_path),
        OrphanKind::MaybeUnfinishedSemaphore => remove_if_unused(&c_path),
        OrphanKind::PosixSemaphore => remove_posix_semaphore(path),
        OrphanKind::SystemVSemaphore { key, .. } => remove_sysv_semaphore(path, &c_path, key),
        OrphanKind::KeyFile => remove_key_file(&c_path),
    }
}

/// Unlink a file in `/dev/shm` that no other process has open (a lease probe) or maps.
fn remove_if_unused(c_path: &CString) -> bool {
    let Ok(file) = NamedFile::open(c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let removed = posix::unused_by_others(&file) && matches!(file.unlink_if_still_named(), Ok(true));
    file.release();
    removed
}

/// Unlink glibc's temporary name of a semaphore that has its real name too (looked at
/// again now: had the real name gone meanwhile, the temporary would be its only name).
fn remove_glibc_temporary(c_path: &CString) -> bool {
    let Ok(file) = NamedFile::open(c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let removed = os::fstat(&file.fd).is_ok_and(|st| st.nlink > 1)
        && posix::unused_by_others(&file)
        && matches!(file.unlink_if_still_named(), Ok(true));
    file.release();
    removed
}

fn remove_posix_semaphore(path: &str) -> bool {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let Some(segment) = segment_of_semaphore(file_name) else {
        return false;
    };
    let segment_path = format!("{}/{segment}", crate::sys::SHM_DIR);
    let segment_gone = os::cstring(&segment_path)
        .and_then(|p| os::lstat(&p))
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT));
    let name = file_name.strip_prefix("sem.").unwrap_or(file_name);
    let sem = NativeIpcKey::new(format!("/{name}"), KeyType::PosixRealtime);
    segment_gone && posix::remove_semaphore_if_unused(&sem, None)
}

/// A Qt System V semaphore (numeric key `key`) still without its segment, and still
/// ownerless: removed, then its key file.
fn remove_sysv_semaphore(path: &str, c_path: &CString, key: i32) -> bool {
    let Some(segment) = segment_key_file(path) else {
        return false;
    };
    // the key file still gives this key (under the project id the key carries)
    let kind = super::look::system_v_type_of(key);
    let project_id = kind.ftok_project_id().unwrap_or(crate::key::SYSV_PROJECT_ID);
    if sysv::ftok_key(c_path, project_id).ok() != Some(key) {
        return false;
    }
    let segment = NativeIpcKey::new(segment, kind);
    match os::semget(key, 0) {
        Ok(id) if last_user_dead(id) && !super::look::exists(&segment) => {
            let _ = os::sem_remove(id);
            if os::semget(key, 0).is_ok() {
                return false;
            }
            // another project id may use the same key file
            if !sysv::used_under_any_id(c_path) {
                let _ = os::unlink(c_path);
            }
            true
        }
        _ => false,
    }
}

/// A Qt key file with nothing at its `ftok` key, under its exclusive `flock` (which
/// qshm's create, attach and detach hold).
fn remove_key_file(c_path: &CString) -> bool {
    let Ok(file) = NamedFile::open(c_path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    if !matches!(file.try_lock(FileLock::Exclusive), Ok(true)) || !file.still_named() {
        return false;
    }
    let in_use = sysv::used_under_any_id(c_path);
    !in_use && matches!(file.unlink_if_still_named(), Ok(true))
}
