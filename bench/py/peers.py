#!/usr/bin/env python3
"""Python peers of qshm, measured in the same run as the Rust figures.

Prints tab-separated rows `metric  implementation  value  unit` (medians over runs), the
same format as `qshm-bench measure`. A peer that cannot be imported is skipped with a
`# SKIP` line. Everything created is unlinked, also on failure.
"""
import os
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
RUNS = 3 if QUICK else 7
PAIRS = 20_000 if QUICK else 200_000
CYCLES = 20 if QUICK else 200
CYCLES_LARGE = 5 if QUICK else 40


def row(metric, impl, value, unit):
    print(f"{metric}\t{impl}\t{value:.4f}\t{unit}", flush=True)


def median_of(fn):
    return statistics.median(fn() for _ in range(RUNS))


def per_call_ns(body, n):
    def once():
        t = time.perf_counter_ns()
        body(n)
        return (time.perf_counter_ns() - t) / n
    return median_of(once)


def noop_baseline():
    def f():
        pass

    def body(n):
        for _ in range(n):
            f()
            f()

    row("lock_unlock_ns", "Python: two no-op calls (interpreter baseline)", per_call_ns(body, PAIRS), "ns")


def posix_ipc_peer():
    try:
        import posix_ipc
    except ImportError as e:
        print(f"# SKIP posix_ipc: {e}")
        return
    name = f"/qshm-bench-py-{os.getpid()}"
    sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=1)
    try:
        acquire, release = sem.acquire, sem.release

        def body(n):
            for _ in range(n):
                acquire()
                release()

        row("lock_unlock_ns", "Python posix_ipc semaphore", per_call_ns(body, PAIRS), "ns")
    finally:
        sem.unlink()
        sem.close()


def qt_peer():
    try:
        from PyQt6.QtCore import QSharedMemory
    except ImportError as e:
        print(f"# SKIP PyQt6 (Qt 6): {e}")
        return
    shm = QSharedMemory()
    shm.setKey(f"qshm-bench-qt-{os.getpid()}")  # QSharedMemory(key): System V on Linux
    if not shm.create(4096):
        print(f"# SKIP PyQt6: create failed: {shm.errorString()}")
        return
    try:
        lock, unlock = shm.lock, shm.unlock
        n = PAIRS // 10

        def body(n):
            for _ in range(n):
                lock()
                unlock()

        row("lock_unlock_ns", "Qt 6 QSharedMemory lock (PyQt6, System V)", per_call_ns(body, n), "ns")
    finally:
        shm.detach()


def multiprocessing_peer():
    try:
        from multiprocessing import shared_memory
    except ImportError as e:
        print(f"# SKIP multiprocessing.shared_memory: {e}")
        return
    for size, metric, n in ((4096, "cycle_4KiB_us", CYCLES), (64 << 20, "cycle_64MiB_us", CYCLES_LARGE)):
        def once():
            t = time.perf_counter()
            for i in range(n):
                a = shared_memory.SharedMemory(name=f"qshm-bench-mp-{os.getpid()}-{i}", create=True, size=size)
                try:
                    b = shared_memory.SharedMemory(name=a.name)
                    b.close()
                finally:
                    a.close()
                    a.unlink()
            return (time.perf_counter() - t) * 1e6 / n
        row(metric, "Python multiprocessing.shared_memory", median_of(once), "us")


if __name__ == "__main__":
    noop_baseline()
    posix_ipc_peer()
    qt_peer()
    multiprocessing_peer()
