//! POSIX named semaphores (`sem_open`), as `QSystemSemaphore` uses them, and their
//! files in `/dev/shm`.

use std::ffi::CString;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::mapped_by_others;
use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os::{self, NamedSemaphore};
use crate::sys::SHM_DIR;
use crate::sys::named_file::NamedFile;
use crate::sys::procfs::{self, Mapped};
use crate::sys::{SemaphoreBackend, SemaphoreMode, not_ours};

/// Refuse, before anything is made, a semaphore file that belongs to another user.
pub(super) fn refuse_foreign_semaphore(key: &NativeIpcKey) -> Result<(), Failure> {
    match os::cstring(&semaphore_file(key)?).and_then(|p| os::lstat(&p)) {
        Ok(st) if st.uid != os::euid() => Err(not_ours("the lock's semaphore", st.uid)),
        _ => Ok(()),
    }
}

/// Qt's semaphore of a segment owned by `segment_owner`: open or make it, but never one
/// that belongs to a user other than us and the segment's owner (they could set it to 0,
/// a hang, or to 5, no exclusion).
pub(crate) fn open_semaphore_of(
    key: &NativeIpcKey,
    perms: u32,
    segment_owner: u32,
) -> Result<Arc<dyn SemaphoreBackend>, Failure> {
    let sem = Semaphore::open(key, 1, SemaphoreMode::Open, perms)?;
    if !sem.created {
        // made by someone else: whose is the file we mapped?
        match sem.owner() {
            Some(uid) if uid != os::euid() && uid != segment_owner => {
                return Err(not_ours("the lock's semaphore", uid));
            }
            _ => {}
        }
    }
    Ok(Arc::new(sem))
}

/// Whether a process may have Qt's semaphore `key` open: its file exists and a lease
/// probe cannot rule out another opener. A Qt process keeps its segment's semaphore open
/// (mapped) from its first attach until the `QSharedMemory` goes away; qshm's Fast mode
/// never opens it. Cost: a `stat`, at most an `open` and a lease, whatever the number of
/// processes.
pub(crate) fn qt_semaphore_in_use(key: &NativeIpcKey) -> bool {
    let Ok(path) = semaphore_file(key).and_then(|p| Ok(os::cstring(&p)?)) else {
        return true;
    };
    let file = match NamedFile::open(&path, libc::O_RDONLY, 0) {
        Ok(file) => file,
        Err(e) => return e.raw_os_error() != Some(libc::ENOENT),
    };
    let alone = file.alone();
    file.release();
    alone != Some(true)
}

/// The file a POSIX semaphore key lives in.
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

/// Remove the POSIX semaphore `key` if it is ours and no process outside qshm can be using
/// it: nobody else has it open (a lease probe), or everyone who maps it also maps the
/// lock state `lock_state` (qshm processes of this segment, on their way out: they close
/// the semaphore before the lock state). A semaphore a Qt program holds open stays.
pub(crate) fn remove_semaphore_if_unused(key: &NativeIpcKey, lock_state: Option<(u64, u64)>) -> bool {
    let Ok(path) = semaphore_file(key).and_then(|p| Ok(os::cstring(&p)?)) else {
        return false;
    };
    let Ok(file) = NamedFile::open(&path, libc::O_RDWR, 0) else {
        return false;
    };
    if file.stat.uid != os::euid() && os::euid() != 0 {
        return false;
    }
    let unused = match file.alone() {
        Some(true) => true,
        _ => {
            let sem = Mapped::File {
                dev: file.stat.dev,
                ino: file.stat.ino,
            };
            match lock_state {
                Some((dev, ino)) => {
                    let census = procfs::census(&[sem, Mapped::File { dev, ino }]);
                    census.hidden.is_empty()
                        && census
                            .mapping
                            .iter()
                            .all(|&(_, bits)| bits & 0b10 != 0 || bits & 0b01 == 0)
                }
                None => !mapped_by_others(&file.stat),
            }
        }
    };
    let removed = unused && matches!(file.unlink_if_still_named(), Ok(true));
    file.release();
    removed
}

