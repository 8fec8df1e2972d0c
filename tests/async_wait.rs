//! Async wake-ups across real processes (the test binary re-executes itself in child
//! roles), under tokio's runtime: `SharedMemory::changed` and `wait_for_change_async`
//! wake when another process notifies; hundreds of waiters on one thread share one
//! helper thread, which leaves after the last waiter; a waiting process killed with
//! `SIGKILL` stalls nobody; a user who may only read the segment waits too.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, Generation, KeyType, LockMode, SharedMemory, SharedMemoryError};
use support::*;

const T: Duration = Duration::from_secs(30);
/// The helper thread's name (src/async_wait/bridge.rs).
const BRIDGE: &str = "qshm-changed";

fn main() {
    run_child_role(child_main);
    let mut args = Arguments::from_args();
    // one trial at a time: some count this process's threads
    args.test_threads.get_or_insert(1);
    let mut trials = Vec::new();
    for kind in KINDS {
        trials.push(Trial::test(
            format!(
                "{}::an_async_waiter_wakes_when_another_process_notifies",
                kind_name(kind)
            ),
            move || wakes(kind),
        ));
    }
    trials.push(Trial::test(
        "posix::many_async_waiters_on_one_thread_share_one_helper_thread",
        many_waiters,
    ));
    trials.push(Trial::test(
        "posix::a_process_of_async_waiters_killed_stalls_nobody",
        killed_waiters,
    ));
    trials.push(Trial::test(
        "posix::a_user_who_may_only_read_waits_asynchronously",
        reader_of_another_user,
    ));
    trials.push(Trial::test(
        "timeouts_cancellation_and_errors",
        timeouts_and_errors,
    ));
    run_suite(&args, trials, Passes::AsUser)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

/// This process's threads named `name`, and all of them.
fn threads(name: &str) -> (usize, usize) {
    let (mut named, mut all) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        all += 1;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            named += 1;
        }
    }
    (named, all)
}

/// Whether this process's helper thread sleeps in futex(2) now.
fn bridge_asleep() -> bool {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let call = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            comm.trim() == BRIDGE
                && call.split_whitespace().next().and_then(|n| n.parse::<i64>().ok()) == Some(libc::SYS_futex)
        })
}

/// Wait (at most `T`) until `cond` holds; whether it did.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

// ------------------------------------------------------------------ child roles

/// Arguments: key, key type, then role-specific ones.
fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind) = (&args[0], parse_kind(&args[1]));
    match role {
        // notify once per line on stdin: "NOTIFIED generation"
        "notifier" => {
            let mut shm = SharedMemory::with_key_type(key, kind);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            say("READY");
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                say(format!("NOTIFIED {}", shm.notify_all().expect("notify").value()));
                line.clear();
            }
            0
        }
        // N: N tasks on one thread wait for a change of a read-only attachment:
        // "WAITING seen", then "WOKE n generation"
        "async-waiters" => {
            let n: usize = args[2].parse().unwrap();
            let mut shm = SharedMemory::with_key_type(key, kind);
            shm.attach(AccessMode::ReadOnly).expect("attach");
            let shm = Arc::new(shm);
            let seen = shm.generation().expect("generation");
            let rt = runtime();
            let woke = rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let shm = shm.clone();
                    tasks.spawn(async move { shm.wait_for_change_async(seen, T).await });
                }
                tokio::task::yield_now().await; // every task polled once: all wait
                say(format!("WAITING {}", seen.value()));
                let mut woke = Vec::new();
                while let Some(done) = tasks.join_next().await {
                    woke.push(done.expect("task").expect("wait"));
                }
                woke
            });
            let changed = woke.iter().filter(|g| **g != seen).count();
            say(format!("WOKE {changed} {}", woke[0].value()));
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

// ------------------------------------------------------------------ trials

fn wakes(kind: KeyType) -> Result<(), Failed> {
    let fx = setup("asyncwake", kind, LockMode::QtCompatible, 64)?;
    let mut notifier = Peer::spawn("notifier", &[&fx.key, kind_name(kind)]);
    notifier.expect("READY", T);
    let rt = runtime();
    let seen = fx.shm.generation()?;
    let (woke, notified) = rt.block_on(async {
        let wait = fx.shm.wait_for_change_async(seen, T);
        tokio::pin!(wait);
        // polled once: it waits, through the helper thread, which sleeps in the kernel
        let early = tokio::time::timeout(Duration::from_millis(5), &mut wait).await;
        assert!(early.is_err(), "nobody notified yet: {early:?}");
        assert!(eventually(bridge_asleep), "the helper thread sleeps in futex(2)");
        notifier.send("go");
        let notified = notifier.expect("NOTIFIED", T);
        (wait.await, notified)
    });
    check(
        woke?.value().to_string() == notified,
        format!("the async waiter woke to the generation the other process made ({notified})"),
    )?;
    drop(notifier);
    fx.finish().map_err(Failed::from)
}

