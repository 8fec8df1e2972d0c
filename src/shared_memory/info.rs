//! Facts and helpers for tools: the segment's OS facts, its lock state and semaphore, and
//! removal whatever its users think.

use super::SharedMemory;
use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{KeyType, NativeIpcKey};
use crate::sys::{self, LockMode};

impl SharedMemory {
    /// Destroy the segment of `key`, with qshm's lock state and Qt's semaphore, even if
    /// processes are still attached (they keep their mapping until they detach). For tools
    /// and tests cleaning up after crashes. Returns whether a segment existed. Never
    /// deletes a file that is not a segment or a key file qshm or Qt would make.
    #[doc(alias = "remove")]
    pub fn force_remove(key: &NativeIpcKey) -> Result<bool> {
        sys::remove(key, &crate::key::semaphore_key(key))
            .map_err(|f| Error::from_failure("remove", key.display_name(), f))
    }

    /// The key of the semaphore [`LockMode::QtCompatible`] locks: what Qt's
    /// `QSharedMemory::lock()` uses for this handle's key.
    #[doc(alias = "QSystemSemaphore")]
    pub fn semaphore_key(&self) -> NativeIpcKey {
        crate::key::semaphore_key(&self.key)
    }

    /// The file holding qshm's lock state for the attached segment, if it has one.
    pub fn lock_state_path(&self) -> Option<std::path::PathBuf> {
        let state = self.attached.as_ref()?.lock.state()?;
        Some(state.segment().lock_state_path().into())
    }

    /// The numeric System V key (`ftok(path, id)`, `id` being `'Q'` or the type's
    /// project id) of a System V native key, if its key file exists.
    pub fn system_v_key(key: &NativeIpcKey) -> Option<i32> {
        match key.kind() {
            KeyType::SystemV | KeyType::SystemVWithId(_) => sys::sysv::numeric_key(key),
            KeyType::PosixRealtime => None,
        }
    }

    /// Facts about the attached segment, for tools: native id, attachment count
    /// (System V only), permissions, owner, creation time, lock.
    pub fn info(&self) -> Result<SegmentInfo> {
        let Some(attached) = &self.attached else {
            return Err(self.error_of("stat", SharedMemoryError::NotFound, "not attached"));
        };
        let st = attached
            .segment
            .stat()
            .map_err(|e| Error::os("stat", self.key.display_name(), e))?;
        Ok(SegmentInfo {
            size: st.size,
            attachments: st.attachments,
            permissions: st.perms,
            owner_uid: st.uid,
            created_unix: st.created_secs,
            os_id: st.os_id,
            lock_mode: attached.lock.mode(),
            lock_state_file: self.lock_state_path(),
            made_by_qshm: attached
                .lock
                .state()
                .is_some_and(|s| s.origin() == sys::lock_state::Origin::Qshm),
        })
    }
}

/// Facts about an attached segment ([`SharedMemory::info`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Size in bytes.
    pub size: u64,
    /// Attachments counted by the kernel (System V); `None` for POSIX segments.
    pub attachments: Option<u64>,
    /// Permission bits.
    pub permissions: u32,
    /// Owner's user id.
    pub owner_uid: u32,
    /// Creation time (POSIX: the file's birth time), seconds since the epoch.
    pub created_unix: i64,
    /// The OS's name for it (`shmid …` or the `/dev/shm` path).
    pub os_id: String,
    /// The segment's lock mode.
    pub lock_mode: LockMode,
    /// Where qshm keeps the lock state. `None`: it has none: a segment another program
    /// made, where this user may not add one (only its owner, or root, may).
    pub lock_state_file: Option<std::path::PathBuf>,
    /// True when qshm created the segment (false: Qt or another program did).
    pub made_by_qshm: bool,
}
