//! The mixed-order matrix (issue 19): generated orders of events over actors, instead of
//! hand-picked cases.
//!
//! Actors: qshm A and qshm B (root; B, as root, in a PID namespace of its own: a container
//! sharing IPC and `/dev/shm` with the host), a real Qt 6 process (PyQt6,
//! `interop/qt_actor.py`) and a qshm process of another user. Events: create, attach, lock
//! (lock, add one to the counter, unlock; the first one is the actor's first lock),
//! detach, exit, SIGKILL, and SIGKILL while holding the lock. Every valid order up to
//! [`LENGTH`] events is generated (B only after A, which halves the orders; A's first
//! event may be an attach that fails, so B still creates first in some), for both key
//! types, in Qt-compatible mode
//! (all actors) and Fast mode (the qshm actors). After the order every actor still
//! attached adds [`BURST`] to the counter at the same time, then all exit, and the next
//! qshm user creates and detaches. Invariants:
//!
//! * **one lock**: the burst adds exactly `BURST` per actor (nobody locks another
//!   semaphore or lock word), and with a Qt-compatible POSIX key every actor maps one
//!   common semaphore file (by inode, asked after the burst: two semaphores show every
//!   time, not only when two bursts overlap);
//! * **no refusal**: an attach fails only with `NotFound` when no segment exists, and a
//!   create only with `AlreadyExists` when one does;
//! * **bounded waits**: every command answers within [`REPLY`];
//! * **nothing left**: after root's `rm --stale` (another user's stale segment is theirs or
//!   root's clean-up's to reclaim, never root's `create`'s), the next qshm user's create
//!   succeeds, and after its detach nothing of the key is left.
//!
//! Qt has flaws of its own (its `create()` on an existing key replaces the lock's
//! semaphore; a killed Qt holder of a POSIX semaphore is never recovered by Qt): an order
//! that breaks an invariant is run again with Qt processes in place of the qshm actors (B's
//! in its PID namespace),
//! and if Qt alone breaks the same invariant, the order is counted as Qt's, not qshm's; so
//! is an order whose break happens also with qshm A and B left out (Qt and the other user
//! alone), or with Qt for them but without their creates and attaches that qshm refused
//! (in Qt such a create remakes the key's semaphore, which changes what follows).
//!
//! A second family ([`Family::Removal`]) has qshm A and B and the world: A and B create,
//! attach, lock, **fork** (a child that keeps what it inherited and `exec`s a moment into
//! the actor's next command, as a program that runs a tool does), detach and exit; the
//! world **removes** the segment once, behind everyone's back (`ipcrm -m`, `rm
//! /dev/shm/…`), up to [`REMOVAL_LENGTH`] events. One lock holds per segment (those
//! attached to a removed one share its lock, not the next one's), and as nobody is killed,
//! nothing of the key may be left after the last exit, before anyone's clean-up (CI run
//! 0533/2: a last detach waiting for a forked child kept the lock state and key file of a
//! removed segment the child's exec freed; this family finds that order by itself). The
//! same holds for the first family's orders of A and B alone without a kill.
//!
//! CI runs a fixed slice ([`SLICE`] orders per key type and lock mode, every n-th of the
//! enumeration); `QSHM_MATRIX=all` (bench/stress.sh) runs every order and reports counts;
//! `QSHM_MATRIX_ONLY=TEXT` runs the orders whose printed form contains TEXT;
//! `QSHM_MATRIX_SHARD=i/n` runs every n-th of the chosen orders from the i-th, so that
//! `bench/matrix.sh` runs the whole matrix as n processes at once, each in namespaces of its
//! own.

mod support;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, SharedMemory};
use support::actor;
use support::qt::find_qt_python;
use support::*;

/// The longest order.
const LENGTH: usize = 4;
/// Increments per attached actor in the final burst.
const BURST: u64 = 300;
/// How long a command may take.
const REPLY: Duration = Duration::from_secs(10);
/// How long an actor may take to start (it touches no IPC object before its READY): a
/// Python importing PyQt6 on a loaded machine took over [`REPLY`], and the "did not start"
/// ended a whole shard of the long matrix (1 400 POSIX orders unrun beside CI builds).
const START: Duration = Duration::from_secs(60);
/// Orders per key type and lock mode in CI.
const SLICE: usize = 12;
/// A long run prints a progress line every this many orders.
const PROGRESS_EVERY: usize = 250;
/// A forked child is released by its actor's next command and `exec`s 100 ms later; a last
/// detach waits only for children forked less than 1 s before (README, "`fork()` without
/// `exec`"). A release later than this after the fork may leave the segment for the child,
/// as designed: that order cannot ask for nothing left (only a loaded machine is so slow).
const FORK_RELEASED_IN_TIME: Duration = Duration::from_millis(700);

