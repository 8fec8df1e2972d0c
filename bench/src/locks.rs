//! The locks under test behind one trait, the floor spin lock, and the raw system calls
//! that make the floors of the segment cycles.

use std::ffi::CString;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use qshm::{AccessMode, KeyType, LockMode, SharedMemory};
use raw_sync::locks::{LockImpl, LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf};

// ------------------------------------------------------------------ flavours of qshm

/// A qshm flavour under test.
#[derive(Clone, Copy)]
pub struct Flavour {
    pub name: &'static str,
    pub kind: KeyType,
    pub mode: LockMode,
}

pub const FAST: Flavour = Flavour {
    name: "qshm fast",
    kind: KeyType::PosixRealtime,
    mode: LockMode::Fast,
};
pub const QT_POSIX: Flavour = Flavour {
    name: "qshm Qt-compatible (POSIX)",
    kind: KeyType::PosixRealtime,
    mode: LockMode::QtCompatible,
};
pub const QT_SYSV: Flavour = Flavour {
    name: "qshm Qt-compatible (System V)",
    kind: KeyType::SystemV,
    mode: LockMode::QtCompatible,
};

/// The four key type / lock mode combinations, named for segment cycles.
pub const CYCLE_FLAVOURS: [Flavour; 4] = [
    Flavour {
        name: "qshm POSIX (fast)",
        ..FAST
    },
    Flavour {
        name: "qshm POSIX (Qt-compatible)",
        ..QT_POSIX
    },
    Flavour {
        name: "qshm System V (fast)",
        kind: KeyType::SystemV,
        mode: LockMode::Fast,
    },
    Flavour {
        name: "qshm System V (Qt-compatible)",
        ..QT_SYSV
    },
];

pub fn handle(key: &str, f: Flavour) -> SharedMemory {
    SharedMemory::with_key_type(key, f.kind).with_lock_mode(f.mode)
}

fn mode_arg(m: LockMode) -> &'static str {
    if m == LockMode::Fast { "fast" } else { "qt" }
}

// ------------------------------------------------------------------ /dev/shm mappings

/// A MAP_SHARED mapping of a /dev/shm file; the creator unlinks it when dropped.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    name: CString,
    owner: bool,
}

impl Mapping {
    /// Create `/dev/shm/<name>` of `len` bytes (zero-filled) and map it.
    pub fn create(name: &str, len: usize) -> Mapping {
        Mapping::map(name, Some(len))
    }

    /// Map an existing `/dev/shm/<name>` whole.
    pub fn open(name: &str) -> Mapping {
        Mapping::map(name, None)
    }

    fn map(name: &str, create: Option<usize>) -> Mapping {
        let c = CString::new(format!("/{name}")).expect("name");
        let flags = if create.is_some() {
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
        } else {
            libc::O_RDWR
        };
        // SAFETY: c is NUL-terminated; shm_open takes plain values otherwise.
        let fd = unsafe { libc::shm_open(c.as_ptr(), flags, 0o600) };
        assert!(fd >= 0, "shm_open {name}: {}", std::io::Error::last_os_error());
        let len = match create {
            Some(len) => {
                // SAFETY: fd is the descriptor shm_open just returned.
                let rc = unsafe { libc::ftruncate(fd, len as libc::off_t) };
                assert_eq!(rc, 0, "ftruncate: {}", std::io::Error::last_os_error());
                len
            }
            None => {
                // SAFETY: an all-zero stat is a valid buffer for fstat to fill in.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: fd is open and st is a valid stat buffer.
                let rc = unsafe { libc::fstat(fd, &mut st) };
                assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
                st.st_size as usize
            }
        };
        // SAFETY: a fresh shared mapping of the whole file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        // SAFETY: fd is ours; the mapping keeps the file alive.
        unsafe { libc::close(fd) };
        Mapping {
            ptr: ptr as *mut u8,
            len,
            name: c,
            owner: create.is_some(),
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The name to give `Mapping::open` (without the leading slash).
    pub fn name(&self) -> &str {
        &self.name.to_str().expect("utf-8")[1..]
    }

    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked above); the mapping lives as long as self,
        // and every process only touches this word atomically.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU32) }
    }

    pub fn u64s_at(&self, offset: usize, n: usize) -> &[AtomicU64] {
        assert!(offset.is_multiple_of(8) && offset + 8 * n <= self.len);
        // SAFETY: in bounds and aligned (checked above); only used atomically.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset) as *const AtomicU64, n) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len is the mapping made in `map`, unmapped only here.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        if self.owner {
            // SAFETY: name is NUL-terminated.
            unsafe { libc::shm_unlink(self.name.as_ptr()) };
        }
    }
}

// ------------------------------------------------------------------ the locks

/// A lock guarding some shared bytes: `locked` runs `f` on a pointer to at least 64
/// bytes of shared data while holding the lock.
pub trait Lock {
    fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> R;
}

