//! Waiting for a segment's change notification from async code, without a thread per
//! waiter (features `async` and `tokio`): [`SharedMemory::changed`] and
//! [`SharedMemory::wait_for_change_async`].
//!
//! # Why a bridge thread per segment
//!
//! `wait_for_change` sleeps in `FUTEX_WAIT` on the segment's change counter, and a futex
//! cannot be polled: it has no file descriptor (`FUTEX_FD` was removed from Linux in
//! 2.6.26), and io_uring's futex wait needs Linux 6.7. The alternatives that give each
//! waiter a descriptor — an `eventfd` or a FIFO per waiter, registered by number in the
//! segment so that notifiers write to it — fail qshm's principles and users: a user who
//! may only read the segment cannot register anything in it, a notifier would have to
//! open and write files named by values other processes wrote, and every notification
//! would cost a system call per waiter. So each process that waits asynchronously keeps
//! **one thread per segment** (per lock state), not per waiter: it sleeps in the very
//! futex wait `wait_for_change` uses (counted as one waiter, so notifiers need no change,
//! and it works for read-only users) and, when the counter moves, wakes the tasks of
//! every future waiting on that segment in this process (their `Waker`s). The thread is
//! started by the first waiter and ends about a second after the last one is gone.
//!
//! [`SharedMemory::changed`] is executor-agnostic (plain `Waker`s, no dependency);
//! [`SharedMemory::wait_for_change_async`] adds a timeout with tokio's timer (feature
//! `tokio`).

mod bridge;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
#[cfg(feature = "tokio")]
use std::time::Duration;

use crate::error::{Result, SharedMemoryError};
use crate::shared_memory::{Generation, SharedMemory};

impl SharedMemory {
    /// Wait, as a future, until the segment's [`Generation`] differs from `seen`
    /// (a [`notify_all`](Self::notify_all) in any process since `seen` was read), and
    /// return the new generation: the async form of
    /// [`wait_for_change`](Self::wait_for_change) without a timeout (feature `async`).
    ///
    /// Any number of such futures, on any executor and any number of tasks, share one
    /// helper thread per segment in this process (see the README's "Async wake-ups").
    /// Dropping the future stops waiting. Errors as for
    /// [`wait_for_change`](Self::wait_for_change), and `UnknownError` if the helper thread
    /// cannot be started.
    pub fn changed(&self, seen: Generation) -> Changed<'_> {
        Changed {
            shm: self,
            seen,
            waiting: None,
        }
    }

    /// [`wait_for_change`](Self::wait_for_change) as an `async fn` (feature `tokio`):
    /// waits at most `timeout` (`Duration::MAX`: for ever) with tokio's timer, so it must
    /// run inside a tokio runtime with time enabled. Returns the current generation:
    /// different from `seen` after a change, `seen` when the timeout passed.
    ///
    /// ```
    /// # #[cfg(feature = "tokio")] {
    /// use qshm::{AccessMode, SharedMemory};
    /// use std::time::Duration;
    /// # let key = format!("doc-async-{}", std::process::id());
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// let mut shm = SharedMemory::new(&key);
    /// shm.create(64, AccessMode::ReadWrite)?;
    /// let seen = shm.generation()?;
    /// rt.block_on(async {
    ///     // nobody notifies: the timeout passes, the generation is unchanged
    ///     assert_eq!(shm.wait_for_change_async(seen, Duration::from_millis(10)).await?, seen);
    ///     let now = shm.notify_all()?;
    ///     assert_eq!(shm.wait_for_change_async(seen, Duration::from_secs(1)).await?, now);
    ///     Ok::<(), qshm::Error>(())
    /// })?;
    /// # }
    /// # Ok::<(), qshm::Error>(())
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn wait_for_change_async(&self, seen: Generation, timeout: Duration) -> Result<Generation> {
        if timeout == Duration::MAX {
            return self.changed(seen).await;
        }
        match tokio::time::timeout(timeout, self.changed(seen)).await {
            Ok(result) => result,
            Err(_elapsed) => Ok(seen),
        }
    }
}

/// The future of [`SharedMemory::changed`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Changed<'a> {
    shm: &'a SharedMemory,
    seen: Generation,
    /// This future's place in its segment's bridge, once it waited.
    waiting: Option<(Arc<bridge::Bridge>, u64)>,
}

impl Future for Changed<'_> {
    type Output = Result<Generation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const OP: &str = "wait for change";
        let this = &mut *self;
        let state = match this.shm.lock_state(OP) {
            Ok(state) => state,
            Err(e) => return Poll::Ready(Err(e)),
        };
        // a relaxed load and a fence: the only atomic load Rust allows on a read-only
        // mapping (a reader's); registering under the bridge's mutex orders it enough
        let now = || {
            let value = state
                .words()
                .generation
                .load(std::sync::atomic::Ordering::Relaxed);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            Generation::from_value(value)
        };
        if now() != this.seen {
            this.stop_waiting();
            return Poll::Ready(Ok(now()));
        }
        if this.waiting.is_none() {
            match bridge::Bridge::of(state) {
                Ok(b) => {
                    let id = b.register(this.seen, cx.waker());
                    this.waiting = Some((b, id));
                }
                Err(e) => {
                    return Poll::Ready(Err(this
                        .shm
                        .error_of(
                            OP,
                            SharedMemoryError::UnknownError,
                            "cannot start the helper thread",
                        )
                        .with_os(e)));
                }
            }
        } else if let Some((b, id)) = &this.waiting {
            b.update(*id, cx.waker());
        }
        // registered first, then looked again: a change the bridge handled before we
        // were on its list is seen here
        if now() != this.seen {
            this.stop_waiting();
            return Poll::Ready(Ok(now()));
        }
        Poll::Pending
    }
}

impl Changed<'_> {
    fn stop_waiting(&mut self) {
        if let Some((b, id)) = self.waiting.take() {
            b.unregister(id);
        }
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.stop_waiting();
    }
}