fn main() {
    run_child_role(|role, args| match role {
        "actor" => actor::qshm_actor(args),
        other => {
            eprintln!("unknown role {other}");
            2
        }
    });
    let python = find_qt_python();
    let mut trials = Vec::new();
    for kind in KINDS {
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            let name = format!(
                "{}::{}::generated_orders_keep_one_lock_and_leave_nothing",
                kind_name(kind),
                mode_name(mode)
            );
            let missing_qt = mode == LockMode::QtCompatible && python.is_none();
            let python = python.clone();
            let mut trial = {
                let python = python.clone();
                Trial::test(name, move || {
                    run_matrix(Family::Mixed, kind, mode, python.as_ref(), None)
                })
            };
            if missing_qt {
                trial = trial.with_ignored_flag(true);
            }
            trials.push(trial);
            trials.push(Trial::test(
                format!(
                    "{}::{}::generated_orders_with_forks_and_removals_keep_one_lock_per_segment_and_leave_nothing",
                    kind_name(kind),
                    mode_name(mode)
                ),
                move || run_matrix(Family::Removal, kind, mode, None, None),
            ));
            let once_broken: Vec<&'static str> = ONCE_BROKEN
                .iter()
                .filter(|(k, m, _)| *k == kind && *m == mode)
                .map(|(_, _, order)| *order)
                .collect();
            if !once_broken.is_empty() {
                let name = format!(
                    "{}::{}::orders_that_once_broke_keep_one_lock_and_leave_nothing",
                    kind_name(kind),
                    mode_name(mode)
                );
                trials.push(
                    Trial::test(name, move || {
                        run_matrix(Family::Mixed, kind, mode, python.as_ref(), Some(&once_broken))
                    })
                    // its orders have another user's actor: root makes that user
                    .with_ignored_flag(missing_qt || !is_root()),
                );
            }
        }
    }
    trials.push(Trial::test(
        "the_generator_makes_only_valid_orders",
        generator_is_sound,
    ));
    trials.push(Trial::test(
        "shards_run_every_order_exactly_once",
        shards_run_every_order_exactly_once,
    ));
    // one trial at a time: each ends with a machine-wide rm --stale
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    run_suite(&args, trials, Passes::AsUser);
}

// ------------------------------------------------------------------ the model

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Actor {
    A,
    B,
    Qt,
    User,
    /// Root removing the segment behind everyone's back (`ipcrm -m`, `rm /dev/shm/…`):
    /// no process, one event.
    World,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Event {
    Create,
    Attach,
    Lock,
    Detach,
    Exit,
    Kill,
    HoldKill,
    /// A qshm actor forks a child that keeps what it inherited and `exec`s a moment into
    /// the actor's next command (a detach or an exit waits for it).
    Fork,
    /// The world removes the key's segment (its users keep it until they detach).
    Remove,
}

const EVENTS: [Event; 7] = [
    Event::Create,
    Event::Attach,
    Event::Lock,
    Event::Detach,
    Event::Exit,
    Event::Kill,
    Event::HoldKill,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Absent,
    Idle,
    Attached,
    Gone,
}

type Order = Vec<(Actor, Event)>;

/// The events of the second family: forks and removals among qshm actors, no kills (so
/// that nothing may be left, without anyone's clean-up).
const REMOVAL_EVENTS: [Event; 7] = [
    Event::Create,
    Event::Attach,
    Event::Lock,
    Event::Fork,
    Event::Detach,
    Event::Exit,
    Event::Remove,
];

fn life_after(actor: Actor, life: Life, event: Event) -> Option<Life> {
    use Event::*;
    use Life::*;
    match (actor, event) {
        (Actor::World, Remove) => return (life == Absent).then_some(Gone),
        (Actor::World, _) | (_, Remove) | (Actor::Qt, Fork) => return None,
        _ => {}
    }
    match (life, event) {
        (Attached, Fork) => Some(Attached),
        (Absent | Idle, Create | Attach) => Some(Attached), // (or stays idle if it fails)
        (Attached, Lock) => Some(Attached),
        (Attached, Detach) => Some(Idle),
        (Idle | Attached, Exit | Kill) => Some(Gone),
        (Attached, HoldKill) => Some(Gone),
        _ => None,
    }
}

/// Every valid order of 1 to `length` of `events` over `actors` (B only after A appeared).
fn orders(actors: &[Actor], events: &[Event], length: usize) -> Vec<Order> {
    fn walk(
        actors: &[Actor],
        events: &[Event],
        length: usize,
        order: &mut Order,
        lives: &mut Vec<Life>,
        out: &mut Vec<Order>,
    ) {
        if !order.is_empty() {
            out.push(order.clone());
        }
        if order.len() == length {
            return;
        }
        for (i, &actor) in actors.iter().enumerate() {
            if actor == Actor::B && !order.iter().any(|(a, _)| *a == Actor::A) {
                continue;
            }
            for &event in events {
                let Some(next) = life_after(actor, lives[i], event) else {
                    continue;
                };
                let before = lives[i];
                lives[i] = next;
                order.push((actor, event));
                walk(actors, events, length, order, lives, out);
                order.pop();
                lives[i] = before;
            }
        }
    }
    let mut out = Vec::new();
    walk(
        actors,
        events,
        length,
        &mut Vec::new(),
        &mut vec![Life::Absent; actors.len()],
        &mut out,
    );
    out
}

/// Which orders a trial runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// qshm A and B, Qt and another user: creates, attaches, locks, detaches, exits and
    /// kills.
    Mixed,
    /// qshm A and B and the world: creates, attaches, locks, forks, detaches, exits and a
    /// removal behind everyone's back. No kill, no Qt: nothing may be left after the last
    /// exit, before any clean-up.
    Removal,
}

/// The longest order of [`Family::Removal`].
const REMOVAL_LENGTH: usize = 5;

impl Family {
    fn actors(self, mode: LockMode, another_user: bool) -> Vec<Actor> {
        match self {
            Family::Mixed => {
                let mut actors = vec![Actor::A, Actor::B, Actor::User];
                if mode == LockMode::QtCompatible {
                    actors.insert(2, Actor::Qt);
                }
                if !another_user {
                    actors.retain(|a| *a != Actor::User);
                }
                actors
            }
            Family::Removal => vec![Actor::A, Actor::B, Actor::World],
        }
    }

