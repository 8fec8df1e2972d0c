#!/usr/bin/env python3
"""A real-Qt peer for tests/qt_versions.rs, for any of the three Qt bindings the tests
install: PyQt5 (Qt 5.15), PyQt6 (Qt 6.11) and PySide6 (Qt 6.12). It uses whichever of
them the running Python has (PyQt6, then PySide6, then PyQt5).

One action per run; lines on stdout (flushed one by one); Qt errors on stderr as
`ERROR <SharedMemoryError> <operation>: <errorString>`, exit code 3 (4 for NotFound).
See interop/README.md for the protocol.
"""
import argparse
import json
import struct
import sys
import time

try:
    from PyQt6.QtCore import QT_VERSION_STR as QT_VERSION, QNativeIpcKey, QSharedMemory
    BINDING = "PyQt6"
except ImportError:
    try:
        from PySide6.QtCore import QNativeIpcKey, QSharedMemory, qVersion
        QT_VERSION = qVersion()
        BINDING = "PySide6"
    except ImportError:
        from PyQt5.QtCore import QT_VERSION_STR as QT_VERSION, QSharedMemory
        QNativeIpcKey = None  # Qt 5 has no QNativeIpcKey: System V keys only
        BINDING = "PyQt5"

QT5 = QNativeIpcKey is None
if QT5:
    READ_ONLY, READ_WRITE = QSharedMemory.ReadOnly, QSharedMemory.ReadWrite
    ERROR_NAMES = {int(getattr(QSharedMemory, n)): n for n in (
        "NoError", "PermissionDenied", "InvalidSize", "KeyError", "AlreadyExists",
        "NotFound", "LockError", "OutOfResources", "UnknownError")}
else:
    READ_ONLY = QSharedMemory.AccessMode.ReadOnly
    READ_WRITE = QSharedMemory.AccessMode.ReadWrite


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def error_name(shm):
    err = shm.error()
    return ERROR_NAMES.get(int(err), str(err)) if QT5 else err.name


def fail(shm, what):
    name = error_name(shm)
    sys.stderr.write(f"ERROR {name} {what}: {shm.errorString()}\n")
    sys.stderr.flush()
    sys.exit(4 if name == "NotFound" else 3)


def key_type(name):
    """`posix`, `systemv` or `systemv-N` as Qt's QNativeIpcKey::Type."""
    if name == "posix":
        return QNativeIpcKey.Type.PosixRealtime
    if name == "systemv":
        return QNativeIpcKey.Type.SystemV
    return QNativeIpcKey.Type(int(name.split("-", 1)[1]))


def make_shm(args):
    """QSharedMemory for --key (legacy) or --native, of --type."""
    if QT5:
        if args.type != "systemv":
            sys.exit(f"ERROR BadArguments: Qt {QT_VERSION} ({BINDING}) has System V keys only")
        shm = QSharedMemory()
        if args.native is not None:
            shm.setNativeKey(args.native)
        else:
            shm.setKey(args.key)
        return shm
    t = key_type(args.type)
    shm = QSharedMemory()
    if args.native is not None:
        shm.setNativeKey(QNativeIpcKey(args.native, t))
    else:
        shm.setNativeKey(QSharedMemory.legacyNativeKey(args.key, t))
    return shm


def view(shm):
    """The segment's bytes, writable (PyQt: a sized sip.voidptr; PySide6: a memoryview)."""
    data = shm.data()
    if BINDING != "PySide6":
        data.setsize(shm.size())
    return memoryview(data)


def attach(shm, mode):
    if not shm.attach(mode):
        fail(shm, "attach")


def lock(shm):
    if not shm.lock():
        fail(shm, "lock")


def wait_for_line():
    sys.stdin.readline()


def act_info(_args):
    say(json.dumps({"binding": BINDING, "qt_version": QT_VERSION}))


