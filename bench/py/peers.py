#!/usr/bin/env python3
"""Python and Qt peers of qshm, measured in the same run as the Rust figures.

Prints tab-separated rows `metric  implementation  x  median  min  max  unit` (over runs),
the same format as `qshm-bench measure`. A peer that cannot be imported is skipped with
a `# SKIP` line. Everything created is removed, also on failure; Qt leaves its POSIX
segment files in /dev/shm after the last detach, and those are unlinked outside the
timed region.
"""
import itertools
import os
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
RUNS = 3 if QUICK else 7
PAIRS = 20_000 if QUICK else 200_000
CYCLES = 40 if QUICK else 400
SIZE_STEPS = 6 if QUICK else 9  # segment sizes 4 KiB * 4^i, as qshm-bench
PAGE = os.sysconf("SC_PAGESIZE")
PID = os.getpid()
_names = itertools.count()


def fresh(tag):
    return f"qshm-bench-py-{tag}-{PID}-{next(_names)}"


def row(metric, impl, samples, unit, x=None):
    xs = "" if x is None else str(x)
    print(f"{metric}\t{impl}\t{xs}\t{statistics.median(samples):.6f}\t{min(samples):.6f}\t"
          f"{max(samples):.6f}\t{unit}", flush=True)


def runs_of(fn, runs=RUNS):
    return [fn() for _ in range(runs)]


def per_call_ns(body, n):
    def once():
        t = time.perf_counter_ns()
        body(n)
        return (time.perf_counter_ns() - t) / n
    return runs_of(once)


# ------------------------------------------------------------------ lock+unlock

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
    sem = posix_ipc.Semaphore("/" + fresh("sem"), posix_ipc.O_CREX, initial_value=1)
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


def remove_qt_leftovers(keys, kind):
    """Unlink what Qt leaves behind for these legacy keys (POSIX segment files)."""
    from PyQt6.QtCore import QNativeIpcKey, QSharedMemory, QSystemSemaphore
    if kind != QNativeIpcKey.Type.PosixRealtime:
        return
    for key in keys:
        for native in (QSharedMemory.legacyNativeKey(key, kind).nativeKey(),
                       "sem." + QSystemSemaphore.legacyNativeKey(key, kind).nativeKey().lstrip("/")):
            path = "/dev/shm/" + native.lstrip("/")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def qt_kinds():
    from PyQt6.QtCore import QNativeIpcKey
    return [("System V", QNativeIpcKey.Type.SystemV), ("POSIX", QNativeIpcKey.Type.PosixRealtime)]


def qt_lock_peer():
    from PyQt6.QtCore import QSharedMemory
    for label, kind in qt_kinds():
        key = fresh("qtlock")
        shm = QSharedMemory(QSharedMemory.legacyNativeKey(key, kind))
        if not shm.create(4096):
            print(f"# SKIP PyQt6 {label} lock: create failed: {shm.errorString()}")
            continue
        try:
            lock, unlock = shm.lock, shm.unlock

            def body(n):
                for _ in range(n):
                    lock()
                    unlock()

            n = PAIRS // 10 if label == "System V" else PAIRS
            row("lock_unlock_ns", f"Qt 6 QSharedMemory lock (PyQt6, {label})", per_call_ns(body, n), "ns")
        finally:
            shm.detach()
            del shm
            remove_qt_leftovers([key], kind)


# ------------------------------------------------------------------ create+attach+detach+destroy

class NoOp:
    """Stands in for QSharedMemory in the interpreter baseline of the Qt cycle."""

    def __init__(self, key):
        pass

    @staticmethod
    def legacyNativeKey(key, kind):
        return key

    def create(self, size):
        return True

    def attach(self):
        return True

    def detach(self):
        return True


def cycle(cls, kind, keys):
    key = fresh("qtcycle")
    native = cls.legacyNativeKey(key, kind)
    a = cls(native)
    if not a.create(4096):
        raise RuntimeError(f"create: {a.errorString()}")
    b = cls(native)
    if not b.attach():
        raise RuntimeError(f"attach: {b.errorString()}")
    b.detach()
    a.detach()
    del a, b  # the handles go too, as qshm's do
    keys.append(key)


def cycle_runs(cls, kind):
    def once():
        keys = []
        try:
            t = time.perf_counter()
            for _ in range(CYCLES):
                cycle(cls, kind, keys)
            return (time.perf_counter() - t) * 1e6 / CYCLES
        finally:
            if cls is not NoOp:
                remove_qt_leftovers(keys, kind)
    return runs_of(once)


def qt_cycle_peer():
    from PyQt6.QtCore import QSharedMemory
    kinds = qt_kinds()
    row("cycle_4KiB_us", "Python: the Qt cycle's calls as no-ops (interpreter baseline)",
        cycle_runs(NoOp, kinds[0][1]), "us")
    for label, kind in kinds:
        row("cycle_4KiB_us", f"Qt 6 QSharedMemory (PyQt6, {label})", cycle_runs(QSharedMemory, kind), "us")


def qt_peers():
    try:
        import PyQt6.QtCore  # noqa: F401
    except ImportError as e:
        print(f"# SKIP PyQt6 (Qt 6): {e}")
        return
    qt_lock_peer()
    qt_cycle_peer()


def multiprocessing_peer():
    try:
        from multiprocessing import shared_memory
    except ImportError as e:
        print(f"# SKIP multiprocessing.shared_memory: {e}")
        return
    try:
        import numpy

        def touch(buf):
            view = numpy.frombuffer(buf, dtype=numpy.uint8)
            view[::PAGE] = 1
            del view
    except ImportError:
        print("# info: no numpy: multiprocessing first touch is a Python loop")

        def touch(buf):
            for i in range(0, len(buf), PAGE):
                buf[i] = 1

    impl = "Python multiprocessing.shared_memory"

    def cycles(size, n, attach, first_touch):
        t = time.perf_counter()
        for _ in range(n):
            a = shared_memory.SharedMemory(name=fresh("mp"), create=True, size=size)
            try:
                if attach:
                    b = shared_memory.SharedMemory(name=a.name)
                    b.close()
                if first_touch:
                    touch(a.buf)
            finally:
                a.close()
                a.unlink()
        return (time.perf_counter() - t) * 1e6 / n

    row("cycle_4KiB_us", impl, runs_of(lambda: cycles(4096, CYCLES, True, False)), "us")
    for step in range(SIZE_STEPS + 1):
        size = 4096 << (2 * step)
        n = max(1, min(32, (16 << 20) // size))
        runs = 3 if size >= 1 << 30 else 5 if size >= 256 << 20 else RUNS
        row("size_cycle_us", impl, runs_of(lambda: cycles(size, n, False, True), runs), "us", x=size)


if __name__ == "__main__":
    noop_baseline()
    posix_ipc_peer()
    qt_peers()
    multiprocessing_peer()
