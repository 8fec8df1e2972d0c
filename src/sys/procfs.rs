//! Reading `/proc`, in one place: which processes map which files (slow: every process's
//! maps are read, so only off the hot paths: deciding whether a stuck POSIX semaphore
//! can still have a living holder, refusing `LockMode::Fast` next to a non-qshm process,
//! tools, and the fallback where a lease probe is unavailable), the System V tables
//! (`/proc/sysvipc/shm`, `/proc/sysvipc/sem`), the `flock` holders (`/proc/locks`) and
//! this process's children (`/proc/self/task/*/children`, for a last detach).

#[cfg(feature = "admin")]
use std::collections::{HashMap, HashSet};
use std::io;

/// What this process's children say about descriptors they may hold copies of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnChildren {
    /// One still shares our address space: spawned through `posix_spawn` or `vfork` (a
    /// clone with `CLONE_VM`, which runs no fork handlers but copies the descriptor table)
    /// and not yet `exec`'d. It holds a copy of every descriptor we had when it was made
    /// until its `exec`: microseconds, or milliseconds on a loaded machine.
    BeforeExec,
    /// None does, but one started less than the given time ago: it may be in the middle of
    /// its `exec`, whose closing of those copies completes only as the `exec` returns.
    JustStarted,
    /// Neither (or `/proc/self/task/*/children` or `kcmp` is unavailable: then nothing is
    /// waited for, and a segment such a child kept open stays, for the next create).
    Settled,
}

/// [`OwnChildren`] now, `recent` being how young a child counts as just started.
pub(crate) fn own_children(recent: std::time::Duration) -> OwnChildren {
    let me = std::process::id();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return OwnChildren::Settled;
    };
    let mut outcome = OwnChildren::Settled;
    for task in tasks.flatten() {
        let Ok(pids) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in pids.split_whitespace().filter_map(|pid| pid.parse::<u32>().ok()) {
            if crate::os::same_address_space(me, pid).unwrap_or(false) {
                return OwnChildren::BeforeExec;
            }
            if outcome == OwnChildren::Settled && age(pid).is_some_and(|age| age < recent) {
                outcome = OwnChildren::JustStarted;
            }
        }
    }
    outcome
}

/// How long ago process `pid` started (`/proc/<pid>/stat` field 22, in clock ticks since
/// boot, against `CLOCK_BOOTTIME`).
fn age(pid: u32) -> Option<std::time::Duration> {
    let started = stat_field(&stat_from_state(pid)?, 22)?;
    let ticks = crate::os::clock_ticks_per_second();
    let now = crate::os::boot_time();
    let started = std::time::Duration::from_nanos(started.checked_mul(1_000_000_000)? / ticks.max(1));
    Some(now.saturating_sub(started))
}

/// Something a process can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// A file, by device and inode (POSIX segments, semaphores, lock state).
    File { dev: u64, ino: u64 },
    /// A System V segment, by id (`/SYSV<key> (deleted)` with the id as inode).
    SystemV { shmid: i32 },
}

impl Mapped {
    fn matches(self, dev: Option<u64>, ino: u64, path: &str) -> bool {
        match self {
            Mapped::File { dev: d, ino: i } => dev == Some(d) && ino == i,
            Mapped::SystemV { shmid } => path.starts_with("/SYSV") && i64::from(shmid) == ino as i64,
        }
    }
}

/// A process that maps at least one target of a [`census`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapper {
    pub pid: u32,
    /// Bit `i`: it maps `targets[i]`.
    pub maps: u32,
    /// Bit `i`: it maps `targets[i]` writable.
    pub writable: u32,
}

/// A process whose mappings we may not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hidden {
    pub pid: u32,
    /// Its effective user id.
    pub uid: u32,
    /// Its groups (effective and supplementary).
    pub gids: Vec<u32>,
}

/// Who maps what, and who could not be looked at.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub mapping: Vec<Mapper>,
    pub hidden: Vec<Hidden>,
    /// `/proc` listed every process of the machine ([`shows_every_process`]). If not,
    /// processes of other PID namespaces (another container, the host) may map or hold
    /// what this census looked for: what it did not find is no evidence.
    pub complete: bool,
}

/// The link `/proc/self/ns/pid` of the initial PID namespace (the kernel's fixed inode
/// number for it, `PROC_PID_INIT_INO`).
const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