    fn orders(self, actors: &[Actor]) -> Vec<Order> {
        match self {
            Family::Mixed => orders(actors, &EVENTS, LENGTH),
            Family::Removal => orders(actors, &REMOVAL_EVENTS, REMOVAL_LENGTH),
        }
    }
}

fn generator_is_sound() -> Result<(), Failed> {
    let all = orders(&[Actor::A, Actor::B, Actor::Qt, Actor::User], &EVENTS, LENGTH);
    let fast = orders(&[Actor::A, Actor::B, Actor::User], &EVENTS, LENGTH);
    let removal = Family::Removal.orders(&Family::Removal.actors(LockMode::Fast, false));
    for order in all.iter().chain(&fast).chain(&removal) {
        let mut lives = std::collections::HashMap::new();
        for &(actor, event) in order {
            let life = lives.entry(actor).or_insert(Life::Absent);
            *life = life_after(actor, *life, event).ok_or_else(|| format!("invalid order {order:?}"))?;
        }
        let first_b = order.iter().position(|(a, _)| *a == Actor::B);
        let first_a = order.iter().position(|(a, _)| *a == Actor::A);
        if first_b.is_some() && first_a.is_none_or(|a| Some(a) > first_b) {
            return Err(format!("B before A: {order:?}").into());
        }
    }
    let with = |event: Event| {
        removal
            .iter()
            .filter(|o| o.iter().any(|(_, e)| *e == event))
            .count()
    };
    eprintln!(
        "orders up to {LENGTH} events: {} with Qt, {} without; up to {REMOVAL_LENGTH} with forks and removals: {} ({} fork, {} remove)",
        all.len(),
        fast.len(),
        removal.len(),
        with(Event::Fork),
        with(Event::Remove)
    );
    if all.len() < 1000 || fast.len() < 200 || with(Event::Fork) < 200 || with(Event::Remove) < 200 {
        return Err(format!(
            "too few orders: {} / {} / {}",
            all.len(),
            fast.len(),
            removal.len()
        )
        .into());
    }
    Ok(())
}

// ------------------------------------------------------------------ running an order

/// What broke.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Broken {
    /// The burst did not add up, or the actors map no common semaphore: two locks.
    Counter,
    /// A segment a Qt process would attach was refused, or a create failed wrongly.
    Refused,
    /// A command did not answer in time.
    Hung,
    /// The next qshm user could not create, or something was left after it.
    Left,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

struct Runner<'a> {
    kind: KeyType,
    mode: LockMode,
    python: Option<&'a PathBuf>,
    user: Option<&'a TempUser>,
    /// Set when the Qt actor's `create` ran on a POSIX key that existed: Qt's create
    /// unlinks the key's semaphore and makes a new one (`QSystemSemaphore::Create`), so
    /// processes that opened the old one and those that open the new one no longer
    /// exclude each other. Whether Qt alone then loses increments in the burst depends on
    /// timing (Python is slow to overlap), so the comparison cannot tell it reliably.
    qt_remade_semaphore: std::cell::Cell<bool>,
    /// Which segment a create or attach now finds: one more after each removal. Actors of
    /// a removed segment share its lock among themselves, not with those of the next.
    incarnation: std::cell::Cell<u32>,
    /// An actor released its forked child later than [`FORK_RELEASED_IN_TIME`].
    released_late: std::cell::Cell<bool>,
    /// The events of qshm's A and B in the last order run that changed nothing: a create
    /// refused with `AlreadyExists`, an attach with `NotFound` (by their index).
    refused: std::cell::RefCell<Vec<usize>>,
    /// A qshm process died holding the lock, and no qshm process has locked since: a Qt
    /// process waiting now waits for ever (README, dead holders: Qt is rescued only when a
    /// qshm process locks).
    qshm_holder_dead: std::cell::Cell<bool>,
    /// A Qt process stopped answering while [`Runner::qshm_holder_dead`] was set.
    qt_waited_on_dead_qshm_holder: std::cell::Cell<bool>,
    /// A Qt process died holding the lock.
    qt_holder_killed: std::cell::Cell<bool>,
    /// Some process's memory map cannot be read by root here (on this VM PID 1's): qshm's
    /// census of a POSIX semaphore's users cannot rule it out as the holder, so after a Qt
    /// holder's death with another user of the semaphore alive, qshm waits, as Qt would
    /// (README, dead holders).
    census_blind: bool,
}

/// One actor process.
struct Running {
    peer: Peer,
    life: Life,
    /// The segment it attached ([`Runner::incarnation`] then).
    incarnation: u32,
    /// When it forked the child its next command releases.
    forked_at: Option<Instant>,
    /// A qshm process (not a Qt one).
    qshm: bool,
}

