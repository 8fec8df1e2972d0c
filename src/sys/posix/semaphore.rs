//! Qt's POSIX semaphores by key: the one a segment's lock takes (made with the segment,
//! found by attachers), and `SystemSemaphore`'s backend, all on [`SemaphoreFile`].

use std::ffi::{CStr, CString};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::semaphore_file::{OpenError, SEM_VALUE_MAX, SemaphoreFile, SemaphoreTrust, Take};
use super::{Probe, Reclaim};
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os;
use crate::sys::lock_state::{SegmentId, locker_permissions};
use crate::sys::named_file::NamedFile;
use crate::sys::{Owner, SHM_DIR, SemaphoreBackend, SemaphoreMode, not_ours, untrusted_file};

/// The file a POSIX semaphore key lives in (`sem_open`'s naming).
pub(crate) fn semaphore_file(key: &NativeIpcKey) -> Result<String, Failure> {
    let name = key.native().trim_start_matches('/');
    if name.is_empty() || name.contains('/') {
        return Err(Failure::because(
            SharedMemoryError::KeyError,
            "not a POSIX semaphore name",
        ));
    }
    Ok(format!("{SHM_DIR}/sem.{name}"))
}

fn semaphore_path(key: &NativeIpcKey) -> Result<CString, Failure> {
    Ok(os::cstring(&semaphore_file(key)?)?)
}

/// Qt's semaphore of a segment being created, made or shared with a racing creator (the
/// lock state records it either way, and the segment's destroyer removes it).
pub(crate) struct CreatedSemaphore {
    pub file: Arc<SemaphoreFile>,
}

impl CreatedSemaphore {
    /// The create failed: remove the semaphore if nobody else has it open, whether we made
    /// it or shared it. One we shared may have lost its other users since (a racing creator
    /// that failed too, a process that let go), and a semaphore nobody has open is nobody's
    /// lock: left, nothing would ever remove it. Whoever uses it keeps it open (qshm and Qt
    /// map it from attach to detach), and the lease probe sees them.
    ///
    /// Another opener may be only probing it, as we do: two creates that lose at once each
    /// see the other's probe, and both left it to nobody. So an undo that sees another
    /// opener looks again a few times, each after a pause of its own (1 to 3 ms, then
    /// longer, [`UNDO_LOOKS`] looks, 14 ms at most): a probe passes in microseconds,
    /// a user keeps it open for as long as it uses it.
    pub(crate) fn undo(self) {
        let id = self.file.file_id();
        let path = self.file.path().clone();
        drop(self.file);
        let mut pause = Duration::from_millis(1);
        for look in 1..=UNDO_LOOKS {
            let Ok(file) = NamedFile::open_past_probes(&path, libc::O_RDONLY, 0) else {
                return;
            };
            if (file.stat.dev, file.stat.ino) != id || SemaphoreFile::open_here(id) {
                return; // another semaphore has the name now; or this process uses it
            }
            if unlink_if_unused(&file) {
                return;
            }
            drop(file); // not open while we wait: our own look must not stop theirs
            if look < UNDO_LOOKS {
                std::thread::sleep(pause + jitter(pause));
                pause *= 2;
            }
        }
    }
}

/// How many times a failed create's undo looks whether anyone else has the semaphore open.
const UNDO_LOOKS: u32 = 4;

/// Up to `limit` more, different in every process and call: two undos that looked at the
/// same instant look again apart.
fn jitter(limit: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    let limit_nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % limit_nanos)
}

/// Unlink the semaphore file opened as `file` if nobody uses it: this process does not
/// map it, and a write lease shows no other opener (where the kernel cannot tell, it is in
/// use). The lease is held across the unlink, so that nobody opens it between the look and
/// the unlink (an `O_NONBLOCK` opener fails with `EWOULDBLOCK` and looks again, `sem_open`
/// waits): giving it back first let an attacher that already had the segment open the
/// semaphore in between and keep it, unnamed, while later attachers opened or made
/// another: two locks (the 4-process loop found it once a failed create's undo took a few
/// milliseconds longer).
fn unlink_if_unused(file: &NamedFile) -> bool {
    if SemaphoreFile::open_here((file.stat.dev, file.stat.ino)) || file.alone() != Some(true) {
        return false;
    }
    let unlinked = matches!(file.unlink_if_still_named(), Ok(true));
    file.release();
    unlinked
}

