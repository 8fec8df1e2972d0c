//! `qshm-bench`: qshm, its peers and the hardware floors measured side by side in one run.
//!
//! `qshm-bench measure [--quick]` prints one tab-separated row per figure (see
//! `stats.rs`): `metric  implementation  x  median  min  max  unit`, the median and
//! spread of several runs. `bench/compare.sh` adds the Python and Qt peers and turns the
//! rows into tables, charts and the target list (`bench/py/report.py`). Child processes
//! are this binary re-executed with `child ...` arguments.
//!
//! Only qshm's public API is used, so the benchmark outlives rewrites of its internals.

mod fence;
mod frames;
#[cfg(feature = "iceoryx2")]
mod iceoryx;
mod locks;
mod notify;
mod open_or_create;
mod queue;
mod racers;
mod removal;
mod stats;

use std::ffi::CString;
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qshm::admin::SharedMemoryExt as _;
use qshm::{AccessMode, SharedMemory};

use locks::{CYCLE_FLAVOURS, FAST, Flavour, Instance, Lock, Mapping, QT_POSIX, QT_SYSV, SUBJECTS, Subject};
use stats::{BUCKETS, note, now_ns, percentile, row};

struct Plan {
    /// Repetitions of each figure (the median and spread are over these).
    runs: usize,
    lock_pairs: u64,
    /// membarrier calls per run (`fence.rs`)
    fence_calls: usize,
    cycles: usize,
    /// Idle processes started for the crowded-machine cycle, and cycles per run there.
    idle_procs: usize,
    idle_cycles: usize,
    /// Segment sizes: 4 KiB * 4^i for i in 0..=size_steps.
    size_steps: u32,
    handoff_runs: usize,
    handoff_rounds: u64,
    contended_procs: &'static [usize],
    contended_runs: usize,
    contended_window: Duration,
    /// Work between two lock holds in the contended runs (calibrated to this many ns).
    think_ns: f64,
    copy_bytes: usize,
    /// Processes racing on one key (create-or-attach, lock, detach), and each run's length.
    racer_procs: &'static [usize],
    racer_window: Duration,
    /// Frame channels: readers, and each run's length.
    frame_readers: &'static [usize],
    frame_window: Duration,
    /// Message queues: messages per throughput run, round trips per latency run.
    queue_messages: u64,
    queue_pingpongs: u64,
}

const FULL: Plan = Plan {
    runs: 7,
    lock_pairs: 2_000_000,
    fence_calls: 5_000,
    cycles: 400,
    idle_procs: 1000,
    idle_cycles: 40,
    size_steps: 9, // up to 1 GiB
    handoff_runs: 5,
    handoff_rounds: 20_000,
    contended_procs: &[1, 2, 3, 4, 6, 8, 12, 16],
    contended_runs: 7,
    contended_window: Duration::from_millis(400),
    think_ns: 300.0,
    copy_bytes: 256 << 20,
    racer_procs: &[1, 2, 4],
    racer_window: Duration::from_millis(500),
    frame_readers: &[1, 2, 4],
    frame_window: Duration::from_millis(1000),
    queue_messages: 1_000_000,
    queue_pingpongs: 20_000,
};

