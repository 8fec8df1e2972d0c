//! The price of the one route under the two-CAS floor of a lock whose waiters sleep: a
//! release by plain store, made safe by an asymmetric fence that every sleeping waiter
//! pays (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which interrupts every CPU running a
//! process that registered for it). Measured with one registered process busy on another
//! CPU, as a lock holder would be.

use std::time::Duration;

use crate::stats::note;

const GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
const REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes plain values and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
}

/// Rows `fence_us`: one `membarrier(GLOBAL_EXPEDITED)` call, and `getppid` (a system call
/// that does nothing) beside it, in microseconds.
pub fn measure(runs: usize, calls: usize) {
    if membarrier(REGISTER_GLOBAL_EXPEDITED) != 0 {
        note(&format!(
            "membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) failed ({}): the asymmetric fence is not measured",
            std::io::Error::last_os_error()
        ));
        return;
    }
    // SAFETY: the child makes one raw system call and spins until it is killed (no
    // allocation, no locks), which is sound after fork even in a threaded process.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // a registered process that keeps a CPU busy, as a lock holder would
        membarrier(REGISTER_GLOBAL_EXPEDITED);
        loop {
            std::hint::spin_loop();
        }
    }
    assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
    std::thread::sleep(Duration::from_millis(50));
    let runners: Vec<crate::Runner> = vec![
        (
            "membarrier(GLOBAL_EXPEDITED), a registered process busy on another CPU".into(),
            Box::new(|| {
                crate::us_per_call(calls, || {
                    assert_eq!(membarrier(GLOBAL_EXPEDITED), 0, "membarrier");
                })
            }),
        ),
        (
            "floor: getppid (a system call that does nothing)".into(),
            Box::new(|| {
                crate::us_per_call(calls, || {
                    // SAFETY: getppid takes nothing and cannot fail.
                    std::hint::black_box(unsafe { libc::getppid() });
                })
            }),
        ),
    ];
    let samples = crate::interleaved_samples(runs, runners);
    // SAFETY: child is our own child process; kill and waitpid take plain values.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    for (name, s) in samples {
        crate::stats::row("fence_us", &name, None, &s, "us");
    }
}