/// Qt's semaphore for a segment being created with mode `segment_perms`, before the
/// segment can be found. A stale one of ours (nobody has it open) is replaced by a fresh
/// one, as Qt's `QSystemSemaphore::Create` replaces it; one in use is shared (a racing
/// creator, or a Qt process between its `attach` and its `create`); another user's is
/// refused (they could set it to 0, a hang, or to 5, no exclusion).
///
/// Never replaced while a segment has the key's name (`segment`, the segment file's
/// path): then it is that segment's, whose only users may all be between their `flock`
/// and their open of it (nobody has it open for a moment). Replaced, they went on with
/// the new one, which the lock state does not record; the last of them left it named
/// as it destroyed the segment, holding it under a label of the old lock state, and a
/// new segment's waiter read that label against its own lock state and took the unit
/// from the living destroyer (two holders: the 4-process loop, CI red A/4 on 9cceab3).
/// That segment is looked at first: a stale one (a crash) is reclaimed, and its
/// semaphore then replaced as above; beside a live one this create shares it, and fails.
pub(super) fn semaphore_for_create(
    key: &NativeIpcKey,
    segment_perms: u32,
    segment: &CString,
) -> Result<CreatedSemaphore, Failure> {
    let path = semaphore_path(key)?;
    let perms = locker_permissions(segment_perms);
    let trust = SemaphoreTrust::Segment {
        owner_uid: os::euid(),
        segment_perms,
    };
    for _ in 0..4 {
        match SemaphoreFile::create(&path, perms, None, 1) {
            Ok(file) => return Ok(CreatedSemaphore { file }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(semaphore_failure(&path, e)),
        }
        // one exists: whose, and does anyone use it? (Another process may be asking the
        // same with a lease for a moment: wait that out.)
        let existing = match NamedFile::open_past_probes(&path, libc::O_RDONLY, 0) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                let uid = os::lstat(&path).map(|st| st.uid).unwrap_or(u32::MAX);
                if uid != os::euid() {
                    return Err(not_ours("the lock's semaphore", uid));
                }
                return Err(semaphore_failure(&path, e));
            }
        };
        if existing.stat.uid != os::euid() {
            return Err(not_ours("the lock's semaphore", existing.stat.uid));
        }
        // stale: its value may be whatever a crash left; make a fresh one, but never while a
        // segment has the name (see above). The probe says Gone for no segment, one that
        // went meanwhile, and a stale one (a crash), which it reclaims.
        let no_segment = matches!(super::probe_existing(segment, Reclaim::Ours)?, Probe::Gone);
        if no_segment && unlink_if_unused(&existing) {
            continue;
        }
        drop(existing);
        match SemaphoreFile::open(&path, trust) {
            Ok(Some(file)) => return Ok(CreatedSemaphore { file }),
            Ok(None) => {}
            Err(OpenError::Untrusted(why)) => {
                return Err(untrusted_file(&path.to_string_lossy(), "semaphore", why)
                    .with_kind(SharedMemoryError::AlreadyExists));
            }
            Err(OpenError::Io(e)) => return Err(semaphore_failure(&path, e)),
        }
    }
    Err(Failure::because(
        SharedMemoryError::UnknownError,
        "the lock's semaphore kept being made and removed by others; gave up",
    ))
}