impl Runner<'_> {
    /// Run `order` on a fresh key; `qt_alone`: Qt processes in place of the qshm ones.
    fn run(&self, order: &Order, qt_alone: bool) -> Result<Vec<(Broken, String)>, Failed> {
        self.qt_remade_semaphore.set(false);
        self.incarnation.set(0);
        self.released_late.set(false);
        self.refused.borrow_mut().clear();
        self.qshm_holder_dead.set(false);
        self.qt_waited_on_dead_qshm_holder.set(false);
        self.qt_holder_killed.set(false);
        let key = unique_key("matrix");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, self.kind);
        let mut actors: Vec<(Actor, Running)> = Vec::new();
        let mut broken = Vec::new();
        for (index, &(actor, event)) in order.iter().enumerate() {
            if actor == Actor::World {
                if let Err(why) = self.remove(&key) {
                    broken.push((Broken::Refused, format!("the world's removal: {why}")));
                }
                continue;
            }
            if !actors.iter().any(|(a, _)| *a == actor) {
                let peer = self.spawn(actor, &key, qt_alone)?;
                actors.push((
                    actor,
                    Running {
                        peer,
                        life: Life::Idle,
                        incarnation: 0,
                        forked_at: None,
                        qshm: !(actor == Actor::Qt || (qt_alone && matches!(actor, Actor::A | Actor::B))),
                    },
                ));
            }
            let (_, running) = actors.iter_mut().find(|(a, _)| *a == actor).expect("spawned");
            let was_attached = running.life == Life::Attached;
            self.apply(&key, actor, event, running, &mut broken);
            if matches!(actor, Actor::A | Actor::B)
                && matches!(event, Event::Create | Event::Attach)
                && !was_attached
                && running.life != Life::Attached
            {
                self.refused.borrow_mut().push(index);
            }
        }
        self.burst(&mut actors, &mut broken);
        for (actor, running) in &mut actors {
            if running.life != Life::Gone {
                self.releasing(running);
                running.peer.send("exit");
                if running.peer.wait_or_kill(REPLY).is_none() {
                    self.no_answer(running);
                    broken.push((Broken::Hung, format!("{actor:?} exit")));
                }
                running.life = Life::Gone;
            }
        }
        // qshm processes that all detached or exited leave nothing, before anyone's clean-up
        let cleanly = !qt_alone
            && order.iter().all(|(a, e)| {
                !matches!(a, Actor::Qt | Actor::User) && !matches!(e, Event::Kill | Event::HoldKill)
            });
        if cleanly && self.released_late.get() {
            eprintln!(
                "  a forked child was released late (a loaded machine): not held to nothing left: {order:?}"
            );
        } else if cleanly {
            let left = leftovers(&key, self.kind, &[]);
            if !left.is_empty() {
                broken.push((Broken::Left, format!("after the last exit: {left:?}")));
            }
        }
        // root's clean-up (another user's stale segment is not root's create's to reclaim;
        // leftovers younger than 2 s may be someone's work in progress, so it waits for
        // them), then the next qshm user
        if !leftovers(&key, self.kind, &[]).is_empty() {
            std::thread::sleep(Duration::from_millis(2100));
            if let Err(e) = qshm::admin::remove_stale(false) {
                broken.push((Broken::Left, format!("rm --stale: {e}")));
            }
        }
        let mut next = SharedMemory::with_key_type(&key, self.kind).with_lock_mode(self.mode);
        match next.create(64, AccessMode::ReadWrite) {
            Ok(()) => {
                drop(next.lock().map_err(|e| format!("the next user's lock: {e}"))?);
                next.detach()?;
                let left = leftovers(&key, self.kind, &[]);
                if !left.is_empty() {
                    broken.push((Broken::Left, format!("after the next user: {left:?}")));
                }
            }
            Err(e) => broken.push((Broken::Left, format!("the next user's create: {e}"))),
        }
        broken.sort();
        broken.dedup_by(|a, b| a.0 == b.0);
        Ok(broken)
    }

    fn spawn(&self, actor: Actor, key: &str, qt_alone: bool) -> Result<Peer, Failed> {
        let qt = actor == Actor::Qt || (qt_alone && matches!(actor, Actor::A | Actor::B));
        // B runs in a PID namespace of its own (a container sharing IPC and /dev/shm with
        // the host), where root may make one
        let contained = actor == Actor::B && is_root();
        let peer = match (qt, contained) {
            (true, false) => actor::qt(self.python.ok_or("no PyQt6")?, key, self.kind, START),
            (true, true) => {
                actor::qt_in_own_pid_namespace(self.python.ok_or("no PyQt6")?, key, self.kind, START)
            }
            (false, true) => actor::qshm_in_own_pid_namespace(key, self.kind, self.mode, START),
            (false, false) => {
                let user = self.user.filter(|_| actor == Actor::User);
                actor::qshm(user, key, self.kind, self.mode, START)
            }
        };
        peer.ok_or_else(|| format!("{actor:?} did not start").into())
    }

    /// The world removes the key's segment behind its users' back, as root's `ipcrm -m ID`
    /// or `rm /dev/shm/NAME` would; what a create or attach finds from now on is another.
    fn remove(&self, key: &str) -> Result<(), String> {
        self.incarnation.set(self.incarnation.get() + 1);
        let native = native(key, self.kind);
        match self.kind {
            KeyType::PosixRealtime => match std::fs::remove_file(shm_path(&native)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            },
            _ => {
                let Some(numeric) = SharedMemory::system_v_key(&native) else {
                    return Ok(()); // no key file: no segment
                };
                // SAFETY: shmget and IPC_RMID take plain integers (IPC_RMID ignores the
                // buffer).
                let removed = unsafe {
                    let id = libc::shmget(numeric, 0, 0);
                    id < 0 || libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == 0
                };
                if removed {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error().to_string())
                }
            }
        }
    }

    /// Before every command to an actor: it releases the child it forked, if any.
    fn releasing(&self, running: &mut Running) {
        if let Some(at) = running.forked_at.take()
            && at.elapsed() > FORK_RELEASED_IN_TIME
        {
            self.released_late.set(true);
        }
    }

    fn ask(&self, running: &mut Running, command: &str) -> Option<String> {
        self.releasing(running);
        let reply = actor::ask(&mut running.peer, command, REPLY);
        match &reply {
            Some(reply) => self.answered(running, command, reply),
            None => self.no_answer(running),
        }
        reply
    }

    /// A qshm process that took the lock (a lock, a hold, a read, a burst) rescues the Qt
    /// processes a dead qshm holder left waiting.
    fn answered(&self, running: &Running, command: &str, reply: &str) {
        let locked = match command {
            "lock" | "burst" => reply.starts_with("OK"),
            "read" => reply.starts_with("VALUE"),
            "hold" => reply == "HELD",
            _ => false,
        };
        if running.qshm && locked {
            self.qshm_holder_dead.set(false);
        }
    }

    fn no_answer(&self, running: &Running) {
        if !running.qshm && self.qshm_holder_dead.get() {
            self.qt_waited_on_dead_qshm_holder.set(true);
        }
    }

    fn apply(
        &self,
        key: &str,
        actor: Actor,
        event: Event,
        running: &mut Running,
        broken: &mut Vec<(Broken, String)>,
    ) {
        let exists = || qshm::admin::exists(&native(key, self.kind));
        // an actor whose create or attach failed (as expected) is not attached: what needs
        // an attachment does not apply to it
        let attached = running.life == Life::Attached;
        if !attached && matches!(event, Event::Lock | Event::Detach) {
            return;
        }
        if !attached && event == Event::HoldKill {
            running.peer.kill9();
            running.life = Life::Gone;
            return;
        }
        match event {
            Event::Create | Event::Attach if attached => {}
            Event::Create | Event::Attach => {
                let existed = exists();
                if event == Event::Create
                    && actor == Actor::Qt
                    && existed
                    && self.kind == KeyType::PosixRealtime
                {
                    self.qt_remade_semaphore.set(true);
                }
                let command = if event == Event::Create {
                    "create 64"
                } else {
                    "attach"
                };
                match self.ask(running, command) {
                    Some(reply) if reply == "OK" => {
                        running.life = Life::Attached;
                        running.incarnation = self.incarnation.get();
                    }
                    Some(reply) => {
                        let expected = match event {
                            Event::Create => existed && reply == "ERR AlreadyExists",
                            _ => !existed && reply == "ERR NotFound",
                        };
                        if !expected {
                            broken.push((
                                Broken::Refused,
                                format!("{actor:?} {command}: {reply} (existed: {existed})"),
                            ));
                        }
                    }
                    None => broken.push((Broken::Hung, format!("{actor:?} {command}"))),
                }
            }
            Event::Lock => match self.ask(running, "lock") {
                Some(reply) if reply.starts_with("OK") => {}
                Some(reply) => broken.push((Broken::Refused, format!("{actor:?} lock: {reply}"))),
                None => broken.push((Broken::Hung, format!("{actor:?} lock"))),
            },
            Event::Detach => {
                match self.ask(running, "detach") {
                    Some(reply) if reply == "OK" => {}
                    Some(reply) => broken.push((Broken::Refused, format!("{actor:?} detach: {reply}"))),
                    None => broken.push((Broken::Hung, format!("{actor:?} detach"))),
                }
                running.life = Life::Idle;
            }
            Event::Exit => {
                self.releasing(running);
                running.peer.send("exit");
                if running.peer.wait_or_kill(REPLY).is_none() {
                    self.no_answer(running);
                    broken.push((Broken::Hung, format!("{actor:?} exit")));
                }
                running.life = Life::Gone;
            }
            Event::Kill => {
                running.peer.kill9();
                running.life = Life::Gone;
            }
            Event::Fork => match self.ask(running, "fork") {
                Some(reply) if reply == "FORKED" => running.forked_at = Some(Instant::now()),
                Some(reply) => broken.push((Broken::Refused, format!("{actor:?} fork: {reply}"))),
                None => broken.push((Broken::Hung, format!("{actor:?} fork"))),
            },
            Event::Remove => unreachable!("the world's event, applied in run"),
            Event::HoldKill => {
                match self.ask(running, "hold") {
                    Some(reply) if reply == "HELD" => {
                        let dead_holder = if running.qshm {
                            &self.qshm_holder_dead
                        } else {
                            &self.qt_holder_killed
                        };
                        dead_holder.set(true);
                    }
                    Some(reply) => broken.push((Broken::Refused, format!("{actor:?} hold: {reply}"))),
                    None => broken.push((Broken::Hung, format!("{actor:?} hold"))),
                }
                running.peer.kill9();
                running.life = Life::Gone;
            }
        }
    }

    /// Every attached actor adds `BURST` at the same time: the counter must grow by exactly
    /// that much per actor.
    /// (Actors of a removed segment and of its successor burst apart, each group on its own
    /// counter.)
    fn burst(&self, actors: &mut [(Actor, Running)], broken: &mut Vec<(Broken, String)>) {
        let mut segments: Vec<u32> = actors
            .iter()
            .filter(|(_, r)| r.life == Life::Attached)
            .map(|(_, r)| r.incarnation)
            .collect();
        segments.sort_unstable();
        segments.dedup();
        for segment in segments {
            let attached: Vec<usize> = (0..actors.len())
                .filter(|&i| actors[i].1.life == Life::Attached && actors[i].1.incarnation == segment)
                .collect();
            self.burst_on_one_segment(actors, &attached, broken);
        }
    }

    fn burst_on_one_segment(
        &self,
        actors: &mut [(Actor, Running)],
        attached: &[usize],
        broken: &mut Vec<(Broken, String)>,
    ) {
        let Some(&first) = attached.first() else {
            return;
        };
        let read = |running: &mut Running| -> Result<u64, String> {
            match self.ask(running, "read") {
                Some(reply) => reply
                    .strip_prefix("VALUE ")
                    .and_then(|v| v.parse().ok())
                    .ok_or(reply),
                None => Err("no answer".to_owned()),
            }
        };
        let before = match read(&mut actors[first].1) {
            Ok(v) => v,
            Err(why) => {
                let class = if why == "no answer" {
                    Broken::Hung
                } else {
                    Broken::Refused
                };
                broken.push((
                    class,
                    format!("{:?} read before the burst: {why}", actors[first].0),
                ));
                return;
            }
        };
        for &i in attached {
            self.releasing(&mut actors[i].1);
            actors[i].1.peer.send(&format!("burst {BURST}"));
        }
        for &i in attached {
            let reply = actors[i].1.peer.try_line(REPLY * 3);
            match &reply {
                Some(reply) => self.answered(&actors[i].1, "burst", reply),
                None => self.no_answer(&actors[i].1),
            }
            match reply {
                Some(reply) if reply.starts_with("OK") => {}
                Some(reply) => broken.push((Broken::Refused, format!("{:?} burst: {reply}", actors[i].0))),
                None => {
                    broken.push((Broken::Hung, format!("{:?} burst", actors[i].0)));
                    return;
                }
            }
        }
        match read(&mut actors[first].1) {
            Ok(after) if after == before + BURST * attached.len() as u64 => {}
            Ok(after) => broken.push((
                Broken::Counter,
                format!(
                    "{} actors added {} in all, the counter went from {before} to {after}",
                    attached.len(),
                    BURST * attached.len() as u64
                ),
            )),
            Err(why) => broken.push((Broken::Hung, format!("read after the burst: {why}"))),
        }
        if self.kind == KeyType::PosixRealtime && self.mode == LockMode::QtCompatible {
            self.one_semaphore(actors, attached, broken);
        }
    }

    /// After a burst every actor has opened the lock's POSIX semaphore: they must map one
    /// common semaphore file. Two semaphores lose increments only when two bursts overlap,
    /// which the counter shows by chance; the inodes show it every time. (An actor that
    /// maps none gives no evidence either way and is left out.)
    fn one_semaphore(
        &self,
        actors: &mut [(Actor, Running)],
        attached: &[usize],
        broken: &mut Vec<(Broken, String)>,
    ) {
        let mut mapped: Vec<(Actor, Vec<String>)> = Vec::new();
        for &i in attached {
            let Some(reply) = self.ask(&mut actors[i].1, "semaphores") else {
                broken.push((Broken::Hung, format!("{:?} semaphores", actors[i].0)));
                return;
            };
            match reply.strip_prefix("SEMS") {
                Some(inodes) if !inodes.trim().is_empty() => mapped.push((
                    actors[i].0,
                    inodes.split_whitespace().map(str::to_owned).collect(),
                )),
                Some(_) => {}
                None => broken.push((Broken::Refused, format!("{:?} semaphores: {reply}", actors[i].0))),
            }
        }
        let Some(((_, first), rest)) = mapped.split_first() else {
            return;
        };
        let common = first
            .iter()
            .any(|inode| rest.iter().all(|(_, other)| other.contains(inode)));
        if !common {
            broken.push((
                Broken::Counter,
                format!("no semaphore file common to every attached actor (by inode): {mapped:?}"),
            ));
        }
    }
}

