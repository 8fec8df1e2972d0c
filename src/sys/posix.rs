//! POSIX realtime backend: `shm_open` segments in `/dev/shm` and `sem_open` semaphores.
//!
//! # Destroying the segment when the last user detaches (Qt leaks it on Linux)
//!
//! POSIX shared memory has no attachment count, so qshm keeps one that survives
//! crashes: **every attachment holds a shared `flock` on its own descriptor of the
//! segment file**, for as long as it is attached. The kernel drops the lock when the
//! descriptor is closed, also when the process is killed, so the count can never leak.
//!
//! * **create** prepares the segment as an unnamed file (`O_TMPFILE` in `/dev/shm`):
//!   size, mode and the creator's shared lock are in place *before* the file gets its
//!   name with `linkat`, which fails atomically if the name is taken. So nobody ever
//!   sees a half-made segment, and two creators cannot both win.
//! * **attach** opens the name, takes the shared lock (waiting while someone holds it
//!   exclusively, which only a destroyer does, briefly), then checks that the name
//!   still refers to the same file (`lstat` vs `fstat`). If not, the segment was
//!   destroyed while we waited: the loser sees `NotFound` (or, if a new segment was
//!   created meanwhile, attaches to that one) and never maps a half-destroyed segment.
//! * **detach** unmaps and asks for the exclusive lock without waiting. Getting it
//!   means no other qshm attachment exists. In Qt-compatible lock mode qshm then also
//!   checks that no other process maps the file (Qt and other non-qshm programs take
//!   no flock; a `/proc` scan, about a millisecond); `LockMode::Fast` declares a
//!   qshm-only segment and skips that scan. Then it unlinks the name. Whoever holds the exclusive lock always unlinks, so a
//!   waiter that later gets its shared lock on that file knows it is gone.
//! * **stale segments**: when every user was killed, the name remains but nobody holds
//!   a lock on it. `create` finds the name taken, takes the exclusive lock without
//!   waiting, sees no mapper (always checked here: never delete a live Qt segment),
//!   and removes it (with its companions), then retries.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::os::{self, FileStat, NamedSemaphore};
use super::{CreateRequest, SegmentBackend, SegmentId, SegmentStat, SemaphoreBackend, SemaphoreMode};
use crate::error::{Error, Result, SharedMemoryError};
use crate::key::NativeIpcKey;

/// Where glibc's `shm_open` and `sem_open` keep their files.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// How often create/attach retry when they lose a race with a destroyer.
const RACE_RETRIES: usize = 32;

/// The file name a POSIX native key maps to under `/dev/shm` (what glibc does:
/// leading slashes dropped, no other slash allowed).
pub(crate) fn shm_file_name(native: &str) -> std::result::Result<&str, &'static str> {
    let name = native.trim_start_matches('/');
    if name.is_empty() || name == "." || name == ".." {
        return Err("a POSIX key needs a name after the '/'");
    }
    if name.contains('/') {
        return Err("a POSIX key may not contain '/' after the first character");
    }
    if name.len() > 255 {
        return Err("a POSIX key may be at most 255 bytes long");
    }
    Ok(name)
}

fn key_error(op: &'static str, key: &NativeIpcKey, why: &str) -> Error {
    Error::new(SharedMemoryError::KeyError, op, key.display_name()).with_detail(why.to_owned())
}

/// Path of the segment file for `key`.
fn segment_path(op: &'static str, key: &NativeIpcKey) -> Result<(String, CString)> {
    let name = shm_file_name(key.native()).map_err(|why| key_error(op, key, why))?;
    let path = format!("{SHM_DIR}/{name}");
    let c = os::cstring(&path).map_err(|e| Error::os(op, key.display_name(), e))?;
    Ok((path, c))
}

/// An attached POSIX segment.
pub(crate) struct Segment {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    file: FileStat,
    path: String,
    c_path: CString,
    foreign_peers: bool,
}