const QUICK: Plan = Plan {
    runs: 3,
    lock_pairs: 200_000,
    fence_calls: 1_000,
    cycles: 40,
    idle_procs: 1000,
    idle_cycles: 5,
    size_steps: 6, // up to 16 MiB
    handoff_runs: 3,
    handoff_rounds: 2_000,
    contended_procs: &[1, 2, 4, 8],
    contended_runs: 3,
    contended_window: Duration::from_millis(60),
    think_ns: 300.0,
    copy_bytes: 32 << 20,
    racer_procs: &[1, 2, 4],
    racer_window: Duration::from_millis(150),
    frame_readers: &[1, 2, 4],
    frame_window: Duration::from_millis(300),
    queue_messages: 100_000,
    queue_pingpongs: 2_000,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child") => child(&args[2..]),
        Some("measure") => {
            let plan = if args.iter().any(|a| a == "--quick") {
                &QUICK
            } else {
                &FULL
            };
            match args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
            {
                Some(only) if only == "locks" => {
                    note_machine();
                    lock_pairs(plan);
                    fence::measure(plan.runs, plan.fence_calls);
                }
                Some(only) if only == "notify" => {
                    note_machine();
                    notify(plan);
                }
                Some(only) if only == "racers" => {
                    note_machine();
                    racers::measure(plan.runs, plan.racer_window, plan.racer_procs);
                }
                Some(only) if only == "open_or_create" => {
                    note_machine();
                    open_or_create::measure(plan.runs, plan.cycles);
                }
                Some(only) if only == "frames" => {
                    note_machine();
                    frames::measure(plan.runs, plan.frame_window, plan.frame_readers);
                }
                Some(only) if only == "removal" => {
                    note_machine();
                    removal(plan);
                }
                Some(only) if only == "queue" => {
                    note_machine();
                    queue::measure(plan.runs, plan.queue_messages, plan.queue_pingpongs);
                }
                Some(other) => {
                    eprintln!(
                        "qshm-bench: --only {other}: `locks`, `notify`, `racers`, `open_or_create`, `frames`, `queue` and `removal` are known"
                    )
                }
                None => measure(plan),
            }
        }
        _ => eprintln!(
            "usage: qshm-bench measure [--quick] [--only locks|notify|racers|open_or_create|frames|queue|removal]"
        ),
    }
}

/// A fresh legacy key (also used for /dev/shm names of the bench's own files).
pub fn key(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "qshm-bench-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn note_machine() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    note(&format!(
        "{} processes on the machine at the start; load average (1, 5, 15 min): {}",
        process_count(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
}

fn measure(plan: &Plan) {
    note_machine();
    lock_pairs(plan);
    fence::measure(plan.runs, plan.fence_calls);
    cycles(plan);
    crowded_cycles(plan);
    racers::measure(plan.runs, plan.racer_window, plan.racer_procs);
    open_or_create::measure(plan.runs, plan.cycles);
    size_curve(plan);
    pingpong(plan);
    notify(plan);
    removal(plan);
    contended_curve(plan);
    bandwidth(plan);
    frames::measure(plan.runs, plan.frame_window, plan.frame_readers);
    queue::measure(plan.runs, plan.queue_messages, plan.queue_pingpongs);
}

/// Change notification against eventfd and pipe wake-ups (see `notify.rs`).
fn notify(plan: &Plan) {
    notify::measure(plan.handoff_runs, plan.handoff_rounds);
}

/// `is_removed()` against one system call (see `removal.rs`); a system call each costs
/// about a hundred lock pairs.
fn removal(plan: &Plan) {
    removal::measure(plan.runs, plan.lock_pairs / 100);
}

/// One figure's measurer: each call makes one run and returns its value.
type Runner<'a> = (String, Box<dyn FnMut() -> f64 + 'a>);

/// Make `runs` runs of every measurer in turn (the first run of each, then the second
/// of each, ...), so that load from other programs on a shared machine falls on all of
/// them alike, and print their rows.
fn interleaved(metric: &str, x: Option<f64>, runs: usize, unit: &str, runners: Vec<Runner>) {
    for (name, samples) in interleaved_samples(runs, runners) {
        row(metric, &name, x, &samples, unit);
    }
}

/// The runs of `interleaved`, by measurer name.
fn interleaved_samples(runs: usize, mut runners: Vec<Runner>) -> Vec<(String, Vec<f64>)> {
    let mut samples = vec![Vec::with_capacity(runs); runners.len()];
    for _ in 0..runs {
        for (i, (_, run)) in runners.iter_mut().enumerate() {
            samples[i].push(run());
        }
    }
    runners.into_iter().map(|(name, _)| name).zip(samples).collect()
}

