//! `qshm-bench`: qshm and its peers measured side by side in one run.
//!
//! `qshm-bench measure [--quick]` prints one tab-separated row per figure:
//! `metric  implementation  value  unit`. Every value is the median of several runs.
//! `bench/compare.sh` adds the Python and Qt peers and turns the rows into a table of
//! ratios (`bench/py/report.py`). Child processes are this binary re-executed with
//! `child ...` arguments.

use std::hint::black_box;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qshm::{AccessMode, KeyType, LockMode, SharedMemory};
use raw_sync::locks::{LockInit, Mutex};
use shared_memory::{Shmem, ShmemConf};

struct Plan {
    runs: usize,
    lock_pairs: u64,
    cycles_small: usize,
    cycles_large: usize,
    handoffs: u64,
    increments: u64,
    copy_bytes: usize,
}

const FULL: Plan = Plan {
    runs: 7,
    lock_pairs: 2_000_000,
    cycles_small: 400,
    cycles_large: 40,
    handoffs: 20_000,
    increments: 200_000,
    copy_bytes: 256 << 20,
};

const QUICK: Plan = Plan {
    runs: 3,
    lock_pairs: 200_000,
    cycles_small: 40,
    cycles_large: 5,
    handoffs: 2_000,
    increments: 20_000,
    copy_bytes: 32 << 20,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child") => child(&args[2..]),
        Some("measure") => measure(if args.iter().any(|a| a == "--quick") {
            &QUICK
        } else {
            &FULL
        }),
        Some("contended") => {
            for _ in 0..args.get(2).map_or(1, |n| n.parse().unwrap()) {
                contended(&FULL, 4)
            }
        }
        _ => eprintln!("usage: qshm-bench measure [--quick]"),
    }
}

fn row(metric: &str, implementation: &str, value: f64, unit: &str) {
    println!("{metric}\t{implementation}\t{value:.4}\t{unit}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn key(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "qshm-bench-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A qshm flavour under test.
#[derive(Clone, Copy)]
struct Flavour {
    name: &'static str,
    kind: KeyType,
    mode: LockMode,
}

const FAST: Flavour = Flavour {
    name: "qshm fast",
    kind: KeyType::PosixRealtime,
    mode: LockMode::Fast,
};
const QT_SYSV: Flavour = Flavour {
    name: "qshm Qt-compatible (System V)",
    kind: KeyType::SystemV,
    mode: LockMode::QtCompatible,
};
const QT_POSIX: Flavour = Flavour {
    name: "qshm Qt-compatible (POSIX)",
    kind: KeyType::PosixRealtime,
    mode: LockMode::QtCompatible,
};

fn handle(key: &str, f: Flavour) -> SharedMemory {
    SharedMemory::with_key_type(key, f.kind).with_lock_mode(f.mode)
}

fn kind_arg(k: KeyType) -> &'static str {
    k.as_str()
}

fn mode_arg(m: LockMode) -> &'static str {
    if m == LockMode::Fast { "fast" } else { "qt" }
}

fn flavour_from(kind: &str, mode: &str) -> Flavour {
    Flavour {
        name: "child",
        kind: kind.parse().expect("kind"),
        mode: if mode == "fast" {
            LockMode::Fast
        } else {
            LockMode::QtCompatible
        },
    }
}

fn measure(plan: &Plan) {
    lock_pairs(plan);
    cycles(plan, 4096, plan.cycles_small, "cycle_4KiB_us");
    cycles(plan, 64 << 20, plan.cycles_large, "cycle_64MiB_us");
    handoff(plan);
    contended(plan, 2);
    contended(plan, 4);
    bandwidth(plan);
}

// ------------------------------------------------------------------ uncontended lock