/// The value of the POSIX semaphore of `key` and its file's (device, inode), read from the
/// file without opening the semaphore: mapping it would make this process look like a
/// possible holder to a waiter looking for a dead one. glibc's `struct new_sem` starts
/// with the value: the low 32 bits of a 64-bit word where glibc has 64-bit atomics (all
/// 64-bit targets), else a 32-bit word holding the value shifted left by one.
#[cfg(feature = "admin")]
pub(crate) fn peek_value(key: &NativeIpcKey) -> io::Result<(u32, (u64, u64))> {
    let path = semaphore_file(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let file = NamedFile::open(&os::cstring(&path)?, libc::O_RDONLY, 0)?;
    let mut word = [0u8; 4];
    if os::pread(&file.fd, &mut word, 0)? < word.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let word = u32::from_ne_bytes(word);
    let value = if cfg!(target_pointer_width = "64") {
        word
    } else {
        word >> 1
    };
    Ok((value, (file.stat.dev, file.stat.ino)))
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
    ) -> Result<Semaphore, Failure> {
        let file = os::cstring(&semaphore_file(key)?)?;
        if initial > os::SEM_VALUE_MAX {
            return Err(Failure::because(
                SharedMemoryError::InvalidSize,
                format!(
                    "initial value {initial} is above the system's maximum {}",
                    os::SEM_VALUE_MAX
                ),
            ));
        }
        let name = os::cstring(key.native())?;
        let dir = os::cstring(SHM_DIR)?;
        let perms = perms as libc::mode_t;
        let mut tries = 0;
        loop {
            tries += 1;
            // exactly the mode asked for (sem_open would apply the umask)
            match NamedSemaphore::create_new(&dir, &file, &name, perms, initial) {
                Ok(sem) => {
                    return Ok(Semaphore {
                        sem,
                        name,
                        created: true,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match mode {
                // Qt: a semaphore that exists at create time survived a crash: replace it.
                SemaphoreMode::Create if tries < 3 => match NamedSemaphore::unlink(&name) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
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
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    /// The owner of the semaphore's file (the one this handle maps).
    fn owner(&self) -> Option<u32> {
        let (dev, ino) = self.file_id()?;
        let path = os::cstring(&format!(
            "{SHM_DIR}/sem.{}",
            self.name.to_str().ok()?.trim_start_matches('/')
        ))
        .ok()?;
        let st = os::lstat(&path).ok()?;
        (st.dev == dev && st.ino == ino).then_some(st.uid)
    }
}

impl Semaphore {
    /// The semaphore of `key` if it exists (never made): for a destroyer.
    pub(crate) fn open_existing(key: &NativeIpcKey) -> Option<Arc<dyn SemaphoreBackend>> {
        let name = os::cstring(key.native()).ok()?;
        let sem = NamedSemaphore::open(&name, 0, 0, 0).ok()?;
        Some(Arc::new(Semaphore {
            sem,
            name,
            created: false,
        }))
    }
}

impl SemaphoreBackend for Semaphore {
    fn acquire(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.sem.wait(timeout)
    }

    fn release(&self, n: u32) -> io::Result<()> {
        if n == 1 {
            // one post: sem_post itself refuses (EOVERFLOW) past the maximum
            return self.sem.post();
        }
        // All or nothing: never past SEM_VALUE_MAX (sem_post would stop there, half done).
        let value = u32::try_from(self.sem.value()?.max(0)).unwrap_or(0);
        if n > os::SEM_VALUE_MAX - value.min(os::SEM_VALUE_MAX) {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        }
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

    fn file_id(&self) -> Option<(u64, u64)> {
        procfs::own_mapping_of(self.sem.addr())
    }

    fn post_for_dead_holder(&self) -> io::Result<()> {
        self.sem.post()
    }
}

#[cfg(feature = "admin")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_value_reads_what_sem_getvalue_says() {
        let key = NativeIpcKey::new(
            format!("/qshm-peek-sem-{}", std::process::id()),
            crate::KeyType::PosixRealtime,
        );
        let sem = Semaphore::open(&key, 3, SemaphoreMode::Create, 0o600).unwrap_or_else(|e| panic!("{e:?}"));
        struct Remove<'a>(&'a Semaphore);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = self.0.remove();
            }
        }
        let _remove = Remove(&sem);
        let (value, file) = peek_value(&key).unwrap();
        assert_eq!(value, 3);
        assert_eq!(Some(file), sem.file_id());
        assert!(sem.acquire(Some(Duration::ZERO)).unwrap());
        assert_eq!(peek_value(&key).unwrap().0, 2);
        assert_eq!(sem.value().unwrap(), 2);
    }
}
