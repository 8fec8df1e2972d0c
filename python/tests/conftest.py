"""Shared fixtures of the qshm Python tests: unique keys, peer processes (Python, the qshm
CLI, a real Qt 6 process), and the check that every test leaves nothing behind.

Run by `cargo test --all` (tests/python.rs builds the package into target/py-venv and runs
pytest in a private IPC and mount namespace), or by hand:
`QSHM_CLI=target/debug/qshm QSHM_QT_PEER=target/qt-venv/bin/python pytest python/tests`.
Environment: QSHM_CLI (the qshm binary), QSHM_QT_PEER (a Python with PyQt6), and
QSHM_PYTEST_STRICT=1, which turns a missing CLI or numpy into a failure instead of a skip
(the Rust harness sets it; Qt stays optional there, with a loud SKIP line of its own).
"""
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import qshm

ROOT = Path(__file__).resolve().parents[2]
QT_PEER_SCRIPT = ROOT / "interop" / "qt_peer.py"
PY_PEER = Path(__file__).with_name("py_peer.py")
STRICT = os.environ.get("QSHM_PYTEST_STRICT") == "1"
# Bound of every wait for another process: generous, so that a slow CI machine never
# fails a test that is right, while a hang still ends.
T = 30.0

KINDS = ["systemv", "posix"]
MODES = ["qt", "fast"]
_keys = itertools.count()


def unique_key(tag):
    """A legacy key no other test, run or process uses."""
    return f"qshm-py-{tag}-{os.getpid()}-{next(_keys)}-{time.monotonic_ns() % 10**9}"


def handle(key, kind, mode=None):
    return qshm.SharedMemory(key, type=kind, lock_mode=mode)


def require(what, reason):
    """Skip (or, in strict mode, fail) a test whose tool is missing."""
    if STRICT:
        pytest.fail(f"{what} is required in strict mode: {reason}")
    pytest.skip(f"{what}: {reason}")


@pytest.fixture
def key(request):
    return unique_key(request.node.originalname.replace("test_", "")[:24])


@pytest.fixture
def cli():
    path = os.environ.get("QSHM_CLI")
    if not path or not os.access(path, os.X_OK):
        require("the qshm CLI", "set QSHM_CLI to the qshm binary")
    return path


@pytest.fixture
def qt_python():
    path = os.environ.get("QSHM_QT_PEER")
    if not path:
        pytest.skip("Qt 6 (PyQt6) peer unavailable: set QSHM_QT_PEER to a Python that imports PyQt6")
    return path


@pytest.fixture
def np():
    try:
        import numpy
    except ImportError as e:
        require("numpy", str(e))
    return numpy


class Peer:
    """A child process that talks in lines: stdout read by a thread, so that every wait
    for a line is bounded."""

    def __init__(self, argv, env=None):
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix, timeout=T):
        """The next line starting with `prefix` (earlier lines are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"{self.argv[:3]}: no line {prefix!r} within {timeout} s; "
                                     f"seen {self.seen}") from None
            if line is None:
                raise AssertionError(f"{self.argv[:3]} ended (exit {self.proc.wait()}) without "
                                     f"{prefix!r}; seen {self.seen}; stderr: {self.proc.stderr.read()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def send(self, line=""):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=T):
        """Wait for the exit; returns (code, stderr)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait(timeout=timeout)
        return code, self.proc.stderr.read()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=T)


@pytest.fixture
def peers():
    """Start peers with `peers(argv)`; every one still running is killed at the end."""
    started = []

    def start(argv):
        peer = Peer(argv)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        if peer.proc.poll() is None:
            peer.kill()
        for stream in (peer.proc.stdin, peer.proc.stdout, peer.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def py_peer_argv(action, *args):
    return [sys.executable, PY_PEER, action, *args]


def qt_peer_argv(qt_python, action, key, kind, *args):
    return [qt_python, QT_PEER_SCRIPT, action, "--key", key, "--type", kind, *args]


def cli_key_args(key, kind, mode=None):
    args = [key]
    if kind == "posix":
        args.append("--posix")
    if mode == "fast":
        args.append("--fast")
    return args


# ------------------------------------------------------------------ nothing left behind

def _snapshot():
    """Every object a segment, semaphore or lock state can leave: /dev/shm entries, Qt's
    and qshm's key files in the temporary directory, System V segments and semaphore sets."""
    found = set()
    for name in os.listdir("/dev/shm"):
        found.add(("/dev/shm", name))
    tmp = os.environ.get("TMPDIR") or "/tmp"
    try:
        for name in os.listdir(tmp):
            if name.startswith("qipc_"):
                found.add((tmp, name))
    except FileNotFoundError:
        pass
    for table in ("shm", "sem"):
        try:
            with open(f"/proc/sysvipc/{table}", encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    found.add((f"System V {table}", f"key={fields[0]} id={fields[1]}"))
        except FileNotFoundError:
            pass
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    """Fail a test that leaves a segment, semaphore, lock state or key file behind
    (checked after its own fixtures are torn down: peers killed, handles dropped)."""
    import gc

    before = _snapshot()
    yield
    gc.collect()
    deadline = time.monotonic() + 5  # a killed peer's exit may still be under way
    while True:
        left = _snapshot() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"{request.node.name} left behind: {sorted(left)}"
