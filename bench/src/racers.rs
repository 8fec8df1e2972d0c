//! Processes racing on one key (issue 19's racers): each creates the segment or attaches
//! to it, locks it, adds one, unlocks and detaches, over and over, as programs that start
//! and stop around one key do. The rate of all of them together, against their number: a
//! second or fourth racer must not make the key much slower than one alone (before, `/proc`
//! walks of processes nobody may read made 2-4 racers 20-50x slower for ordinary users).

use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qshm::AccessMode;

use crate::locks::{self, CYCLE_FLAVOURS, Mapping};
use crate::stats::row;
use crate::{key, spawn, wait_all};

/// The control page: start flag (0), children ready (4), stop flag (8), cycles done (16).
const CTL_LEN: usize = 4096;

pub const METRIC: &str = "racers_kcycles_per_s";

/// `runs` runs of `window` each, per flavour and number of racers in `procs`; runs of the
/// flavours alternate so that load from elsewhere falls on all alike.
pub fn measure(runs: usize, window: Duration, procs: &[usize]) {
    for &n in procs {
        let mut rates = vec![Vec::new(); CYCLE_FLAVOURS.len()];
        for _ in 0..runs {
            for (i, rate) in rates.iter_mut().enumerate() {
                rate.push(run(i, n, window));
            }
        }
        for (f, r) in CYCLE_FLAVOURS.iter().zip(&rates) {
            row(METRIC, f.name, Some(n as f64), r, "k cycles/s");
        }
    }
}

/// One run: `procs` racers on a fresh key for `window`; thousands of cycles per second.
fn run(flavour: usize, procs: usize, window: Duration) -> f64 {
    let k = key("race");
    let ctl = Mapping::create(&key("racectl"), CTL_LEN);
    let children: Vec<Child> = (0..procs)
        .map(|_| {
            spawn(&[
                "race".to_owned(),
                ctl.name().to_owned(),
                k.clone(),
                flavour.to_string(),
            ])
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.u32_at(4).load(Ordering::Acquire) < procs as u32 {
        assert!(Instant::now() < deadline, "racers did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    ctl.u32_at(0).store(1, Ordering::Release);
    std::thread::sleep(window);
    ctl.u32_at(8).store(1, Ordering::Release);
    let secs = t.elapsed().as_secs_f64();
    wait_all(children, Duration::from_secs(120));
    let done = ctl.u64s_at(16, 1)[0].load(Ordering::Acquire);
    // the last racer out destroyed the segment: nothing of the key may be left
    let mut probe = locks::handle(&k, CYCLE_FLAVOURS[flavour]);
    assert!(
        probe.attach(AccessMode::ReadOnly).is_err(),
        "racers left the segment of {k} behind"
    );
    done as f64 / secs / 1e3
}

/// The racer child: `race CTL KEY FLAVOUR`.
pub fn child(args: &[String]) {
    let ctl = Mapping::open(&args[0]);
    let k = &args[1];
    let f = CYCLE_FLAVOURS[args[2].parse::<usize>().expect("flavour")];
    ctl.u32_at(4).fetch_add(1, Ordering::AcqRel);
    while ctl.u32_at(0).load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    let mut cycles = 0u64;
    while ctl.u32_at(8).load(Ordering::Relaxed) == 0 {
        let mut shm = locks::handle(k, f);
        if shm.create(64, AccessMode::ReadWrite).is_err() && shm.attach(AccessMode::ReadWrite).is_err() {
            continue; // destroyed between our create and attach: race again
        }
        {
            let mut data = shm.lock().expect("lock");
            data[0] = data[0].wrapping_add(1);
        }
        shm.detach().expect("detach");
        cycles += 1;
    }
    ctl.u64s_at(16, 1)[0].fetch_add(cycles, Ordering::AcqRel);
}