fn lock_pairs(plan: &Plan) {
    for f in [FAST, QT_POSIX, QT_SYSV] {
        let k = key("lock");
        let mut shm = handle(&k, f);
        shm.create(4096, AccessMode::ReadWrite).expect("create");
        drop(shm.lock().expect("lock")); // open the lock state
        // System V semaphores cost a system call each way: fewer iterations
        let n = if f.kind == KeyType::SystemV {
            plan.lock_pairs / 10
        } else {
            plan.lock_pairs
        };
        let ns = median(
            (0..plan.runs)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..n {
                        let guard = shm.lock().expect("lock");
                        black_box(&guard);
                    }
                    t.elapsed().as_nanos() as f64 / n as f64
                })
                .collect(),
        );
        row("lock_unlock_ns", f.name, ns, "ns");
    }
    // peer: raw_sync's process-shared pthread mutex in a shared_memory segment
    let shmem = ShmemConf::new()
        .size(4096)
        .create()
        .expect("shared_memory create");
    // SAFETY: the segment is 4096 bytes, enough for the mutex and its data pointer.
    let (mutex, _) = unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
    let ns = median(
        (0..plan.runs)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..plan.lock_pairs {
                    let guard = mutex.lock().expect("lock");
                    black_box(&guard);
                }
                t.elapsed().as_nanos() as f64 / plan.lock_pairs as f64
            })
            .collect(),
    );
    row("lock_unlock_ns", "shared_memory + raw_sync mutex", ns, "ns");
}

// ------------------------------------------------------------------ create/attach/detach/destroy

fn cycles(plan: &Plan, size: usize, n: usize, metric: &str) {
    let flavours = [
        Flavour {
            name: "qshm POSIX (fast)",
            ..FAST
        },
        Flavour {
            name: "qshm POSIX (Qt-compatible)",
            ..QT_POSIX
        },
        Flavour {
            name: "qshm System V (fast)",
            kind: KeyType::SystemV,
            mode: LockMode::Fast,
        },
        Flavour {
            name: "qshm System V (Qt-compatible)",
            ..QT_SYSV
        },
    ];
    for f in flavours {
        let us = median(
            (0..plan.runs)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..n {
                        let k = key("cycle");
                        let mut a = handle(&k, f);
                        a.create(size, AccessMode::ReadWrite).expect("create");
                        let mut b = handle(&k, f);
                        b.attach(AccessMode::ReadWrite).expect("attach");
                        b.detach().expect("detach");
                        a.detach().expect("detach, destroy");
                    }
                    t.elapsed().as_secs_f64() * 1e6 / n as f64
                })
                .collect(),
        );
        row(metric, f.name, us, "us");
    }
    let us = median(
        (0..plan.runs)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    let a = ShmemConf::new().size(size).create().expect("create");
                    let b = ShmemConf::new().os_id(a.get_os_id()).open().expect("open");
                    drop(b);
                    drop(a); // owner: unlinks
                }
                t.elapsed().as_secs_f64() * 1e6 / n as f64
            })
            .collect(),
    );
    row(metric, "shared_memory crate", us, "us");
}

// ------------------------------------------------------------------ cross-process handoff

/// Both sides: take the lock, and when `turn` (u64 at 0) says it is our move, make it;
/// otherwise unlock and yield (neither mutex is fair: without the yield a side can
/// re-take the lock until the scheduler preempts it). Returns the times we moved.
fn play_qshm(shm: &SharedMemory, me: u64, rounds: u64) -> Vec<Instant> {
    let mut moves = Vec::with_capacity(rounds as usize);
    loop {
        let mut data = shm.lock().expect("lock");
        let turn = u64::from_ne_bytes(data[..8].try_into().unwrap());
        if turn >= 2 * rounds {
            return moves;
        }
        if turn % 2 == me {
            data[..8].copy_from_slice(&(turn + 1).to_ne_bytes());
            moves.push(Instant::now());
        } else {
            drop(data);
            std::thread::yield_now();
        }
    }
}

