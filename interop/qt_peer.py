#!/usr/bin/env python3
"""A real Qt 6 peer (PyQt6's QtCore) for qshm's interop tests.

One action per run; machine-readable lines on stdout, errors on stderr as
`ERROR <SharedMemoryError name> <errorString>` with exit code 3 (4 for NotFound).
See interop/README.md for the protocol.
"""
import argparse
import json
import sys
import time

from PyQt6.QtCore import QNativeIpcKey, QSharedMemory, QSystemSemaphore, QT_VERSION_STR

TYPES = {"systemv": QNativeIpcKey.Type.SystemV, "posix": QNativeIpcKey.Type.PosixRealtime}


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(shm, what):
    err = shm.error()
    sys.stderr.write(f"ERROR {err.name} {what}: {shm.errorString()}\n")
    sys.exit(4 if err == QSharedMemory.SharedMemoryError.NotFound else 3)


def wait_for_line_or(seconds):
    """Wait until a line (or EOF) arrives on stdin, or `seconds` pass (if given)."""
    if seconds is None:
        sys.stdin.readline()
        return
    import select

    select.select([sys.stdin], [], [], seconds)


def make_shm(args):
    shm = QSharedMemory()
    if args.native is not None:
        shm.setNativeKey(args.native, TYPES[args.type])
    elif args.type == "systemv":
        shm.setKey(args.key)  # exactly QSharedMemory(key): legacy key, legacy default type
    else:
        shm.setNativeKey(QSharedMemory.legacyNativeKey(args.key, TYPES[args.type]))
    return shm


def payload(args):
    if getattr(args, "hex", None) is not None:
        return bytes.fromhex(args.hex)
    if getattr(args, "text", None) is not None:
        return args.text.encode()
    return b""


def view(shm, writable):
    ptr = shm.data() if writable else shm.constData()
    ptr.setsize(shm.size())
    return memoryview(ptr)


def act_keys(args):
    out = {"qt_version": QT_VERSION_STR}
    for name, t in TYPES.items():
        shm_legacy = QSharedMemory.legacyNativeKey(args.legacy_key, t)
        shm_safe = QSharedMemory.platformSafeKey(args.legacy_key, t)
        out[f"shm_legacy_{name}"] = shm_legacy.nativeKey()
        out[f"shm_legacy_{name}_str"] = shm_legacy.toString()
        out[f"sem_legacy_{name}"] = QSystemSemaphore.legacyNativeKey(args.legacy_key, t).nativeKey()
        out[f"shm_safe_{name}"] = shm_safe.nativeKey()
        out[f"shm_safe_{name}_str"] = shm_safe.toString()
        out[f"sem_safe_{name}"] = QSystemSemaphore.platformSafeKey(args.legacy_key, t).nativeKey()
    say(json.dumps(out))


def act_parse(args):
    k = QNativeIpcKey.fromString(args.text)
    names = {v: n for n, v in TYPES.items()}
    say(json.dumps({
        "valid": k.isValid(),
        "type": names.get(k.type(), str(k.type())),
        "native": k.nativeKey(),
        "str": k.toString(),
    }))


def act_create(args):
    shm = make_shm(args)
    if not shm.create(args.size):
        fail(shm, "create")
    data = payload(args)
    if data:
        shm.lock()
        view(shm, True)[: len(data)] = data
        shm.unlock()
    say(f"READY size={shm.size()} native={shm.nativeKey()}")
    wait_for_line_or(args.hold)
    shm.detach()
    say("DETACHED")


def act_read(args):
    shm = make_shm(args)
    if not shm.attach(QSharedMemory.AccessMode.ReadOnly):
        fail(shm, "attach")
    shm.lock()
    mem = view(shm, False)
    length = shm.size() - args.offset if args.len is None else args.len
    data = bytes(mem[args.offset: args.offset + length])
    shm.unlock()
    say(f"SIZE {shm.size()}")
    say(f"DATA {data.hex()}")
    shm.detach()


def act_write(args):
    shm = make_shm(args)
    if not shm.attach(QSharedMemory.AccessMode.ReadWrite):
        fail(shm, "attach")
    data = payload(args)
    shm.lock()
    view(shm, True)[args.offset: args.offset + len(data)] = data
    shm.unlock()
    say(f"WROTE {len(data)}")
    shm.detach()


def act_hold_lock(args):
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    if not shm.lock():
        fail(shm, "lock")
    say("LOCKED")
    wait_for_line_or(args.hold)
    shm.unlock()
    say("UNLOCKED")
    shm.detach()


def act_time_lock(args):
    # Timed from before attach: Qt's attach() itself takes the lock's semaphore.
    start = time.monotonic()
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    if not shm.lock():
        fail(shm, "lock")
    say(f"LOCKED_AFTER_MS {(time.monotonic() - start) * 1000:.1f}")
    shm.unlock()
    shm.detach()


def act_hold_attached(args):
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    say(f"ATTACHED size={shm.size()}")
    wait_for_line_or(args.hold)
    shm.detach()
    say("DETACHED")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)

    def keyed(name, fn):
        s = sub.add_parser(name)
        s.add_argument("--key", default="")
        s.add_argument("--native")
        s.add_argument("--type", choices=TYPES, default="systemv")
        s.set_defaults(fn=fn)
        return s

    s = sub.add_parser("keys")
    s.add_argument("legacy_key")
    s.set_defaults(fn=act_keys)
    s = sub.add_parser("parse")
    s.add_argument("text")
    s.set_defaults(fn=act_parse)
    s = keyed("create", act_create)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--hex")
    s.add_argument("--text")
    s.add_argument("--hold", type=float)
    s = keyed("read", act_read)
    s.add_argument("--len", type=int)
    s.add_argument("--offset", type=int, default=0)
    s = keyed("write", act_write)
    s.add_argument("--hex")
    s.add_argument("--text")
    s.add_argument("--offset", type=int, default=0)
    s = keyed("hold-lock", act_hold_lock)
    s.add_argument("--hold", type=float)
    keyed("time-lock", act_time_lock)
    s = keyed("hold-attached", act_hold_attached)
    s.add_argument("--hold", type=float)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
