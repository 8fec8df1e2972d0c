//! The facts and acts about one segment that tools need and programs do not: its OS
//! facts, where its lock state and Qt's semaphore are, its numeric System V key, and
//! removal whatever its users think. An extension trait of [`SharedMemory`], so that
//! they stay out of the handle's own API and need `use qshm::admin::SharedMemoryExt`.

use std::path::PathBuf;

use crate::SharedMemory;
use crate::error::Result;
use crate::key::NativeIpcKey;
use crate::shared_memory::SegmentInfo;

/// Tool facts about a [`SharedMemory`] handle and its key (what `qshm stat`, `qshm rm`
/// and test suites use). Sealed: implemented for [`SharedMemory`] only.
///
/// ```
/// use qshm::admin::SharedMemoryExt;
/// use qshm::{AccessMode, SharedMemory};
///
/// # let key = format!("tools-doc-{}", std::process::id());
/// let mut shm = SharedMemory::new(&key);
/// shm.create(4096, AccessMode::ReadWrite)?;
/// let info = shm.info()?;
/// assert_eq!((info.size, info.permissions), (4096, 0o600));
/// println!("Qt's lock semaphore: {}", shm.semaphore_key());
/// let native = shm.native_ipc_key().clone();
/// drop(shm); // the last user: the segment is destroyed
/// assert!(!SharedMemory::force_remove(&native)?, "nothing was left to remove");
/// # Ok::<(), qshm::Error>(())
/// ```
pub trait SharedMemoryExt: sealed::Sealed {
    /// Destroy the segment of `key`, with qshm's lock state and Qt's semaphore, even if
    /// processes are still attached (they keep their mapping until they detach). For tools
    /// and tests cleaning up after crashes. Returns whether a segment existed. Never
    /// deletes a file that is not a segment or a key file qshm or Qt would make.
    #[doc(alias = "remove")]
    fn force_remove(key: &NativeIpcKey) -> Result<bool>;

    /// The key of the semaphore [`LockMode::QtCompatible`](crate::LockMode::QtCompatible)
    /// locks: what Qt's `QSharedMemory::lock()` uses for this handle's key.
    #[doc(alias = "QSystemSemaphore")]
    fn semaphore_key(&self) -> NativeIpcKey;

    /// The file holding qshm's lock state for the attached segment, if it has one.
    fn lock_state_path(&self) -> Option<PathBuf>;

    /// The numeric System V key (`ftok(path, id)`, `id` being `'Q'` or the type's project
    /// id) of a System V native key, if its key file exists.
    fn system_v_key(key: &NativeIpcKey) -> Option<i32>;

    /// Facts about the attached segment: native id, attachment count (System V only),
    /// permissions, owner, creation time, lock. `NotFound` when not attached.
    fn info(&self) -> Result<SegmentInfo>;
}

impl SharedMemoryExt for SharedMemory {
    fn force_remove(key: &NativeIpcKey) -> Result<bool> {
        SharedMemory::remove_by_key(key)
    }

    fn semaphore_key(&self) -> NativeIpcKey {
        crate::key::semaphore_key(self.native_ipc_key())
    }

    fn lock_state_path(&self) -> Option<PathBuf> {
        self.lock_state_file()
    }

    fn system_v_key(key: &NativeIpcKey) -> Option<i32> {
        SharedMemory::numeric_system_v_key(key)
    }

    fn info(&self) -> Result<SegmentInfo> {
        self.segment_info()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::SharedMemory {}
}
