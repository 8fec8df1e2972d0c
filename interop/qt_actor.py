#!/usr/bin/env python3
"""A real Qt 6 actor (PyQt6's QtCore) for qshm's mixed-order matrix (tests/matrix.rs).

Usage: qt_actor.py --key KEY --type systemv|posix

It reads one command per line on stdin and answers each with one line on stdout:

  create SIZE     QSharedMemory.create(SIZE)             -> OK | ERR <SharedMemoryError>
  attach          QSharedMemory.attach()                  -> OK | ERR <...>
  lock            lock(), add 1 to the u64 at offset 0, unlock() -> OK died=0 | ERR <...>
  burst N         N times: lock(), add 1, unlock()        -> OK died=0 | ERR <...>
  read            lock(), read the u64 at offset 0, unlock() -> VALUE <n> | ERR <...>
  hold            lock() and keep it                      -> HELD | ERR <...>
  semaphores      the inodes of the semaphore files this process maps -> SEMS [<inode> ...]
  detach          detach()                                -> OK | ERR <...>
  exit            ends the process (the QSharedMemory is destroyed: Qt detaches)

Qt never reports a dead previous holder, so `died` is always 0.
"""
import argparse
import os
import struct
import sys

from PyQt6.QtCore import QNativeIpcKey, QSharedMemory

TYPES = {"systemv": QNativeIpcKey.Type.SystemV, "posix": QNativeIpcKey.Type.PosixRealtime}


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(shm):
    return f"ERR {shm.error().name}"


def add_one(shm):
    ptr = shm.data()
    ptr.setsize(8)
    view = memoryview(ptr)
    (value,) = struct.unpack_from("<Q", view, 0)
    struct.pack_into("<Q", view, 0, (value + 1) & 0xFFFFFFFFFFFFFFFF)


def read_value(shm):
    ptr = shm.constData()
    ptr.setsize(8)
    return struct.unpack_from("<Q", memoryview(ptr), 0)[0]


def mapped_semaphores():
    """The inodes of the POSIX semaphore files this process maps, sorted: one-page shared
    mappings of files in /dev/shm that are not the segment (qipc_sharedmemory_*) or a qshm
    lock state (glibc maps a new semaphore under a temporary name, so not by name)."""
    page = os.sysconf("SC_PAGE_SIZE")
    inodes = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) < 6:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5]
            if (end - start == page and path.startswith("/dev/shm/")
                    and not path.startswith("/dev/shm/qipc_sharedmemory_")
                    and not path.startswith("/dev/shm/qshm-lock.")):
                inodes.add(fields[4])
    return sorted(inodes)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--key", required=True)
    p.add_argument("--type", choices=TYPES, required=True)
    args = p.parse_args()
    shm = QSharedMemory()
    # the legacy key carried in the native key: the semaphore is derived as setKey() does
    shm.setNativeKey(QSharedMemory.legacyNativeKey(args.key, TYPES[args.type]))
    say("READY")
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "create":
            say("OK" if shm.create(int(words[1])) else err(shm))
        elif cmd == "attach":
            say("OK" if shm.attach() else err(shm))
        elif cmd in ("lock", "burst"):
            rounds = int(words[1]) if cmd == "burst" else 1
            failed = None
            for _ in range(rounds):
                if not shm.lock():
                    failed = err(shm)
                    break
                add_one(shm)
                shm.unlock()
            say(failed or "OK died=0")
        elif cmd == "read":
            if shm.lock():
                value = read_value(shm)
                shm.unlock()
                say(f"VALUE {value}")
            else:
                say(err(shm))
        elif cmd == "hold":
            say("HELD" if shm.lock() else err(shm))
        elif cmd == "semaphores":
            say("SEMS" + "".join(f" {i}" for i in mapped_semaphores()))
        elif cmd == "detach":
            say("OK" if shm.detach() else err(shm))
        elif cmd == "exit":
            break
        else:
            say(f"ERR unknown command {cmd}")


if __name__ == "__main__":
    main()