/// Qt's semaphore of an existing segment of `owner`, opened by descriptor and checked
/// (owned by the segment's owner, this user or root; writable by nobody who may not write
/// the segment), or made if missing, as Qt's `attach` makes it. A missing one that the
/// segment's lock state records (`recorded`: segment id, record) is first given its name
/// back from its second name (`semaphore_keep.rs`): the Qt process that made it unlinked
/// it as it exited, while the segment's users still use it. `Ok(None)`: this user may not
/// open it (it may read the segment, not lock it). A user who may not write the segment
/// (at `segment`) only opens one: a reader never takes a lock, so one it made would only be
/// a second lock, and another user's, which the owner's attach refuses.
pub(super) fn semaphore_for_attach(
    key: &NativeIpcKey,
    owner: Owner,
    segment: &CStr,
    recorded: Option<(SegmentId, [u64; 3])>,
) -> Result<Option<Arc<SemaphoreFile>>, Failure> {
    let path = semaphore_path(key)?;
    let trust = SemaphoreTrust::Segment {
        owner_uid: owner.uid,
        segment_perms: owner.perms,
    };
    for _ in 0..4 {
        match SemaphoreFile::open(&path, trust) {
            Ok(Some(file)) => return Ok(Some(file)),
            Ok(None) => {}
            Err(OpenError::Io(e)) if e.raw_os_error() == Some(libc::EACCES) => return Ok(None),
            Err(OpenError::Untrusted(why)) => {
                return Err(untrusted_file(&path.to_string_lossy(), "semaphore", why));
            }
            Err(OpenError::Io(e)) => return Err(semaphore_failure(&path, e)),
        }
        // missing (a Qt creator removed it when it went away): the segment's own, if it
        // kept it; else make it, as Qt's attach does (but not for a reader)
        // (asked only now: most attaches find the semaphore, and need no system call more)
        if !os::may_write(segment) {
            return Ok(None);
        }
        if let Some((id, record)) = recorded
            && super::semaphore_keep::restore(&path, id, record)
        {
            continue;
        }
        let me = os::euid();
        let give_to = (me == 0 && owner.uid != 0).then_some((owner.uid, owner.gid));
        match SemaphoreFile::create(&path, locker_permissions(owner.perms), give_to, 1) {
            Ok(file) => return Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(None),
            Err(e) => return Err(semaphore_failure(&path, e)),
        }
    }
    Err(Failure::because(
        SharedMemoryError::LockError,
        "the lock's semaphore kept being made and removed by others; try again",
    ))
}

fn semaphore_failure(path: &CString, e: io::Error) -> Failure {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => SharedMemoryError::OutOfResources,
        _ => SharedMemoryError::from_errno(e.raw_os_error().unwrap_or(0)),
    };
    Failure::from(e).with_kind(kind).with_detail(format!(
        "cannot make or open the lock's semaphore {}",
        path.to_string_lossy()
    ))
}

/// Remove Qt's POSIX semaphore `key` if nobody has it open (a lease probe) and it is the
/// one a lock state recorded (`made`), or, without a record, it is ours (or we are root).
/// For clean-ups of segments that are gone.
#[cfg(feature = "admin")]
pub(crate) fn remove_semaphore_if_unused(key: &NativeIpcKey, made: Option<[u64; 3]>) -> bool {
    let Ok(path) = semaphore_path(key) else {
        return false;
    };
    let Ok(file) = NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let st = file.stat;
    let ours = match made {
        Some(record) => record == crate::sys::lock_state::file_words(&st),
        None => st.uid == os::euid() || os::euid() == 0,
    };
    ours && unlink_if_unused(&file)
}

/// Whether a process may have Qt's semaphore `key` open: its file exists and a lease
/// probe cannot rule out another opener. A Qt process keeps its segment's semaphore open
/// (mapped) from its first attach until the `QSharedMemory` goes away; qshm's Fast mode
/// never opens it. Cost: a `stat`, at most an `open` and a lease, whatever the number of
/// processes.
pub(crate) fn qt_semaphore_in_use(key: &NativeIpcKey) -> bool {
    let Ok(path) = semaphore_path(key) else {
        return true;
    };
    let file = match NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Ok(file) => file,
        Err(e) => return e.raw_os_error() != Some(libc::ENOENT),
    };
    let alone = file.alone();
    file.release();
    alone != Some(true)
}

/// A POSIX named semaphore, opened the way `QSystemSemaphore` opens it, operated by qshm
/// (`SystemSemaphore`'s backend).
pub(crate) struct Semaphore {
    file: Arc<SemaphoreFile>,
    created: bool,
}

