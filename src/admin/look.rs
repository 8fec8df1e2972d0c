//! One look at the machine: the System V tables, Qt's key files, `/dev/shm`, who locks
//! and who maps what; and the segments it shows.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lock_status::{self, Probe};
use super::{Maker, NEW_GRACE, OsId, QtName, Segment, State};
use crate::key::{IpcType, KeyType, LegacyName, NativeIpcKey, qt_temp_dir};
use crate::os::{self, FileStat};
use crate::sys::lock_state::{LOCK_STATE_PREFIX, LockState, Origin, Peek, SegmentId, name_tag};
use crate::sys::procfs::{self, SemRow, ShmRow};
use crate::sys::{posix, sysv};

/// A Qt key file in Qt's temporary directory, with the System V key `ftok` gives it
/// for Qt's project id `'Q'` (other ids change only the top byte: [`same_key_file`]).
pub(super) struct KeyFile {
    pub path: String,
    pub name: String,
    pub ftok: i32,
    pub st: FileStat,
}

/// Whether two numeric System V keys come from one key file, whatever their `ftok`
/// project ids: `ftok` puts the id in the top byte and the file in the rest. (Key 0 is
/// `IPC_PRIVATE`, and every removed segment's: never a key file's.)
pub(super) fn same_key_file(a: i32, b: i32) -> bool {
    a != 0 && b != 0 && (a ^ b) & 0x00ff_ffff == 0
}

/// The key type of a numeric System V key made from a key file: its `ftok` project id
/// is the top byte.
pub(super) fn system_v_type_of(key: i32) -> KeyType {
    KeyType::system_v((key as u32 >> 24) as u8).unwrap_or(KeyType::SystemV)
}

/// A regular file in `/dev/shm`.
pub(super) struct ShmFile {
    pub name: String,
    pub path: String,
    pub st: FileStat,
}

impl ShmFile {
    /// A segment: neither a semaphore (`sem.…`) nor qshm's lock state.
    pub(super) fn is_segment(&self) -> bool {
        !self.name.starts_with("sem.") && !self.name.starts_with(LOCK_STATE_PREFIX)
    }

    /// The identity its lock state is named after.
    pub(super) fn id(&self) -> SegmentId {
        SegmentId::Posix {
            name_tag: name_tag(&self.name),
            ino: self.st.ino,
            btime_ns: self.st.btime_ns.unwrap_or(self.st.ctime_ns),
        }
    }

    pub(super) fn file_id(&self) -> (u64, u64) {
        (self.st.dev, self.st.ino)
    }
}

/// Settle the lock status of every draft that needs a look ([`lock_status::settle`]).
pub(super) fn settle(drafts: &mut [Draft]) {
    let locks = drafts
        .iter_mut()
        .filter_map(|d| Some((d.probe.as_ref()?, &mut d.segment.lock)));
    lock_status::settle(locks);
}

/// A segment as found, with what is needed to settle its lock and to remove it.
pub(super) struct Draft {
    pub segment: Segment,
    /// Qt's semaphore its Qt-compatible lock takes, when there is one.
    pub semaphore: Option<NativeIpcKey>,
    /// How to find out the lock's status, when a look at the semaphore is needed.
    pub probe: Option<Probe>,
}

/// What the machine looked like.
pub(super) struct Look {
    pub now: SystemTime,
    pub shm: Vec<ShmRow>,
    pub sems: Vec<SemRow>,
    pub key_files: Vec<KeyFile>,
    /// `flock` holders by (device, inode).
    pub flocks: HashMap<(u64, u64), u64>,
    /// Processes mapping each file in `/dev/shm`, by (device, inode).
    pub mappers: HashMap<(u64, u64), u64>,
    /// `/proc` lists every process of the machine ([`procfs::shows_every_process`]): not
    /// in a container, where other namespaces' mappers are missing from `mappers`.
    pub every_process: bool,
    pub files: Vec<ShmFile>,
}

impl Look {
    pub(super) fn take() -> io::Result<Look> {
        // The tables first, the key files after: a key file made after the table was
        // read belongs to a segment that is not in it, never the other way round.
        let shm = procfs::shm_table();
        let sems = procfs::sem_table();
        Ok(Look {
            now: SystemTime::now(),
            shm,
            sems,
            key_files: key_files(),
            flocks: procfs::flock_holders(),
            mappers: procfs::mappers_under(crate::sys::SHM_DIR),
            every_process: procfs::shows_every_process(),
            files: shm_dir_files()?,
        })
    }

