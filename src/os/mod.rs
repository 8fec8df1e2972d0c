//! Every raw system call qshm makes, each wrapped once into an `io::Result`.
//!
//! Nothing here knows about keys or segments: the backends compose these.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod futex;
mod ofd;
mod sysv;

pub(crate) use futex::{futex_wait, futex_wait_at, futex_wake, futex_wake_all, futex_wake_at};
pub(crate) use ofd::{ofd_byte_locked, ofd_try_lock_byte};
pub(crate) use sysv::*;

/// Turn a `-1`-on-error return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retry `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A path or name as a C string; an interior NUL is `EINVAL`.
pub(crate) fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

pub(crate) fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    retry(|| {
        // SAFETY: path is a valid NUL-terminated string; open returns a new fd or -1.
        let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
        // SAFETY: fd was just returned by open and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// `pread(2)` until `buf` is full or the file ends; returns how many bytes were read.
pub(crate) fn pread(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let fd = fd.as_fd();
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let n = retry(|| {
            // SAFETY: rest is writable memory of rest.len() bytes owned by the caller.
            let n = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `pwrite(2)` all of `buf` at `offset`.
pub(crate) fn pwrite(fd: impl AsFd, buf: &[u8], offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let n = retry(|| {
            // SAFETY: rest is readable memory of rest.len() bytes owned by the caller.
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), at) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        done += n;
    }
    Ok(())
}

pub(crate) fn unlink(path: &CStr) -> io::Result<()> {
    // SAFETY: path is a valid NUL-terminated string.
    cvt(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
}

/// `flock(2)`; `Ok(false)` when a non-blocking request would block.
pub(crate) fn flock(fd: impl AsFd, op: libc::c_int) -> io::Result<bool> {
    let fd = fd.as_fd();
    // SAFETY: fd is an open descriptor owned by the caller.
    match retry(|| cvt(unsafe { libc::flock(fd.as_raw_fd(), op) })) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The fields of `struct statx` qshm uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Names (hard links) the file has.
    pub(crate) nlink: u32,
    pub(crate) ctime_ns: i64,
    /// Birth time, when the file system records one (tmpfs does). Unlike ctime it never
    /// changes: tmpfs bumps ctime on every write through a shared mapping.
    pub(crate) btime_ns: Option<i64>,
}

impl FileStat {
    fn from_statx(stx: &libc::statx) -> FileStat {
        let ns = |t: libc::statx_timestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        FileStat {
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
            size: stx.stx_size,
            mode: u32::from(stx.stx_mode),
            uid: stx.stx_uid,
            gid: stx.stx_gid,
            nlink: stx.stx_nlink,
            ctime_ns: ns(stx.stx_ctime),
            btime_ns: (stx.stx_mask & libc::STATX_BTIME != 0).then(|| ns(stx.stx_btime)),
        }
    }

    /// Same file: same device and inode.
    pub(crate) fn same_file(&self, other: &FileStat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// A regular file (not a directory, device, FIFO or symbolic link).
    pub(crate) fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Birth time when known, else the status-change time, in whole seconds.
    pub(crate) fn created_secs(&self) -> i64 {
        self.btime_ns.unwrap_or(self.ctime_ns) / 1_000_000_000
    }
}

fn statx(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<FileStat> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    // SAFETY: path is NUL-terminated and stx points to writable memory of the right size.
    cvt(unsafe { libc::statx(dirfd, path.as_ptr(), flags, mask, stx.as_mut_ptr()) })?;
    // SAFETY: statx succeeded and the buffer was zeroed, so every field is initialised.
    let stx = unsafe { stx.assume_init() };
    Ok(FileStat::from_statx(&stx))
}

/// `fstat(2)` (as `statx`, for the birth time).
pub(crate) fn fstat(fd: impl AsFd) -> io::Result<FileStat> {
    statx(fd.as_fd().as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// `lstat(2)` (as `statx`): the link itself, never its target.
pub(crate) fn lstat(path: &CStr) -> io::Result<FileStat> {
    statx(libc::AT_FDCWD, path, libc::AT_SYMLINK_NOFOLLOW)
}

#[cfg(all(test, feature = "admin"))] // only admin's tests make a segment file by hand
pub(crate) fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fd is open; ftruncate only changes the file's length.
    retry(|| cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })).map(drop)
}

pub(crate) fn fchmod(fd: impl AsFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fd is open; fchmod only changes the file's mode bits.
    cvt(unsafe { libc::fchmod(fd.as_fd().as_raw_fd(), mode) }).map(drop)
}

pub(crate) fn fchown(fd: &OwnedFd, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: fd is open; fchown only changes the file's owner.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Reserve `len` bytes of `fd` (`posix_fallocate`): on tmpfs the pages are really taken
/// now, so a full file system is `ENOSPC` here instead of `SIGBUS` at the first write.
pub(crate) fn fallocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    retry(|| {
        // SAFETY: fd is open; posix_fallocate returns an error number instead of setting errno.
        match unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    })
}

/// Give the unnamed file `fd` (opened with `O_TMPFILE`) the name `path`; fails with
/// `EEXIST` when the name is taken, which makes publishing a prepared file atomic.
///
/// `linkat(fd, "", AT_EMPTY_PATH)` names the file directly (root, or since Linux 6.10 the
/// opener itself); elsewhere it fails with `ENOENT` and the `/proc/self/fd` link is used,
/// whose procfs walk costs more.
pub(crate) fn link_fd(fd: impl AsFd, path: &CStr) -> io::Result<()> {
    let fd = fd.as_fd();
    static EMPTY_PATH_REFUSED: AtomicBool = AtomicBool::new(false);
    if !EMPTY_PATH_REFUSED.load(Ordering::Relaxed) {
        match link_by_descriptor(fd, path) {
            Ok(()) => return Ok(()),
            // not allowed here (or the directory is missing: then the fallback says so)
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM | libc::EINVAL)) => {
                EMPTY_PATH_REFUSED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    link_through_proc(fd, path)
}

fn link_by_descriptor(fd: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated; AT_EMPTY_PATH makes "" name `fd` itself.
    cvt(unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

fn link_through_proc(fd: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    let proc_path = cstring(&format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // SAFETY: both paths are NUL-terminated; AT_SYMLINK_FOLLOW resolves the magic link.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `F_SETSIG` (Linux's `fcntl` command 10, not in the libc crate).
const F_SETSIG: libc::c_int = 10;

/// Ask for a write lease on `fd` (`fcntl(F_SETLEASE, F_WRLCK)`): `Ok(true)` means no other
/// open file description of the file exists anywhere, open or mapped (since Linux 5.3 the
/// kernel counts read-only ones too), and until [`release_lease`] any `open` of the file
/// by another process waits. `Ok(false)`: someone else has it open or mapped. Errors:
/// `EACCES` (not the owner and no `CAP_LEASE`), `EINVAL` (leases unsupported or off).
pub(crate) fn take_write_lease(fd: impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd().as_raw_fd();
    // A lease break signals the lease holder, by default with SIGIO, whose default action
    // ends the process. Use SIGURG (ignored by default) and then clear the owner, so that
    // no signal is sent at all.
    // SAFETY: F_SETSIG takes an int.
    cvt(unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) })?;
    // SAFETY: F_SETLEASE takes an int.
    match cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) }) {
        Ok(_) => {
            // SAFETY: F_SETOWN 0 removes the owner: lease breaks then signal nobody.
            unsafe { libc::fcntl(fd, libc::F_SETOWN, 0) };
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Give back a lease taken by [`take_write_lease`].
pub(crate) fn release_lease(fd: impl AsFd) {
    let fd = fd.as_fd();
    // SAFETY: F_SETLEASE takes an int; F_UNLCK on a descriptor without a lease is harmless.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

/// Map `len` bytes of `fd` shared; read-only unless `writable`.
pub(crate) fn mmap_shared(fd: RawFd, len: usize, writable: bool) -> io::Result<*mut u8> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias Rust memory.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if ptr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(ptr.cast())
    }
}

/// Map `len` bytes of `fd` shared in place of the mapping at `ptr` (`MAP_FIXED`, which
/// replaces it in one step); read-only unless `writable`.
///
/// # Safety
/// `ptr..ptr+len` must be a mapping made by [`mmap_shared`] of the very file `fd` is open
/// on, from offset 0, with the same protection: its bytes stay what they were, only the
/// mapping's file reference changes.
pub(crate) unsafe fn mmap_shared_in_place(
    ptr: *mut u8,
    fd: RawFd,
    len: usize,
    writable: bool,
) -> io::Result<()> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: guaranteed by the caller: the range is our own mapping of the same pages.
    let got = unsafe { libc::mmap(ptr.cast(), len, prot, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0) };
    if got == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// # Safety
/// `ptr..ptr+len` must be a mapping made by [`mmap_shared`] that nothing uses any more.
pub(crate) unsafe fn munmap(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: guaranteed by the caller.
    cvt(unsafe { libc::munmap(ptr.cast(), len) }).map(drop)
}

/// Free bytes and total bytes of the file system holding `path`.
pub(crate) fn fs_space(path: &CStr) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: path is NUL-terminated and st points to writable memory of the right size.
    cvt(unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded, so it filled st.
    let st = unsafe { st.assume_init() };
    Ok((st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
}

/// RAM plus swap, in bytes: no segment can be larger than this. Read once per process
/// (it changes only when swap is added or removed).
pub(crate) fn memory_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(read_memory_limit)
}

fn read_memory_limit() -> u64 {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
    // SAFETY: info points to writable memory of the right size.
    if unsafe { libc::sysinfo(info.as_mut_ptr()) } != 0 {
        return u64::MAX;
    }
    // SAFETY: sysinfo succeeded, so it filled info.
    let info = unsafe { info.assume_init() };
    info.totalram
        .saturating_add(info.totalswap)
        .saturating_mul(info.mem_unit as u64)
}

/// Whether this process may write the file at `path`, by its effective user and groups
/// (supplementary ones included), as the kernel would decide an `open` for writing.
pub(crate) fn may_write(path: &CStr) -> bool {
    // SAFETY: path is NUL-terminated; faccessat only looks the file up.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

/// The effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given; getpwuid_r is reentrant.
    let rc = unsafe { libc::getpwuid_r(uid, pwd.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in buf.
    let name = unsafe { CStr::from_ptr((*result).pw_name) };
    name.to_str().ok().map(str::to_owned)
}

/// A relative time as a `timespec` (seconds beyond `time_t` saturate).
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Whether processes `a` and `b` share one address space (`kcmp(2)`, `KCMP_VM`): a
/// `vfork`ed or `posix_spawn`ed child before its `exec`. Needs ptrace access to both
/// (a child of ours: yes, unless Yama forbids any ptrace).
pub(crate) fn same_address_space(a: u32, b: u32) -> io::Result<bool> {
    const KCMP_VM: libc::c_int = 1; // <linux/kcmp.h>
    // SAFETY: kcmp takes plain integers and reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::pid_t,
            b as libc::pid_t,
            KCMP_VM,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r == 0)
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of times in `/proc/<pid>/stat`.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Time since boot, suspended time included (`CLOCK_BOOTTIME`, the clock of process
/// start times in `/proc/<pid>/stat`).
pub(crate) fn boot_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Call `f` with each name in directory `dir` but `.` and `..`, without allocating per
/// entry (`std::fs::read_dir` allocates three times per name; `/dev/shm` may hold
/// thousands). `readdir(3)`: glibc reads in 32 KiB `getdents64` batches and opens with
/// `O_CLOEXEC`.
pub(crate) fn for_each_name(dir: &CStr, mut f: impl FnMut(&CStr)) -> io::Result<()> {
    struct Dir(*mut libc::DIR);
    impl Drop for Dir {
        fn drop(&mut self) {
            // SAFETY: self.0 is the DIR opendir returned, closed once, here.
            unsafe { libc::closedir(self.0) };
        }
    }
    // SAFETY: dir is a valid NUL-terminated string; opendir returns a DIR or null.
    let d = unsafe { libc::opendir(dir.as_ptr()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    let d = Dir(d);
    loop {
        // SAFETY: errno is this thread's; readdir64 leaves it alone at the end.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: d.0 is an open DIR used by this call only.
        let entry = unsafe { libc::readdir64(d.0) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir64 returned an entry whose d_name is NUL-terminated, valid until
        // the next readdir64 on d, and f does not keep it.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            f(name);
        }
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// Both ways of naming an unnamed file name it, and neither replaces a taken name.
    #[test]
    fn both_ways_publish_once() {
        // where qshm names its files (tmpfs: O_TMPFILE works there everywhere)
        let dir = std::path::Path::new("/dev/shm").join(format!("qshm-linktest.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct RemoveDir(std::path::PathBuf);
        impl Drop for RemoveDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _remove = RemoveDir(dir.clone());
        let c_dir = cstring(dir.to_str().unwrap()).unwrap();
        type Link = fn(BorrowedFd<'_>, &CStr) -> io::Result<()>;
        let ways: [(&str, Link); 3] = [
            ("descriptor", link_by_descriptor),
            ("proc", link_through_proc),
            ("link_fd", |fd, path| link_fd(fd, path)),
        ];
        for (name, link) in ways {
            let target = cstring(dir.join(name).to_str().unwrap()).unwrap();
            let fd = open(&c_dir, libc::O_TMPFILE | libc::O_RDWR, 0o600).unwrap();
            match link(fd.as_fd(), &target) {
                Ok(()) => {}
                // unprivileged on a kernel before 6.10: only the fallback works
                Err(e) if name == "descriptor" && e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => panic!("{name}: {e}"),
            }
            assert_eq!(lstat(&target).unwrap().ino, fstat(&fd).unwrap().ino, "{name}");
            let other = open(&c_dir, libc::O_TMPFILE | libc::O_RDWR, 0o600).unwrap();
            let taken = link(other.as_fd(), &target).unwrap_err();
            assert_eq!(taken.raw_os_error(), Some(libc::EEXIST), "{name}");
        }
    }

    #[test]
    fn for_each_name_lists_every_name_but_dot_and_dot_dot() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("qshm-names-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let mut made: Vec<Vec<u8>> = (0..300).map(|i| format!("n{i}").into_bytes()).collect();
        made.push(b"not utf-8 \xff".to_vec());
        for name in &made {
            std::fs::write(dir.join(std::ffi::OsStr::from_bytes(name)), b"").unwrap();
        }
        let c_dir = cstring(dir.to_str().unwrap()).unwrap();
        let mut seen = Vec::new();
        for_each_name(&c_dir, |name| seen.push(name.to_bytes().to_vec())).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        seen.sort();
        made.sort();
        assert_eq!(seen, made);
        let gone = for_each_name(&c_dir, |_| panic!("no directory, no names")).unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::ENOENT));
    }
}
