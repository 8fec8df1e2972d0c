//! What a POSIX segment file is called (the name a native key maps to, glibc's rules).

use std::ffi::CString;

use crate::error::{Failure, SharedMemoryError};
use crate::key::NativeIpcKey;
use crate::os::{self, FileStat};
use crate::sys::SHM_DIR;
use crate::sys::lock_state::{self, SegmentId};

/// The file name a POSIX native key maps to under `/dev/shm` (what glibc does: leading
/// slashes dropped, no other slash allowed), refusing the names of glibc's semaphores
/// and qshm's lock state, which live in the same directory.
pub(crate) fn shm_file_name(native: &str) -> Result<&str, Failure> {
    let key_error = |why: &str| Failure::because(SharedMemoryError::KeyError, why);
    let name = native.trim_start_matches('/');
    if name.is_empty() || name == "." || name == ".." {
        return Err(key_error("a POSIX key needs a name after the '/'"));
    }
    if name.contains('/') {
        return Err(key_error(
            "a POSIX key may not contain '/' after the first character",
        ));
    }
    if name.len() > 255 {
        return Err(key_error("a POSIX key may be at most 255 bytes long"));
    }
    if name.starts_with("sem.") || name.starts_with(lock_state::LOCK_STATE_PREFIX) {
        return Err(key_error(
            "POSIX segment names starting with \"sem.\" (glibc's semaphores) or \"qshm-lock.\" \
             (qshm's lock state) are reserved",
        ));
    }
    Ok(name)
}

pub(super) fn segment_path(key: &NativeIpcKey) -> Result<CString, Failure> {
    let name = shm_file_name(key.native())?;
    Ok(os::cstring(&format!("{SHM_DIR}/{name}"))?)
}

pub(crate) fn id_of(c_path: &CString, st: &FileStat) -> SegmentId {
    let name = c_path.to_str().unwrap_or("").rsplit('/').next().unwrap_or("");
    SegmentId::Posix {
        name_tag: lock_state::name_tag(name),
        ino: st.ino,
        btime_ns: st.btime_ns.unwrap_or(st.ctime_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_names_follow_glibc_rules() {
        assert_eq!(shm_file_name("/abc").ok(), Some("abc"));
        assert_eq!(shm_file_name("//abc").ok(), Some("abc"));
        assert_eq!(shm_file_name("abc").ok(), Some("abc"));
        assert!(shm_file_name("/").is_err());
        assert!(shm_file_name("/a/b").is_err());
        assert!(shm_file_name("/..").is_err());
        assert!(shm_file_name(&format!("/{}", "x".repeat(256))).is_err());
        assert!(shm_file_name("/sem.x").is_err());
        assert!(shm_file_name("/qshm-lock.p.1.2").is_err());
    }
}
