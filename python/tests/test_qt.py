"""Python and a real Qt 6 process (PyQt6 driving interop/qt_peer.py) on the same key:
data both ways, and one lock (a counter incremented by both at once stays exact)."""
import struct

import pytest

import qshm
from conftest import KINDS, T, handle, py_peer_argv, qt_peer_argv


@pytest.mark.parametrize("kind", KINDS)
def test_python_creates_qt_reads_and_writes(key, kind, qt_python, peers):
    with handle(key, kind) as shm:
        shm.create(256)
        with shm.lock() as buf:
            buf[:11] = b"from python"
        reader = peers(qt_peer_argv(qt_python, "read", key, kind, "--len", "11"))
        assert reader.expect("SIZE") == "SIZE 256"
        assert reader.expect("DATA") == f"DATA {b'from python'.hex()}"
        assert reader.finish() == (0, "")
        writer = peers(qt_peer_argv(qt_python, "write", key, kind, "--text", "from qt", "--offset", "100"))
        assert writer.expect("WROTE") == "WROTE 7"
        assert writer.finish() == (0, "")
        with shm.lock_read() as buf:
            assert bytes(buf[100:107]) == b"from qt"


@pytest.mark.parametrize("kind", KINDS)
def test_qt_creates_python_attaches_reads_and_writes(key, kind, qt_python, peers):
    creator = peers(qt_peer_argv(qt_python, "create", key, kind, "--size", "4096", "--text", "qt made this",
                                 "--hold", str(T)))
    assert creator.expect("READY").startswith("READY size=4096")
    shm = handle(key, kind)
    shm.attach()
    assert shm.size == 4096 and shm.lock_mode == qshm.LockMode.QtCompatible
    with shm.lock() as buf:
        assert bytes(buf[:12]) == b"qt made this"
        buf[:14] = b"python was here"[:14]
    reader = peers(qt_peer_argv(qt_python, "read", key, kind, "--len", "14"))
    assert reader.expect("DATA") == f"DATA {b'python was her'.hex()}"
    assert reader.finish() == (0, "")
    creator.send()  # Qt detaches first (Qt never removes a POSIX segment itself) ...
    creator.expect("DETACHED")
    assert creator.finish() == (0, "")
    shm.detach()  # ... and the last detach, Python's, destroys it (checked: nothing left)


@pytest.mark.parametrize("kind", KINDS)
def test_a_counter_under_both_locks_is_exact(key, kind, qt_python, peers):
    times = 20000
    with handle(key, kind) as shm:
        shm.create(64)
        with shm.lock():  # makes Qt's semaphore (and qshm's lock state) before Qt opens it
            pass
        counters = [peers(qt_peer_argv(qt_python, "count", key, kind, "--times", str(times), "--offset", "8"))]
        counters += [peers(py_peer_argv("count", key, kind, "qt", str(times), "8")) for _ in range(2)]
        for counter in counters:
            counter.expect("READY")
        for counter in counters:
            counter.send("go")
        for counter in counters:
            assert counter.expect("COUNTED", timeout=120) == f"COUNTED {times}"
            assert counter.finish() == (0, "")
        with shm.lock_read() as buf:
            assert struct.unpack_from("<Q", buf, 8)[0] == 3 * times


@pytest.mark.parametrize("kind", KINDS)
def test_qt_and_python_exclude_each_other(key, kind, qt_python, peers):
    with handle(key, kind) as shm:
        shm.create(64)
        with shm.lock():
            pass
        holder = peers(qt_peer_argv(qt_python, "hold-lock", key, kind, "--hold", str(T)))
        holder.expect("LOCKED")
        assert shm.try_lock() is None
        with pytest.raises(TimeoutError):
            shm.lock(timeout=0.3)
        holder.send()
        holder.expect("UNLOCKED")
        with shm.lock(timeout=T) as buf:
            buf[0] = 1
        assert holder.finish() == (0, "")
