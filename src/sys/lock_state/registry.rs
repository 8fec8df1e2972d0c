//! One mapping of a lock state per process: every handle of the process that uses the
//! segment shares it, so the process claims one slot, knows which of its threads holds
//! the lock (a second handle never mistakes its own process's hold for a dead one), and
//! maps the file once.

use std::sync::Arc;

use super::LockState;
use crate::sys::shared_here::SharedHere;

/// The lock states this process has open, by (device, inode) of their file.
static OPEN: SharedHere<(u64, u64), LockState> = SharedHere::new();

/// The open lock state of file (device, inode), if this process has it.
pub(super) fn find(file: (u64, u64)) -> Option<Arc<LockState>> {
    OPEN.find(file)
}

/// Share `state`, or the one another thread registered for the same file meanwhile.
pub(super) fn share(state: LockState) -> Arc<LockState> {
    OPEN.share(state.file_id(), || state)
}
