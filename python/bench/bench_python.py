#!/usr/bin/env python3
"""The qshm Python package against its Python peers, in one run.

    python bench_python.py [--quick] [--markdown]

Prints tab-separated rows `metric  implementation  x  median  min  max  unit` (medians over
runs), the format of bench/compare.sh's rows, then `# info:` lines with the target verdict:

* python_lock_unlock_ns: an uncontended lock+unlock pair from Python: qshm's
  `lock()` + `unlock()` and `with lock() as buf` (which also makes and releases the view),
  posix_ipc's `Semaphore.acquire()` + `release()`, and Qt 6's `QSharedMemory.lock()` +
  `unlock()` through PyQt6; two no-op calls as the interpreter's floor.
* python_read_1MiB_us: read 1 MiB through the view: qshm's `with lock_read() as buf:
  bytes(buf)` against `bytes(shm.buf)` of `multiprocessing.shared_memory` (no lock).

The runs take turns (every implementation once per round), so that a burst of load on a
shared machine costs them all alike. Target (issue 22): qshm's lock pair no slower than
posix_ipc's semaphore. A peer that cannot be imported is skipped with a `# SKIP` line.
Everything made is removed, also on failure. `--markdown` prints the figures as the
table of python/README.md instead of rows.
"""
import contextlib
import os
import statistics
import sys
import time

import qshm

QUICK = "--quick" in sys.argv
MARKDOWN = "--markdown" in sys.argv
RUNS = 5 if QUICK else 15
PAIRS = 20_000 if QUICK else 100_000
READS = 200 if QUICK else 1_000
MIB = 1 << 20
PID = os.getpid()
LOCK = "python_lock_unlock_ns"
READ = "python_read_1MiB_us"
POSIX_IPC = "posix_ipc Semaphore acquire() + release()"
QSHM_SHAPES = [
    ("Fast (POSIX)", "posix", "fast"),
    ("Qt-compatible (POSIX)", "posix", "qt"),
    ("Qt-compatible (System V)", "systemv", "qt"),
]


def timed(body, n, scale):
    start = time.perf_counter_ns()
    body(n)
    return (time.perf_counter_ns() - start) / n / scale


# ------------------------------------------------------------------ subjects
# Each: (metric, implementation, body(n), n, scale, unit); made inside `stack`, so that
# everything is removed at the end whatever happens.

def noop_floor():
    def f():
        pass

    def body(n):
        for _ in range(n):
            f()
            f()

    yield LOCK, "Python: two no-op calls (interpreter floor)", body


def qshm_pairs(stack):
    for label, kind, mode in QSHM_SHAPES:
        shm = stack.enter_context(qshm.SharedMemory(f"qshm-bench-py-{PID}-{kind}-{mode}", type=kind,
                                                    lock_mode=mode))
        shm.create(4096)

        def pair(n, lock=shm.lock):
            for _ in range(n):
                lock().unlock()

        def block(n, lock=shm.lock):
            for _ in range(n):
                with lock() as buf:
                    pass

        yield LOCK, f"qshm lock() + unlock(), {label}", pair
        yield LOCK, f"qshm with lock() as buf (view made and released), {label}", block


def posix_ipc_pair(stack):
    try:
        import posix_ipc
    except ImportError as e:
        print(f"# SKIP posix_ipc: {e}")
        return
    sem = posix_ipc.Semaphore(f"/qshm-bench-py-sem-{PID}", posix_ipc.O_CREX, initial_value=1)
    stack.callback(sem.close)
    stack.callback(sem.unlink)

    def body(n, acquire=sem.acquire, release=sem.release):
        for _ in range(n):
            acquire()
            release()

    yield LOCK, POSIX_IPC, body


