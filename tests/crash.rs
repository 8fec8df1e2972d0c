//! Crash trials and races with real processes: random users of one key are SIGKILLed at
//! random moments (holding the lock, mid-create, mid-detach); afterwards nothing of the
//! key may be left, the next create must succeed and no lock may block past a bound.
//!
//! CI runs short slices with a fixed seed; `bench/stress.sh` runs long ones in a private
//! IPC and mount namespace. Knobs (environment): `QSHM_TRIALS` (crash trials, default 40),
//! `QSHM_SEED` (default fixed; printed), `QSHM_KIND` (`systemv`/`posix`) and `QSHM_MODE`
//! (`qt`/`fast`) to pin the trials to one backend and lock mode, `QSHM_RACES` (racing-create
//! rounds, default 1), `QSHM_KILLS` (holders killed in tight lock loops, default 12). Each
//! test prints one summary line that the stress script reads.

mod support;

use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, SharedMemoryError};
use support::*;

/// No lock wait and no child may take longer than this.
const BOUND: Duration = Duration::from_secs(10);

fn main() {
    run_child_role(child_main);
    let trials = vec![
        Trial::test("crash_trials_leave_nothing_and_never_hang", crash_trials),
        Trial::test("posix::qt::lock_recovers_from_kills_in_tight_loops", || {
            kills_in_tight_loops(KeyType::PosixRealtime, LockMode::QtCompatible)
        }),
        Trial::test("systemv::qt::lock_recovers_from_kills_in_tight_loops", || {
            kills_in_tight_loops(KeyType::SystemV, LockMode::QtCompatible)
        }),
        Trial::test("posix::fast::lock_recovers_from_kills_in_tight_loops", || {
            kills_in_tight_loops(KeyType::PosixRealtime, LockMode::Fast)
        }),
        Trial::test("systemv::fast::lock_recovers_from_kills_in_tight_loops", || {
            kills_in_tight_loops(KeyType::SystemV, LockMode::Fast)
        }),
        Trial::test("systemv::racing_creates_have_exactly_one_winner", || {
            racing_creates(KeyType::SystemV)
        }),
        Trial::test("posix::racing_creates_have_exactly_one_winner", || {
            racing_creates(KeyType::PosixRealtime)
        }),
        Trial::test("systemv::attach_racing_last_detach_sees_whole_or_nothing", || {
            attach_vs_detach(KeyType::SystemV)
        }),
        Trial::test("posix::attach_racing_last_detach_sees_whole_or_nothing", || {
            attach_vs_detach(KeyType::PosixRealtime)
        }),
    ];
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

/// xorshift64*: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PAGE_PATTERN: u8 = 0xA5;

fn child_main(role: &str, args: &[String]) -> i32 {
    let (key, kind, mode) = (&args[0], parse_kind(&args[1]), parse_mode(&args[2]));
    match role {
        // Random create/attach, lock, write, unlock, detach, for a while.
        "chaos" => {
            let mut rng = Rng(args[3].parse::<u64>().unwrap() | 1);
            let start = Instant::now();
            for _ in 0..(5 + rng.below(20)) {
                let mut shm = handle(key, kind, mode);
                let attached = if rng.below(2) == 0 {
                    shm.create(4096, AccessMode::ReadWrite)
                        .or_else(|e| match e.kind() {
                            SharedMemoryError::AlreadyExists => shm.attach(AccessMode::ReadWrite),
                            _ => Err(e),
                        })
                } else {
                    shm.attach(AccessMode::ReadWrite)
                };
                match attached {
                    Ok(()) => {}
                    Err(e) if e.kind() == SharedMemoryError::NotFound => continue,
                    Err(e) => {
                        // on stdout, where the trial reads it for its report
                        say(format!("ERROR create or attach: {e} [{:?}]", e.kind()));
                        return 3;
                    }
                }
                for _ in 0..rng.below(4) {
                    match shm.lock_timeout(BOUND) {
                        Ok(Some(mut data)) => {
                            data[..64].fill(PAGE_PATTERN);
                            if rng.below(3) == 0 {
                                std::thread::sleep(Duration::from_millis(rng.below(3)));
                            }
                        }
                        Ok(None) => return 42, // hung past the bound
                        Err(e) => {
                            say(format!("ERROR lock: {e} [{:?}]", e.kind()));
                            return 4;
                        }
                    }
                }
                drop(shm);
                if start.elapsed() > BOUND {
                    return 42;
                }
            }
            0
        }
        "hammer" => {
            // lock, check that nobody else holds it, unlock, as fast as possible
            let mut shm = handle(key, kind, mode);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let me = std::process::id().to_ne_bytes();
            say("HAMMERING");
            loop {
                let mut data = match shm.lock_timeout(BOUND) {
                    Ok(Some(data)) => data,
                    Ok(None) => return 42,
                    Err(e) => {
                        eprintln!("hammer: {e}");
                        return 4;
                    }
                };
                if data[..4] != [0; 4] && !data.previous_owner_died() {
                    return 7; // someone else holds it too
                }
                data[..4].copy_from_slice(&me);
                std::hint::spin_loop();
                if data[..4] != me {
                    return 7;
                }
                data[..4].fill(0);
            }
        }
        "race-create" => {
            let mut shm = handle(key, kind, mode);
            wait_for_stdin_line(); // "go"
            match shm.create(4096, AccessMode::ReadWrite) {
                Ok(()) => say("WON"),
                Err(e) => say(format!("LOST {:?}", e.kind())),
            }
            wait_for_stdin_line();
            0
        }
        "attach-check" => {
            // Attach as often as possible; every success must be a whole, valid segment.
            let deadline = Instant::now() + Duration::from_millis(args[3].parse().unwrap());
            let (mut whole, mut missing) = (0, 0);
            while Instant::now() < deadline {
                let mut shm = handle(key, kind, mode);
                match shm.attach(AccessMode::ReadOnly) {
                    Ok(()) => {
                        // Either freshly created (zeros, the creator has not written yet) or
                        // written; never a short or unmapped segment (that would be SIGBUS).
                        let first = shm.lock_read().map(|d| (d[0], d[4095]));
                        let valid = matches!(first, Ok((0 | PAGE_PATTERN, 0)));
                        if shm.size() != 4096 || !valid {
                            say(format!("BROKEN size {} bytes {first:?}", shm.size()));
                            return 5;
                        }
                        whole += 1;
                    }
                    Err(e) if e.kind() == SharedMemoryError::NotFound => missing += 1,
                    Err(e) => {
                        say(format!("BROKEN {e}"));
                        return 5;
                    }
                }
            }
            say(format!("DONE {whole} {missing}"));
            0
        }
        other => {
            eprintln!("unknown role {other}");
            2
        }
    }
}

fn crash_trials() -> Result<(), Failed> {
    let trials: u64 = std::env::var("QSHM_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(40);
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let (mut leaked, mut hung, mut killed, mut failed) = (0, 0, 0, Vec::new());
    let modes = [LockMode::QtCompatible, LockMode::Fast];
    let pinned_kind = std::env::var("QSHM_KIND").ok().map(|k| parse_kind(&k));
    let pinned_mode = std::env::var("QSHM_MODE").ok().map(|m| parse_mode(&m));
    for trial in 0..trials {
        let kind = KINDS[rng.below(2) as usize];
        let mode = modes[rng.below(2) as usize];
        let (kind, mode) = (pinned_kind.unwrap_or(kind), pinned_mode.unwrap_or(mode));
        let key = unique_key("crash");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let procs = 2 + rng.below(5);
        let mut peers: Vec<Peer> = (0..procs)
            .map(|_| {
                let child_seed = rng.next().to_string();
                Peer::spawn("chaos", &[&key, kind_name(kind), mode_name(mode), &child_seed])
            })
            .collect();
        let mut recorded = Vec::new();
        for _ in 0..1 + rng.below(procs) {
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
            recorded.extend(sysv_keys(&key, kind));
            let victim = rng.below(procs) as usize;
            if let Ok(None) = peers[victim].child.try_wait() {
                peers[victim].kill9();
                killed += 1;
            }
        }
        for peer in &mut peers {
            let deadline = Instant::now() + BOUND * 2;
            let status = loop {
                if let Some(status) = peer.child.try_wait()? {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let pid = peer.child.id();
                    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    let first = stack.lines().next().unwrap_or("").to_owned();
                    failed.push(format!("trial {trial}: child {pid} stuck in {wchan} ({first})"));
                    peer.kill9();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            match status.map(|s| s.code()) {
                None | Some(Some(42)) => {
                    hung += 1; // past the bound
                    failed.push(format!("trial {trial} ({kind:?}, {mode:?}): a child hung"));
                }
                Some(None) | Some(Some(0)) => {} // killed by us, or finished
                Some(Some(code)) => {
                    let said = peer.try_line(Duration::from_millis(100)).unwrap_or_default();
                    failed.push(format!(
                        "trial {trial} ({kind:?}, {mode:?}): a child exited with {code}: {said}"
                    ));
                }
            }
        }
        // The survivors are done: the next create must work and the lock must be free.
        let mut next = handle(&key, kind, mode);
        match next.create(64, AccessMode::ReadWrite) {
            Ok(()) => match next.lock_timeout(BOUND) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    hung += 1;
                    failed.push(format!(
                        "trial {trial} ({kind:?}, {mode:?}): lock after the trial hung"
                    ));
                }
                Err(e) => failed.push(format!("trial {trial}: lock after the trial: {e}")),
            },
            Err(e) => failed.push(format!("trial {trial}: create after the trial: {e}")),
        }
        drop(next);
        let left = leftovers(&key, kind, &recorded);
        if !left.is_empty() {
            leaked += 1;
            failed.push(format!("trial {trial} ({kind:?}, {mode:?}): left {left:?}"));
        }
    }
    eprintln!(
        "crash trials: {trials} trials, {leaked} leaked, {hung} hung, {killed} processes killed (seed {seed})"
    );
    if leaked == 0 && hung == 0 && failed.is_empty() {
        Ok(())
    } else {
        Err(format!("seed {seed}: {leaked} leaked, {hung} hung; {failed:?}").into())
    }
}

/// `QSHM_SEED`, or a fixed seed (CI runs the same slice every time).
fn seed() -> u64 {
    std::env::var("QSHM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5153_484d_2026)
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn racing_creates(kind: KeyType) -> Result<(), Failed> {
    const RACERS: usize = 8;
    let rounds = env_count("QSHM_RACES", 1);
    let (mut double, mut none) = (0, 0);
    let mut failures = Vec::new();
    for round in 0..rounds {
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            match race_once(kind, mode, RACERS) {
                Ok(()) => {}
                Err((winners, why)) => {
                    if winners > 1 {
                        double += 1;
                    } else if winners == 0 {
                        none += 1;
                    }
                    failures.push(format!("round {round}: {why}"));
                }
            }
        }
    }
    eprintln!(
        "racing creates ({kind:?}): {} rounds, {double} double winners, {none} without a winner, {} failed",
        rounds * 2,
        failures.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{failures:?}").into())
    }
}

/// One race of `racers` processes creating one key: exactly one wins, the others get
/// AlreadyExists, nothing is left. On failure: the number of winners and why.
fn race_once(kind: KeyType, mode: LockMode, racers: usize) -> Result<(), (usize, String)> {
    {
        let key = unique_key("race");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut peers: Vec<Peer> = (0..racers)
            .map(|_| Peer::spawn("race-create", &[&key, kind_name(kind), mode_name(mode)]))
            .collect();
        std::thread::sleep(Duration::from_millis(100)); // all waiting on stdin
        for p in &mut peers {
            p.send("go");
        }
        let results: Vec<String> = peers
            .iter_mut()
            .map(|p| p.line(Duration::from_secs(20)))
            .collect();
        let recorded = sysv_keys(&key, kind);
        let winners = results.iter().filter(|r| *r == "WON").count();
        let losers = results.iter().filter(|r| *r == "LOST AlreadyExists").count();
        for p in &mut peers {
            p.finish();
        }
        if winners != 1 || losers != racers - 1 {
            return Err((winners, format!("{mode:?}: {results:?}")));
        }
        let left = leftovers(&key, kind, &recorded);
        if !left.is_empty() {
            return Err((winners, format!("{mode:?}: left {left:?}")));
        }
    }
    Ok(())
}

/// Processes lock and unlock in tight loops while the test kills one of them at a random
/// moment, again and again: a kill can land anywhere, also between `sem_wait` returning and
/// qshm recording it (the window the first version lost the POSIX lock in). After every
/// kill the lock must come back within the bound, and no two processes may ever hold it
/// at once (each holder writes its pid and checks it before unlocking).
fn kills_in_tight_loops(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    const HAMMERS: usize = 3;
    let kills = env_count("QSHM_KILLS", 12);
    let mut rng = Rng(seed() ^ 0x6b69_6c6c | 1);
    let key = unique_key("hammer");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, mode);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    let spawn = || Peer::spawn("hammer", &[&key, kind_name(kind), mode_name(mode)]);
    let mut hammers: Vec<Peer> = (0..HAMMERS).map(|_| spawn()).collect();
    for h in &mut hammers {
        h.expect("HAMMERING", BOUND);
    }
    let (mut lost, mut double, mut recoveries, mut from_dead) = (0, 0, Vec::new(), Vec::new());
    for _ in 0..kills {
        std::thread::sleep(Duration::from_micros(200 + rng.below(20_000)));
        let victim = rng.below(HAMMERS as u64) as usize;
        hammers[victim].kill9();
        let start = Instant::now();
        match shm.lock_timeout(BOUND)? {
            // a holder's mark left by the dead: this holder was told, so clears it
            Some(mut guard) => {
                if guard.previous_owner_died() {
                    from_dead.push(start.elapsed());
                }
                guard[..4].fill(0);
            }
            None => lost += 1,
        }
        recoveries.push(start.elapsed());
        for (i, h) in hammers.iter_mut().enumerate() {
            if let Ok(Some(status)) = h.child.try_wait() {
                if status.code() == Some(7) {
                    double += 1;
                }
                if i != victim {
                    *h = spawn();
                    h.expect("HAMMERING", BOUND);
                }
            }
        }
        hammers[victim] = spawn();
        hammers[victim].expect("HAMMERING", BOUND);
    }
    for h in &mut hammers {
        h.kill9();
    }
    drop(shm);
    recoveries.sort();
    from_dead.sort();
    let worst = recoveries.last().copied().unwrap_or_default();
    let (dead_median, dead_worst) = match from_dead.len() {
        0 => (Duration::ZERO, Duration::ZERO),
        n => (from_dead[n / 2], from_dead[n - 1]),
    };
    // what bench/stress.sh reports: the worst of all kills, and of those that killed the
    // holder (the next lock was told: previous_owner_died)
    eprintln!(
        "kills in tight loops ({kind:?}, {mode:?}): {kills} kills, {lost} lost locks, {double} double holders, worst recovery {worst:?}; \
         {} kills of the holder: recovered in {dead_median:?} median, {dead_worst:?} worst",
        from_dead.len()
    );
    let left = leftovers(&key, kind, &recorded);
    if lost == 0 && double == 0 && left.is_empty() {
        Ok(())
    } else {
        Err(format!("{lost} lost, {double} double holders, left {left:?}").into())
    }
}

/// One process keeps creating a segment and destroying it (as its last user) while
/// another keeps attaching: the attacher sees either NotFound or a whole, valid segment.
fn attach_vs_detach(kind: KeyType) -> Result<(), Failed> {
    let mode = LockMode::QtCompatible;
    let key = unique_key("churn");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut checker = Peer::spawn("attach-check", &[&key, kind_name(kind), mode_name(mode), "1500"]);
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut cycles = 0;
    while Instant::now() < deadline {
        let mut shm = handle(&key, kind, mode);
        match shm.create(4096, AccessMode::ReadWrite) {
            Ok(()) => {
                shm.lock()?[..64].fill(PAGE_PATTERN);
                shm.detach()?;
                cycles += 1;
            }
            // the checker is attached to the last one: let it go
            Err(e) if e.kind() == SharedMemoryError::AlreadyExists => std::thread::yield_now(),
            Err(e) => return Err(e.into()),
        }
    }
    let done = checker.line(Duration::from_secs(20));
    let status = checker.wait(Duration::from_secs(20));
    if !status.success() || !done.starts_with("DONE") {
        return Err(format!("the attacher saw a broken segment: {done}").into());
    }
    eprintln!("{kind:?}: {cycles} create/destroy cycles; attacher (whole, NotFound): {done}");
    Ok(())
}
