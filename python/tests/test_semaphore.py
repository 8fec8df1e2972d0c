"""SystemSemaphore: Qt's QSystemSemaphore, across threads and processes."""
import threading
import time

import pytest

import qshm
from conftest import T, py_peer_argv


@pytest.mark.parametrize("kind", ["systemv", "posix"])
def test_units_are_counted_and_the_creator_removes_it(key, kind):
    sem = qshm.SystemSemaphore(key, 2, qshm.SemaphoreMode.Create, type=kind)
    assert sem.key == key and sem.native_ipc_key.legacy_key == key
    assert sem.value() == 2
    assert sem.acquire() and sem.acquire(timeout=T)
    assert not sem.try_acquire()
    start = time.monotonic()
    assert not sem.acquire(timeout=0.2)
    assert 0.15 < time.monotonic() - start < 5
    sem.release(2)
    assert sem.value() == 2
    with sem:
        assert sem.value() == 1
    assert sem.value() == 2
    sem.release(0)
    with pytest.raises(ValueError):
        sem.release(-1)
    sem.close()
    with pytest.raises(ValueError, match="closed"):
        sem.value()


def test_another_process_takes_a_unit_released_here(key, peers):
    sem = qshm.SystemSemaphore(key, 0, "create")
    peer = peers(py_peer_argv("acquire", key))
    time.sleep(0.2)
    assert peer.proc.poll() is None, "no unit yet: it waits"
    sem.release()
    peer.expect("ACQUIRED")
    assert peer.finish() == (0, "")
    # System V semaphores (legacy keys) are operated with SEM_UNDO, as in Qt: the kernel
    # gives back the units of a process that has exited
    assert sem.value() == 1
    sem.remove()


def test_a_waiting_thread_keeps_the_semaphore_until_it_returns(key):
    sem = qshm.SystemSemaphore.native(f"/{key}", 0, "create")
    got = []
    t = threading.Thread(target=lambda: got.append(sem.acquire(timeout=T)))
    t.start()
    time.sleep(0.2)
    with pytest.raises(qshm.LockError, match="waits"):
        sem.remove()
    sem.release()
    t.join(T)
    assert got == [True]
    sem.remove()