impl Lock for SharedMemory {
    #[inline]
    fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> R {
        let mut guard = self.lock().expect("lock");
        f(guard.as_mut_ptr())
    }
}

/// The hardware floor: a test-and-test-and-set spin lock on a word of a MAP_SHARED
/// /dev/shm mapping. Uncontended it is one acquire compare-exchange and one release
/// store. Waiters spin on a plain load and yield the CPU every `SPINS` rounds (the
/// machine may have fewer cores than contenders). Data starts at offset 128, a cache
/// line away from the lock word, as a real segment's data would be.
pub struct SpinLock {
    map: Mapping,
}

const SPINS: u32 = 100;
const SPIN_DATA: usize = 128;

impl SpinLock {
    pub fn create(name: &str) -> SpinLock {
        SpinLock {
            map: Mapping::create(name, 4096),
        }
    }

    pub fn open(name: &str) -> SpinLock {
        SpinLock {
            map: Mapping::open(name),
        }
    }

    pub fn name(&self) -> &str {
        self.map.name()
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        self.map.u32_at(0)
    }

    #[inline]
    pub fn acquire(&self) {
        if self
            .word()
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.acquire_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self) {
        let word = self.word();
        loop {
            let mut spins = 0;
            while word.load(Ordering::Relaxed) != 0 {
                spin_loop();
                spins += 1;
                if spins == SPINS {
                    std::thread::yield_now();
                    spins = 0;
                }
            }
            if word
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    #[inline]
    pub fn release(&self) {
        self.word().store(0, Ordering::Release);
    }
}

impl Lock for SpinLock {
    #[inline]
    fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> R {
        self.acquire();
        // SAFETY: offset SPIN_DATA is inside the 4096-byte mapping.
        let r = f(unsafe { self.map.ptr().add(SPIN_DATA) });
        self.release();
        r
    }
}

/// raw_sync's process-shared pthread mutex at offset 0 of a shared_memory segment,
/// guarding data at offset 128.
pub struct RawSync {
    shmem: Shmem,
    mutex: Box<dyn LockImpl>,
}

impl RawSync {
    pub fn create() -> RawSync {
        let shmem = ShmemConf::new()
            .size(4096)
            .create()
            .expect("shared_memory create");
        // SAFETY: a fresh 4096-byte segment: the mutex at 0 and its data at 128 fit.
        let (mutex, _) = unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
        RawSync { shmem, mutex }
    }

    pub fn open(os_id: &str) -> RawSync {
        let shmem = ShmemConf::new().os_id(os_id).open().expect("shared_memory open");
        // SAFETY: the creator initialised the mutex at 0; data at 128 is inside the segment.
        let (mutex, _) =
            unsafe { Mutex::from_existing(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
        RawSync { shmem, mutex }
    }
}

impl Lock for RawSync {
    #[inline]
    fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> R {
        let guard = self.mutex.lock().expect("lock");
        f(*guard)
    }
}

// ------------------------------------------------------------------ subjects across processes

/// A lock measured across processes.
#[derive(Clone, Copy)]
pub enum Subject {
    Qshm(Flavour),
    RawSync,
    Spin,
}

pub const SUBJECTS: [Subject; 5] = [
    Subject::Qshm(FAST),
    Subject::Qshm(QT_POSIX),
    Subject::Qshm(QT_SYSV),
    Subject::RawSync,
    Subject::Spin,
];

pub const RAW_SYNC_NAME: &str = "shared_memory + raw_sync mutex";
pub const SPIN_NAME: &str = "floor: CAS spin lock on a MAP_SHARED word";

impl Subject {
    pub fn name(self) -> &'static str {
        match self {
            Subject::Qshm(f) => f.name,
            Subject::RawSync => RAW_SYNC_NAME,
            Subject::Spin => SPIN_NAME,
        }
    }

    /// A System V semaphore costs microseconds per operation: scale work down.
    pub fn slow(self) -> bool {
        matches!(self, Subject::Qshm(f) if f.kind == KeyType::SystemV)
    }

    /// Create the lock and its shared data (zeroed).
    pub fn create(self) -> Instance {
        match self {
            Subject::Qshm(f) => {
                let k = crate::key("lock");
                let mut shm = handle(&k, f);
                shm.create(4096, AccessMode::ReadWrite).expect("create");
                Instance::Qshm(shm, f)
            }
            Subject::RawSync => Instance::Raw(RawSync::create()),
            Subject::Spin => Instance::Spin(SpinLock::create(&crate::key("spin"))),
        }
    }
}

/// A live lock: created by the parent, opened by children from `spec()`.
pub enum Instance {
    Qshm(SharedMemory, Flavour),
    Raw(RawSync),
    Spin(SpinLock),
}

impl Instance {
    /// Arguments that let a child open the same lock (see `open`).
    pub fn spec(&self) -> Vec<String> {
        match self {
            Instance::Qshm(shm, f) => vec![
                "qshm".into(),
                f.kind.as_str().into(),
                mode_arg(f.mode).into(),
                shm.key().expect("legacy key").into(),
            ],
            Instance::Raw(r) => vec!["raw".into(), r.shmem.get_os_id().into()],
            Instance::Spin(s) => vec!["spin".into(), s.name().into()],
        }
    }

    /// Open the lock a `spec()` describes.
    pub fn open(args: &[String]) -> Instance {
        match args[0].as_str() {
            "qshm" => {
                let f = Flavour {
                    name: "child",
                    kind: args[1].parse().expect("key type"),
                    mode: if args[2] == "fast" {
                        LockMode::Fast
                    } else {
                        LockMode::QtCompatible
                    },
                };
                let mut shm = handle(&args[3], f);
                shm.attach(AccessMode::ReadWrite).expect("attach");
                Instance::Qshm(shm, f)
            }
            "raw" => Instance::Raw(RawSync::open(&args[1])),
            "spin" => Instance::Spin(SpinLock::open(&args[1])),
            other => panic!("unknown lock {other}"),
        }
    }
}

/// `with_lock!(instance, l => body)`: run `body` with `l` bound to the concrete lock, so
/// the measured loops are monomorphic (no dynamic dispatch added by the harness).
#[macro_export]
macro_rules! with_lock {
    ($inst:expr, $l:ident => $body:expr) => {
        match $inst {
            $crate::locks::Instance::Qshm($l, _) => $body,
            $crate::locks::Instance::Raw($l) => $body,
            $crate::locks::Instance::Spin($l) => $body,
        }
    };
}

// ------------------------------------------------------------------ raw floors of segment cycles

pub fn page_size() -> usize {
    // SAFETY: sysconf takes a plain value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Write one byte to every page of `len` bytes at `p` (first touch: each write faults
/// a page in).
///
/// # Safety
/// `p..p + len` must be a live, writable mapping that nothing else uses meanwhile.
pub unsafe fn touch(p: *mut u8, len: usize) {
    let page = page_size();
    let mut off = 0;
    while off < len {
        // SAFETY: inside p..p+len, live and writable (the caller's promise).
        unsafe { p.add(off).write_volatile(1) };
        off += page;
    }
}

fn check(ok: bool, what: &str) {
    assert!(ok, "{what}: {}", std::io::Error::last_os_error());
}

fn map_fd(fd: libc::c_int, len: usize) -> *mut u8 {
    // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    check(p != libc::MAP_FAILED, "mmap");
    p as *mut u8
}

/// POSIX floor: shm_open(O_CREAT|O_EXCL) + ftruncate + mmap, optionally a second
/// shm_open + mmap + munmap (the attach), optionally the first touch of every page,
/// then munmap + shm_unlink. No key derivation, no lock state, no checks.
pub fn raw_posix_cycle(name: &CString, len: usize, attach: bool, first_touch: bool) {
    // SAFETY (this block): name is NUL-terminated, every descriptor and mapping used is
    // the one created just before, and each is released exactly once.
    unsafe {
        let fd = libc::shm_open(name.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600);
        check(fd >= 0, "shm_open");
        check(libc::ftruncate(fd, len as libc::off_t) == 0, "ftruncate");
        let p = map_fd(fd, len);
        libc::close(fd);
        if attach {
            let fd2 = libc::shm_open(name.as_ptr(), libc::O_RDWR, 0);
            check(fd2 >= 0, "shm_open attach");
            let q = map_fd(fd2, len);
            libc::close(fd2);
            libc::munmap(q as *mut libc::c_void, len);
        }
        if first_touch {
            touch(p, len);
        }
        libc::munmap(p as *mut libc::c_void, len);
        check(libc::shm_unlink(name.as_ptr()) == 0, "shm_unlink");
    }
}

/// System V floor: shmget(IPC_PRIVATE) + shmat, optionally a second shmat + shmdt,
/// optionally the first touch of every page, then shmdt + IPC_RMID.
pub fn raw_sysv_cycle(len: usize, attach: bool, first_touch: bool) {
    // SAFETY (this block): the id and addresses are those created just before, each
    // detached and removed exactly once.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
        check(id >= 0, "shmget");
        let p = libc::shmat(id, std::ptr::null(), 0);
        check(p as isize != -1, "shmat");
        if attach {
            let q = libc::shmat(id, std::ptr::null(), 0);
            check(q as isize != -1, "shmat attach");
            libc::shmdt(q);
        }
        if first_touch {
            touch(p as *mut u8, len);
        }
        libc::shmdt(p);
        check(
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == 0,
            "IPC_RMID",
        );
    }
}

/// A segment of the `shared_memory` crate, created (and unlinked when dropped).
pub fn shared_memory_create(len: usize) -> Shmem {
    ShmemConf::new().size(len).create().expect("shared_memory create")
}
