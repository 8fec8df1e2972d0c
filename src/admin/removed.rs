//! Segments of a key that were removed while processes still map them (`ipcrm`, `rm`,
//! `qshm rm`, systemd-logind's `RemoveIPC=yes`): the processes carry on with a segment
//! nobody can find any more. Found through `/proc/*/maps`, where the kernel keeps naming
//! them after they lost their name: a POSIX file as `/dev/shm/NAME (deleted)`, a System V
//! segment as `/SYSV<its key at creation> (deleted)` with its id as the inode.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::OsId;
use crate::key::{KeyType, NativeIpcKey};
use crate::sys::procfs;
use crate::sys::{posix, sysv};

/// A removed segment of a key that processes still map ([`removed_in_use`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemovedInUse {
    /// What it was: its System V id (marked removed), or its former `/dev/shm` file and inode.
    pub os_id: OsId,
    /// Its size in bytes, where the kernel still says (System V).
    pub size: Option<u64>,
    /// The processes that map it (among those this user may look at), in order.
    pub mapped_by: Vec<u32>,
}

/// The segments of `key` that were removed behind their users' back and are still mapped
/// by processes this user may inspect (root: all). Nobody can attach to them any more;
/// the kernel frees each when its last process detaches or exits.
///
/// System V segments are found by the numeric key of the key file, so only while the key
/// file exists (`ipcrm` and `RemoveIPC=yes` leave it; `qshm rm` removes it). Reads every
/// process's maps: a tool's call, not a program's. The same key's live segment is not
/// listed.
pub fn removed_in_use(key: &NativeIpcKey) -> Vec<RemovedInUse> {
    match key.kind() {
        KeyType::PosixRealtime => posix_removed(key),
        KeyType::SystemV | KeyType::SystemVWithId(_) => system_v_removed(key),
    }
}

fn posix_removed(key: &NativeIpcKey) -> Vec<RemovedInUse> {
    let Ok(name) = posix::shm_file_name(key.native()) else {
        return Vec::new();
    };
    let path = format!("{}/{name}", crate::sys::SHM_DIR);
    let deleted = format!("{path} (deleted)");
    let mut found: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    procfs::visit_mappings(|pid, _dev, ino, mapped| {
        if mapped == deleted {
            push_pid(found.entry(ino).or_default(), pid);
        }
        false
    });
    found
        .into_iter()
        .map(|(inode, mapped_by)| RemovedInUse {
            os_id: OsId::Posix {
                path: PathBuf::from(&path),
                inode,
            },
            size: None,
            mapped_by,
        })
        .collect()
}

fn system_v_removed(key: &NativeIpcKey) -> Vec<RemovedInUse> {
    let Some(numeric) = sysv::numeric_key(key) else {
        return Vec::new();
    };
    let name = format!("/SYSV{:08x} (deleted)", numeric as u32);
    let mut found: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    procfs::visit_mappings(|pid, _dev, ino, mapped| {
        if mapped == name {
            push_pid(found.entry(ino).or_default(), pid);
        }
        false
    });
    let table = procfs::shm_table();
    found
        .into_iter()
        .filter_map(|(shmid, mapped_by)| {
            let row = table.iter().find(|row| i64::from(row.id) == shmid as i64)?;
            // the key's live segment is mapped under the same name: only removed ones
            let removed = row.perms & u32::from(crate::os::SHM_DEST) != 0 || row.key == 0;
            removed.then_some(RemovedInUse {
                os_id: OsId::SystemV {
                    shmid: row.id,
                    key: row.key,
                    removed: true,
                },
                size: Some(row.size),
                mapped_by,
            })
        })
        .collect()
}

/// Add `pid` once (a process maps a segment in one or more places).
fn push_pid(pids: &mut Vec<u32>, pid: u32) {
    if pids.last() != Some(&pid) {
        pids.push(pid);
    }
}
