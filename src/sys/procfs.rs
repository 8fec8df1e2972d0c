//! Reading `/proc`: which processes map which files. Slow (every process's maps are
//! read), so only used off the hot paths: deciding whether a stuck POSIX semaphore can
//! still have a living holder, refusing `LockMode::Fast` next to a non-qshm process,
//! inspection for tools, and as the fallback where a lease probe is unavailable.

use std::io;

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

/// Who maps what: for each process that maps at least one target, a bit set over the
/// targets (bit `i` for `targets[i]`); plus the processes whose maps we may not read.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub mapping: Vec<(u32, u32)>,
    /// `(pid, effective uid)` of processes we could not inspect.
    pub hidden: Vec<(u32, u32)>,
}

/// Look at every process except this one (at most 32 targets).
pub(crate) fn census(targets: &[Mapped]) -> Census {
    let me = std::process::id();
    let mut out = Census::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
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
                if let Some(uid) = effective_uid(pid) {
                    out.hidden.push((pid, uid));
                }
                continue;
            }
            Err(_) => continue, // gone meanwhile
        };
        let mut bits = 0u32;
        for line in maps.lines() {
            let Some((dev, ino, path)) = parse_maps_line(line) else {
                continue;
            };
            for (i, target) in targets.iter().enumerate().take(32) {
                if target.matches(dev, ino, path) {
                    bits |= 1 << i;
                }
            }
        }
        // A process being torn down (SIGKILLed, exiting) unmaps in any order: it is no
        // user any more, whatever it maps at this instant.
        if bits != 0 && !exiting(pid) {
            out.mapping.push((pid, bits));
        }
    }
    out
}

/// Visit every mapping of every process we may inspect (this one included) as
/// `(pid, device, inode, path)`; stop as soon as `visit` returns true.
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
    if ino == 0 || path.is_empty() {
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
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true; // gone
    };
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags ...": comm may hold spaces
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_comm
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// The effective uid of process `pid` (from `/proc/<pid>/status`, readable by everyone).
fn effective_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Where the mapping containing `addr` in this process comes from: `(device, inode)`.
pub(crate) fn own_mapping_of(addr: usize) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let (range, _) = line.split_once(' ')?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        if !(start..end).contains(&addr) {
            return None;
        }
        let (dev, ino, _) = parse_maps_line(line)?;
        Some((dev?, ino))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn own_mappings_are_found() {
        let x = Box::new(0u64);
        // the heap is anonymous: no device and inode
        assert_eq!(own_mapping_of(&*x as *const u64 as usize), None);
    }
}