/// Time `body(n)`, in nanoseconds per iteration.
fn ns_per_op(n: u64, body: impl FnOnce(u64)) -> f64 {
    let t = Instant::now();
    body(n);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Time `n` calls of `body`, in microseconds per call.
fn us_per_call(n: usize, mut body: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        body();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

// ------------------------------------------------------------------ uncontended lock

/// The floor of a lock whose waiters sleep (see `lock_pairs`).
const TWO_CAS: &str = "floor: CAS acquire + CAS release on a MAP_SHARED word (a lock whose waiters sleep)";

/// A POSIX named semaphore opened with sem_open, closed when dropped.
struct PosixSem(*mut libc::sem_t);

impl Drop for PosixSem {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sem_open and is closed once, here.
        unsafe { libc::sem_close(self.0) };
    }
}

/// Uncontended lock+unlock of every lock, and of the bare semaphores
/// `LockMode::QtCompatible` takes (opened directly from Rust): the floor of that mode.
fn lock_pairs(plan: &Plan) {
    let mut runners: Vec<Runner> = Vec::new();
    for subject in SUBJECTS {
        let inst = subject.create();
        with_lock!(&inst, l => l.locked(|_| ())); // open the lock state
        // System V semaphores cost a system call each way: fewer iterations
        let n = if subject.slow() {
            plan.lock_pairs / 10
        } else {
            plan.lock_pairs
        };
        let name = match subject {
            Subject::Spin => "floor: CAS acquire + release store on a MAP_SHARED word",
            s => s.name(),
        };
        runners.push((
            name.into(),
            Box::new(move || {
                with_lock!(&inst, l => ns_per_op(n, |n| {
                    for _ in 0..n {
                        l.locked(black_box);
                    }
                }))
            }),
        ));
    }

    // A lock whose waiters sleep must see, as it gives the lock back, whether anyone
    // sleeps: its release is a read-modify-write too (the spin floor's is a plain store,
    // as its waiters never sleep). Two compare-and-swaps are that lock's floor.
    let word = Mapping::create(&key("cas2"), 4096);
    let n = plan.lock_pairs;
    runners.push((
        TWO_CAS.into(),
        Box::new(move || {
            let w = word.u32_at(0);
            ns_per_op(n, |n| {
                for _ in 0..n {
                    let took = w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed);
                    let gave = black_box(w).compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed);
                    assert!(took.is_ok() && gave.is_ok());
                }
            })
        }),
    ));

    let mut shm = locks::handle(&key("sem"), QT_POSIX);
    shm.create(4096, AccessMode::ReadWrite).expect("create");
    drop(shm.lock().expect("lock")); // the semaphore exists and is free
    let name = CString::new(shm.semaphore_key().native()).expect("name");
    // SAFETY: name is NUL-terminated; opening an existing semaphore takes no more arguments.
    let sem = PosixSem(unsafe { libc::sem_open(name.as_ptr(), 0) });
    assert_ne!(
        sem.0,
        libc::SEM_FAILED,
        "sem_open: {}",
        std::io::Error::last_os_error()
    );
    let n = plan.lock_pairs;
    runners.push((
        "bare sem_wait + sem_post (qshm's POSIX Qt semaphore)".into(),
        Box::new(move || {
            let _segment = &shm; // keeps the semaphore's owner alive
            ns_per_op(n, |n| {
                for _ in 0..n {
                    // SAFETY: sem is open as long as this closure (it owns it).
                    unsafe {
                        assert_eq!(libc::sem_wait(sem.0), 0);
                        assert_eq!(libc::sem_post(sem.0), 0);
                    }
                }
            })
        }),
    ));

    let mut shm = locks::handle(&key("sem"), QT_SYSV);
    shm.create(4096, AccessMode::ReadWrite).expect("create");
    drop(shm.lock().expect("lock"));
    let sysv_key = SharedMemory::system_v_key(&shm.semaphore_key()).expect("System V semaphore key");
    // SAFETY: semget takes plain values.
    let id = unsafe { libc::semget(sysv_key, 1, 0) };
    assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
    let op = move |delta: i16| {
        let mut op = libc::sembuf {
            sem_num: 0,
            sem_op: delta,
            sem_flg: libc::SEM_UNDO as i16,
        };
        // SAFETY: one valid sembuf for an existing semaphore set of one.
        assert_eq!(unsafe { libc::semop(id, &mut op, 1) }, 0, "semop");
    };
    let n = plan.lock_pairs / 10;
    runners.push((
        "bare semop -1 / +1 with SEM_UNDO (qshm's System V Qt semaphore)".into(),
        Box::new(move || {
            let _segment = &shm; // keeps the semaphore's owner alive
            ns_per_op(n, |n| {
                for _ in 0..n {
                    op(-1);
                    op(1);
                }
            })
        }),
    ));
    interleaved("lock_unlock_ns", None, plan.runs, "ns", runners);
}

