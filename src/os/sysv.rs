//! System V shared memory and semaphores: `shmget`, `shmat`, `shmctl`, `semget`,
//! `semctl`, `semtimedop`.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use super::{cvt, timespec};

/// System V's `SEMVMX`: a System V semaphore never counts higher.
pub(crate) const SEMVMX: u32 = 32767;

pub(crate) fn ftok(path: &CStr, id: i32) -> io::Result<libc::key_t> {
    // SAFETY: path is NUL-terminated; ftok only stats it.
    let key = unsafe { libc::ftok(path.as_ptr(), id) };
    if key == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(key)
    }
}

/// Whether this process may write an IPC object with permissions `perm`, as the kernel's
/// `ipcperms` decides: the owner's bits for its owner or creator, the group's for a member
/// of its group or its creator's (supplementary groups included), else the others'; root
/// always (it acts on owners' behalf). Hand-written: no system call answers this for an
/// IPC object without trying the access itself (`faccessat` is for files).
pub(crate) fn ipc_may_write(perm: &libc::ipc_perm) -> bool {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return true;
    }
    let in_group = |g: libc::gid_t| g == gid || supplementary_groups().contains(&g);
    let mode = u32::from(perm.mode);
    let bits = if uid == perm.uid || uid == perm.cuid {
        mode >> 6
    } else if in_group(perm.gid) || in_group(perm.cgid) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o2 != 0
}

/// This process's supplementary groups (empty if they cannot be read).
fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: a size of 0 asks only for the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(len) = usize::try_from(n) else {
        return Vec::new();
    };
    let mut groups = vec![0; len];
    // SAFETY: groups has room for len entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(n).unwrap_or(0));
    groups
}

/// Whether the kernel has System V IPC: Qt's `runtimeSupportCheck` asks for something
/// that must fail (a set of -1 semaphores, a segment of `usize::MAX` bytes) and looks
/// whether it failed for want of the system call (`ENOSYS`).
pub(crate) fn system_v_ipc_available() -> bool {
    // SAFETY: plain values; both calls only fail here.
    let (sem, shm) = unsafe {
        (
            libc::semget(libc::IPC_PRIVATE, -1, 0) == -1 && errno() == libc::ENOSYS,
            libc::shmget(libc::IPC_PRIVATE, usize::MAX, 0) == -1 && errno() == libc::ENOSYS,
        )
    };
    !sem && !shm
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn shmget(key: libc::key_t, size: usize, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: shmget takes plain values.
    cvt(unsafe { libc::shmget(key, size, flags) })
}

pub(crate) fn shmat(id: libc::c_int, read_only: bool) -> io::Result<*mut u8> {
    let flags = if read_only { libc::SHM_RDONLY } else { 0 };
    // SAFETY: attaching at a kernel-chosen address (NULL) cannot alias Rust memory.
    let ptr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if ptr as isize == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ptr.cast())
    }
}

/// # Safety
/// `ptr` must come from [`shmat`] and nothing may use the mapping any more.
pub(crate) unsafe fn shmdt(ptr: *mut u8) -> io::Result<()> {
    // SAFETY: guaranteed by the caller.
    cvt(unsafe { libc::shmdt(ptr.cast()) }).map(drop)
}

pub(crate) fn shm_stat(id: libc::c_int) -> io::Result<libc::shmid_ds> {
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::uninit();
    // SAFETY: ds points to writable memory of the right size for IPC_STAT.
    cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: IPC_STAT succeeded, so it filled ds.
    Ok(unsafe { ds.assume_init() })
}

pub(crate) fn shm_remove(id: libc::c_int) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// `SHM_DEST` in `shm_perm.mode`: the segment is marked for destruction.
pub(crate) const SHM_DEST: u16 = 0o1000;

// ---------------------------------------------------------------- System V semaphores

pub(crate) fn semget(key: libc::key_t, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: semget takes plain values.
    cvt(unsafe { libc::semget(key, 1, flags) })
}