/// Orders a larger slice than CI's found broken once (by key type, lock mode and the
/// order's printed form): CI runs each of them from then on.
const ONCE_BROKEN: &[(KeyType, LockMode, &str)] = &[
    // counted as qshm's until another user's create refused after Qt's create remade the
    // POSIX semaphore counted as Qt's doing (the whole matrix, 2026-12-04)
    (
        KeyType::PosixRealtime,
        LockMode::QtCompatible,
        "[(A, Create), (Qt, Create), (A, Detach), (User, Create)]",
    ),
    // counted as qshm's until the replay without A and B: Qt's failed attach leaves root's
    // key file and semaphore set, which refuse the other user's create while that Qt
    // process lives, as with Qt alone (the whole matrix, 2026-12-04)
    (
        KeyType::SystemV,
        LockMode::QtCompatible,
        "[(A, Attach), (Qt, Attach), (A, Exit), (User, Create)]",
    ),
    // Qt's failed attach made the key's semaphore (0600); qshm's create of a 0666 segment
    // adopted it without giving its other writers access: another user attached and could
    // not lock (stress slice of 300 orders, 2026-12-03)
    (
        KeyType::SystemV,
        LockMode::QtCompatible,
        "[(Qt, Attach), (A, Create), (User, Attach), (User, Lock)]",
    ),
    // the same with Qt's POSIX semaphore (found by running that order on POSIX)
    (
        KeyType::PosixRealtime,
        LockMode::QtCompatible,
        "[(Qt, Attach), (A, Create), (User, Attach), (User, Lock)]",
    ),
    // the first fix of the above widened the semaphore at a create that then found Qt's
    // segment: the semaphore was wider than that segment, and B's attach refused it
    (
        KeyType::PosixRealtime,
        LockMode::QtCompatible,
        "[(Qt, Create), (A, Create), (B, Attach), (Qt, Lock)]",
    ),
    // Qt's failed attach made the semaphore and, as its creator, unlinked it at exit; A's
    // create had shared it, and the other user's attach made another: two locks, seen as
    // lost increments when the two bursts overlapped (the whole POSIX matrix on 3e4cfea,
    // 2026-12-04; lifetime.rs has the deterministic test)
    (
        KeyType::PosixRealtime,
        LockMode::QtCompatible,
        "[(Qt, Attach), (A, Create), (Qt, Exit), (User, Attach)]",
    ),
];

