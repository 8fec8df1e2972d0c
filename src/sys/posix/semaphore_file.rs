//! Qt's POSIX semaphore: a glibc `sem_t` in the file `/dev/shm/sem.NAME`, which
//! `sem_open` maps. qshm opens that file itself (never through a symbolic link; owner,
//! mode and size checked on the very descriptor it maps, so nothing can be swapped in
//! between the check and the use), and takes and gives back units with its own atomics
//! on glibc's layout, which interoperate with `sem_wait`/`sem_post` in Qt processes:
//!
//! ```text
//! bytes 0..8   data: the value (low 32 bits) and the number of waiters (high 32 bits)
//! bytes 8..12  private: glibc's futex flag (shared: 128)
//! bytes 12..16 pad: unused by glibc; qshm writes the label of the qshm process that
//!              holds a unit of the segment lock, in the same 16-byte compare-and-swap
//!              that takes the unit, and clears it in the one that gives it back
//! bytes 16..32 unused
//! ```
//!
//! So a unit a qshm process holds is always labelled with its holder, and a waiter can
//! tell whether that holder lives (`lock_state/slots.rs`). Impossible values (a value
//! above `SEM_VALUE_MAX`) are errors, never an abort: glibc's `sem_wait` aborts the
//! process on a corrupt semaphore; qshm's never does.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portable_atomic::AtomicU128;

use crate::os::{self, FileStat};
use crate::sys::fork::ParentOnlyFd;
use crate::sys::lock_state::{Untrusted, writable_beyond};
use crate::sys::mapping::Mapping;
use crate::sys::named_file::NamedFile;
use crate::sys::shared_here::SharedHere;

/// glibc's `SEM_VALUE_MAX`: a POSIX semaphore never counts higher.
pub(crate) const SEM_VALUE_MAX: u32 = i32::MAX as u32;
/// The size of glibc's `sem_t` (what `sem_open` writes).
const SEM_T_LEN: usize = 32;
/// glibc's `private` field of a process-shared semaphore.
const SHARED: u128 = 128;
const ONE_WAITER: u128 = 1 << 32;
const PAD_SHIFT: u32 = 96;

fn value(word: u128) -> u32 {
    word as u32
}

fn waiters(word: u128) -> u32 {
    (word >> 32) as u32
}

fn pad(word: u128) -> u32 {
    (word >> PAD_SHIFT) as u32
}

fn with_pad(word: u128, label: u32) -> u128 {
    (word & !(0xffff_ffff << PAD_SHIFT)) | (u128::from(label) << PAD_SHIFT)
}

/// Who may own an existing semaphore file for it to be used.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SemaphoreTrust {
    /// Any owner (a `SystemSemaphore` opened by key, as `QSystemSemaphore` does).
    Any,
    /// The lock of a segment: owned by the segment's owner, this user or root, and
    /// writable by nobody who may not write the segment.
    Segment { owner_uid: u32, segment_perms: u32 },
}

/// Why an existing semaphore file was not used.
#[derive(Debug)]
pub(crate) enum OpenError {
    Untrusted(Untrusted),
    Io(io::Error),
}

/// What taking a unit found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Taken.
    Took,
    /// None free; the word as seen (its pad says who holds it, 0: not a qshm process).
    Busy(u128),
}

/// An open semaphore file, mapped once per process and shared by its handles.
#[derive(Debug)]
pub(crate) struct SemaphoreFile {
    map: Mapping,
    file: FileStat,
    path: CString,
    /// The descriptor the mapping was made from (the mapping shares its open file
    /// description): a lease probe through it sees every other process that has the
    /// semaphore open, and not this one.
    fd: ParentOnlyFd,
}

/// Semaphore files this process has open, by (device, inode).
static OPEN: SharedHere<(u64, u64), SemaphoreFile> = SharedHere::new();

fn share(made: SemaphoreFile) -> Arc<SemaphoreFile> {
    OPEN.share(made.file_id(), || made)
}

fn find(id: (u64, u64)) -> Option<Arc<SemaphoreFile>> {
    OPEN.find(id)
}

/// Whether 16-byte compare-and-swap is lock-free here (every x86_64 CPU since 2006 and
/// every aarch64 CPU): without it the units could not be labelled across processes.
pub(crate) fn supported() -> bool {
    AtomicU128::is_lock_free()
}