// SAFETY: the mapping is process-wide memory; the raw pointer is only an address.
unsafe impl Send for Segment {}
// SAFETY: Segment has no interior mutability; &Segment only reads plain fields.
unsafe impl Sync for Segment {}

/// What a look at an existing segment name found.
pub(crate) enum Probe {
    /// It is in use (or not ours to remove).
    Live,
    /// It was removed (by us, because it was stale, or by someone else).
    Gone,
}

impl Segment {
    pub(crate) fn create(
        key: &NativeIpcKey,
        req: CreateRequest,
        on_stale: &mut dyn FnMut(),
    ) -> Result<Segment> {
        const OP: &str = "create";
        let name = key.display_name();
        let (path, c_path) = segment_path(OP, key)?;
        let dir = os::cstring(SHM_DIR).map_err(|e| Error::os(OP, name, e))?;
        if let Ok((free, _)) = os::fs_space(&dir)
            && req.size as u64 > free
        {
            return Err(
                Error::new(SharedMemoryError::OutOfResources, OP, name).with_detail(format!(
                    "{} bytes requested but {SHM_DIR} has {free} free",
                    req.size
                )),
            );
        }

        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, req.perms as libc::mode_t)
            .map_err(|e| Error::os(OP, name, e).with_detail(format!("cannot make a file in {SHM_DIR}")))?;
        os::fchmod(&fd, req.perms as libc::mode_t).map_err(|e| Error::os(OP, name, e))?;
        os::ftruncate(&fd, req.size as u64).map_err(|e| size_error(OP, name, req.size, e))?;
        os::flock(&fd, libc::LOCK_SH).map_err(|e| Error::os(OP, name, e))?;

        let mut published = false;
        for _ in 0..RACE_RETRIES {
            match os::link_fd(&fd, &c_path) {
                Ok(()) => {
                    published = true;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    match probe_existing(&path, &c_path, on_stale).map_err(|e| Error::os(OP, name, e))? {
                        Probe::Live => return Err(Error::new(SharedMemoryError::AlreadyExists, OP, name)),
                        Probe::Gone => continue,
                    }
                }
                Err(e) => return Err(Error::os(OP, name, e)),
            }
        }
        if !published {
            return Err(Error::new(SharedMemoryError::UnknownError, OP, name)
                .with_detail("the key kept being taken and released by others; gave up"));
        }
        let file = os::fstat(&fd).map_err(|e| Error::os(OP, name, e))?;
        let mapped = os::mmap_shared(fd.as_raw_fd(), req.size, req.writable);
        match mapped {
            Ok(ptr) => Ok(Segment {
                fd,
                ptr,
                len: req.size,
                file,
                path,
                c_path,
                foreign_peers: req.foreign_peers,
            }),
            Err(e) => {
                // Nobody can have seen it usefully yet: take it back.
                let _ = os::unlink(&c_path);
                Err(Error::os(OP, name, e))
            }
        }
    }

    pub(crate) fn attach(key: &NativeIpcKey, writable: bool, foreign_peers: bool) -> Result<Segment> {
        const OP: &str = "attach";
        let name = key.display_name();
        let (path, c_path) = segment_path(OP, key)?;
        let c_name = os::cstring(key.native()).map_err(|e| Error::os(OP, name, e))?;
        let flags = if writable { libc::O_RDWR } else { libc::O_RDONLY };
        for attempt in 0..RACE_RETRIES {
            let fd =
                os::shm_open(&c_name, flags | libc::O_NOFOLLOW, 0).map_err(|e| Error::os(OP, name, e))?;
            os::flock(&fd, libc::LOCK_SH).map_err(|e| Error::os(OP, name, e))?;
            let file = os::fstat(&fd).map_err(|e| Error::os(OP, name, e))?;
            match os::lstat(&c_path) {
                Ok(now) if now.same_file(&file) => {}
                // destroyed (and maybe re-created) while we waited for the lock
                _ => continue,
            }
            if file.size == 0 {
                // A non-qshm creator (Qt) between shm_open and ftruncate: give it a moment.
                if attempt + 1 < RACE_RETRIES {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(Error::new(SharedMemoryError::UnknownError, OP, name)
                    .with_detail("the segment has size 0 (its creator never set a size)"));
            }
            let len = usize::try_from(file.size)
                .map_err(|_| Error::new(SharedMemoryError::InvalidSize, OP, name))?;
            let ptr = os::mmap_shared(fd.as_raw_fd(), len, writable).map_err(|e| Error::os(OP, name, e))?;
            return Ok(Segment {
                fd,
                ptr,
                len,
                file,
                path,
                c_path,
                foreign_peers,
            });
        }
        Err(Error::new(SharedMemoryError::NotFound, OP, name))
    }
}

