//! `SharedMemory::open_or_create` across real processes: eight processes call it at one
//! instant (they sleep on a control segment's change notification until the test wakes
//! them all with one `notify_all`), round after round, both key types, both lock modes:
//! exactly one creator per round, everyone attached to the same segment (each writes its
//! id into its own slot and waits to see all of them), nothing left afterwards. Then the
//! same with one racer SIGKILLed at a random moment of its call, another user's segment
//! (attached where its permissions allow, never taken over), sizes, lock modes, stale
//! segments and a segment real Qt made.
//!
//! Knobs (environment): `QSHM_OOC_ROUNDS` (rounds of 8 racers per key type, default 30;
//! `bench/stress.sh` runs 1000), `QSHM_OOC_KILLS` (rounds with a racer killed, default 12),
//! `QSHM_SEED` (the kill moments and victims; fixed by default, printed). Each racing test
//! prints one summary line that the stress script reads.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, Opened, SharedMemory, SharedMemoryError};
use support::qt::{find_qt_python, qt_peer};
use support::*;

/// Processes racing per round.
const RACERS: usize = 8;
/// The size every racer asks for.
const SIZE: usize = 4096;
/// Where the racers' slots start in a round's segment (one `u32` each: id + 1).
const SLOTS: usize = 64;
/// No wait of a correct run comes near this; a broken one fails with it instead of hanging.
const BOUND: Duration = Duration::from_secs(30);
/// How long a racer waits to see the others' slots: less than [`BOUND`], so that it says
/// what it saw before the test gives up on the round.
const LOOK_BOUND: Duration = Duration::from_secs(20);
/// A call slower than this is reported (with what it returned), though not a failure by
/// itself: every wait inside it is bounded, and the round's bound judges.
const SLOW_CALL: Duration = Duration::from_secs(2);

/// The control segment's words (`u32`s at these offsets).
mod ctl {
    /// The round the racers may start (the test sets it, then notifies).
    pub(crate) const GO: usize = 0;
    /// The round whose segments the racers may detach from.
    pub(crate) const RELEASE: usize = 4;
    /// The racers whose slots a racer waits for (bit per id; 0: not known yet).
    pub(crate) const EXPECTED: usize = 8;
    /// Racers that attached the control segment (one-shot racers).
    pub(crate) const READY: usize = 12;
    pub(crate) const CREATED: usize = 16;
    pub(crate) const ATTACHED: usize = 20;
    pub(crate) const ERRORS: usize = 24;
    /// Racers that saw every expected slot filled in their segment.
    pub(crate) const SAW_ALL: usize = 28;
    /// Racers that finished looking (saw all, or gave up).
    pub(crate) const LOOKED: usize = 32;
    /// Racers that detached.
    pub(crate) const DONE: usize = 36;
    /// The racers that created a segment this round (bit per id).
    pub(crate) const CREATORS: usize = 40;
    /// The id + 1 of a racer that starts at `GO` alone (0: none); the others start when
    /// `GO_OTHERS` reaches the round.
    pub(crate) const VICTIM: usize = 44;
    pub(crate) const GO_OTHERS: usize = 48;
    /// The words reset before each round.
    pub(crate) const COUNTERS: [usize; 7] = [CREATED, ATTACHED, ERRORS, SAW_ALL, LOOKED, DONE, CREATORS];
}