/// `i/n` of `QSHM_MATRIX_SHARD`: shard `i` (from 0) of `n`.
fn parse_shard(text: &str) -> Result<(usize, usize), Failed> {
    let parsed = text
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((index, shards)) if index < shards => Ok((index, shards)),
        _ => Err(format!("QSHM_MATRIX_SHARD={text:?}: expected i/n with 0 <= i < n").into()),
    }
}

/// Shard `index` of `shards` of `items`: every `shards`-th from the `index`-th.
fn in_shard<T>(items: Vec<T>, index: usize, shards: usize) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(position, _)| position % shards == index)
        .map(|(_, item)| item)
        .collect()
}

/// The shards of `bench/matrix.sh` run every order exactly once, and a bad
/// `QSHM_MATRIX_SHARD` is an error, not a silent full run.
fn shards_run_every_order_exactly_once() -> Result<(), Failed> {
    let actors = Family::Removal.actors(LockMode::Fast, false);
    let orders: Vec<String> = Family::Removal
        .orders(&actors)
        .iter()
        .map(|o| format!("{o:?}"))
        .collect();
    for shards in 1..=5 {
        let mut seen: Vec<String> = (0..shards)
            .flat_map(|index| in_shard(orders.clone(), index, shards))
            .collect();
        seen.sort();
        let mut expected = orders.clone();
        expected.sort();
        if seen != expected {
            return Err(format!("{shards} shards did not run every order exactly once").into());
        }
    }
    for (text, expected) in [
        ("0/3", Some((0, 3))),
        ("2/3", Some((2, 3))),
        ("3/3", None),
        ("1", None),
        ("a/b", None),
        ("0/0", None),
    ] {
        if parse_shard(text).ok() != expected {
            return Err(format!("QSHM_MATRIX_SHARD={text:?} parsed wrongly").into());
        }
    }
    Ok(())
}