def qt_pairs(stack):
    try:
        from PyQt6.QtCore import QNativeIpcKey, QSharedMemory
    except ImportError as e:
        print(f"# SKIP PyQt6: {e}")
        return
    for label, kind in (("POSIX", QNativeIpcKey.Type.PosixRealtime), ("System V", QNativeIpcKey.Type.SystemV)):
        shm = QSharedMemory()
        shm.setNativeKey(QSharedMemory.legacyNativeKey(f"qshm-bench-py-qt-{PID}-{label}", kind))
        if not shm.create(4096):
            print(f"# SKIP PyQt6 {label}: {shm.errorString()}")
            continue
        if kind == QNativeIpcKey.Type.PosixRealtime:  # Qt never unlinks its POSIX segments
            stack.callback(lambda name=shm.nativeKey(): os.path.exists("/dev/shm" + name)
                           and os.unlink("/dev/shm" + name))
        stack.callback(shm.detach)

        def body(n, lock=shm.lock, unlock=shm.unlock):
            for _ in range(n):
                lock()
                unlock()

        yield LOCK, f"Qt 6 QSharedMemory lock() + unlock() (PyQt6, {label})", body


def qshm_reads(stack):
    for label, kind, mode in QSHM_SHAPES[:2]:
        shm = stack.enter_context(qshm.SharedMemory(f"qshm-bench-py-read-{PID}-{mode}", type=kind,
                                                    lock_mode=mode))
        shm.create(MIB)
        with shm.lock() as buf:
            buf[:] = bytes(range(256)) * (MIB // 256)

        def body(n, lock_read=shm.lock_read):
            for _ in range(n):
                with lock_read() as buf:
                    data = bytes(buf)
            assert len(data) == MIB

        yield READ, f"qshm with lock_read() as buf: bytes(buf), {label}", body


def multiprocessing_reads(stack):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=MIB)
    stack.callback(shm.unlink)
    stack.callback(shm.close)
    shm.buf[:] = bytes(range(256)) * (MIB // 256)

    def body(n):
        buf = shm.buf
        for _ in range(n):
            data = bytes(buf)
        assert len(data) == MIB

    yield READ, "multiprocessing.shared_memory: bytes(shm.buf) (no lock)", body


# ------------------------------------------------------------------ runs and output

def measure(subjects):
    """Every subject once per round, RUNS rounds: {(metric, impl): [samples]}."""
    samples = {(metric, impl): [] for metric, impl, _ in subjects}
    for _ in range(RUNS):
        for metric, impl, body in subjects:
            n, scale = (PAIRS, 1) if metric == LOCK else (READS, 1000)
            samples[(metric, impl)].append(timed(body, n, scale))
    return samples


def report(samples):
    unit = {LOCK: "ns", READ: "µs"}
    if not MARKDOWN:
        for (metric, impl), s in samples.items():
            print(f"{metric}\t{impl}\t\t{statistics.median(s):.6f}\t{min(s):.6f}\t{max(s):.6f}\t{unit[metric]}")
        return
    titles = {LOCK: "uncontended lock+unlock pair from Python", READ: "read 1 MiB through the view (a copy out)"}
    for metric, title in titles.items():
        print(f"\n| {title} | median | min–max |\n|---|---:|---:|")
        for (m, impl), s in samples.items():
            if m == metric:
                u = unit[metric]
                print(f"| {impl} | {statistics.median(s):.0f} {u} | {min(s):.0f}–{max(s):.0f} {u} |")
    print()


def verdict(samples):
    peer = samples.get((LOCK, POSIX_IPC))
    if not peer:
        print("# info: Python lock pair target: not evaluated (posix_ipc missing)")
        return
    peer = statistics.median(peer)
    for label, _, _ in QSHM_SHAPES:
        ours = statistics.median(samples[(LOCK, f"qshm lock() + unlock(), {label}")])
        print(f"# info: Python lock pair, {label}: qshm {ours:.0f} ns vs posix_ipc {peer:.0f} ns = "
              f"{ours / peer:.2f}x: {'met' if ours <= peer else 'missed'} (target: no slower than posix_ipc)")


def main():
    print(f"# info: Python {sys.version.split()[0]}, qshm {qshm.__version__}; {RUNS} rounds")
    with contextlib.ExitStack() as stack:
        subjects = [*noop_floor(), *qshm_pairs(stack), *posix_ipc_pair(stack), *qt_pairs(stack),
                    *qshm_reads(stack), *multiprocessing_reads(stack)]
        samples = measure(subjects)
    report(samples)
    verdict(samples)


if __name__ == "__main__":
    main()