/// Whether `/proc` shows every process of the machine: this process is in the initial
/// PID namespace and `/proc` is that namespace's (its `self` is this process). In a
/// container or under `unshare -p`, processes of other PID namespaces that share
/// `/dev/shm` and IPC objects with this one do not appear in it at all.
pub(crate) fn shows_every_process() -> bool {
    let initial =
        std::fs::read_link("/proc/self/ns/pid").is_ok_and(|l| l.as_os_str() == INITIAL_PID_NAMESPACE);
    initial && lists_own_namespace()
}

/// Whether `/proc` is this process's PID namespace's (its `self` is this process). Only
/// then does a pid the kernel reports to this process (`semctl(GETPID)`, `shm_cpid`), which
/// it gives in this process's namespace, name the same process in `/proc`. Under `unshare
/// -p` without `--mount-proc`, or in a container given the host's `/proc`, it names another
/// or none.
pub(crate) fn lists_own_namespace() -> bool {
    std::fs::read_link("/proc/self")
        .is_ok_and(|l| l.to_str().and_then(|pid| pid.parse::<u32>().ok()) == Some(std::process::id()))
}

/// Look at every process except this one (at most 32 targets).
pub(crate) fn census(targets: &[Mapped]) -> Census {
    let me = std::process::id();
    let mut out = Census::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    out.complete = shows_every_process();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(maps) => maps,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if let Some(hidden) = credentials(pid) {
                    out.hidden.push(hidden);
                }
                continue;
            }
            Err(_) => continue, // gone meanwhile
        };
        let (mut bits, mut writable) = (0u32, 0u32);
        for line in maps.lines() {
            let Some((dev, ino, path)) = parse_maps_line(line) else {
                continue;
            };
            let write = line
                .split(' ')
                .nth(1)
                .is_some_and(|perms| perms.as_bytes().get(1) == Some(&b'w'));
            for (i, target) in targets.iter().enumerate().take(32) {
                if target.matches(dev, ino, path) {
                    bits |= 1 << i;
                    if write {
                        writable |= 1 << i;
                    }
                }
            }
        }
        // A process being torn down (SIGKILLed, exiting) unmaps in any order: it is no
        // user any more, whatever it maps at this instant.
        if bits != 0 && !exiting(pid) {
            out.mapping.push(Mapper {
                pid,
                maps: bits,
                writable,
            });
        }
    }
    out
}

/// Visit every mapping of every process we may inspect (this one included) as
/// `(pid, device, inode, path)`; stop as soon as `visit` returns true.
#[cfg(feature = "admin")]
pub(crate) fn visit_mappings(mut visit: impl FnMut(u32, Option<u64>, u64, &str) -> bool) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            if let Some((dev, ino, path)) = parse_maps_line(line)
                && visit(pid, dev, ino, path)
            {
                return;
            }
        }
    }
}

/// `address perms offset MAJOR:MINOR inode path` → (device, inode, path), for lines
/// that name something.
fn parse_maps_line(line: &str) -> Option<(Option<u64>, u64, &str)> {
    let mut fields = line.splitn(6, ' ');
    let dev = fields.nth(3)?;
    let ino: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    // inode 0 names nothing, except a System V segment whose id is 0 (the first one made
    // since boot, or in a fresh IPC namespace): its inode is its id
    if (ino == 0 && !path.starts_with("/SYSV")) || path.is_empty() {
        return None;
    }
    Some((device(dev), ino, path))
}

/// A device number from its `/proc` form `MAJOR:MINOR` (hex), as `stat` reports it.
pub(crate) fn device(text: &str) -> Option<u64> {
    let (major, minor) = text.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some(libc::makedev(major, minor))
}

/// `PF_EXITING` in the flags of `/proc/<pid>/stat` (the ninth field).
fn exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Some(stat) = stat_from_state(pid) else {
        return true; // gone
    };
    stat_field(&stat, 9).is_some_and(|flags| flags & PF_EXITING != 0)
}

/// `/proc/<pid>/stat` from its third field (state) on: "pid (comm) state ppid …", where
/// comm may hold spaces and parentheses. `None` when the process is gone.
fn stat_from_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')').map_or("", |(_, rest)| rest).to_owned())
}