fn main() {
    run_child_role(child_main);
    let args = Arguments::from_args();
    let python = find_qt_python();
    let mut trials = Vec::new();
    for kind in KINDS {
        let k = kind_name(kind);
        trials.push(Trial::test(
            format!("{k}::eight_processes_at_one_instant_one_creator_one_segment"),
            move || eight_at_once(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::a_racer_killed_mid_call_leaves_one_segment_and_nothing_behind"),
            move || racer_killed(kind),
        ));
        for mode in [LockMode::QtCompatible, LockMode::Fast] {
            let m = mode_name(mode);
            trials.push(Trial::test(
                format!("{k}::{m}::another_size_is_an_error_naming_both_sizes"),
                move || size_mismatch(kind, mode),
            ));
            trials.push(Trial::test(
                format!("{k}::{m}::a_stale_segment_is_replaced_and_counts_as_created"),
                move || stale_replaced(kind, mode),
            ));
        }
        trials.push(Trial::test(
            format!("{k}::attach_adopts_the_lock_mode_unless_asked_for_the_other"),
            move || lock_modes(kind),
        ));
        trials.push(Trial::test(
            format!("{k}::an_attached_handle_is_refused"),
            move || attached_handle(kind),
        ));
        trials.push(
            Trial::test(
                format!("{k}::another_users_segment_is_attached_where_permitted_never_taken_over"),
                move || another_user(kind),
            )
            .with_ignored_flag(!is_root()),
        );
        let name = format!("{k}::a_segment_qt_made_is_attached_at_its_exact_size");
        trials.push(match python.clone() {
            Some(py) => Trial::test(name, move || qt_made(&py, kind)),
            None => Trial::test(name, || Ok(())).with_ignored_flag(true),
        });
    }
    trials.push(
        Trial::test(
            "systemv::another_users_key_file_without_a_segment_is_already_exists_at_once",
            another_users_key_file,
        )
        .with_ignored_flag(!is_root()),
    );
    run_suite(&args, trials, Passes::AsUser)
}

// ------------------------------------------------------------------ the control segment

/// The control segment the test and its racers share (POSIX, Fast, no lock needed: only
/// atomics and change notification).
struct Control(SharedMemory);

impl Control {
    fn create(key: &str) -> Result<Control, qshm::Error> {
        let mut shm = handle(key, KeyType::PosixRealtime, LockMode::Fast);
        shm.create(4096, AccessMode::ReadWrite)?;
        Ok(Control(shm))
    }

    fn attach(key: &str) -> Result<Control, qshm::Error> {
        let mut shm = handle(key, KeyType::PosixRealtime, LockMode::Fast);
        shm.attach(AccessMode::ReadWrite)?;
        Ok(Control(shm))
    }

    fn word(&mut self, offset: usize) -> &AtomicU32 {
        let atomics = self.0.atomics().expect("control atomics");
        atomics.atomic_u32(offset).expect("control word")
    }

    fn get(&mut self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Acquire)
    }

    /// Count one more at `offset` and wake everyone waiting on the control segment.
    fn add(&mut self, offset: usize) {
        self.word(offset).fetch_add(1, Ordering::AcqRel);
        self.0.notify_all().expect("control notify");
    }

    /// Set a word and wake everyone waiting on the control segment.
    fn set(&mut self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Release);
        self.0.notify_all().expect("control notify");
    }

    /// Sleep until `done(self)` holds (checked at every notification and every 100 ms),
    /// at most [`BOUND`]; false if it never did.
    fn wait_until(&mut self, mut done: impl FnMut(&mut Control) -> bool) -> bool {
        let deadline = Instant::now() + BOUND;
        loop {
            let seen = self.0.generation().expect("control generation");
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.0
                .wait_for_change(seen, Duration::from_millis(100))
                .expect("control wait");
        }
    }
}

/// The key of round `round` of a race over `base`.
fn round_key(base: &str, round: u32) -> String {
    format!("{base}-r{round}")
}

/// The lock mode of round `round`: both modes, alternately.
fn round_mode(round: u32) -> LockMode {
    if round.is_multiple_of(2) {
        LockMode::QtCompatible
    } else {
        LockMode::Fast
    }
}

// ------------------------------------------------------------------ child roles