fn unsupported() -> io::Error {
    io::Error::other("this CPU has no 16-byte compare-and-swap: qshm cannot take Qt's POSIX semaphore here")
}

impl SemaphoreFile {
    /// Make the semaphore file `path` with `value`, mode `perms` (and owner `owner`, for
    /// root acting on a user's behalf): complete before it has a name (`O_TMPFILE` with
    /// the bytes glibc's `sem_init` writes, then `linkat`), so a creator killed midway
    /// leaves nothing. `Err(EEXIST)` when the name is taken.
    pub(crate) fn create(
        path: &CString,
        perms: u32,
        owner: Option<(u32, u32)>,
        value: u32,
    ) -> io::Result<Arc<SemaphoreFile>> {
        if !supported() {
            return Err(unsupported());
        }
        let dir = os::cstring(crate::sys::SHM_DIR)?;
        let fd = os::open(&dir, libc::O_TMPFILE | libc::O_RDWR, perms)?;
        os::fchmod(&fd, perms)?;
        if let Some((uid, gid)) = owner {
            os::fchown(&fd, uid, gid)?;
        }
        os::pwrite(&fd, &glibc_bytes(value)?, 0)?;
        os::link_fd(&fd, path)?;
        let file = os::fstat(&fd)?;
        SemaphoreFile::assemble(fd, file, path.clone())
    }

    /// Open the existing semaphore file `path` (`Ok(None)`: there is none) and check it
    /// as `trust` says, on the descriptor that is then mapped.
    pub(crate) fn open(
        path: &CString,
        trust: SemaphoreTrust,
    ) -> Result<Option<Arc<SemaphoreFile>>, OpenError> {
        if !supported() {
            return Err(OpenError::Io(unsupported()));
        }
        let file = match NamedFile::open_past_probes(path, libc::O_RDWR, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(OpenError::Io(e)),
        };
        let st = file.stat;
        if let SemaphoreTrust::Segment {
            owner_uid,
            segment_perms,
        } = trust
        {
            let me = os::euid();
            if st.uid != owner_uid && st.uid != me && st.uid != 0 && segment_perms & 0o002 == 0 {
                return Err(OpenError::Untrusted(Untrusted::Owner(st.uid)));
            }
            if writable_beyond(st.mode & 0o7777, segment_perms) {
                return Err(OpenError::Untrusted(Untrusted::Permissions(st.mode & 0o7777)));
            }
        }
        if st.size < 16 {
            return Err(OpenError::Untrusted(Untrusted::Content));
        }
        if let Some(shared) = find((st.dev, st.ino)) {
            return Ok(Some(shared));
        }
        SemaphoreFile::assemble(file.into_fd(), st, path.clone())
            .map(Some)
            .map_err(OpenError::Io)
    }

    fn assemble(fd: std::os::fd::OwnedFd, file: FileStat, path: CString) -> io::Result<Arc<SemaphoreFile>> {
        // a whole page: the file is 32 bytes, and bytes past its end within its last page
        // read as zeros (never SIGBUS) while it keeps its size
        let map = Mapping::map_file(&fd, os::page_size(), true)?;
        Ok(share(SemaphoreFile {
            map,
            file,
            path,
            fd: ParentOnlyFd::new(fd),
        }))
    }

    /// Whether no other process has the semaphore open or mapped (a write-lease probe
    /// through the descriptor this process maps it with); `None` when the kernel cannot
    /// tell (not the owner, or leases off).
    pub(crate) fn alone(&self) -> Option<bool> {
        let alone = os::take_write_lease(self.fd.as_fd()).ok()?;
        os::release_lease(self.fd.as_fd());
        Some(alone)
    }

    /// Whether this process has the semaphore file (device, inode) open.
    pub(crate) fn open_here(id: (u64, u64)) -> bool {
        find(id).is_some()
    }

    /// This process's mapping of the semaphore file (device, inode), if it has one.
    #[cfg(feature = "admin")]
    pub(crate) fn find_here(id: (u64, u64)) -> Option<Arc<SemaphoreFile>> {
        find(id)
    }

    /// The path it was opened by.
    pub(crate) fn path(&self) -> &CString {
        &self.path
    }

