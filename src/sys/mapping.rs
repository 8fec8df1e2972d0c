//! [`Mapping`]: one mapped region (a POSIX `mmap` or a System V `shmat`), unmapped on drop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::os;

/// How the region was mapped, so `Drop` undoes it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mmap,
    SystemV,
}

/// A region of shared memory mapped into this process.
///
/// It owns the mapping: nothing else unmaps it, and it is unmapped exactly once, when
/// dropped. The pointer it hands out is only an address; whoever dereferences it must
/// make sure, as `SharedMemory`'s guards do, that the `Mapping` outlives the access and
/// that accesses are synchronised with other threads and processes.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    kind: Kind,
}

// SAFETY: the mapping is process-wide memory, valid from every thread; the struct holds
// only its address and length, and `Drop` unmaps it once. Access through the address is
// synchronised by the callers (the segment lock or atomics).
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only reads the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of the file `fd` shared, read-only unless `writable`.
    pub(crate) fn map_file(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Mapping> {
        let ptr = os::mmap_shared(fd.as_raw_fd(), len, writable)?;
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Mapping {
            ptr,
            len,
            kind: Kind::Mmap,
        })
    }

    /// Map the same pages again through `fd`, another descriptor of the file this
    /// mapping maps (`writable` as when mapped), in place: what `/proc/PID/maps` names the
    /// mapping after changes to `fd`'s path. On failure the mapping stays as it was.
    pub(crate) fn remap_through(&self, fd: &OwnedFd, writable: bool) -> io::Result<()> {
        if self.kind != Kind::Mmap {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: this Mapping made the region with mmap_shared of the file `fd` is open on
        // (the caller's promise), from offset 0, with this protection; nothing is unmapped
        // in between, so every pointer into it stays valid and sees the same bytes.
        unsafe { os::mmap_shared_in_place(self.ptr.as_ptr(), fd.as_raw_fd(), self.len, writable) }
    }

    /// Attach System V segment `id` (read-only unless `writable`), `len` bytes long.
    pub(crate) fn attach_system_v(id: libc::c_int, len: usize, writable: bool) -> io::Result<Mapping> {
        let ptr = os::shmat(id, !writable)?;
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Mapping {
            ptr,
            len,
            kind: Kind::SystemV,
        })
    }

    /// Start of the region.
    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the region in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by this Mapping, which is dropped once; its owner
        // (SharedMemory, the lock state) keeps it alive as long as anything borrows it.
        let _ = unsafe {
            match self.kind {
                Kind::Mmap => os::munmap(self.ptr.as_ptr(), self.len),
                Kind::SystemV => os::shmdt(self.ptr.as_ptr()),
            }
        };
    }
}