pub(crate) fn sem_setval(id: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: SETVAL takes the value as the variadic int argument (union semun.val).
    cvt(unsafe { libc::semctl(id, 0, libc::SETVAL, value) }).map(drop)
}

pub(crate) fn sem_getval(id: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: GETVAL takes no extra argument.
    cvt(unsafe { libc::semctl(id, 0, libc::GETVAL) })
}

/// `semctl(IPC_STAT)` of semaphore set `id`.
pub(crate) fn sem_stat(id: libc::c_int) -> io::Result<libc::semid_ds> {
    let mut ds = std::mem::MaybeUninit::<libc::semid_ds>::zeroed();
    // SAFETY: IPC_STAT writes a semid_ds through the variadic pointer argument.
    cvt(unsafe { libc::semctl(id, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: IPC_STAT succeeded (and the buffer was zeroed), so ds is initialised.
    Ok(unsafe { ds.assume_init() })
}

/// The owner's uid of semaphore set `id` (`semctl(IPC_STAT)`).
pub(crate) fn sem_owner(id: libc::c_int) -> io::Result<u32> {
    Ok(sem_stat(id)?.sem_perm.uid)
}

/// Set the permission bits of semaphore set `id` (`semctl(IPC_SET)`; its owner and
/// group stay).
pub(crate) fn sem_set_mode(id: libc::c_int, mode: u32) -> io::Result<()> {
    let mut ds = sem_stat(id)?;
    ds.sem_perm.mode = (ds.sem_perm.mode & !0o777) | (mode & 0o777) as libc::c_ushort;
    // SAFETY: IPC_SET reads a semid_ds through the variadic pointer argument.
    cvt(unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) }).map(drop)
}

pub(crate) fn sem_remove(id: libc::c_int) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no extra argument.
    cvt(unsafe { libc::semctl(id, 0, libc::IPC_RMID) }).map(drop)
}

/// Add `delta` to semaphore 0 of set `id` with `SEM_UNDO`, so the kernel reverts it if
/// this process dies. `timeout`: `None` blocks, `Some(0)` never blocks. `Ok(false)`
/// means it would have blocked or timed out.
pub(crate) fn semop_undo(id: libc::c_int, delta: i16, timeout: Option<Duration>) -> io::Result<bool> {
    let mut flags = libc::SEM_UNDO as libc::c_short;
    if timeout == Some(Duration::ZERO) {
        flags |= libc::IPC_NOWAIT as libc::c_short;
    }
    // a signal handler that runs meanwhile (without SA_RESTART, as Python's) ends the call
    // with EINTR: the wait goes on for the time that is left, as std's calls do
    let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    loop {
        let mut op = libc::sembuf {
            sem_num: 0,
            sem_op: delta,
            sem_flg: flags,
        };
        let left = match (timeout, deadline) {
            (Some(t), _) if t.is_zero() => None,
            (Some(_), Some(deadline)) => Some(
                deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .max(Duration::from_nanos(1)),
            ),
            _ => None,
        };
        let rc = match left {
            Some(t) => {
                let ts = timespec(t);
                // SAFETY: op and ts are valid for the duration of the call.
                unsafe { libc::syscall(libc::SYS_semtimedop, id, &mut op, 1usize, &ts) as libc::c_int }
            }
            // SAFETY: op is valid for the duration of the call.
            None => unsafe { libc::semop(id, &mut op, 1) },
        };
        match cvt(rc) {
            Ok(_) => return Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `semctl(GETPID)`: the process that last operated on semaphore 0 of set `id` (0 when
/// nobody has yet), for `qshm ls` to tell an abandoned semaphore from one in use.
#[cfg(feature = "admin")]
pub(crate) fn sem_last_pid(id: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: GETPID takes no extra argument.
    cvt(unsafe { libc::semctl(id, 0, libc::GETPID) })
}
