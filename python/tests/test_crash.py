"""A Python holder killed with SIGKILL: the next locker, Python, Rust (the qshm CLI) or
Qt, gets the lock, and qshm lockers are told (previous_owner_died).

The bound is generous (the library's own recovery takes up to about 2 s for a POSIX
Qt-compatible lock whose holder died around its semaphore calls); what is tested is the
documented outcome, not its timing."""
import signal
import subprocess
import time

import pytest

import qshm
from conftest import KINDS, MODES, T, cli_key_args, handle, py_peer_argv, qt_peer_argv


def killed_holder(peers, key, kind, mode):
    """A Python process that holds the lock, killed with SIGKILL."""
    holder = peers(py_peer_argv("hold-lock", key, kind, mode))
    assert holder.expect("LOCKED") == "LOCKED died=False"
    holder.kill(signal.SIGKILL)
    assert holder.proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_python_gets_the_lock_of_a_killed_python_holder_and_is_told(key, kind, mode, peers):
    with handle(key, kind, mode) as shm:
        shm.create(64)
        killed_holder(peers, key, kind, mode)
        start = time.monotonic()
        guard = shm.lock(timeout=T)
        assert guard.previous_owner_died
        with guard as buf:
            assert bytes(buf[:4]) == b"held"  # what the dead holder wrote
        assert time.monotonic() - start < T
        again = shm.lock(timeout=T)  # told once
        assert not again.previous_owner_died
        again.unlock()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_rust_gets_the_lock_of_a_killed_python_holder_and_is_told(key, kind, mode, peers, cli):
    with handle(key, kind, mode) as shm:
        shm.create(64)
        killed_holder(peers, key, kind, mode)
        out = subprocess.run([cli, "lock", *cli_key_args(key, kind, mode), "--hold", "0"],
                             capture_output=True, text=True, timeout=T + 10)
        assert out.returncode == 0, out.stderr
        assert "(its previous holder had died)" in out.stdout, out.stdout


def test_qt_gets_the_lock_of_a_killed_python_holder(key, qt_python, peers):
    # System V: the kernel gives the dead holder's unit back (SEM_UNDO), so Qt gets the
    # lock (Qt has no way to be told). With a POSIX key only a qshm locker recovers the
    # unit of a dead qshm holder (README, "Dead holders"); Qt would wait for one.
    with handle(key, "systemv") as shm:
        shm.create(64)
        with shm.lock():
            pass
        killed_holder(peers, key, "systemv", "qt")
        locker = peers(qt_peer_argv(qt_python, "hold-lock", key, "systemv", "--hold", "0"))
        locker.expect("LOCKED", timeout=T)
        locker.expect("UNLOCKED")
        assert locker.finish() == (0, "")