/// Whether a break is what Qt's `create` on an existing POSIX key causes: it unlinks the
/// key's semaphore and makes a new one, mode 0600, so increments are lost between holders
/// of the old and the new one, and another user's lock or burst is refused; so is that
/// user's create once the segment is gone, while the Qt process keeps the semaphore (qshm's
/// last detach removes only the semaphore it recorded; a Qt creator unlinks whatever has
/// the name, which is why Qt alone does not show it).
fn qt_remade_semaphore_did(class: &Broken, what: &str) -> bool {
    match class {
        Broken::Counter => true,
        Broken::Refused => {
            what.starts_with("User ")
                && ((what.contains("ERR PermissionDenied")
                    && (what.contains(" lock:") || what.contains(" hold:") || what.contains(" burst:")))
                    || (what.starts_with("User create") && what.contains("ERR AlreadyExists")))
        }
        _ => false,
    }
}

impl Runner<'_> {
    /// Which documented wait of the README's dead-holder table explains every break of
    /// `order`'s last run, if one does.
    fn documented_wait(&self, order: &Order, broken: &[(Broken, String)]) -> Option<&'static str> {
        if self.qt_waited_on_dead_qshm_holder.get()
            && broken
                .iter()
                .all(|(class, what)| *class == Broken::Hung && what.starts_with("Qt "))
        {
            return Some(
                "a Qt process waits on a lock a killed qshm holder kept; no qshm process locked since",
            );
        }
        let mut qshm_actors: Vec<Actor> = order
            .iter()
            .map(|(actor, _)| *actor)
            .filter(|actor| matches!(actor, Actor::A | Actor::B | Actor::User))
            .collect();
        qshm_actors.sort_by_key(|actor| format!("{actor:?}"));
        qshm_actors.dedup();
        if self.kind == KeyType::PosixRealtime
            && self.qt_holder_killed.get()
            && qshm_actors.len() >= 2
            && broken.iter().all(|(class, what)| {
                *class == Broken::Refused
                    && what.contains("read before the burst: ERR Timeout")
                    && (self.census_blind || what.starts_with("User "))
            })
        {
            return Some(
                "a Qt holder was killed; another qshm process has the semaphore open; the census cannot see every process",
            );
        }
        None
    }
}

/// Whether some process's memory map cannot be read here (by root: on this VM PID 1's).
fn census_blind() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && matches!(
                std::fs::File::open(entry.path().join("maps")),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
            )
    })
}