fn play_raw(shmem: &Shmem, me: u64, rounds: u64) -> Vec<Instant> {
    // SAFETY: the segment holds the mutex at 0 (initialised by the parent) and data at 128.
    let (mutex, _) =
        unsafe { Mutex::from_existing(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
    let mut moves = Vec::with_capacity(rounds as usize);
    loop {
        let guard = mutex.lock().expect("lock");
        let cell = *guard as *mut u64;
        // SAFETY: the data pointer is inside the segment and we hold the lock.
        let turn = unsafe { cell.read_volatile() };
        if turn >= 2 * rounds {
            return moves;
        }
        if turn % 2 == me {
            // SAFETY: as above.
            unsafe { cell.write_volatile(turn + 1) };
            moves.push(Instant::now());
        } else {
            drop(guard);
            std::thread::yield_now();
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .arg("child")
        .args(args)
        .spawn()
        .expect("spawn child")
}

/// One-way handoff times (µs) from the parent's move times: a round trip is two handoffs.
fn handoff_stats(name: &str, moves: Vec<Instant>) {
    let mut samples: Vec<f64> = moves
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e6 / 2.0)
        .collect();
    samples.sort_by(f64::total_cmp);
    row("handoff_median_us", name, percentile(&samples, 0.5), "us");
    row("handoff_p99_us", name, percentile(&samples, 0.99), "us");
}

fn handoff(plan: &Plan) {
    for f in [FAST, QT_POSIX, QT_SYSV] {
        let k = key("handoff");
        let mut shm = handle(&k, f);
        shm.create(4096, AccessMode::ReadWrite).expect("create");
        let rounds = if f.kind == KeyType::SystemV {
            plan.handoffs / 4
        } else {
            plan.handoffs
        };
        let mut child = spawn(&[
            "handoff-qshm",
            &k,
            kind_arg(f.kind),
            mode_arg(f.mode),
            &rounds.to_string(),
        ]);
        let moves = play_qshm(&shm, 0, rounds);
        child.wait().expect("child");
        handoff_stats(f.name, moves);
    }
    let shmem = ShmemConf::new().size(4096).create().expect("create");
    // SAFETY: fresh 4096-byte segment: mutex at 0, data at 128.
    let (mutex, _) = unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
    drop(mutex);
    let mut child = spawn(&["handoff-raw", shmem.get_os_id(), &plan.handoffs.to_string()]);
    let moves = play_raw(&shmem, 0, plan.handoffs);
    child.wait().expect("child");
    handoff_stats("shared_memory + raw_sync mutex", moves);
}

// ------------------------------------------------------------------ contended throughput

/// The start flag children spin on (offset 64 of the segment).
fn start_flag(base: *const u8) -> &'static AtomicU32 {
    // SAFETY: offset 64 is inside the segment, 4-aligned, and the mapping outlives the run.
    unsafe { &*(base.add(64) as *const AtomicU32) }
}

fn contended(plan: &Plan, procs: usize) {
    let metric = format!("contended_{procs}p_Mops");
    for f in [FAST, QT_POSIX, QT_SYSV] {
        let m = if f.kind == KeyType::SystemV {
            plan.increments / 10
        } else {
            plan.increments
        };
        let rates: Vec<f64> = (0..plan.runs.min(3))
            .map(|_| {
                let k = key("contended");
                let mut shm = handle(&k, f);
                shm.create(4096, AccessMode::ReadWrite).expect("create");
                let children: Vec<Child> = (0..procs)
                    .map(|_| {
                        spawn(&[
                            "increment-qshm",
                            &k,
                            kind_arg(f.kind),
                            mode_arg(f.mode),
                            &m.to_string(),
                        ])
                    })
                    .collect();
                wait_ready(shm.as_ptr(), procs);
                let t = Instant::now();
                start_flag(shm.as_ptr()).store(u32::MAX, Ordering::Release);
                for mut c in children {
                    assert!(c.wait().expect("child").success(), "a child failed");
                }
                let secs = t.elapsed().as_secs_f64();
                let total = u64::from_ne_bytes(shm.lock().expect("lock")[..8].try_into().unwrap());
                assert_eq!(total, procs as u64 * m, "lost increments");
                total as f64 / secs / 1e6
            })
            .collect();
        row(&metric, f.name, median(rates), "Mops/s");
    }
    let rates: Vec<f64> = (0..plan.runs.min(3))
        .map(|_| {
            let shmem = ShmemConf::new().size(4096).create().expect("create");
            // SAFETY: fresh segment: mutex at 0, data at 128.
            let (mutex, _) =
                unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
            let children: Vec<Child> = (0..procs)
                .map(|_| spawn(&["increment-raw", shmem.get_os_id(), &plan.increments.to_string()]))
                .collect();
            wait_ready(shmem.as_ptr(), procs);
            let t = Instant::now();
            start_flag(shmem.as_ptr()).store(u32::MAX, Ordering::Release);
            for mut c in children {
                assert!(c.wait().expect("child").success(), "a child failed");
            }
            let secs = t.elapsed().as_secs_f64();
            let guard = mutex.lock().expect("lock");
            // SAFETY: data pointer inside the segment, lock held.
            let total = unsafe { (*guard as *const u64).read_volatile() };
            assert_eq!(total, procs as u64 * plan.increments, "lost increments");
            total as f64 / secs / 1e6
        })
        .collect();
    row(&metric, "shared_memory + raw_sync mutex", median(rates), "Mops/s");
}

/// Children count themselves in at offset 68 before spinning on the start flag.
fn wait_ready(base: *const u8, procs: usize) {
    // SAFETY: offset 68 is inside the segment and 4-aligned.
    let ready = unsafe { &*(base.add(68) as *const AtomicU32) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Acquire) < procs as u32 {
        assert!(Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn child_wait_start(base: *const u8) {
    // SAFETY: offset 68 is inside the segment and 4-aligned.
    let ready = unsafe { &*(base.add(68) as *const AtomicU32) };
    ready.fetch_add(1, Ordering::AcqRel);
    while start_flag(base).load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
}

// ------------------------------------------------------------------ bandwidth

fn bandwidth(plan: &Plan) {
    let n = plan.copy_bytes;
    let source: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut private = vec![0u8; n];
    let k = key("copy");
    let mut shm = handle(&k, FAST);
    shm.create(n, AccessMode::ReadWrite).expect("create");
    let gbps = |dst: &mut [u8]| {
        dst.copy_from_slice(&source); // fault the pages in first
        median(
            (0..plan.runs)
                .map(|_| {
                    let t = Instant::now();
                    dst.copy_from_slice(black_box(&source));
                    black_box(&dst);
                    n as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect(),
        )
    };
    let private_rate = gbps(&mut private);
    let shared_rate = {
        let mut guard = shm.lock().expect("lock");
        gbps(&mut guard[..n])
    };
    let label = format!("copy_{}MiB_GBps", n >> 20);
    row(&label, "qshm segment", shared_rate, "GB/s");
    row(&label, "memcpy to private memory", private_rate, "GB/s");
}

// ------------------------------------------------------------------ child roles

fn child(args: &[String]) {
    match args[0].as_str() {
        "handoff-qshm" => {
            let f = flavour_from(&args[2], &args[3]);
            let mut shm = handle(&args[1], f);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            play_qshm(&shm, 1, args[4].parse().unwrap());
        }
        "handoff-raw" => {
            let shmem = ShmemConf::new().os_id(&args[1]).open().expect("open");
            play_raw(&shmem, 1, args[2].parse().unwrap());
        }
        "increment-qshm" => {
            let f = flavour_from(&args[2], &args[3]);
            let mut shm = handle(&args[1], f);
            shm.attach(AccessMode::ReadWrite).expect("attach");
            let m: u64 = args[4].parse().unwrap();
            child_wait_start(shm.as_ptr());
            for _ in 0..m {
                let mut data = shm.lock().expect("lock");
                let v = u64::from_ne_bytes(data[..8].try_into().unwrap());
                data[..8].copy_from_slice(&(v + 1).to_ne_bytes());
            }
        }
        "increment-raw" => {
            let shmem = ShmemConf::new().os_id(&args[1]).open().expect("open");
            // SAFETY: mutex at 0 (initialised by the parent), data at 128.
            let (mutex, _) =
                unsafe { Mutex::from_existing(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
            let m: u64 = args[2].parse().unwrap();
            child_wait_start(shmem.as_ptr());
            for _ in 0..m {
                let guard = mutex.lock().expect("lock");
                let cell = *guard as *mut u64;
                // SAFETY: inside the segment, lock held.
                unsafe { cell.write_volatile(cell.read_volatile() + 1) };
            }
        }
        other => panic!("unknown child role {other}"),
    }
}