/// Child roles. `racer CTL BASE KIND ID FIRST LAST`: for rounds FIRST..=LAST, wait for the
/// start, open_or_create the round's key, write the slot, wait to see the expected slots,
/// wait for the release, detach.
fn child_main(role: &str, args: &[String]) -> i32 {
    match role {
        "racer" => racer(args),
        "hold" => {
            // KEY KIND MODE SIZE PERMS: create, say so, hold until stdin closes
            let (kind, mode) = (parse_kind(&args[1]), parse_mode(&args[2]));
            let size: usize = args[3].parse().unwrap();
            let perms = u32::from_str_radix(&args[4], 8).unwrap();
            let mut shm = handle(&args[0], kind, mode).with_permissions(perms);
            match shm.create(size, AccessMode::ReadWrite) {
                Ok(()) => {
                    shm.lock().expect("lock")[..4].copy_from_slice(b"mine");
                    say("CREATED");
                }
                Err(e) => {
                    say(format!("ERROR {:?} {e}", e.kind()));
                    return 1;
                }
            }
            wait_for_stdin_line();
            0
        }
        "open-or-create" => {
            // KEY KIND MODE SIZE ACCESS: one call; prints its outcome and the first 4 bytes
            let (kind, mode) = (parse_kind(&args[1]), parse_mode(&args[2]));
            let size: usize = args[3].parse().unwrap();
            let access = if args[4] == "rw" {
                AccessMode::ReadWrite
            } else {
                AccessMode::ReadOnly
            };
            let mut shm = SharedMemory::with_key_type(&args[0], kind);
            if args[2] != "adopt" {
                shm.set_lock_mode(mode).expect("set_lock_mode");
            }
            match shm.open_or_create(size, access) {
                Ok(opened) => {
                    // a reader of another user's segment may not lock it: read without
                    // SAFETY: the segment has at least 4 bytes, and its creator wrote
                    // them before this process started; nobody writes them since.
                    let head = unsafe { std::slice::from_raw_parts(shm.as_ptr(), 4) };
                    say(format!("{opened:?} {head:?}"));
                }
                Err(e) => say(format!("ERROR {:?} {e}", e.kind())),
            }
            0
        }
        other => {
            eprintln!("unknown child role {other}");
            2
        }
    }
}