impl Semaphore {
    pub(crate) fn open(
        key: &NativeIpcKey,
        initial: u32,
        mode: SemaphoreMode,
        perms: u32,
    ) -> Result<Semaphore, Failure> {
        if initial > SEM_VALUE_MAX {
            return Err(Failure::because(
                SharedMemoryError::InvalidSize,
                format!("initial value {initial} is above the system's maximum {SEM_VALUE_MAX}"),
            ));
        }
        let path = semaphore_path(key)?;
        for tries in 1.. {
            // exactly the mode asked for (sem_open would apply the umask)
            match SemaphoreFile::create(&path, perms & 0o777, None, initial) {
                Ok(file) => return Ok(Semaphore { file, created: true }),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match mode {
                // Qt: a semaphore that exists at create time survived a crash: replace it.
                SemaphoreMode::Create if tries < 3 => match os::unlink(&path) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                },
                _ => match SemaphoreFile::open(&path, SemaphoreTrust::Any) {
                    Ok(Some(file)) => return Ok(Semaphore { file, created: false }),
                    Ok(None) if tries < 3 => continue,
                    Ok(None) => return Err(io::Error::from_raw_os_error(libc::ENOENT).into()),
                    Err(OpenError::Io(e)) => return Err(e.into()),
                    Err(OpenError::Untrusted(why)) => {
                        return Err(untrusted_file(&path.to_string_lossy(), "semaphore", why));
                    }
                },
            }
        }
        unreachable!("the loop returns")
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let sem = &self.file;
        if sem.try_take(0, false)? == Take::Took {
            return Ok(true);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(false);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        sem.add_waiter();
        let result = (|| loop {
            if sem.try_take(0, true)? == Take::Took {
                return Ok(true);
            }
            let nap = match deadline {
                None => Duration::from_secs(1),
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => return Ok(false),
                    left => left,
                },
            };
            sem.sleep(nap)?;
        })();
        if !matches!(result, Ok(true)) {
            sem.remove_waiter();
        }
        result
    }

    fn release(&self, n: u32) -> io::Result<()> {
        // All or nothing: never past SEM_VALUE_MAX (one post at a time would stop there,
        // half done).
        let value = self.file.value()?;
        if n > SEM_VALUE_MAX - value.min(SEM_VALUE_MAX) {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        }
        for _ in 0..n {
            self.file.give_back(0)?;
        }
        Ok(())
    }

    fn value(&self) -> io::Result<i32> {
        Ok(self.file.value()? as i32)
    }

    fn remove(&self) -> io::Result<()> {
        // as Qt's sem_unlink: whatever the name means now
        match os::unlink(self.file.path()) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    fn created(&self) -> bool {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyType;

    /// Two creates that lose at once both undo: each opens the semaphore to probe it and
    /// sees the other's probe as a user, so both left it, and nobody ever removed it (CI
    /// red A/5 on a66abcb: `create_or_attach_loop_of_4_processes_never_splits` left a
    /// semaphore "used by []"). A probe is not a user: the undo looks again once it has
    /// passed. Here the other probe is a descriptor of this process, closed 3 ms later.
    #[test]
    fn an_undo_waits_out_another_probe_of_the_semaphore() {
        if !crate::sys::named_file::leases_see_readers() {
            eprintln!("*** SKIP: leases do not see readers here ***");
            return;
        }
        let name = format!("/qshm-unit-undo-{}", std::process::id());
        let key = NativeIpcKey::new(name.as_str(), KeyType::PosixRealtime);
        let path = semaphore_path(&key).unwrap();
        let file = SemaphoreFile::create(&path, 0o600, None, 1).unwrap();
        let probe = NamedFile::open(&path, libc::O_RDONLY | libc::O_NONBLOCK, 0).unwrap();
        let prober = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(3));
            drop(probe);
        });
        CreatedSemaphore { file }.undo();
        prober.join().unwrap();
        let left = os::lstat(&path).is_ok();
        let _ = os::unlink(&path);
        assert!(
            !left,
            "the semaphore stayed, used by nobody, after another probe passed"
        );
    }
}