/// Field `n` (numbered from 1, as in proc(5)) of [`stat_from_state`]'s text, as a number.
fn stat_field(from_state: &str, n: usize) -> Option<u64> {
    from_state.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// The effective uid and the groups of process `pid` (from `/proc/<pid>/status`,
/// readable by everyone).
fn credentials(pid: u32) -> Option<Hidden> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].to_owned())
    };
    let uid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    let mut gids: Vec<u32> = field("Gid:")
        .and_then(|g| g.split_whitespace().nth(1)?.parse().ok())
        .into_iter()
        .collect();
    if let Some(groups) = field("Groups:") {
        gids.extend(groups.split_whitespace().filter_map(|g| g.parse::<u32>().ok()));
    }
    Some(Hidden { pid, uid, gids })
}

/// One row of `/proc/sysvipc/shm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShmRow {
    pub key: i32,
    pub id: i32,
    /// Mode bits, `SHM_DEST` included.
    pub perms: u32,
    pub size: u64,
    pub cpid: i32,
    pub nattch: u64,
    pub uid: u32,
    /// Last attach (0: never attached).
    pub atime: i64,
    /// Creation (or last `IPC_SET`).
    pub ctime: i64,
}

/// One row of `/proc/sysvipc/sem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SemRow {
    pub key: i32,
    pub id: i32,
}

/// The rows of a `/proc/sysvipc` table, split into fields (the header dropped).
fn table_rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().skip(1).map(|l| l.split_whitespace().collect())
}

/// Parse `/proc/sysvipc/shm`: `key shmid perms size cpid lpid nattch uid gid cuid cgid
/// atime dtime ctime ...`.
pub(crate) fn parse_shm_table(text: &str) -> Vec<ShmRow> {
    table_rows(text)
        .filter_map(|f| {
            let time = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            Some(ShmRow {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
                perms: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: f.get(3)?.parse().ok()?,
                cpid: f.get(4)?.parse().ok()?,
                nattch: f.get(6)?.parse().ok()?,
                uid: f.get(7)?.parse().ok()?,
                atime: time(11),
                ctime: time(13),
            })
        })
        .collect()
}

/// Parse `/proc/sysvipc/sem`: `key semid perms nsems uid ...`.
pub(crate) fn parse_sem_table(text: &str) -> Vec<SemRow> {
    table_rows(text)
        .filter_map(|f| {
            Some(SemRow {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
            })
        })
        .collect()
}

/// Every System V segment (readable by everyone, unlike `IPC_STAT`).
pub(crate) fn shm_table() -> Vec<ShmRow> {
    parse_shm_table(&std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default())
}

/// Every System V semaphore set.
pub(crate) fn sem_table() -> Vec<SemRow> {
    parse_sem_table(&std::fs::read_to_string("/proc/sysvipc/sem").unwrap_or_default())
}