fn size_error(op: &'static str, name: &str, size: usize, e: io::Error) -> Error {
    let kind = match e.raw_os_error() {
        Some(libc::EFBIG | libc::EINVAL) => SharedMemoryError::InvalidSize,
        Some(libc::ENOSPC | libc::ENOMEM) => SharedMemoryError::OutOfResources,
        _ => SharedMemoryError::from_errno(e.raw_os_error().unwrap_or(0)),
    };
    Error::new(kind, op, name)
        .with_detail(format!("cannot size the segment to {size} bytes"))
        .with_os(e)
}

/// Look at the segment file that holds `path`: remove it if stale, else report it live.
pub(crate) fn probe_existing(path: &str, c_path: &CString, on_stale: &mut dyn FnMut()) -> io::Result<Probe> {
    let fd = match os::open(c_path, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Probe::Gone),
        // not ours to inspect (another user's, or not a regular file): in use
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::ELOOP)) => return Ok(Probe::Live),
        Err(e) => return Err(e),
    };
    let file = os::fstat(&fd)?;
    if os::flock(&fd, libc::LOCK_EX | libc::LOCK_NB)? {
        if !still_named(c_path, &file) {
            return Ok(Probe::Gone);
        }
        if os::mapped_by_other_process(path, file.ino) {
            return Ok(Probe::Live);
        }
        on_stale();
        match os::unlink(c_path) {
            Ok(()) => Ok(Probe::Gone),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Probe::Gone),
            // e.g. another user's stale segment in sticky /dev/shm: not ours to remove
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(Probe::Live),
            Err(e) => Err(e),
        }
    } else {
        // Someone holds a lock. A shared lock means a live user; an exclusive one means
        // a destroyer, who always unlinks: wait it out, then see if the name survived.
        os::flock(&fd, libc::LOCK_SH)?;
        Ok(if still_named(c_path, &file) {
            Probe::Live
        } else {
            Probe::Gone
        })
    }
}

fn still_named(c_path: &CString, file: &FileStat) -> bool {
    matches!(os::lstat(c_path), Ok(now) if now.same_file(file))
}

impl SegmentBackend for Segment {
    fn base(&self) -> *mut u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn id(&self) -> SegmentId {
        // Not ctime: tmpfs changes it on every write through a mapping, and a changed id
        // would make a late locker re-initialise a lock state in use.
        let born = os::birth_time_ns(&self.fd).unwrap_or(0);
        SegmentId([self.file.dev, self.file.ino, born as u64])
    }

    fn stat(&self) -> io::Result<SegmentStat> {
        let now = os::fstat(&self.fd)?;
        Ok(SegmentStat {
            size: now.size,
            attachments: None,
            perms: now.mode & 0o7777,
            uid: now.uid,
            ctime_secs: now.ctime_ns / 1_000_000_000,
            os_id: format!("{} (inode {})", self.path, now.ino),
        })
    }

