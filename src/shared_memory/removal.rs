//! [`SharedMemory::removal`]: was the attached segment removed behind this handle's back
//! (`ipcrm`, `rm /dev/shm/…`, `qshm rm`, systemd-logind's `RemoveIPC=yes`)?

use super::SharedMemory;
use crate::error::{Error, Result, SharedMemoryError};
use crate::os;
use crate::sys::Removal;
use crate::sys::lock_state::LockState;

impl SharedMemory {
    /// Whether the attached segment is still the one its key names, or was removed while
    /// this handle was attached (see [`Removal`]).
    ///
    /// Removal is what `ipcrm`, `rm /dev/shm/NAME`, `qshm rm` and systemd-logind (with
    /// `RemoveIPC=yes`, when the segment's owner logs out: see the README) do. This handle
    /// keeps its mapping, its bytes and its lock, but it is alone from then on: whoever
    /// attaches to the key now gets another segment or none. [`Removal::Replaced`] says the
    /// key names another segment already, and [`Removal::LockStateRemoved`] that only the
    /// lock state qshm keeps in `/dev/shm` went (what `RemoveIPC=yes` does to a System V
    /// segment that is attached). Every way the cure is the same: detach, then
    /// [`open_or_create`](Self::open_or_create) (or `create`) again.
    ///
    /// Only removals count. Other processes attaching and detaching never remove a segment
    /// that this handle is attached to: it is [`Removal::Present`] until someone removes
    /// it by force, even if every other user detached and then created "it" again (they
    /// attached to this very segment). For System V a key file deleted under a live
    /// segment (a `/tmp` cleaner) removes nothing: the segment is present, only `ftok` can
    /// no longer find it.
    ///
    /// Two system calls (`statx` of the name or `IPC_STAT`, and `statx` of the lock
    /// state's name). `NotFound` when not attached.
    ///
    /// ```
    /// use qshm::{AccessMode, KeyType, Opened, Removal, SharedMemory};
    /// # let key = format!("doc-removal-{}", std::process::id());
    /// let mut shm = SharedMemory::with_key_type(&key, KeyType::PosixRealtime);
    /// shm.create(64, AccessMode::ReadWrite)?;
    /// assert_eq!(shm.removal()?, Removal::Present);
    /// // what `rm`, `qshm rm` or systemd's RemoveIPC=yes do to it
    /// std::fs::remove_file(format!("/dev/shm{}", shm.native_key()))?;
    /// assert_eq!(shm.removal()?, Removal::Removed);
    /// shm.lock()?[0] = 1; // still mapped and locked here, but nobody else can find it
    /// shm.detach()?;
    /// assert_eq!(shm.open_or_create(64, AccessMode::ReadWrite)?, Opened::Created);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn removal(&self) -> Result<Removal> {
        const OP: &str = "removal";
        let result = match &self.attached {
            None => Err(self.error_of(OP, SharedMemoryError::NotFound, "not attached")),
            Some(attached) => attached
                .segment
                .removal()
                .map(|removal| match removal {
                    Removal::Present if !lock_state_named(attached.lock.state()) => Removal::LockStateRemoved,
                    removal => removal,
                })
                .map_err(|e| Error::os(OP, self.key.display_name(), e)),
        };
        self.record(result)
    }

    /// [`removal`](Self::removal)`()?.`[`is_removed`](Removal::is_removed)`()`: true when
    /// the attached segment was removed (or replaced) behind this handle's back.
    pub fn is_removed(&self) -> Result<bool> {
        self.removal().map(Removal::is_removed)
    }
}

/// Whether the lock state this handle uses (if it has one) still has its name in
/// `/dev/shm`: device and inode, which cannot be reused while this process maps it.
fn lock_state_named(state: Option<&LockState>) -> bool {
    let Some(state) = state else {
        return true;
    };
    let Ok(path) = os::cstring(&state.segment().lock_state_path()) else {
        return true;
    };
    match os::lstat(&path) {
        Ok(now) => (now.dev, now.ino) == state.file_id(),
        Err(e) => e.raw_os_error() != Some(libc::ENOENT),
    }
}