    /// Time from `created_ns` (nanoseconds since the epoch) to the look.
    pub(super) fn age(&self, created_ns: i64) -> Duration {
        let now = self.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_nanos(u64::try_from(created_ns).unwrap_or(0)))
    }

    /// Nobody maps the file or holds a `flock` on it.
    pub(super) fn unused(&self, file: (u64, u64)) -> bool {
        !self.flocks.contains_key(&file) && !self.mappers.contains_key(&file)
    }

    /// Every segment.
    pub(super) fn segments(&self) -> Vec<Draft> {
        let sysv = self.shm.iter().map(|row| {
            // key 0 is IPC_PRIVATE (and every removed segment): never a key file's
            let key_file = self.key_files.iter().find(|f| {
                same_key_file(f.ftok, row.key) && LegacyName::parse(&f.name).is_some_and(is_segment_name)
            });
            self.sysv_draft(row, key_file.map(|f| f.path.as_str()), None)
        });
        let posix = self
            .files
            .iter()
            .filter(|f| f.is_segment())
            .map(|f| self.posix_draft(f, None));
        sysv.collect::<Vec<_>>().into_iter().chain(posix).collect()
    }

    /// The segment of `key`, with the semaphore this key's lock takes.
    pub(super) fn segment_of(&self, key: &NativeIpcKey) -> Option<Draft> {
        let semaphore = Some(crate::key::semaphore_key(key));
        match key.kind() {
            KeyType::SystemV | KeyType::SystemVWithId(_) => {
                let numeric = sysv::numeric_key(key)?;
                let row = self.shm.iter().find(|r| r.key == numeric && r.key != 0)?;
                Some(self.sysv_draft(row, Some(key.native()), semaphore))
            }
            KeyType::PosixRealtime => {
                let name = posix::shm_file_name(key.native()).ok()?;
                let file = self.files.iter().find(|f| f.name == name)?;
                Some(self.posix_draft(file, semaphore))
            }
        }
    }

    fn sysv_draft(&self, row: &ShmRow, key_file: Option<&str>, semaphore: Option<NativeIpcKey>) -> Draft {
        let id = SegmentId::SystemV {
            key: row.key,
            shmid: row.id,
        };
        let peek = LockState::peek(id).ok().flatten();
        let name = key_file.map(|p| p.rsplit('/').next().unwrap_or(p));
        let qt_name = name.and_then(qt_name);
        let kind = system_v_type_of(row.key);
        let semaphore = semaphore.or_else(|| key_file.and_then(|f| sysv_semaphore_of(f, kind)));
        let age = self.age(row.ctime.saturating_mul(1_000_000_000));
        let state = sysv_state(row.nattch, row.atime != 0, age);
        let lock = lock_status::system_v(peek.as_ref(), semaphore.as_ref());
        let segment = Segment {
            os_id: OsId::SystemV {
                shmid: row.id,
                key: row.key,
                removed: row.perms & u32::from(os::SHM_DEST) != 0,
            },
            native_key: key_file.map(|p| NativeIpcKey::new(p, kind)),
            maker: maker(peek.as_ref(), qt_name.is_some()),
            qt_name,
            size: row.size,
            attachments: row.nattch,
            qshm_attachments: None,
            owner_uid: row.uid,
            permissions: row.perms & 0o777,
            age,
            state,
            lock,
            lock_state: peek.map(|_| id.lock_state_path().into()),
        };
        Draft {
            segment,
            semaphore,
            probe: None,
        }
    }

    fn posix_draft(&self, f: &ShmFile, semaphore: Option<NativeIpcKey>) -> Draft {
        let id = f.id();
        let peek = LockState::peek(id).ok().flatten();
        let qshm_attachments = self.flocks.get(&f.file_id()).copied().unwrap_or(0);
        let attachments = self.mappers.get(&f.file_id()).copied().unwrap_or(0);
        let age = self.age(f.st.btime_ns.unwrap_or(f.st.ctime_ns));
        let users = qshm_attachments + attachments;
        let all_visible = (os::euid() == 0 || f.st.uid == os::euid()) && self.every_process;
        let state = posix_state(users, f.st.size, age, all_visible);
        let qt_name = qt_name(&f.name);
        let maker = maker(peek.as_ref(), qt_name.is_some());
        let semaphore = semaphore.or_else(|| posix_semaphore_of(&f.name));
        let (lock, probe) = lock_status::posix(peek.as_ref(), semaphore.as_ref());
        let segment = Segment {
            os_id: OsId::Posix {
                path: f.path.clone().into(),
                inode: f.st.ino,
            },
            native_key: Some(NativeIpcKey::new(format!("/{}", f.name), KeyType::PosixRealtime)),
            qt_name,
            size: f.st.size,
            attachments,
            qshm_attachments: Some(qshm_attachments),
            owner_uid: f.st.uid,
            permissions: f.st.mode & 0o777,
            age,
            state,
            maker,
            lock,
            lock_state: peek.map(|_| id.lock_state_path().into()),
        };
        Draft {
            segment,
            semaphore,
            probe,
        }
    }
}

/// A System V segment with `nattch` attachments, attached to at some time or not, made
/// `age` ago.
pub(super) fn sysv_state(nattch: u64, ever_attached: bool, age: Duration) -> State {
    if nattch > 0 {
        State::Live
    } else if !ever_attached && age < NEW_GRACE {
        State::New
    } else {
        State::Stale
    }
}