fn racer(args: &[String]) -> i32 {
    let (base, kind) = (&args[1], parse_kind(&args[2]));
    let id: usize = args[3].parse().unwrap();
    let (first, last): (u32, u32) = (args[4].parse().unwrap(), args[5].parse().unwrap());
    let mut ctl = Control::attach(&args[0]).expect("attach the control segment");
    ctl.add(ctl::READY);
    for round in first..=last {
        let me = id as u32 + 1;
        let started = ctl.wait_until(|c| {
            let victim = c.get(ctl::VICTIM);
            c.get(ctl::GO) >= round && (victim == 0 || victim == me || c.get(ctl::GO_OTHERS) >= round)
        });
        if !started {
            say(format!("ROUND {round} racer {id}: no start within {BOUND:?}"));
            return 3;
        }
        let mut shm = handle(&round_key(base, round), kind, round_mode(round));
        let called = Instant::now();
        let opened = shm.open_or_create(SIZE, AccessMode::ReadWrite);
        if called.elapsed() > SLOW_CALL {
            say(format!(
                "ROUND {round} racer {id}: open_or_create took {:?}: {opened:?}",
                called.elapsed()
            ));
        }
        match opened {
            Ok(Opened::Created) => {
                ctl.word(ctl::CREATORS).fetch_or(1 << id, Ordering::AcqRel);
                ctl.add(ctl::CREATED);
            }
            Ok(Opened::Attached) => ctl.add(ctl::ATTACHED),
            Err(e) => {
                say(format!("ROUND {round} racer {id}: {:?} {e}", e.kind()));
                ctl.add(ctl::ERRORS);
                ctl.add(ctl::LOOKED);
                ctl.add(ctl::DONE);
                continue;
            }
        }
        // my slot, then everyone's: all of them in my segment means one segment for all
        let seen = {
            let atomics = shm.atomics().expect("atomics");
            let slot = |i: usize| atomics.atomic_u32(SLOTS + 4 * i).expect("slot");
            slot(id).store(id as u32 + 1, Ordering::Release);
            let deadline = Instant::now() + LOOK_BOUND;
            loop {
                let expected = ctl.get(ctl::EXPECTED);
                let filled = (0..RACERS)
                    .filter(|&i| slot(i).load(Ordering::Acquire) == i as u32 + 1)
                    .fold(0u32, |m, i| m | 1 << i);
                if expected != 0 && filled & expected == expected {
                    break Ok(());
                }
                if Instant::now() >= deadline {
                    break Err(format!("expected slots {expected:#04x}, filled {filled:#04x}"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        match seen {
            Ok(()) => ctl.add(ctl::SAW_ALL),
            Err(why) => {
                say(format!("ROUND {round} racer {id}: {why}"));
                ctl.add(ctl::ERRORS);
            }
        }
        ctl.add(ctl::LOOKED);
        if !ctl.wait_until(|c| c.get(ctl::RELEASE) >= round) {
            say(format!("ROUND {round} racer {id}: no release within {BOUND:?}"));
            return 3;
        }
        if let Err(e) = shm.detach() {
            say(format!("ROUND {round} racer {id}: detach {e}"));
            ctl.add(ctl::ERRORS);
        }
        ctl.add(ctl::DONE);
    }
    0
}

// ------------------------------------------------------------------ racing

/// xorshift64*: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn seed() -> u64 {
    std::env::var("QSHM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5153_484d_2023)
}

fn env_count(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one round of a race came to.
#[derive(Debug, Default)]
struct Round {
    created: u32,
    attached: u32,
    errors: u32,
    saw_all: u32,
    /// The racers that said they created a segment (bit per id).
    creators: u32,
    left: Vec<String>,
}

/// Run round `round` of the racers attached to `ctl`, `expected` being the racers whose
/// slots count (`None`: set by `during` once the round runs), and `racers` how many
/// finish it. With a `victim`, it starts alone and `during` lets the others go. `during`
/// runs right after the start (the kill test kills there).
#[allow(clippy::too_many_arguments)]
fn run_round(
    ctl: &mut Control,
    base: &str,
    kind: KeyType,
    round: u32,
    racers: u32,
    expected: Option<u32>,
    victim: Option<usize>,
    during: impl FnOnce(&mut Control),
) -> Result<Round, String> {
    for counter in ctl::COUNTERS {
        ctl.word(counter).store(0, Ordering::Release);
    }
    ctl.word(ctl::EXPECTED)
        .store(expected.unwrap_or(0), Ordering::Release);
    ctl.word(ctl::VICTIM)
        .store(victim.map_or(0, |v| v as u32 + 1), Ordering::Release);
    ctl.set(ctl::GO, round);
    during(ctl);
    if !ctl.wait_until(|c| c.get(ctl::LOOKED) >= racers) {
        return Err(format!(
            "round {round}: only {} racers looked",
            ctl.get(ctl::LOOKED)
        ));
    }
    // every racer is attached now (or failed): the System V ids, while the key files exist
    let key = round_key(base, round);
    let recorded = sysv_keys(&key, kind);
    ctl.set(ctl::RELEASE, round);
    if !ctl.wait_until(|c| c.get(ctl::DONE) >= racers) {
        return Err(format!(
            "round {round}: only {} racers detached",
            ctl.get(ctl::DONE)
        ));
    }
    Ok(Round {
        created: ctl.get(ctl::CREATED),
        attached: ctl.get(ctl::ATTACHED),
        errors: ctl.get(ctl::ERRORS),
        saw_all: ctl.get(ctl::SAW_ALL),
        creators: ctl.get(ctl::CREATORS),
        left: leftovers(&key, kind, &recorded),
    })
}

/// Spawn `racers` racers with ids `0..racers` for rounds `first..=last`, and wait until
/// they all attached the control segment.
fn spawn_racers(
    ctl: &mut Control,
    ctl_key: &str,
    base: &str,
    kind: KeyType,
    first: u32,
    last: u32,
) -> Vec<Peer> {
    let before = ctl.get(ctl::READY);
    let peers: Vec<Peer> = (0..RACERS)
        .map(|id| {
            let (id, first, last) = (id.to_string(), first.to_string(), last.to_string());
            Peer::spawn("racer", &[ctl_key, base, kind_name(kind), &id, &first, &last])
        })
        .collect();
    assert!(
        ctl.wait_until(|c| c.get(ctl::READY) >= before + RACERS as u32),
        "the racers did not start"
    );
    peers
}

/// What the racers printed (their complaints), without waiting.
fn complaints(peers: &mut [Peer]) -> Vec<String> {
    peers
        .iter_mut()
        .flat_map(|p| std::iter::from_fn(|| p.try_line(Duration::from_millis(1))))
        .collect()
}

fn eight_at_once(kind: KeyType) -> Result<(), Failed> {
    let rounds = env_count("QSHM_OOC_ROUNDS", 30);
    let ctl_key = unique_key("ooc-ctl");
    let base = unique_key("ooc");
    let mut cleanup = Cleanup::default();
    cleanup.key(&ctl_key, KeyType::PosixRealtime);
    for round in 1..=rounds {
        cleanup.key(&round_key(&base, round), kind);
    }
    let mut ctl = Control::create(&ctl_key)?;
    let mut peers = spawn_racers(&mut ctl, &ctl_key, &base, kind, 1, rounds);
    let (mut no_creator, mut two_creators, mut split, mut errors, mut leaked) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for round in 1..=rounds {
        let r = match run_round(
            &mut ctl,
            &base,
            kind,
            round,
            RACERS as u32,
            Some(0xff),
            None,
            |_| {},
        ) {
            Ok(r) => r,
            Err(why) => {
                // what the racers say about it (they give up looking before the round's bound)
                std::thread::sleep(Duration::from_secs(1));
                return Err(format!("{why}; racers said: {:#?}", complaints(&mut peers)).into());
            }
        };
        no_creator += u32::from(r.created == 0);
        two_creators += u32::from(r.created > 1);
        split += u32::from(r.saw_all < RACERS as u32);
        errors += r.errors;
        leaked += u32::from(!r.left.is_empty());
        if r.created != 1
            || r.attached != RACERS as u32 - 1
            || r.saw_all != RACERS as u32
            || !r.left.is_empty()
        {
            failures.push(format!("round {round} ({:?}): {r:?}", round_mode(round)));
        }
    }
    for p in &mut peers {
        if !p.wait(BOUND).success() {
            failures.push("a racer exited with a failure".to_owned());
        }
    }
    failures.extend(complaints(&mut peers));
    eprintln!(
        "open_or_create races ({kind:?}): {rounds} rounds of {RACERS} processes, both lock modes: \
         {no_creator} without a creator, {two_creators} with two or more, {split} where not all met \
         in one segment, {errors} errors, {leaked} left something behind"
    );
    drop(ctl);
    let left = leftovers(&ctl_key, KeyType::PosixRealtime, &[]);
    check(left.is_empty(), format!("the control segment left {left:?}"))?;
    check(failures.is_empty(), format!("{failures:#?}"))
}

fn racer_killed(kind: KeyType) -> Result<(), Failed> {
    let rounds = env_count("QSHM_OOC_KILLS", 12);
    let mut rng = Rng(seed() ^ 0x6f6f_635f_6b69 | 1);
    eprintln!("racer kills ({kind:?}): seed {}", seed());
    let ctl_key = unique_key("oock-ctl");
    let base = unique_key("oock");
    let mut cleanup = Cleanup::default();
    cleanup.key(&ctl_key, KeyType::PosixRealtime);
    let mut ctl = Control::create(&ctl_key)?;
    let (mut victim_made_it, mut victim_done, mut survivor_made_it) = (0, 0, 0);
    let mut failures = Vec::new();
    for round in 1..=rounds {
        cleanup.key(&round_key(&base, round), kind);
        let mut peers = spawn_racers(&mut ctl, &ctl_key, &base, kind, round, round);
        let victim = rng.below(RACERS as u64) as usize;
        // The victim starts alone, so that it is the creator as a rule; the others start
        // `lead` later and the kill comes `delay` after that: before or while the others
        // look, in the middle of the victim's making of the segment (a call takes about
        // 100-300 us here), or after it.
        let lead = Duration::from_micros(rng.below(150));
        let delay = Duration::from_micros(rng.below(150));
        let r = run_round(
            &mut ctl,
            &base,
            kind,
            round,
            RACERS as u32 - 1,
            None,
            Some(victim),
            |ctl| {
                std::thread::sleep(lead);
                ctl.set(ctl::GO_OTHERS, round);
                std::thread::sleep(delay);
                peers[victim].kill9();
                // the victim's slot no longer counts; everyone else's must meet in one segment
                ctl.set(ctl::EXPECTED, 0xff & !(1 << victim));
            },
        )?;
        // The victim may have returned from its call (and counted it) before it died; a
        // segment it made and nobody else attached died with it (stale: the next creator
        // replaces it). The survivors: one segment for all, made by at most one of them
        // (none: the victim made it and they attached).
        let victim_counted = r.created + r.attached + r.errors == RACERS as u32;
        victim_done += u32::from(victim_counted);
        let survivors_created = (r.creators & !(1 << victim)).count_ones();
        victim_made_it += u32::from(survivors_created == 0);
        survivor_made_it += u32::from(survivors_created == 1);
        if survivors_created > 1 || r.errors != 0 || r.saw_all != RACERS as u32 - 1 || !r.left.is_empty() {
            failures.push(format!(
                "round {round} (victim {victim}, the others {lead:?} later, killed {delay:?} after that, {:?}): {r:?}",
                round_mode(round)
            ));
        }
        for (i, p) in peers.iter_mut().enumerate() {
            if i != victim && !p.wait(BOUND).success() {
                failures.push(format!("round {round}: racer {i} exited with a failure"));
            }
        }
        failures.extend(complaints(&mut peers));
    }
    eprintln!(
        "open_or_create with a racer killed ({kind:?}): {rounds} rounds ({victim_done} victims killed \
         after their call returned, {} during or before it; the survivors' segment made by the \
         victim in {victim_made_it}, by a survivor in {survivor_made_it}), {} failed",
        rounds - victim_done,
        failures.len()
    );
    drop(ctl);
    check(failures.is_empty(), format!("{failures:#?}"))
}

// ------------------------------------------------------------------ one process

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn size_mismatch(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let fx = setup("oocsize", kind, mode, 1000)?;
    let mut other = handle(&fx.key, kind, mode);
    let err = other.open_or_create(4096, AccessMode::ReadWrite).unwrap_err();
    check(err.kind() == SharedMemoryError::InvalidSize, format!("{err:?}"))?;
    let sizes = err.size_mismatch().ok_or("no sizes in the error")?;
    check((sizes.asked, sizes.found) == (4096, 1000), format!("{sizes:?}"))?;
    let text = err.to_string();
    check(
        text.contains("1000") && text.contains("4096") && text.starts_with("open_or_create "),
        text.clone(),
    )?;
    check(!other.is_attached(), "the handle stays detached")?;
    check(
        other.error() == SharedMemoryError::InvalidSize,
        "recorded as the last error",
    )?;
    // the right size attaches; the segment is the creator's, untouched
    check(
        other.open_or_create(1000, AccessMode::ReadWrite)? == Opened::Attached,
        "same size: attached",
    )?;
    check(other.error() == SharedMemoryError::NoError, "success clears it")?;
    drop(other);
    fx.finish().map_err(Into::into)
}

fn stale_replaced(kind: KeyType, mode: LockMode) -> Result<(), Failed> {
    let key = unique_key("oocstale");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut holder = Peer::spawn("hold", &[&key, kind_name(kind), mode_name(mode), "4096", "600"]);
    check(holder.line(BOUND) == "CREATED", "the holder created it")?;
    holder.kill9();
    let mut shm = handle(&key, kind, mode);
    check(
        shm.open_or_create(4096, AccessMode::ReadWrite)? == Opened::Created,
        "a segment whose users all died is replaced",
    )?;
    check(
        shm.lock_read()?[..4] == [0; 4],
        "a fresh segment, not the dead one's bytes",
    )?;
    let recorded = sysv_keys(&key, kind);
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn lock_modes(kind: KeyType) -> Result<(), Failed> {
    let fx = setup("oocmode", kind, LockMode::Fast, 64)?;
    let mut asks_other = handle(&fx.key, kind, LockMode::QtCompatible);
    let err = asks_other.open_or_create(64, AccessMode::ReadWrite).unwrap_err();
    check(err.kind() == SharedMemoryError::LockError, format!("{err:?}"))?;
    check(
        err.to_string().contains("Fast") && err.to_string().contains("QtCompatible"),
        format!("names both modes: {err}"),
    )?;
    let mut adopts = SharedMemory::with_key_type(&fx.key, kind);
    check(
        adopts.open_or_create(64, AccessMode::ReadWrite)? == Opened::Attached,
        "attached",
    )?;
    check(adopts.lock_mode() == LockMode::Fast, "adopted Fast")?;
    adopts.lock()?[0] = 7;
    check(fx.shm.lock_read()?[0] == 7, "one segment, one lock")?;
    drop(adopts);
    fx.finish().map_err(Into::into)
}

fn attached_handle(kind: KeyType) -> Result<(), Failed> {
    let mut fx = setup("oocattached", kind, LockMode::QtCompatible, 64)?;
    let err = fx.shm.open_or_create(64, AccessMode::ReadWrite).unwrap_err();
    check(err.kind() == SharedMemoryError::AlreadyExists, format!("{err:?}"))?;
    check(fx.shm.is_attached(), "still attached to its segment")?;
    fx.finish().map_err(Into::into)
}

fn another_user(kind: KeyType) -> Result<(), Failed> {
    let Some(user) = TempUser::create("open_or_create as another user") else {
        return Ok(());
    };
    for (perms, access, want) in [
        ("644", "ro", "Attached [109, 105, 110, 101]"),
        ("644", "rw", "ERROR PermissionDenied"),
        ("600", "ro", "ERROR PermissionDenied"),
    ] {
        let key = unique_key("oocuser");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut holder = Peer::spawn("hold", &[&key, kind_name(kind), "qt", "4096", perms]);
        check(holder.line(BOUND) == "CREATED", "root created it")?;
        let out = user.run("open-or-create", &[&key, kind_name(kind), "qt", "4096", access]);
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        check(
            said.starts_with(want),
            format!("{perms} {access}: {said:?}, wanted {want:?}"),
        )?;
        if want.starts_with("ERROR") {
            check(said.contains("root"), format!("names the owner: {said}"))?;
        }
        // never taken over: still root's, with root's bytes
        let mut look = SharedMemory::with_key_type(&key, kind);
        look.attach(AccessMode::ReadOnly)?;
        check(look.info()?.owner_uid == 0, "still root's")?;
        check(&look.lock_read()?[..4] == b"mine", "root's bytes")?;
        drop(look);
        let recorded = sysv_keys(&key, kind);
        holder.finish();
        let left = leftovers(&key, kind, &recorded);
        check(left.is_empty(), format!("left behind: {left:?}"))?;
    }
    Ok(())
}

/// A key file of another user with no segment: `create` cannot make the segment (the
/// file is theirs) and there is nothing to attach: `AlreadyExists` naming them, at once.
fn another_users_key_file() -> Result<(), Failed> {
    let Some(user) = TempUser::create("another user's key file") else {
        return Ok(());
    };
    let key = unique_key("oockeyfile");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let native = native(&key, KeyType::SystemV);
    let path = native.native().to_owned();
    std::fs::write(&path, b"")?;
    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
    let mut shm = handle(&key, KeyType::SystemV, LockMode::QtCompatible);
    let err = shm.open_or_create(64, AccessMode::ReadWrite).unwrap_err();
    let _ = std::fs::remove_file(&path);
    check(err.kind() == SharedMemoryError::AlreadyExists, format!("{err:?}"))?;
    check(
        err.to_string().contains(&user.name),
        format!("names the owner: {err}"),
    )
}

fn qt_made(py: &std::path::Path, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("oocqt");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = qt_peer(
        &py.to_path_buf(),
        "create",
        &key,
        kind,
        &["--size", "1000", "--text", "qt!"],
    );
    let ready = qt.expect("READY", BOUND);
    check(ready.starts_with("size=1000"), format!("Qt's size(): {ready}"))?;
    let recorded = sysv_keys(&key, kind);
    let mut shm = SharedMemory::with_key_type(&key, kind);
    check(
        shm.open_or_create(1000, AccessMode::ReadWrite)? == Opened::Attached,
        "attached to Qt's segment",
    )?;
    check(shm.size() == 1000, "exactly Qt's size, not a page")?;
    check(&shm.lock_read()?[..3] == b"qt!", "Qt's bytes, under Qt's lock")?;
    let err = SharedMemory::with_key_type(&key, kind)
        .open_or_create(4096, AccessMode::ReadWrite)
        .unwrap_err();
    check(
        err.size_mismatch()
            .is_some_and(|s| (s.asked, s.found) == (4096, 1000)),
        format!("{err:?}"),
    )?;
    // Qt detaches first: Qt never removes a POSIX segment, qshm's last detach does
    qt.send("detach");
    qt.expect("DETACHED", BOUND);
    check(qt.wait(BOUND).success(), "the Qt creator exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}