    /// (device, inode) of the file.
    /// Add the permission bits `perms` to the semaphore file (its owner only: a semaphore
    /// a Qt process made at 0600 before qshm made the segment lets in the segment's other
    /// writers). The kernel refuses anyone else; that is no error here.
    pub(crate) fn add_permissions(&self, perms: u32) {
        let Ok(st) = os::fstat(self.fd.as_fd()) else {
            return;
        };
        let mode = st.mode & 0o777;
        if st.uid == os::euid() && mode | (perms & 0o777) != mode {
            let _ = os::fchmod(self.fd.as_fd(), (mode | (perms & 0o777)) as libc::mode_t);
        }
    }

    pub(crate) fn file_id(&self) -> (u64, u64) {
        (self.file.dev, self.file.ino)
    }

    /// What qshm records of a semaphore it made: (device, inode, birth ns).
    pub(crate) fn record(&self) -> [u64; 3] {
        [
            self.file.dev,
            self.file.ino,
            self.file.btime_ns.unwrap_or(self.file.ctime_ns) as u64,
        ]
    }

    /// Owner, group and mode of the file.
    pub(crate) fn owner(&self) -> (u32, u32, u32) {
        (self.file.uid, self.file.gid, self.file.mode & 0o7777)
    }

    /// Unlink its name if the name still means this file (and not a newer one).
    pub(crate) fn unlink_if_still_named(&self) -> bool {
        self.still_named() && os::unlink(&self.path).is_ok()
    }

    /// Give the file another name (a hard link), `path`.
    pub(crate) fn link_to(&self, path: &std::ffi::CStr) -> io::Result<()> {
        os::link_fd(self.fd.as_fd(), path)
    }

    /// Whether its name still means this file.
    pub(crate) fn still_named(&self) -> bool {
        matches!(os::lstat(&self.path), Ok(now) if now.same_file(&self.file))
    }

    /// Unlink its name if nobody else has it open: no other process (a write lease on this
    /// process's descriptor, held across the unlink, so that nobody can open it between the
    /// look and the unlink: an opener waits for the lease or, with `O_NONBLOCK`, fails) and
    /// no other handle of this process (`this` is the only one). For a semaphore whose
    /// segment is already gone, which a new segment of the key may be about to share.
    pub(crate) fn unlink_if_alone(this: &Arc<SemaphoreFile>) -> bool {
        if Arc::strong_count(this) > 1 {
            return false;
        }
        if !matches!(os::take_write_lease(this.fd.as_fd()), Ok(true)) {
            return false;
        }
        let unlinked = this.unlink_if_still_named();
        os::release_lease(this.fd.as_fd());
        unlinked
    }

    #[inline]
    fn word(&self) -> &AtomicU128 {
        // SAFETY: the mapping is at least a page, page-aligned (so 16-byte aligned), and
        // lives as long as self; every process touches these 16 bytes only atomically.
        unsafe { AtomicU128::from_ptr(self.map.ptr().cast::<u128>()) }
    }

    /// The value word (the futex word glibc's waiters sleep on).
    #[inline]
    fn value_word(&self) -> *const u32 {
        // little-endian: the low 32 bits of `data` come first
        self.map.ptr().cast::<u32>()
    }

    /// The whole 16-byte word now.
    pub(crate) fn load(&self) -> u128 {
        self.word().load(Ordering::Acquire)
    }

    /// The value now (for diagnostics and `value()`).
    pub(crate) fn value(&self) -> io::Result<u32> {
        let v = value(self.load());
        if v > SEM_VALUE_MAX {
            return Err(corrupt(v));
        }
        Ok(v)
    }

    /// Take a unit if one is free, writing `label` (0: none) into the pad in the same
    /// instruction. `as_waiter`: this thread counted itself as a waiter
    /// ([`add_waiter`](Self::add_waiter)) and stops being one when it takes the unit.
    #[inline]
    pub(crate) fn try_take(&self, label: u32, as_waiter: bool) -> io::Result<Take> {
        // the likely state: one unit, nobody waiting, nobody labelled
        let mut seen = 1 | (SHARED << 64);
        loop {
            let v = value(seen);
            if v == 0 {
                return Ok(Take::Busy(seen));
            }
            if v > SEM_VALUE_MAX {
                return Err(corrupt(v));
            }
            let mut next = seen - 1;
            if as_waiter && waiters(seen) > 0 {
                next -= ONE_WAITER;
            }
            match self.word().compare_exchange(
                seen,
                with_pad(next, label),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(Take::Took),
                Err(now) => seen = now,
            }
        }
    }