// ------------------------------------------------------------------ segment cycles

/// Create, optionally attach a second handle and detach it, optionally touch every
/// page, then detach the creator (destroying the segment).
fn qshm_cycle(f: Flavour, size: usize, attach: bool, first_touch: bool) {
    let k = key("cycle");
    let mut a = locks::handle(&k, f);
    a.create(size, AccessMode::ReadWrite).expect("create");
    if attach {
        let mut b = locks::handle(&k, f);
        b.attach(AccessMode::ReadWrite).expect("attach");
        b.detach().expect("detach");
    }
    if first_touch {
        // SAFETY: a's segment is attached read-write, size bytes long, and used only here.
        unsafe { locks::touch(a.as_mut_ptr(), size) };
    }
    a.detach().expect("detach, destroy");
}

fn shared_memory_cycle(size: usize, attach: bool, first_touch: bool) {
    let a = locks::shared_memory_create(size);
    if attach {
        let b = shared_memory::ShmemConf::new()
            .os_id(a.get_os_id())
            .open()
            .expect("open");
        drop(b);
    }
    if first_touch {
        // SAFETY: a fresh writable segment of size bytes, used only here.
        unsafe { locks::touch(a.as_ptr(), size) };
    }
    drop(a); // owner: unlinks
}

const RAW_POSIX: &str = "floor: raw shm_open + mmap (POSIX)";
const RAW_SYSV: &str = "floor: raw shmget + shmat (System V)";

fn raw_posix(size: usize, attach: bool, first_touch: bool) {
    let name = CString::new(format!("/{}", key("raw"))).expect("name");
    locks::raw_posix_cycle(&name, size, attach, first_touch);
}

/// The segment cycles compared: qshm's four flavours, the shared_memory crate and the
/// two raw floors. `attach`: a second handle attaches and detaches; `first_touch`: one
/// byte is written to every page.
fn cycle_runners(size: usize, n: usize, attach: bool, first_touch: bool) -> Vec<Runner<'static>> {
    let mut runners: Vec<Runner> = CYCLE_FLAVOURS
        .iter()
        .map(|&f| -> Runner {
            (
                f.name.into(),
                Box::new(move || us_per_call(n, || qshm_cycle(f, size, attach, first_touch))),
            )
        })
        .collect();
    runners.push((
        "shared_memory crate".into(),
        Box::new(move || us_per_call(n, || shared_memory_cycle(size, attach, first_touch))),
    ));
    runners.push((
        RAW_POSIX.into(),
        Box::new(move || us_per_call(n, || raw_posix(size, attach, first_touch))),
    ));
    runners.push((
        RAW_SYSV.into(),
        Box::new(move || us_per_call(n, || locks::raw_sysv_cycle(size, attach, first_touch))),
    ));
    runners
}

/// create + attach + detach + destroy of a 4 KiB segment.
fn cycles(plan: &Plan) {
    note(&format!(
        "{} processes on the machine before the 4 KiB cycles",
        process_count()
    ));
    interleaved(
        "cycle_4KiB_us",
        None,
        plan.runs,
        "us",
        cycle_runners(4096, plan.cycles, true, false),
    );
}

