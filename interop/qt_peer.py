#!/usr/bin/env python3
"""A real Qt 6 peer (PyQt6's QtCore) for qshm's interop tests.

One action per run; machine-readable lines on stdout (flushed one by one), errors on
stderr as `ERROR <SharedMemoryError name> <operation>: <errorString>` with exit code 4
for NotFound, 3 for any other Qt error, 2 for bad arguments.
See interop/README.md for the protocol.
"""
import argparse
import json
import select
import signal
import sys
import time

from PyQt6.QtCore import QT_VERSION_STR, QNativeIpcKey, QSharedMemory, QSystemSemaphore

TYPES = {"systemv": QNativeIpcKey.Type.SystemV, "posix": QNativeIpcKey.Type.PosixRealtime}
NotFound = QSharedMemory.SharedMemoryError.NotFound


class Stop(Exception):
    """Raised by SIGTERM/SIGINT/SIGHUP while a peer waits: ends the wait."""


def _stop(signum, _frame):
    raise Stop(signum)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def die(code, message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def fail(shm, what):
    err = shm.error()
    die(4 if err == NotFound else 3, f"ERROR {err.name} {what}: {shm.errorString()}")


def wait_for_line_or(seconds):
    """Without `seconds`: wait for a line on stdin or EOF. With `seconds`: wait for a
    line or until `seconds` pass; EOF (e.g. stdin is /dev/null) does not end the wait.
    SIGTERM/SIGINT/SIGHUP end the wait too (the action then finishes normally)."""
    # Handlers only around the wait: a blocking Qt call (attach()/lock() on a dead
    # holder's POSIX semaphore) must stay killable by SIGTERM/SIGINT (default action),
    # since Qt retries its semaphore waits on EINTR and Python could never run a handler.
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    saved = [signal.signal(s, _stop) for s in signals]
    try:
        _wait(seconds)
    except Stop:
        pass
    finally:
        for s, h in zip(signals, saved):
            signal.signal(s, h)


def _wait(seconds):
    if seconds is None:
        sys.stdin.readline()
        return
    deadline = time.monotonic() + seconds
    eof = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if eof:
            time.sleep(left)
            continue
        try:
            ready, _, _ = select.select([sys.stdin], [], [], left)
        except (OSError, ValueError):  # stdin closed outright
            eof = True
            continue
        if ready:
            if sys.stdin.readline():
                return
            eof = True


def type_name(t):
    for name, value in TYPES.items():
        if t == value:
            return name
    v = t.value
    if v == QNativeIpcKey.Type.Windows.value:
        return "windows"
    if 0 < v <= 0xFF:
        return f"systemv-{v}"  # System V with a non-default ftok() project id
    return "invalid" if v == 0 else f"unknown-{v}"


def make_shm(args):
    shm = QSharedMemory()
    t = TYPES[args.type]
    if args.native is not None:
        # Raw native key: no legacy key, so Qt uses the same native key for the semaphore.
        shm.setNativeKey(args.native, t)
        return shm
    via = args.via
    if via == "auto":
        via = "setkey" if args.type == "systemv" else "native"
    if via == "setkey":
        if QNativeIpcKey.legacyDefaultTypeForOs() != t:
            die(2, f"ERROR BadArguments setKey(): Qt's legacy default type is "
                   f"{type_name(QNativeIpcKey.legacyDefaultTypeForOs())}, not {args.type}")
        shm.setKey(args.key)  # exactly QSharedMemory(key)
    else:
        # A QNativeIpcKey that carries the legacy key, so Qt derives the lock's
        # semaphore from it exactly as setKey() does.
        shm.setNativeKey(QSharedMemory.legacyNativeKey(args.key, t))
    return shm


def payload(args):
    if args.hex is not None:
        try:
            return bytes.fromhex(args.hex)
        except ValueError as e:
            die(2, f"ERROR BadArguments --hex: {e}")
    if args.text is not None:
        return args.text.encode("utf-8", "surrogateescape")
    return b""


def view(shm, writable):
    ptr = shm.data() if writable else shm.constData()
    ptr.setsize(shm.size())
    return memoryview(ptr)


def check_range(shm, offset, length):
    size = shm.size()
    if offset < 0 or length < 0 or offset + length > size:
        shm.detach()
        die(2, f"ERROR BadArguments range: offset {offset} + length {length} "
               f"exceeds size {size}")


def lock(shm):
    if not shm.lock():
        fail(shm, "lock")


def act_keys(args):
    key = args.legacy_key
    out = {"qt_version": QT_VERSION_STR}
    for name, t in TYPES.items():
        shm_legacy = QSharedMemory.legacyNativeKey(key, t)
        shm_safe = QSharedMemory.platformSafeKey(key, t)
        sem_legacy = QSystemSemaphore.legacyNativeKey(key, t)
        sem_safe = QSystemSemaphore.platformSafeKey(key, t)
        out[f"shm_legacy_{name}"] = shm_legacy.nativeKey()
        out[f"shm_legacy_{name}_str"] = shm_legacy.toString()
        out[f"sem_legacy_{name}"] = sem_legacy.nativeKey()
        out[f"sem_legacy_{name}_str"] = sem_legacy.toString()
        out[f"shm_safe_{name}"] = shm_safe.nativeKey()
        out[f"shm_safe_{name}_str"] = shm_safe.toString()
        out[f"sem_safe_{name}"] = sem_safe.nativeKey()
        out[f"sem_safe_{name}_str"] = sem_safe.toString()
    # What QSharedMemory(key) / setKey(key) itself produces (the OS's legacy default type).
    probe = QSharedMemory()
    probe.setKey(key)
    out["setkey_type"] = type_name(probe.nativeIpcKey().type())
    out["setkey_native"] = probe.nativeKey()
    say(json.dumps(out, ensure_ascii=False))


def act_parse(args):
    k = QNativeIpcKey.fromString(args.text)
    probe = QSharedMemory()
    probe.setNativeKey(k)  # key() then shows the legacy key the string carries, if any
    say(json.dumps({
        "valid": k.isValid(),
        "type": type_name(k.type()),
        "type_value": k.type().value,
        "native": k.nativeKey(),
        "legacy": probe.key(),
        "str": k.toString(),
    }, ensure_ascii=False))


def act_create(args):
    shm = make_shm(args)
    data = payload(args)
    if not shm.create(args.size):
        fail(shm, "create")
    try:
        if data:
            check_range(shm, 0, len(data))
            lock(shm)
            view(shm, True)[: len(data)] = data
            shm.unlock()
        say(f"READY size={shm.size()} native={shm.nativeKey()}")
        wait_for_line_or(args.hold)
    finally:
        shm.detach()
    say("DETACHED")


def act_read(args):
    shm = make_shm(args)
    if not shm.attach(QSharedMemory.AccessMode.ReadOnly):
        fail(shm, "attach")
    length = shm.size() - args.offset if args.len is None else args.len
    check_range(shm, args.offset, length)
    lock(shm)
    data = bytes(view(shm, False)[args.offset: args.offset + length])
    shm.unlock()
    say(f"SIZE {shm.size()}")
    say(f"DATA {data.hex()}")
    shm.detach()


def act_write(args):
    shm = make_shm(args)
    data = payload(args)
    if not shm.attach(QSharedMemory.AccessMode.ReadWrite):
        fail(shm, "attach")
    check_range(shm, args.offset, len(data))
    lock(shm)
    view(shm, True)[args.offset: args.offset + len(data)] = data
    shm.unlock()
    say(f"WROTE {len(data)}")
    shm.detach()


def act_hold_lock(args):
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    try:
        lock(shm)
        try:
            say("LOCKED")
            wait_for_line_or(args.hold)
        finally:
            shm.unlock()
        say("UNLOCKED")
    finally:
        shm.detach()


def act_time_lock(args):
    # Timed from before attach(): Qt's attach() itself takes the lock's semaphore, so
    # against a held lock it is attach() that blocks; ATTACHED_AFTER_MS shows that.
    # STARTING says the clock runs: a caller that holds the lock releases it only after
    # that (Python and Qt take long to start on a busy machine).
    start = time.monotonic()
    say("STARTING")
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    say(f"ATTACHED_AFTER_MS {(time.monotonic() - start) * 1000:.1f}")
    lock(shm)
    say(f"LOCKED_AFTER_MS {(time.monotonic() - start) * 1000:.1f}")
    shm.unlock()
    shm.detach()


def act_hold_attached(args):
    shm = make_shm(args)
    if not shm.attach():
        fail(shm, "attach")
    try:
        say(f"ATTACHED size={shm.size()}")
        wait_for_line_or(args.hold)
    finally:
        shm.detach()
    say("DETACHED")


def act_count(args):
    # Add 1 to the little-endian u64 at --offset, --times times, each under lock(): with
    # other processes counting at once, the total is exact only if the locks exclude.
    shm = make_shm(args)
    if not shm.attach(QSharedMemory.AccessMode.ReadWrite):
        fail(shm, "attach")
    check_range(shm, args.offset, 8)
    say("READY")
    wait_for_line_or(None)
    end = args.offset + 8
    for _ in range(args.times):
        lock(shm)
        v = view(shm, True)
        v[args.offset:end] = (int.from_bytes(v[args.offset:end], "little") + 1).to_bytes(8, "little")
        shm.unlock()
    say(f"COUNTED {args.times}")
    shm.detach()


def main():
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)
    # Keys may hold any Unicode; print it raw as UTF-8 (no \uXXXX surrogate pairs).
    sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)

    def keyed(name, fn, help_):
        s = sub.add_parser(name, help=help_)
        g = s.add_mutually_exclusive_group()
        g.add_argument("--key", default="", help="legacy key, as QSharedMemory(key)")
        g.add_argument("--native", help="raw native key (no legacy key)")
        s.add_argument("--type", choices=TYPES, default="systemv")
        s.add_argument("--via", choices=("auto", "setkey", "native"), default="auto",
                       help="how --key reaches Qt: setKey(key) (systemv only) or "
                            "setNativeKey(legacyNativeKey(key, type)); auto = setkey "
                            "for systemv, native for posix")
        s.set_defaults(fn=fn)
        return s

    s = sub.add_parser("keys", help="native keys and string forms Qt derives from KEY")
    s.add_argument("legacy_key", metavar="KEY")
    s.set_defaults(fn=act_keys)
    s = sub.add_parser("parse", help="QNativeIpcKey.fromString(STRING)")
    s.add_argument("text", metavar="STRING")
    s.set_defaults(fn=act_parse)
    s = keyed("create", act_create, "create(N), write bytes, hold until told")
    s.add_argument("--size", type=int, required=True)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--hex")
    g.add_argument("--text")
    s.add_argument("--hold", type=float)
    s = keyed("read", act_read, "attach(ReadOnly), read under lock()")
    s.add_argument("--len", type=int)
    s.add_argument("--offset", type=int, default=0)
    s = keyed("write", act_write, "attach(ReadWrite), write under lock()")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--hex")
    g.add_argument("--text")
    s.add_argument("--offset", type=int, default=0)
    s = keyed("hold-lock", act_hold_lock, "attach, lock(), hold until told")
    s.add_argument("--hold", type=float)
    keyed("time-lock", act_time_lock, "attach and lock(), timing how long it blocked")
    s = keyed("hold-attached", act_hold_attached, "attach, hold until told")
    s.add_argument("--hold", type=float)
    s = keyed("count", act_count, "attach, wait for a line, add 1 under lock() N times")
    s.add_argument("--times", type=int, required=True)
    s.add_argument("--offset", type=int, default=0)

    args = p.parse_args()
    try:
        args.fn(args)
    except BrokenPipeError:
        sys.exit(141)


if __name__ == "__main__":
    main()