/// Run the matrix slice of `family` (`only`: exactly the orders printed so, instead).
fn run_matrix(
    family: Family,
    kind: KeyType,
    mode: LockMode,
    python: Option<&PathBuf>,
    only: Option<&[&str]>,
) -> Result<(), Failed> {
    let user = match family {
        Family::Mixed => TempUser::create("generated_orders"),
        Family::Removal => None,
    };
    let actors = family.actors(mode, user.is_some());
    let all = family.orders(&actors);
    // QSHM_MATRIX=all: every order; =N: N orders; else the CI slice
    let wanted = match std::env::var("QSHM_MATRIX").ok().as_deref() {
        Some("all") => all.len(),
        Some(n) => n.parse().unwrap_or(SLICE),
        None => SLICE,
    };
    // a fixed, deterministic slice, evenly spread over the enumeration
    let step = (all.len() / wanted.max(1)).max(1);
    let mut picked: Vec<&Order> = all.iter().step_by(step).take(wanted).collect();
    // QSHM_MATRIX_ONLY=text: of those, the orders whose printed form contains it (to run a
    // broken order again)
    if let Ok(only) = std::env::var("QSHM_MATRIX_ONLY") {
        picked = all.iter().filter(|o| format!("{o:?}").contains(&only)).collect();
    }
    // QSHM_MATRIX_SHARD=i/n: of those, every n-th from the i-th (counted from 0), so that n
    // processes, each in namespaces of its own, share the whole enumeration (bench/matrix.sh)
    let shard = match std::env::var("QSHM_MATRIX_SHARD") {
        Ok(text) => Some(parse_shard(&text)?),
        Err(_) => None,
    };
    if let Some((index, shards)) = shard {
        picked = in_shard(picked, index, shards);
    }
    if let Some(only) = only {
        picked = all
            .iter()
            .filter(|o| only.contains(&format!("{o:?}").as_str()))
            .collect();
        if picked.len() != only.len() {
            return Err(format!("not every order of {only:?} is generated").into());
        }
    }
    let runner = Runner {
        kind,
        mode,
        python,
        user: user.as_ref(),
        qt_remade_semaphore: std::cell::Cell::new(false),
        incarnation: std::cell::Cell::new(0),
        released_late: std::cell::Cell::new(false),
        refused: std::cell::RefCell::new(Vec::new()),
        qshm_holder_dead: std::cell::Cell::new(false),
        qt_waited_on_dead_qshm_holder: std::cell::Cell::new(false),
        qt_holder_killed: std::cell::Cell::new(false),
        census_blind: census_blind(),
    };
    let (mut qshm_broken, mut qt_too, mut documented) = (Vec::new(), 0, 0);
    let started = Instant::now();
    for (done, order) in picked.iter().enumerate() {
        // a long run (bench/matrix.sh) says where it is, and what it found so far
        if done > 0 && done % PROGRESS_EVERY == 0 {
            eprintln!(
                "  progress ({family:?}, {kind:?}, {mode:?}): {done} of {} orders in {:.0?}, {} broken by qshm so far",
                picked.len(),
                started.elapsed(),
                qshm_broken.len()
            );
        }
        let broken = runner.run(order, false)?;
        if broken.is_empty() {
            continue;
        }
        // (read before the replays below run other orders)
        let refused = runner.refused.borrow().clone();
        // Qt's create remade the POSIX semaphore: a lost increment is Qt's doing (README),
        // and so is another user's lock refused: Qt makes the new semaphore 0600, its own
        if runner.qt_remade_semaphore.get()
            && broken
                .iter()
                .all(|(class, what)| qt_remade_semaphore_did(class, what))
        {
            qt_too += 1;
            eprintln!("  Qt's create remade the key's POSIX semaphore: {order:?}: {broken:?}");
            continue;
        }
        // the waits the README documents (dead holders): a Qt process waiting on a lock a
        // killed qshm holder kept, with no qshm lock since; and, after a killed Qt holder,
        // qshm's read while another qshm process has the semaphore open and some process
        // is hidden from the census (qshm cannot rule it out as the holder, so it waits)
        if let Some(why) = runner.documented_wait(order, &broken) {
            documented += 1;
            eprintln!("  a documented wait ({why}): {order:?}: {broken:?}");
            continue;
        }
        // Qt's own flaw? The same order with Qt processes for the qshm ones; and what is
        // still unexplained, with the other actors alone (Qt and the other user, without
        // qshm's A and B): a break that happens without A and B is not theirs. (A Qt
        // attach that fails makes the key's file and semaphore set, root's, which refuse
        // the other user's create; the replay with Qt for A made that Qt process their
        // creator, whose exit removed them, so only the order without A shows it.)
        let comparable = family == Family::Mixed && mode == LockMode::QtCompatible && python.is_some();
        let mut alone = if comparable {
            runner.run(order, true)?
        } else {
            Vec::new()
        };
        // the breaks of this order no replay broke the same way
        let unexplained = |alone: &[(Broken, String)]| -> Vec<&(Broken, String)> {
            broken
                .iter()
                .filter(|(class, _)| !alone.iter().any(|(c, _)| c == class))
                .collect()
        };
        let others: Order = order
            .iter()
            .copied()
            .filter(|(actor, _)| !matches!(actor, Actor::A | Actor::B))
            .collect();
        if comparable && !unexplained(&alone).is_empty() && !others.is_empty() && others.len() < order.len() {
            alone.extend(runner.run(&others, false)?);
        }
        // ... and, still unexplained, with Qt for A and B but without their events that
        // changed nothing here: a create qshm refuses (AlreadyExists) is, in Qt, a create
        // that makes the key's semaphore anew, which frees a lock a killed holder kept; Qt
        // waits for ever on such a lock when nothing remakes it (a Qt attach after a killed
        // holder, with only attaches between)
        let effective: Order = order
            .iter()
            .enumerate()
            .filter(|(index, _)| !refused.contains(index))
            .map(|(_, event)| *event)
            .collect();
        if comparable && !unexplained(&alone).is_empty() && !refused.is_empty() && !effective.is_empty() {
            alone.extend(runner.run(&effective, true)?);
        }
        let ours = unexplained(&alone);
        if ours.is_empty() {
            qt_too += 1;
            eprintln!("  Qt alone breaks it too: {order:?}: {broken:?}");
        } else {
            eprintln!("  broken by qshm: {order:?}: {ours:?}");
            qshm_broken.push(format!("{order:?}: {ours:?}"));
        }
    }
    let shard = match shard {
        Some((index, shards)) => format!(" (shard {index}/{shards})"),
        None => String::new(),
    };
    eprintln!(
        "matrix ({family:?}, {kind:?}, {mode:?}): {} of {} orders{shard} run in {:.0?}; {} broken by qshm, {qt_too} broken the same way by Qt alone, {documented} documented waits",
        picked.len(),
        all.len(),
        started.elapsed(),
        qshm_broken.len()
    );
    if qshm_broken.is_empty() {
        Ok(())
    } else {
        Err(qshm_broken.join("\n").into())
    }
}
