"""A Python peer process for the tests: one action per run, lines on stdout.

    python py_peer.py hold-lock KEY TYPE MODE       attach, lock: "LOCKED died=<bool>";
                                                     waits for a line; unlocks: "UNLOCKED"
    python py_peer.py count KEY TYPE MODE N OFFSET  attach: "READY"; waits for a line; N times
                                                     add 1 to the u64 at OFFSET under lock();
                                                     "COUNTED N"
    python py_peer.py wait-change KEY TYPE          attach read-only: "READY"; waits for a
                                                     notify_all(): "CHANGED <bytes 0..8 hex>"
    python py_peer.py exit-attached KEY TYPE SIZE   create (or attach if SIZE is 0), keep the
                                                     handle and a held lock in globals, write,
                                                     and leave by the end of the script
    python py_peer.py acquire KEY                   SystemSemaphore(KEY).acquire(): "ACQUIRED"

TYPE: systemv or posix; MODE: qt or fast. Every wait is bounded (30 s).
"""
import struct
import sys

import qshm

T = 30.0


def say(line):
    print(line, flush=True)


def attach(key, kind, read_only=False):
    shm = qshm.SharedMemory(key, type=kind)
    shm.attach(read_only=read_only)
    return shm


def hold_lock(key, kind, mode):
    shm = attach(key, kind)
    assert shm.lock_mode == qshm.LockMode.Fast if mode == "fast" else qshm.LockMode.QtCompatible
    guard = shm.lock(timeout=T)
    with guard as buf:
        buf[:4] = b"held"
        say(f"LOCKED died={guard.previous_owner_died}")
        sys.stdin.readline()
    say("UNLOCKED")
    shm.detach()


def count(key, kind, mode, times, offset):
    shm = attach(key, kind)
    assert shm.lock_mode == qshm.LockMode.Fast if mode == "fast" else qshm.LockMode.QtCompatible
    say("READY")
    sys.stdin.readline()
    for _ in range(times):
        with shm.lock(timeout=T) as buf:
            (n,) = struct.unpack_from("<Q", buf, offset)
            struct.pack_into("<Q", buf, offset, n + 1)
    say(f"COUNTED {times}")
    shm.detach()


def wait_change(key, kind):
    shm = attach(key, kind, read_only=True)
    seen = shm.generation()
    say("READY")
    now = shm.wait_for_change(seen, timeout=T)
    assert now != seen, "no notification within the bound"
    with shm.lock_read() as buf:
        say(f"CHANGED {bytes(buf[:8]).hex()}")


# Kept in globals: what the interpreter's exit must clean up without being asked.
KEPT = []


def exit_attached(key, kind, size):
    shm = qshm.SharedMemory(key, type=kind)
    if size:
        shm.create(size)
    else:
        shm.attach()
    guard = shm.lock(timeout=T)
    view = memoryview(guard)
    view[:6] = b"exited"
    view.release()
    KEPT.extend([shm, guard])
    say("LEAVING")


def acquire(key):
    sem = qshm.SystemSemaphore(key)
    assert sem.acquire(timeout=T)
    say("ACQUIRED")


def main():
    action, args = sys.argv[1], sys.argv[2:]
    if action == "hold-lock":
        hold_lock(*args)
    elif action == "count":
        count(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif action == "wait-change":
        wait_change(*args)
    elif action == "exit-attached":
        exit_attached(args[0], args[1], int(args[2]))
    elif action == "acquire":
        acquire(*args)
    else:
        sys.exit(f"unknown action {action}")


if __name__ == "__main__":
    main()
