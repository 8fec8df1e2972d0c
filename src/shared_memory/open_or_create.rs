//! [`SharedMemory::open_or_create`]: attach to the key's segment or create it, in one call.

use super::{AccessMode, Attachment, SharedMemory};
use crate::error::{Result, SharedMemoryError, SizeMismatch};
use crate::sys::{self, Opened};

impl SharedMemory {
    /// Attach to the segment of this key, or create it with exactly `size` bytes if there
    /// is none: one call that says which happened. However many threads and processes
    /// call it at once, exactly one of them gets [`Opened::Created`] and all of them end
    /// up attached to that one segment.
    ///
    /// It never fails with `NotFound` or `AlreadyExists` because another process was
    /// making or destroying the segment at that moment (the usual `create`-then-`attach`
    /// loop can): such a race is run again inside, at most 64 times (losing every round
    /// is an `UnknownError` saying so).
    ///
    /// * **Created**: as [`create`](Self::create) makes it: this handle's lock mode and
    ///   permissions, pages reserved. A stale segment of ours (every user died) is
    ///   replaced, so this counts as created too.
    /// * **Attached**: as [`attach`](Self::attach) attaches: the segment's lock mode is
    ///   adopted, or, if this handle asked for one with
    ///   [`with_lock_mode`](Self::with_lock_mode), it must be that one (`LockError`
    ///   naming both modes otherwise: a program that asks for `Fast` never silently
    ///   shares a Qt-compatible lock, or the other way round). The segment must have
    ///   exactly `size` bytes: another size is an `InvalidSize` error naming both sizes
    ///   ([`Error::size_mismatch`](crate::Error::size_mismatch) has them), and the handle
    ///   stays detached. Sizes are exact: what the creator asked for, as qshm records it
    ///   and as Qt on Linux does too (System V `shm_segsz`, the POSIX file's size; the note
    ///   in Qt's docs that `size()` may be larger is about Windows' page-rounded views).
    ///   [`attach`](Self::attach) takes a segment of any size.
    /// * **Another user's segment** is attached to if its permissions let this user
    ///   (read for `ReadOnly`, read and write for `ReadWrite`), else `PermissionDenied`
    ///   naming its owner. It is never taken over, not even a stale one; objects of
    ///   another user that keep `create` out (a key file, Qt's semaphore) without a
    ///   segment to attach to are `AlreadyExists` naming their owner, as from `create`.
    ///
    /// Fails with `AlreadyExists` if this handle is already attached, and with the errors
    /// of `create` for bad sizes and keys.
    ///
    /// ```
    /// use qshm::{AccessMode, Opened, SharedMemory, SharedMemoryError};
    /// # let key = format!("doc-open-or-create-{}", std::process::id());
    /// let mut first = SharedMemory::new(&key);
    /// assert_eq!(first.open_or_create(4096, AccessMode::ReadWrite)?, Opened::Created);
    /// let mut second = SharedMemory::new(&key); // usually in another process
    /// assert_eq!(second.open_or_create(4096, AccessMode::ReadWrite)?, Opened::Attached);
    ///
    /// let err = SharedMemory::new(&key).open_or_create(8192, AccessMode::ReadWrite).unwrap_err();
    /// assert_eq!(err.kind(), SharedMemoryError::InvalidSize);
    /// let sizes = err.size_mismatch().expect("both sizes");
    /// assert_eq!((sizes.asked, sizes.found), (8192, 4096));
    /// # Ok::<(), qshm::Error>(())
    /// ```
    #[doc(alias = "create")]
    #[doc(alias = "attach")]
    pub fn open_or_create(&mut self, size: usize, mode: AccessMode) -> Result<Opened> {
        let result = self.open_or_create_inner(size, mode);
        self.record(result)
    }

    fn open_or_create_inner(&mut self, size: usize, mode: AccessMode) -> Result<Opened> {
        const OP: &str = "open_or_create";
        let create = self.create_request(OP, size, mode)?;
        let attach = self.attach_request(mode, create.semaphore.clone());
        let (attached, opened) =
            sys::open_or_create(&self.key, &create, &attach).map_err(|f| self.fail(OP, f))?;
        let found = attached.mapping.len();
        let attachment = Attachment::new(attached, mode);
        if found != size {
            // the segment stays as it is for its users; this handle lets go of it
            let _ = attachment.detach();
            let error = self
                .error_of(
                    OP,
                    SharedMemoryError::InvalidSize,
                    format!(
                        "the segment of this key has {found} bytes, not the {size} asked for \
                         (attach() takes it at any size)"
                    ),
                )
                .with_size_mismatch(SizeMismatch { asked: size, found });
            return Err(error);
        }
        self.attached = Some(attachment);
        Ok(opened)
    }
}