    /// Take over the unit a gone holder left: the word must still be `seen` (no unit free,
    /// `seen`'s pad naming the gone holder); `label` replaces it. `false`: it changed.
    pub(crate) fn take_over(&self, seen: u128, label: u32, as_waiter: bool) -> bool {
        if value(seen) != 0 {
            return false;
        }
        let mut next = seen;
        if as_waiter && waiters(seen) > 0 {
            next -= ONE_WAITER;
        }
        self.word()
            .compare_exchange(seen, with_pad(next, label), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Give back a unit taken with `label` (0: none): the pad is cleared if it still says
    /// `label`. Wakes one waiter if any may sleep. `EOVERFLOW` at `SEM_VALUE_MAX`.
    #[inline]
    pub(crate) fn give_back(&self, label: u32) -> io::Result<()> {
        // the likely state: no unit free, nobody waiting, labelled by us
        let mut seen = (SHARED << 64) | (u128::from(label) << PAD_SHIFT);
        loop {
            let v = value(seen);
            if v >= SEM_VALUE_MAX {
                return Err(if v > SEM_VALUE_MAX {
                    corrupt(v)
                } else {
                    io::Error::from_raw_os_error(libc::EOVERFLOW)
                });
            }
            let mut next = seen + 1;
            if label != 0 && pad(seen) == label {
                next = with_pad(next, 0);
            }
            match self
                .word()
                .compare_exchange(seen, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(before) => {
                    if waiters(before) > 0 {
                        // SAFETY: the value word lives in our mapping for the call.
                        unsafe { os::futex_wake_at(self.value_word(), 1) }?;
                    }
                    return Ok(());
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Count this thread as a waiter, as glibc's `sem_wait` does before it sleeps (so that
    /// `sem_post` wakes someone). A waiter killed meanwhile leaves the count raised, which
    /// only costs posters a wake-up, as with glibc.
    pub(crate) fn add_waiter(&self) {
        let mut seen = self.word().load(Ordering::Relaxed);
        while waiters(seen) < u32::MAX {
            match self.word().compare_exchange_weak(
                seen,
                seen + ONE_WAITER,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => seen = now,
            }
        }
    }

    /// Stop counting this thread as a waiter (it gave up).
    pub(crate) fn remove_waiter(&self) {
        let mut seen = self.word().load(Ordering::Relaxed);
        while waiters(seen) > 0 {
            match self.word().compare_exchange_weak(
                seen,
                seen - ONE_WAITER,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => seen = now,
            }
        }
    }

    /// Sleep while no unit is free, at most `timeout`.
    pub(crate) fn sleep(&self, timeout: Duration) -> io::Result<()> {
        // SAFETY: the value word lives in our mapping for the call.
        unsafe { os::futex_wait_at(self.value_word(), 0, Some(timeout)) }.map(drop)
    }
}

/// The label in the pad of a word seen by [`SemaphoreFile::try_take`] (0: none).
pub(crate) fn holder_label(seen: u128) -> u32 {
    pad(seen)
}

/// The value part of a seen word.
pub(crate) fn seen_value(seen: u128) -> u32 {
    value(seen)
}

fn corrupt(v: u32) -> io::Error {
    io::Error::other(format!(
        "the semaphore's value {v} is above SEM_VALUE_MAX: its file was overwritten"
    ))
}

/// The 32 bytes `sem_open` writes for a new semaphore of `value`: glibc's own `sem_init`
/// of a process-shared semaphore, the rest zero. (Writing glibc's bytes rather than our
/// idea of them keeps every `sem_open` of the name, Qt's included, compatible.)
fn glibc_bytes(value: u32) -> io::Result<[u8; SEM_T_LEN]> {
    const _: () = assert!(size_of::<libc::sem_t>() == SEM_T_LEN);
    let mut sem = std::mem::MaybeUninit::<libc::sem_t>::zeroed();
    // SAFETY: sem points to a zeroed sem_t we own; pshared = 1 as sem_open makes it.
    if unsafe { libc::sem_init(sem.as_mut_ptr(), 1, value) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every byte of sem is initialised (zeroed, then set by sem_init).
    Ok(unsafe { std::mem::transmute::<libc::sem_t, [u8; SEM_T_LEN]>(sem.assume_init()) })
}

/// The value of a semaphore file read with `pread`, without mapping it (for tools).
#[cfg(feature = "admin")]
pub(crate) fn peek(fd: &std::os::fd::OwnedFd) -> io::Result<(u32, u32)> {
    let mut bytes = [0u8; 16];
    if os::pread(fd, &mut bytes, 0)? < bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let word = u128::from_le_bytes(bytes);
    Ok((value(word), pad(word)))
}

// glibc's value word comes first in memory on little-endian machines only
const _: () = assert!(cfg!(target_endian = "little"));

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(CString);
    impl Drop for Named {
        fn drop(&mut self) {
            let _ = os::unlink(&self.0);
        }
    }

    fn fresh(tag: &str) -> (Named, String) {
        let name = format!("qshm-semfile-{tag}-{}", std::process::id());
        let path = os::cstring(&format!("/dev/shm/sem.{name}")).unwrap();
        (Named(path), format!("/{name}"))
    }

    #[test]
    fn units_interoperate_with_glibc() {
        let (path, name) = fresh("glibc");
        let ours = SemaphoreFile::create(&path.0, 0o600, None, 1).unwrap();
        let c_name = os::cstring(&name).unwrap();
        // SAFETY: c_name is NUL-terminated; opening an existing semaphore.
        let glibc = unsafe { libc::sem_open(c_name.as_ptr(), 0) };
        assert_ne!(glibc, libc::SEM_FAILED);
        assert_eq!(ours.try_take(0x1234, false).unwrap(), Take::Took);
        // SAFETY: glibc is a live semaphore handle.
        assert_eq!(unsafe { libc::sem_trywait(glibc) }, -1, "glibc sees it taken");
        let Take::Busy(seen) = ours.try_take(7, false).unwrap() else {
            panic!("taken")
        };
        assert_eq!(holder_label(seen), 0x1234);
        ours.give_back(0x1234).unwrap();
        assert_eq!(holder_label(ours.load()), 0, "the label goes with the unit");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sem_trywait(glibc) }, 0, "glibc takes it");
        assert!(matches!(ours.try_take(1, false).unwrap(), Take::Busy(_)));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sem_post(glibc) }, 0);
        assert_eq!(ours.value().unwrap(), 1);
        // SAFETY: as above.
        unsafe { libc::sem_close(glibc) };
    }

    #[test]
    fn a_gone_holder_is_taken_over_and_values_are_checked() {
        let (path, _) = fresh("takeover");
        let sem = SemaphoreFile::create(&path.0, 0o600, None, 1).unwrap();
        assert_eq!(sem.try_take(55, false).unwrap(), Take::Took);
        let Take::Busy(seen) = sem.try_take(66, false).unwrap() else {
            panic!("taken")
        };
        assert!(sem.take_over(seen, 66, false));
        assert!(!sem.take_over(seen, 77, false), "only once");
        assert_eq!(holder_label(sem.load()), 66);
        sem.give_back(66).unwrap();
        // a corrupt value is an error, not an abort
        sem.word()
            .store(u128::from(u32::MAX) | (SHARED << 64), Ordering::SeqCst);
        assert!(sem.try_take(1, false).is_err());
        assert!(sem.give_back(1).is_err());
        sem.word()
            .store(u128::from(SEM_VALUE_MAX) | (SHARED << 64), Ordering::SeqCst);
        assert_eq!(
            sem.give_back(0).unwrap_err().raw_os_error(),
            Some(libc::EOVERFLOW)
        );
    }

    #[test]
    fn waiters_are_counted_as_glibc_counts_them() {
        let (path, _) = fresh("waiters");
        let sem = SemaphoreFile::create(&path.0, 0o600, None, 0).unwrap();
        sem.add_waiter();
        assert_eq!(waiters(sem.load()), 1);
        sem.give_back(0).unwrap();
        assert_eq!(sem.try_take(9, true).unwrap(), Take::Took);
        assert_eq!(waiters(sem.load()), 0, "a waiter that takes a unit stops waiting");
        sem.add_waiter();
        sem.remove_waiter();
        sem.remove_waiter();
        assert_eq!(waiters(sem.load()), 0, "never below zero");
    }
}
