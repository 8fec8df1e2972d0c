//! What a handle knows about its attached segment, for the tools of `qshm::admin`
//! ([`crate::admin::SharedMemoryExt`]): the segment's OS facts and where its lock state is.
//! Programs do not need these, so they are not part of the handle's own API.
// Without the `admin` feature nothing calls them; they stay compiled (and so do the
// backend facts they read), so that the feature only decides what is public.
#![cfg_attr(not(feature = "admin"), allow(dead_code, unreachable_pub))]

use super::SharedMemory;
use crate::error::{Error, Result, SharedMemoryError};
use crate::key::{KeyType, NativeIpcKey};
use crate::sys::{self, LockMode};

impl SharedMemory {
    /// Destroy the segment of `key` whoever is attached ([`crate::admin::SharedMemoryExt::force_remove`]).
    pub(crate) fn remove_by_key(key: &NativeIpcKey) -> Result<bool> {
        sys::remove(key, &crate::key::semaphore_key(key))
            .map_err(|f| Error::from_failure("remove", key.display_name(), f))
    }

    /// The numeric System V key (`ftok(path, id)`, `id` being `'Q'` or the type's
    /// project id) of a System V native key, if its key file exists.
    pub(crate) fn numeric_system_v_key(key: &NativeIpcKey) -> Option<i32> {
        match key.kind() {
            KeyType::SystemV | KeyType::SystemVWithId(_) => sys::sysv::numeric_key(key),
            KeyType::PosixRealtime => None,
        }
    }

    /// The file holding qshm's lock state for the attached segment, if it has one.
    pub(crate) fn lock_state_file(&self) -> Option<std::path::PathBuf> {
        let state = self.attached.as_ref()?.lock.state()?;
        Some(state.segment().lock_state_path().into())
    }

    /// Facts about the attached segment: native id, attachment count (System V only),
    /// permissions, owner, creation time, lock.
    pub(crate) fn segment_info(&self) -> Result<SegmentInfo> {
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
            lock_state_file: self.lock_state_file(),
            made_by_qshm: attached
                .lock
                .state()
                .is_some_and(|s| s.origin() == sys::lock_state::Origin::Qshm),
        })
    }
}

/// Facts about an attached segment ([`crate::admin::SharedMemoryExt::info`]).
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
