//! The helper thread of one segment in this process: it sleeps on the segment's change
//! counter and wakes the tasks waiting for a change (see the module docs of
//! `async_wait`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::shared_memory::{Generation, wait_for_generation};
use crate::sys::fork;
use crate::sys::lock_state::{self, LockState};

/// How long the thread sleeps at most between two looks at its list of waiters.
const SLICE: Duration = Duration::from_millis(250);
/// How long it stays after its last waiter left (a task that waits in a loop comes back).
const LINGER: Duration = Duration::from_secs(1);

/// Bridges by this process's fork epoch (a `fork()`ed child has none of the parent's
/// threads) and lock-state file.
type Key = (u64, (u64, u64));
static BRIDGES: Mutex<Option<HashMap<Key, Arc<Bridge>>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One segment's helper thread and the tasks it wakes.
#[derive(Debug)]
pub(super) struct Bridge {
    state: Arc<LockState>,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    /// (id, the generation the waiter saw, its task's waker)
    list: Vec<(u64, u32, Waker)>,
}

impl Bridge {
    /// The bridge of the segment whose lock state is `state`, started if it is not
    /// running.
    pub(super) fn of(state: &LockState) -> std::io::Result<Arc<Bridge>> {
        let key = (fork::epoch(), state.file_id());
        let mut bridges = lock(&BRIDGES);
        let bridges = bridges.get_or_insert_with(HashMap::new);
        if let Some(b) = bridges.get(&key) {
            return Ok(b.clone());
        }
        let shared = lock_state::shared(state.file_id())
            .ok_or_else(|| std::io::Error::other("the lock state is not open in this process"))?;
        let bridge = Arc::new(Bridge {
            state: shared,
            waiters: Mutex::new(Waiters::default()),
        });
        let runner = bridge.clone();
        std::thread::Builder::new()
            .name("qshm-changed".into())
            .spawn(move || runner.run(key))?;
        bridges.insert(key, bridge.clone());
        Ok(bridge)
    }

    /// Add a waiter that saw generation `seen`; its id.
    pub(super) fn register(&self, seen: Generation, waker: &Waker) -> u64 {
        let mut w = lock(&self.waiters);
        w.next_id += 1;
        let id = w.next_id;
        w.list.push((id, seen.value(), waker.clone()));
        id
    }

    /// The waiter `id` polls again, maybe from another task.
    pub(super) fn update(&self, id: u64, waker: &Waker) {
        let mut w = lock(&self.waiters);
        if let Some(entry) = w.list.iter_mut().find(|e| e.0 == id)
            && !entry.2.will_wake(waker)
        {
            entry.2 = waker.clone();
        }
    }

    pub(super) fn unregister(&self, id: u64) {
        lock(&self.waiters).list.retain(|e| e.0 != id);
    }

    /// The thread: wake the waiters whenever the counter moves; leave once nobody waited
    /// for [`LINGER`].
    fn run(self: Arc<Self>, key: Key) {
        let generation = &self.state.words().generation;
        let mut alone_since: Option<Instant> = None;
        loop {
            // relaxed and a fence: the mapping may be read-only (see the future's poll)
            let now = generation.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            let empty = {
                let mut w = lock(&self.waiters);
                w.list.retain(|(_, seen, waker)| {
                    let changed = *seen != now;
                    if changed {
                        waker.wake_by_ref();
                    }
                    !changed
                });
                w.list.is_empty()
            };
            if !empty {
                alone_since = None;
            } else if alone_since.is_some_and(|t| t.elapsed() >= LINGER) {
                // leave, unless a waiter came meanwhile: it finds us under the same lock
                let mut bridges = lock(&BRIDGES);
                if lock(&self.waiters).list.is_empty() {
                    if let Some(map) = bridges.as_mut() {
                        map.remove(&key);
                    }
                    return;
                }
            } else if alone_since.is_none() {
                alone_since = Some(Instant::now());
            }
            // the futex wait wait_for_change uses: counted as a waiter, so notifiers wake
            // it; an error (none is expected) only makes it look again after a pause
            if wait_for_generation(&self.state, Generation::from_value(now), SLICE).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