def act_keys(args):
    """The native keys Qt derives from legacy key KEY for each --types entry."""
    out = {"qt_version": QT_VERSION}
    for name in args.types.split(","):
        if QT5:
            shm = QSharedMemory(args.legacy_key)
            out[name] = {"native": shm.nativeKey()}
        else:
            key = QSharedMemory.legacyNativeKey(args.legacy_key, key_type(name))
            out[name] = {"native": key.nativeKey(), "string": key.toString()}
    say(json.dumps(out, ensure_ascii=False))


def act_create(args):
    shm = make_shm(args)
    if not shm.create(args.size):
        fail(shm, "create")
    data = bytes.fromhex(args.hex)
    # Qt 5 has no lock for a segment of a native key (its semaphore's key is the empty
    # legacy key: "unable to lock"); it writes without one
    unlocked = QT5 and args.native is not None
    if not unlocked:
        lock(shm)
    view(shm)[: len(data)] = data
    if not unlocked:
        shm.unlock()
    say(f"READY size={shm.size()}")
    wait_for_line()
    shm.detach()
    say("DETACHED")


def act_read(args):
    shm = make_shm(args)
    attach(shm, READ_ONLY)
    lock(shm)
    data = bytes(view(shm)[: shm.size()])
    shm.unlock()
    say(f"SIZE {shm.size()}")
    say(f"DATA {data.hex()}")
    shm.detach()


def act_size(args):
    shm = make_shm(args)
    attach(shm, READ_ONLY)
    say(f"SIZE {shm.size()}")
    shm.detach()


def act_write(args):
    shm = make_shm(args)
    attach(shm, READ_WRITE)
    data = bytes.fromhex(args.hex)
    lock(shm)
    view(shm)[: len(data)] = data
    shm.unlock()
    say(f"WROTE {len(data)}")
    shm.detach()


def act_count(args):
    """Add 1 to the little-endian u64 at offset 0, N times, each under lock()."""
    shm = make_shm(args)
    attach(shm, READ_WRITE)
    say("ATTACHED")
    wait_for_line()  # start together with the other side
    mem = view(shm)
    for _ in range(args.iterations):
        lock(shm)
        (value,) = struct.unpack_from("<Q", mem, 0)
        struct.pack_into("<Q", mem, 0, value + 1)
        shm.unlock()
    say("COUNTED")
    shm.detach()


def act_hold_lock(args):
    """Attach, lock(), say LOCKED and wait (to be killed, or for a line)."""
    shm = make_shm(args)
    attach(shm, READ_WRITE)
    lock(shm)
    say("LOCKED")
    wait_for_line()
    shm.unlock()
    shm.detach()


def act_lock_once(args):
    """Attach, lock(), say how long it took, unlock, detach."""
    start = time.monotonic()
    shm = make_shm(args)
    attach(shm, READ_WRITE)
    lock(shm)
    say(f"LOCKED_AFTER_MS {(time.monotonic() - start) * 1000:.1f}")
    shm.unlock()
    shm.detach()


def act_hold_attached(args):
    shm = make_shm(args)
    attach(shm, READ_WRITE)
    say(f"ATTACHED size={shm.size()}")
    wait_for_line()
    shm.detach()
    say("DETACHED")


def main():
    sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)

    def keyed(name, fn):
        s = sub.add_parser(name)
        g = s.add_mutually_exclusive_group(required=True)
        g.add_argument("--key", help="legacy key")
        g.add_argument("--native", help="native key (a path for System V, /name for POSIX)")
        s.add_argument("--type", default="systemv", help="posix, systemv or systemv-N")
        s.set_defaults(fn=fn)
        return s

    sub.add_parser("info").set_defaults(fn=act_info)
    s = sub.add_parser("keys")
    s.add_argument("legacy_key", metavar="KEY")
    s.add_argument("--types", default="systemv")
    s.set_defaults(fn=act_keys)
    s = keyed("create", act_create)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--hex", default="")
    keyed("read", act_read)
    keyed("size", act_size)
    keyed("write", act_write).add_argument("--hex", required=True)
    keyed("count", act_count).add_argument("--iterations", type=int, required=True)
    keyed("hold-lock", act_hold_lock)
    keyed("lock-once", act_lock_once)
    keyed("hold-attached", act_hold_attached)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