/// A POSIX segment that `users` processes map or hold locked, of `size` bytes, made
/// `age` ago, whose users we could all see (ours, or we are root, and `/proc` lists every
/// process) or not.
pub(super) fn posix_state(users: u64, size: u64, age: Duration, all_visible: bool) -> State {
    if users > 0 {
        State::Live
    } else if size == 0 && age < NEW_GRACE {
        State::New
    } else if !all_visible {
        State::Unknown
    } else {
        State::Stale
    }
}

/// Who made a segment: qshm says so in its lock state (qshm makes it before the segment
/// can be found), else a Qt-style name means Qt. Mode bits of the file are no evidence:
/// other programs use them too.
pub(super) fn maker(peek: Option<&Peek>, qt_named: bool) -> Maker {
    match peek {
        Some(p) if p.origin == Origin::Qshm => Maker::Qshm { lock_mode: p.mode },
        _ if qt_named => Maker::Qt,
        _ => Maker::Other,
    }
}

fn is_segment_name(name: LegacyName<'_>) -> bool {
    name.ipc == IpcType::SharedMemory
}

/// What a Qt-derived file name tells about its legacy key.
pub(super) fn qt_name(name: &str) -> Option<QtName> {
    LegacyName::parse(name).map(|n| QtName {
        letters: n.letters.to_owned(),
        sha1: n.sha1.to_owned(),
    })
}

/// The semaphore of the POSIX segment file `name`: for a name Qt derived from a legacy
/// key, the semaphore Qt derives from the same key; else the one qshm's lock takes for
/// a native key ([`crate::key::semaphore_key`]). The first of them that exists, else the
/// first of them.
pub(super) fn posix_semaphore_of(name: &str) -> Option<NativeIpcKey> {
    let derived = LegacyName::parse(name).filter(|n| is_segment_name(*n)).map(|n| {
        NativeIpcKey::new(
            format!("/{}", n.for_ipc(IpcType::SystemSemaphore)),
            KeyType::PosixRealtime,
        )
    });
    let native = crate::key::semaphore_key(&NativeIpcKey::new(format!("/{name}"), KeyType::PosixRealtime));
    let exists = |sem: &NativeIpcKey| {
        posix::semaphore_file(sem)
            .ok()
            .and_then(|p| os::cstring(&p).ok())
            .is_some_and(|p| os::lstat(&p).is_ok())
    };
    // Neither exists: the one derived as Qt does is the one a lock would make.
    let found = derived.iter().chain([&native]).find(|sem| exists(sem)).cloned();
    found.or(derived).or(Some(native))
}

/// The semaphore of the System V segment of type `kind` with Qt key file `key_file`, for
/// a name Qt derived from a legacy key: the key file Qt derives for the semaphore of that
/// key, of the same type (Qt derives it with the segment's `ftok` project id).
pub(super) fn sysv_semaphore_of(key_file: &str, kind: KeyType) -> Option<NativeIpcKey> {
    let (dir, name) = key_file.rsplit_once('/')?;
    let name = LegacyName::parse(name).filter(|n| is_segment_name(*n))?;
    let semaphore = format!("{dir}/{}", name.for_ipc(IpcType::SystemSemaphore));
    Some(NativeIpcKey::new(semaphore, kind))
}

/// Qt key files (`qipc_…` names Qt derives) in Qt's temporary directory.
fn key_files() -> Vec<KeyFile> {
    let dir = qt_temp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            LegacyName::parse(&name)?;
            let path = format!("{dir}/{name}");
            let c_path = os::cstring(&path).ok()?;
            let st = os::lstat(&c_path).ok().filter(FileStat::is_regular)?;
            let ftok = sysv::ftok_key(&c_path, crate::key::SYSV_PROJECT_ID).ok()?;
            Some(KeyFile { path, name, ftok, st })
        })
        .collect()
}

/// The regular files in `/dev/shm`.
fn shm_dir_files() -> io::Result<Vec<ShmFile>> {
    let entries = std::fs::read_dir(crate::sys::SHM_DIR)?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let path = format!("{}/{name}", crate::sys::SHM_DIR);
            let st = os::cstring(&path).and_then(|c| os::lstat(&c)).ok()?;
            st.is_regular().then_some(ShmFile { name, path, st })
        })
        .collect())
}

/// Whether the segment of `key` exists right now.
pub(super) fn exists(key: &NativeIpcKey) -> bool {
    match key.kind() {
        KeyType::SystemV | KeyType::SystemVWithId(_) => {
            sysv::numeric_key(key).is_some_and(|k| os::shmget(k, 0, 0).is_ok())
        }
        KeyType::PosixRealtime => posix::shm_file_name(key.native()).is_ok_and(|name| {
            os::cstring(&format!("{}/{name}", crate::sys::SHM_DIR))
                .and_then(|c| os::lstat(&c))
                .is_ok_and(|st| st.is_regular())
        }),
    }
}