/// Parse `/proc/locks`: for each (device, inode), how many `flock`s are held on it
/// (waiters, marked `->`, are not holders).
#[cfg(feature = "admin")]
pub(crate) fn parse_flock_holders(text: &str) -> HashMap<(u64, u64), u64> {
    let mut map = HashMap::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  READ  1234 00:1b:56 0 EOF"
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

/// `flock` holders by (device, inode), from `/proc/locks`, read until two reads agree.
///
/// The kernel fills each `read` call of `/proc/locks` with at most a page (and at most
/// what the caller asked for) from one walk of its lock list, and starts the next call's
/// walk at the index where the last one ended: so a reading in several calls can miss or
/// repeat holders while others take and drop locks (a segment held by 2 processes was
/// counted from 0 to 6), even the call that only finds the end (locks added meanwhile
/// push seen ones past that index). [`read_one_walk_per_page`] reads a list of one page
/// (the usual size inside a PID namespace, which shows only its own processes' locks) in
/// one walk; two readings that agree are taken as a consistent view of a longer one, and
/// under heavy churn the last of a few readings is used.
#[cfg(feature = "admin")]
pub(crate) fn flock_holders() -> HashMap<(u64, u64), u64> {
    let mut last = parse_flock_holders(&read_one_walk_per_page("/proc/locks"));
    for _ in 0..8 {
        let next = parse_flock_holders(&read_one_walk_per_page("/proc/locks"));
        if next == last {
            break;
        }
        last = next;
    }
    last
}

/// A `seq_file` of `/proc` read in calls that each ask for more than a page: the kernel
/// answers each with what one walk of its list fits in a page, and a call that returns
/// clearly less than a page has met the end of the list, so no further call (a new walk)
/// is made. Empty when it cannot be read.
#[cfg(feature = "admin")]
fn read_one_walk_per_page(path: &str) -> String {
    use std::io::Read;
    // longer than any line of /proc/locks (about 60 bytes, more for nested waiters)
    const LONGEST_LINE: usize = 512;
    let page = crate::os::page_size();
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 4 * page];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                text.extend_from_slice(&chunk[..n]);
                if n + LONGEST_LINE < page {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return String::new(),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// For every file under directory `dir` that some process maps: how many processes map
/// it, by (device, inode). This process counts too.
#[cfg(feature = "admin")]
pub(crate) fn mappers_under(dir: &str) -> HashMap<(u64, u64), u64> {
    let mut map: HashMap<(u64, u64), u64> = HashMap::new();
    let mut seen = HashSet::new();
    let prefix = format!("{dir}/");
    visit_mappings(|pid, dev, ino, path| {
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

/// Whether process (or thread) `id` exists.
#[cfg(feature = "admin")]
pub(crate) fn alive(id: i32) -> bool {
    id > 0 && std::path::Path::new(&format!("/proc/{id}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "admin")]
    #[test]
    fn sysv_tables_parse() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                   1359020557          7  1600                   100  4242  4243      2     0     0     0     0 1700000100 1700000050 1700000000                  4096                     0\n\
                   0         8  3600 4096 1 1 0 1000 1000 1000 1000 0 0 1700000001 0 0\n\
                   garbage line\n";
        let rows = parse_shm_table(shm);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            rows[0],
            ShmRow {
                key: 1359020557,
                id: 7,
                perms: 0o1600,
                size: 100,
                cpid: 4242,
                nattch: 2,
                uid: 0,
                atime: 1700000100,
                ctime: 1700000000,
            }
        );
        assert_eq!(rows[1].perms, 0o3600, "SHM_DEST is kept");
        assert_eq!((rows[1].uid, rows[1].atime), (1000, 0));
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                   -1     3   600   1 0 0 0 0 0 1700000000\n";
        assert_eq!(parse_sem_table(sem), [SemRow { key: -1, id: 3 }]);
    }

    #[cfg(feature = "admin")]
    #[test]
    fn flock_holders_parse() {
        let locks = "1: FLOCK  ADVISORY  READ  1234 00:1b:56 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 1240 00:1b:56 0 EOF\n\
                     2: FLOCK  ADVISORY  READ  1235 00:1b:56 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 99 fd:01:7 0 EOF\n\
                     4: OFDLCK ADVISORY  READ  -1 00:05:8 0 EOF\n";
        let map = parse_flock_holders(locks);
        assert_eq!(
            map.get(&(libc::makedev(0, 0x1b), 56)),
            Some(&2),
            "waiters are no holders"
        );
        assert_eq!(map.len(), 1, "only flocks: {map:?}");
    }

    #[cfg(feature = "admin")]
    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0) && !alive(-1));
    }

    #[test]
    fn maps_lines_parse() {
        let line = "7f0000000000-7f0000001000 rw-s 00000000 00:1a 1234                       /dev/shm/x y";
        assert_eq!(
            parse_maps_line(line),
            Some((Some(libc::makedev(0, 0x1a)), 1234, "/dev/shm/x y"))
        );
        let sysv = "7f0000000000-7f0000001000 rw-s 00000000 00:01 98311    /SYSV5100abcd (deleted)";
        let (dev, ino, path) = parse_maps_line(sysv).unwrap();
        assert!(Mapped::SystemV { shmid: 98311 }.matches(dev, ino, path));
        assert!(!Mapped::SystemV { shmid: 98312 }.matches(dev, ino, path));
        assert_eq!(parse_maps_line("7f0-7f1 r-xp 00000000 00:00 0 "), None);
        // the first System V segment since boot (or in a new IPC namespace) has id 0
        let first = "7f63ad955000-7f63ad956000 rw-s 00000000 00:01 0     /SYSV5100a52e (deleted)";
        let (dev, ino, path) = parse_maps_line(first).expect("shmid 0 is a segment");
        assert!(Mapped::SystemV { shmid: 0 }.matches(dev, ino, path));
        assert_eq!(parse_maps_line("7f0-7f1 rw-p 00000000 00:00 0    [heap]"), None);
    }
}
