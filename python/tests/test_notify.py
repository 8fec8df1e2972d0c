"""Change notification across threads and processes, waits that release the GIL, and
waits that a signal handler ends."""
import signal
import threading
import time

import pytest

import qshm
from conftest import KINDS, MODES, T, handle, py_peer_argv


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_python_process_wakes_on_notify(key, kind, mode, peers):
    with handle(key, kind, mode) as shm:
        shm.create(64)
        waiter = peers(py_peer_argv("wait-change", key, kind))
        waiter.expect("READY")
        with shm.lock() as buf:
            buf[:8] = b"changed!"
        before = shm.generation()
        now = shm.notify_all()
        assert now != before and now.value == (before.value + 1) % 2**32
        assert waiter.expect("CHANGED") == f"CHANGED {b'changed!'.hex()}"
        assert waiter.finish() == (0, "")


def test_wait_for_change_times_out_with_the_generation_seen(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(8)
        seen = shm.generation()
        start = time.monotonic()
        assert shm.wait_for_change(seen, 0.2) == seen
        assert 0.15 < time.monotonic() - start < 5
        assert shm.wait_for_change(seen, 0) == seen
        new = shm.notify_all()
        assert shm.wait_for_change(seen, T) == new  # at once: the generation moved on
        assert int(new) == new.value and hash(new) == hash(shm.generation())
        assert repr(new) == f"qshm.Generation({new.value})"


def test_unlock_and_notify_wakes_a_waiting_thread(key):
    with qshm.SharedMemory(key) as shm, qshm.SharedMemory(key) as reader:
        shm.create(8)
        reader.attach(read_only=True)
        seen = reader.generation()
        woke = []
        ticks = [0]
        t = threading.Thread(target=lambda: woke.append(reader.wait_for_change(seen, T)))
        t.start()
        start = time.monotonic()
        while time.monotonic() - start < 0.3:  # runs while the waiter sleeps: GIL released
            ticks[0] += 1
        assert ticks[0] > 1000 and not woke
        guard = shm.lock()
        with guard as buf:
            buf[0] = 1
        assert not woke  # the end of a block does not notify by itself
        guard = shm.lock()
        new = guard.unlock_and_notify()
        t.join(T)
        assert woke == [new] and new != seen


def test_a_signal_handler_ends_a_wait(key, peers):
    class Interrupted(Exception):
        pass

    def raise_interrupted(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        with qshm.SharedMemory(key) as shm:
            shm.create(8)
            holder = peers(py_peer_argv("hold-lock", key, "systemv", "qt"))
            holder.expect("LOCKED")
            for wait in (lambda: shm.wait_for_change(shm.generation()), lambda: shm.lock()):
                timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1))
                start = time.monotonic()
                timer.start()
                with pytest.raises(Interrupted):
                    wait()  # both would wait for ever
                assert time.monotonic() - start < 5
                timer.join()
            holder.send()
            holder.expect("UNLOCKED")
            assert holder.finish() == (0, "")
    finally:
        signal.signal(signal.SIGUSR1, previous)