    fn detach(self: Box<Self>, on_last: &mut dyn FnMut()) -> Result<bool> {
        let Segment {
            fd,
            ptr,
            len,
            file,
            path,
            c_path,
            foreign_peers,
        } = *self;
        // SAFETY: ptr/len is our mapping; SharedMemory guarantees no borrow outlives it.
        unsafe { os::munmap(ptr, len) }.map_err(|e| Error::os("detach", &path, e))?;
        let last = os::flock(&fd, libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false)
            && still_named(&c_path, &file)
            && !(foreign_peers && os::mapped_by_other_process(&path, file.ino));
        if last {
            on_last();
            match os::unlink(&c_path) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                // a read-only attacher of another user's segment may not remove it;
                // the owner's next create reclaims it as stale
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => return Ok(false),
                Err(e) => return Err(Error::os("detach", &path, e)),
            }
        }
        drop(fd);
        Ok(last)
    }
}

/// A POSIX named semaphore (`sem_open`), opened the way `QSystemSemaphore` opens it.
pub(crate) struct Semaphore {
    sem: NamedSemaphore,
    name: CString,
    created: bool,
}

impl Semaphore {
    pub(crate) fn open(
        key: &NativeIpcKey,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
    ) -> Result<Semaphore> {
        const OP: &str = "open semaphore";
        let display = key.display_name();
        shm_file_name(key.native()).map_err(|why| key_error(OP, key, why))?;
        let name = os::cstring(key.native()).map_err(|e| Error::os(OP, display, e))?;
        let perms = perms as libc::mode_t;
        let mut tries = 0;
        loop {
            tries += 1;
            match NamedSemaphore::open(&name, libc::O_CREAT | libc::O_EXCL, perms, initial) {
                Ok(sem) => {
                    // sem_open applies the umask; give it exactly the mode asked for
                    let file = format!("{SHM_DIR}/sem.{}", key.native().trim_start_matches('/'));
                    if let Ok(file) = os::cstring(&file) {
                        let _ = os::chmod(&file, perms);
                    }
                    return Ok(Semaphore {
                        sem,
                        name,
                        created: true,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(Error::os(OP, display, e)),
            }
            match mode {
                // Qt: a semaphore that exists at create time survived a crash: replace it.
                SemaphoreMode::Create if tries < 3 => match NamedSemaphore::unlink(&name) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(Error::os(OP, display, e)),
                },
                _ => match NamedSemaphore::open(&name, 0, 0, 0) {
                    Ok(sem) => {
                        return Ok(Semaphore {
                            sem,
                            name,
                            created: false,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && tries < 3 => continue,
                    Err(e) => return Err(Error::os(OP, display, e)),
                },
            }
        }
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.sem.wait(timeout)
    }

    fn release(&self, n: u32) -> io::Result<()> {
        for _ in 0..n {
            self.sem.post()?;
        }
        Ok(())
    }

    fn value(&self) -> io::Result<i32> {
        self.sem.value()
    }

    fn remove(&self) -> io::Result<()> {
        match NamedSemaphore::unlink(&self.name) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    fn needs_dead_holder_repair(&self) -> bool {
        true
    }

    fn created(&self) -> bool {
        self.created
    }
}

pub(crate) fn remove_segment(key: &NativeIpcKey) -> Result<bool> {
    let (_, c_path) = segment_path("remove", key)?;
    match os::unlink(&c_path) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::os("remove", key.display_name(), e)),
    }
}

pub(crate) fn remove_semaphore_if_exists(key: &NativeIpcKey) {
    if let Ok(name) = os::cstring(key.native()) {
        let _ = NamedSemaphore::unlink(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_names_follow_glibc_rules() {
        assert_eq!(shm_file_name("/abc"), Ok("abc"));
        assert_eq!(shm_file_name("//abc"), Ok("abc"));
        assert_eq!(shm_file_name("abc"), Ok("abc"));
        assert!(shm_file_name("/").is_err());
        assert!(shm_file_name("/a/b").is_err());
        assert!(shm_file_name("/..").is_err());
        assert!(shm_file_name(&format!("/{}", "x".repeat(256))).is_err());
    }
}