fn many_waiters() -> Result<(), Failed> {
    const WAITERS: usize = 500;
    let kind = KeyType::PosixRealtime;
    let mut fx = setup("asyncmany", kind, LockMode::Fast, 64)?;
    let shm = Arc::new(std::mem::take(&mut fx.shm));
    // the last trial's helper thread leaves about a second after its last waiter
    check(eventually(|| threads(BRIDGE).0 == 0), "no helper thread before")?;
    let mut notifier = Peer::spawn("notifier", &[&fx.key, kind_name(kind)]);
    notifier.expect("READY", T);
    let (_, threads_before) = threads(BRIDGE); // the notifier's output reader included
    let seen = shm.generation()?;
    let rt = runtime();
    let (woke, during, notified) = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WAITERS {
            let shm = shm.clone();
            tasks.spawn(async move { shm.changed(seen).await });
        }
        tokio::task::yield_now().await;
        assert!(eventually(bridge_asleep), "the helper thread sleeps in futex(2)");
        let during = threads(BRIDGE);
        notifier.send("go");
        let notified = notifier.expect("NOTIFIED", T);
        let mut woke = Vec::new();
        while let Some(done) = tasks.join_next().await {
            woke.push(done.expect("task").expect("changed"));
        }
        (woke, during, notified)
    });
    check(
        during == (1, threads_before + 1),
        format!(
            "{WAITERS} waiters on one thread: one helper thread (threads {threads_before} before, {during:?} during)"
        ),
    )?;
    check(
        woke.len() == WAITERS && woke.iter().all(|g| g.value().to_string() == notified),
        "every waiter woke to the notified generation",
    )?;
    check(
        eventually(|| threads(BRIDGE).0 == 0),
        "the helper thread leaves after its last waiter",
    )?;
    drop(notifier);
    fx.shm = Arc::into_inner(shm).ok_or("the tasks let go of the handle")?;
    fx.finish().map_err(Failed::from)
}

fn killed_waiters() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let fx = setup("asynckill", kind, LockMode::QtCompatible, 64)?;
    let mut doomed = Peer::spawn("async-waiters", &[&fx.key, kind_name(kind), "50"]);
    let mut other = Peer::spawn("async-waiters", &[&fx.key, kind_name(kind), "50"]);
    doomed.expect("WAITING", T);
    other.expect("WAITING", T);
    doomed.kill9();
    let now = fx.shm.notify_all()?;
    check(
        other.expect("WOKE", T) == format!("50 {}", now.value()),
        "the other process's 50 waiters woke",
    )?;
    check(other.wait(T).success(), "it exits cleanly")?;
    // later waiters are not stalled by the dead one either
    let mut late = Peer::spawn("async-waiters", &[&fx.key, kind_name(kind), "1"]);
    late.expect("WAITING", T);
    let now = fx.shm.notify_all()?;
    check(
        late.expect("WOKE", T) == format!("1 {}", now.value()),
        "a later waiter woke",
    )?;
    check(late.wait(T).success(), "it exits cleanly")?;
    fx.finish().map_err(Failed::from)
}

fn reader_of_another_user() -> Result<(), Failed> {
    let Some(user) = TempUser::create("async: a reader of another user") else {
        return Ok(());
    };
    let kind = KeyType::PosixRealtime;
    let key = unique_key("asyncreader");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible).with_permissions(0o644);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut reader = user.spawn("async-waiters", &[&key, kind_name(kind), "20"]);
    reader.expect("WAITING", T);
    let now = shm.notify_all()?;
    check(
        reader.expect("WOKE", T) == format!("20 {}", now.value()),
        "the reader's 20 async waiters woke",
    )?;
    check(reader.wait(T).success(), "the reader exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &[]);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn timeouts_and_errors() -> Result<(), Failed> {
    let kind = KeyType::PosixRealtime;
    let fx = setup("asynctimeout", kind, LockMode::Fast, 64)?;
    let rt = runtime();
    let seen = fx.shm.generation()?;
    rt.block_on(async {
        let got = fx
            .shm
            .wait_for_change_async(seen, Duration::from_millis(20))
            .await?;
        check(got == seen, "the timeout passes: the generation it saw")?;
        // a future dropped while it waits (cancelled by select/timeout) leaves its place
        let cancelled = tokio::time::timeout(Duration::from_millis(20), fx.shm.changed(seen)).await;
        check(cancelled.is_err(), "cancelled while waiting")?;
        let now = fx.shm.notify_all()?;
        check(
            fx.shm.changed(seen).await? == now
                && fx.shm.wait_for_change_async(seen, Duration::MAX).await? == now,
            "a change since `seen`: both return at once",
        )?;
        let unattached = SharedMemory::new("never-attached");
        let err = unattached.changed(Generation::default()).await.unwrap_err();
        check(
            err.kind() == SharedMemoryError::LockError,
            format!("not attached: {err}"),
        )?;
        Ok::<(), Failed>(())
    })?;
    check(
        eventually(|| threads(BRIDGE).0 == 0),
        "no helper thread is left once nobody waits",
    )?;
    fx.finish().map_err(Failed::from)
}
