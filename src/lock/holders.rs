//! Who could hold a POSIX semaphore: the `/proc` census a waiter (and `qshm ls`) uses to
//! tell a dead holder from a living one.

use crate::sys::procfs::{self, Mapped};

/// True when no living process other than this one could hold the POSIX semaphore whose
/// file is `sem` (device, inode): every process that maps it also maps the lock state
/// `lock_state` (qshm processes of the segment, which hold the semaphore only while they
/// hold `marker`: so none holds it while the caller holds `marker`, and the caller must
/// otherwise check `marker` itself), and no process we may not inspect could open it.
/// Without a lock state, any process mapping the semaphore could hold it.
///
/// This is the rule waiters use in [`Locker`](super::Locker) and tools use to report a dead holder.
pub(crate) fn no_living_holder_possible(sem: (u64, u64), lock_state: Option<(u64, u64)>) -> bool {
    let (dev, ino) = sem;
    let (ldev, lino) = lock_state.unwrap_or((u64::MAX, u64::MAX));
    let census = procfs::census(&[Mapped::File { dev, ino }, Mapped::File { dev: ldev, ino: lino }]);
    if census
        .mapping
        .iter()
        .any(|&(_, bits)| bits & 0b01 != 0 && (bits & 0b10 == 0 || lock_state.is_none()))
    {
        return false;
    }
    let owner_and_mode = census_file_stat(dev, ino);
    census.hidden.iter().all(|&(_, uid)| match owner_and_mode {
        Some((owner, mode)) => uid == 0 || (uid != owner && mode & 0o066 == 0),
        None => false,
    })
}

/// Owner and mode of the semaphore's file, found by device and inode among `/dev/shm`'s
/// `sem.*` files (its name may have been replaced since we opened it).
fn census_file_stat(dev: u64, ino: u64) -> Option<(u32, u32)> {
    let dir = std::fs::read_dir(crate::sys::SHM_DIR).ok()?;
    dir.flatten().find_map(|entry| {
        use std::os::unix::fs::MetadataExt;
        let meta = entry.metadata().ok()?;
        (meta.dev() == dev && meta.ino() == ino).then_some((meta.uid(), meta.mode() & 0o777))
    })
}