/// Idle processes (`sleep 600`) in one process group, all killed when dropped, also on
/// a panic; each also dies with this process (PR_SET_PDEATHSIG).
struct Crowd {
    leader: i32,
    children: Vec<Child>,
}

impl Crowd {
    fn spawn(n: usize) -> Crowd {
        use std::os::unix::process::CommandExt;
        let mut crowd = Crowd {
            leader: 0,
            children: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let mut cmd = Command::new("sleep");
            cmd.arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(crowd.leader);
            // SAFETY: runs in the forked child before exec and only calls prctl, which is
            // async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn sleep");
            if crowd.leader == 0 {
                crowd.leader = child.id() as i32;
            }
            crowd.children.push(child);
        }
        crowd
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if self.leader > 0 {
            // SAFETY: plain values; the group is the one this process made.
            unsafe { libc::killpg(self.leader, libc::SIGKILL) };
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The POSIX cycles again, right before and while `idle_procs` idle processes run.
fn crowded_cycles(plan: &Plan) {
    let metric = "crowded_cycle_4KiB_us";
    let (n, runs) = (plan.idle_cycles, plan.runs);
    let runners = || -> Vec<Runner> {
        [CYCLE_FLAVOURS[1], CYCLE_FLAVOURS[0]]
            .into_iter()
            .map(|f| -> Runner {
                (
                    f.name.into(),
                    Box::new(move || us_per_call(n, || qshm_cycle(f, 4096, true, false))),
                )
            })
            .collect()
    };
    let before = interleaved_samples(runs, runners());
    let crowd = Crowd::spawn(plan.idle_procs);
    std::thread::sleep(Duration::from_millis(300)); // let them all reach their sleep
    let during = interleaved_samples(runs, runners());
    let procs = process_count();
    drop(crowd);
    note(&format!(
        "{procs} processes on the machine during the crowded cycles"
    ));
    for ((name, b), (_, d)) in before.iter().zip(&during) {
        row(metric, name, None, b, "us");
        row(
            metric,
            &format!("{name}, +{} idle processes", plan.idle_procs),
            None,
            d,
            "us",
        );
    }
}

/// create + first touch of every page + destroy, against segment size.
fn size_curve(plan: &Plan) {
    let metric = "size_cycle_us";
    note(&format!(
        "{} processes on the machine before the size curve",
        process_count()
    ));
    for step in 0..=plan.size_steps {
        let size = 4096usize << (2 * step);
        // a run lasts at least a few milliseconds; fewer runs for the largest sizes
        let n = ((16usize << 20) / size).clamp(1, 32);
        let runs = match size {
            s if s >= 1 << 30 => 3,
            s if s >= 256 << 20 => 5,
            _ => plan.runs,
        };
        let runners = cycle_runners(size, n, false, true);
        interleaved(metric, Some(size as f64), runs, "us", runners);
    }
}

// ------------------------------------------------------------------ CPU placement

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set for sched_getaffinity to fill in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    // SAFETY: CPU_ISSET reads the set, for indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Run this process on the `slot`-th allowed CPU (round robin). Contending processes are
/// spread over the cores this way: left to itself the scheduler may stack them on one
/// core when another program keeps the other one busy, and then the lock only changes
/// hands when a time slice ends.
fn pin(cpus: &[usize], slot: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the index comes from sched_getaffinity, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpus[slot % cpus.len()], &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

/// Allow this process every CPU in `cpus` again.
fn unpin(cpus: &[usize]) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: indices from sched_getaffinity are below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

// ------------------------------------------------------------------ two-process ping-pong

/// Both sides: take the lock, and when `turn` (u64 at 0) says it is our move, make it;
/// otherwise unlock and yield (the locks are not fair: without the yield a side can
/// re-take the lock until the scheduler preempts it). Returns the times we moved.
fn play<L: Lock>(l: &L, me: u64, rounds: u64) -> Vec<Instant> {
    let mut moves = Vec::with_capacity(rounds as usize);
    loop {
        let (done, moved) = l.locked(|d| {
            let cell = d as *mut u64;
            // SAFETY: the lock's data area, at least 64 bytes; we hold the lock.
            let turn = unsafe { cell.read_volatile() };
            if turn >= 2 * rounds {
                return (true, false);
            }
            if turn % 2 == me {
                // SAFETY: as above.
                unsafe { cell.write_volatile(turn + 1) };
                return (false, true);
            }
            (false, false)
        });
        if done {
            return moves;
        }
        if moved {
            moves.push(Instant::now());
        } else {
            std::thread::yield_now();
        }
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .arg("child")
        .args(args)
        .spawn()
        .expect("spawn child")
}

/// Wait for children, killing them all if one fails or they take longer than `limit`.
fn wait_all(children: Vec<Child>, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut failure = None;
    while failure.is_none() && children.iter().any(Option::is_some) {
        for slot in children.iter_mut() {
            if let Some(c) = slot {
                match c.try_wait().expect("wait") {
                    Some(status) if status.success() => *slot = None,
                    Some(status) => failure = Some(format!("a child failed: {status}")),
                    None => {}
                }
            }
        }
        if Instant::now() > deadline {
            failure = Some(format!("children still running after {limit:?} (hung lock?)"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(why) = failure {
        for c in children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        panic!("{why}");
    }
}

/// One-way handoff times (µs) of two processes taking turns under the lock, from the
/// parent's move times (a round trip is two handoffs): per run the median and p99.
/// Parent and child run on two different CPUs.
fn pingpong(plan: &Plan) {
    let cpus = allowed_cpus();
    pin(&cpus, 0);
    for subject in SUBJECTS {
        let rounds = if subject.slow() {
            plan.handoff_rounds / 4
        } else {
            plan.handoff_rounds
        };
        let (mut medians, mut p99s) = (vec![], vec![]);
        for _ in 0..plan.handoff_runs {
            let inst = subject.create();
            let mut args = vec!["pingpong".to_string(), rounds.to_string(), "1".to_string()];
            args.extend(inst.spec());
            let child = spawn(&args);
            let moves = with_lock!(&inst, l => play(l, 0, rounds));
            wait_all(vec![child], Duration::from_secs(120));
            let mut samples: Vec<f64> = moves
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1e6 / 2.0)
                .collect();
            samples.sort_by(f64::total_cmp);
            medians.push(percentile(&samples, 0.5));
            p99s.push(percentile(&samples, 0.99));
        }
        row("handoff_median_us", subject.name(), None, &medians, "us");
        row("handoff_p99_us", subject.name(), None, &p99s, "us");
    }
    unpin(&cpus);
}

// ------------------------------------------------------------------ contended curve

/// The control file of a contended run: start flag at 0, ready count at 4, stop flag
/// at 8, operations done at 16, the handoff histogram at 4096.
const CTL_LEN: usize = 4096 + 8 * BUCKETS;
const CTL_HIST: usize = 4096;

/// Work done between two lock holds, outside the lock: without it a process re-takes
/// the lock it just released before any waiter can, and the lock changes hands only
/// when the scheduler preempts its holder.
#[inline(never)]
fn think(rounds: u32) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

/// Rounds of `think` that take about `ns` nanoseconds on this machine: the best of many
/// short timings, as other programs may take the CPU during some of them.
fn think_rounds(ns: f64) -> u32 {
    let n = 100_000;
    let per_round = (0..30)
        .map(|_| {
            let t = Instant::now();
            black_box(think(n));
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min);
    (ns / per_round).round().max(1.0) as u32
}

/// `procs` processes lock, increment a counter, unlock and do `think` rounds of other
/// work, for `window`. With `latency` each records, when it takes the lock from another
/// process, the time since that process's last instruction before unlocking. Returns
/// Mops/s and, with `latency`, the handoff median and p99 in µs and the number of
/// handoffs seen.
fn contended_run(
    subject: Subject,
    procs: usize,
    window: Duration,
    think: u32,
    latency: bool,
) -> (f64, Option<(f64, f64, u64)>) {
    let inst = subject.create();
    let ctl = Mapping::create(&key("ctl"), CTL_LEN);
    let children: Vec<Child> = (0..procs)
        .map(|i| {
            let mut args = vec![
                "contend".to_string(),
                ctl.name().to_string(),
                (latency as u8).to_string(),
                (i + 1).to_string(),
                think.to_string(),
                // a single process goes wherever the scheduler finds a free core
                (if procs > 1 { "pin" } else { "free" }).to_string(),
            ];
            args.extend(inst.spec());
            spawn(&args)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.u32_at(4).load(Ordering::Acquire) < procs as u32 {
        assert!(Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    ctl.u32_at(0).store(1, Ordering::Release);
    std::thread::sleep(window);
    ctl.u32_at(8).store(1, Ordering::Release);
    let secs = t.elapsed().as_secs_f64();
    wait_all(children, Duration::from_secs(120));
    // SAFETY: the counter is the first u64 of the lock's data; we hold the lock.
    let total = with_lock!(&inst, l => l.locked(|d| unsafe { (d as *const u64).read_volatile() }));
    let done = ctl.u64s_at(16, 1)[0].load(Ordering::Acquire);
    assert_eq!(total, done, "lost increments");
    let hist: Vec<u64> = ctl
        .u64s_at(CTL_HIST, BUCKETS)
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let handoff = match (
        stats::hist_percentile(&hist, 0.5),
        stats::hist_percentile(&hist, 0.99),
    ) {
        (Some(p50), Some(p99)) if latency => Some((p50 / 1e3, p99 / 1e3, hist.iter().sum())),
        _ => None,
    };
    (total as f64 / secs / 1e6, handoff)
}

fn contended_curve(plan: &Plan) {
    let think = think_rounds(plan.think_ns);
    let check = (0..30)
        .map(|_| {
            let t = Instant::now();
            black_box(self::think(think * 100));
            t.elapsed().as_nanos() as f64 / 100.0
        })
        .fold(f64::INFINITY, f64::min);
    note(&format!(
        "contended runs: {check:.0} ns of other work outside the lock between two holds ({think} rounds)"
    ));
    // Runs of the different locks alternate, so that load from other programs on a
    // shared machine falls on all of them alike.
    let n = SUBJECTS.len();
    for &procs in plan.contended_procs {
        let x = Some(procs as f64);
        let mut rates = vec![vec![]; n];
        let (mut p50s, mut p99s, mut fewest) = (vec![vec![]; n], vec![vec![]; n], vec![u64::MAX; n]);
        for _ in 0..plan.contended_runs {
            for (i, &subject) in SUBJECTS.iter().enumerate() {
                rates[i].push(contended_run(subject, procs, plan.contended_window, think, false).0);
            }
        }
        for _ in 0..if procs < 2 { 0 } else { plan.contended_runs } {
            for (i, &subject) in SUBJECTS.iter().enumerate() {
                if let (_, Some((p50, p99, seen))) =
                    contended_run(subject, procs, plan.contended_window, think, true)
                {
                    p50s[i].push(p50);
                    p99s[i].push(p99);
                    fewest[i] = fewest[i].min(seen);
                }
            }
        }
        for (i, subject) in SUBJECTS.iter().enumerate() {
            row("contended_Mops", subject.name(), x, &rates[i], "Mops/s");
            if fewest[i] < 1000 {
                note(&format!(
                    "{}, {procs} processes: only {} handoffs in a latency run (p99 is rough)",
                    subject.name(),
                    fewest[i]
                ));
            }
            if !p99s[i].is_empty() {
                row("contended_handoff_p50_us", subject.name(), x, &p50s[i], "us");
                row("contended_handoff_p99_us", subject.name(), x, &p99s[i], "us");
            }
        }
    }
}

/// One contending child: count in, wait for the start flag, then lock/increment/unlock
/// and think until the stop flag.
fn contend<L: Lock>(l: &L, ctl: &Mapping, latency: bool, me: u64, rounds: u32) {
    let stop = ctl.u32_at(8);
    let mut ops = 0u64;
    let mut hist = vec![0u64; BUCKETS];
    ctl.u32_at(4).fetch_add(1, Ordering::AcqRel);
    while ctl.u32_at(0).load(Ordering::Acquire) == 0 {
        std::thread::yield_now(); // more processes than cores: let the parent run
    }
    if latency {
        while stop.load(Ordering::Relaxed) == 0 {
            let sample = l.locked(|d| {
                let cell = d as *mut u64;
                // SAFETY: data words 0 (counter), 1 (last holder), 2 (its release time)
                // are inside the lock's data area, and we hold the lock.
                unsafe {
                    cell.write_volatile(cell.read_volatile() + 1);
                    let last = cell.add(1).read_volatile();
                    let sample = (last != 0 && last != me)
                        .then(|| now_ns().saturating_sub(cell.add(2).read_volatile()));
                    cell.add(1).write_volatile(me);
                    cell.add(2).write_volatile(now_ns());
                    sample
                }
            });
            if let Some(ns) = sample {
                hist[stats::bucket(ns)] += 1;
            }
            ops += 1;
            black_box(think(rounds));
        }
        stats::merge(ctl.u64s_at(CTL_HIST, BUCKETS), &hist);
    } else {
        while stop.load(Ordering::Relaxed) == 0 {
            l.locked(|d| {
                let cell = d as *mut u64;
                // SAFETY: the counter is inside the lock's data area; we hold the lock.
                unsafe { cell.write_volatile(cell.read_volatile() + 1) };
            });
            ops += 1;
            black_box(think(rounds));
        }
    }
    ctl.u64s_at(16, 1)[0].fetch_add(ops, Ordering::AcqRel);
}

// ------------------------------------------------------------------ bandwidth

fn bandwidth(plan: &Plan) {
    let n = plan.copy_bytes;
    let source: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut private = vec![0u8; n];
    let k = key("copy");
    let mut shm = locks::handle(&k, FAST);
    shm.create(n, AccessMode::ReadWrite).expect("create");
    let gbps = |dst: &mut [u8]| {
        dst.copy_from_slice(&source); // fault the pages in first
        (0..plan.runs)
            .map(|_| {
                let t = Instant::now();
                dst.copy_from_slice(black_box(&source));
                black_box(&dst);
                n as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect::<Vec<f64>>()
    };
    let private_rate = gbps(&mut private);
    let shared_rate = {
        let mut guard = shm.lock().expect("lock");
        gbps(&mut guard[..n])
    };
    let label = format!("copy_{}MiB_GBps", n >> 20);
    row(&label, "qshm segment", None, &shared_rate, "GB/s");
    row(&label, "memcpy to private memory", None, &private_rate, "GB/s");
}

// ------------------------------------------------------------------ child roles

fn child(args: &[String]) {
    match args[0].as_str() {
        "pingpong" => {
            let rounds: u64 = args[1].parse().expect("rounds");
            pin(&allowed_cpus(), args[2].parse().expect("cpu slot"));
            let inst = Instance::open(&args[3..]);
            with_lock!(&inst, l => play(l, 1, rounds));
        }
        "notify" => notify::child(&args[1..]),
        "race" => racers::child(&args[1..]),
        "ooc-hold" => open_or_create::child(&args[1..]),
        "frames" => frames::child(&args[1..]),
        "queue" => queue::child(&args[1..]),
        "contend" => {
            let ctl = Mapping::open(&args[1]);
            let latency = args[2] == "1";
            let me: u64 = args[3].parse().expect("id");
            let rounds: u32 = args[4].parse().expect("think rounds");
            if args[5] == "pin" {
                pin(&allowed_cpus(), me as usize - 1);
            }
            let inst = Instance::open(&args[6..]);
            with_lock!(&inst, l => contend(l, &ctl, latency, me, rounds));
        }
        other => panic!("unknown child role {other}"),
    }
}
