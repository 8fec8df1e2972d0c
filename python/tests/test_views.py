"""The lock block and its view: zero-copy, writable or read-only, and unusable (never
dangling) once the block ends."""
import gc
import struct
import subprocess
import sys
import threading
import time

import pytest

import qshm
from conftest import KINDS, MODES, T, handle


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_data_written_under_the_lock_is_read_by_another_handle(key, kind, mode):
    with handle(key, kind, mode) as writer:
        writer.create(4096)
        with writer.lock() as buf:
            assert isinstance(buf, memoryview)
            assert (buf.nbytes, buf.format, buf.readonly) == (4096, "B", False)
            buf[:5] = b"hello"
            struct.pack_into("<Q", buf, 8, 2**63 + 5)
        with handle(key, kind) as reader:
            reader.attach(read_only=True)
            assert reader.lock_mode == writer.lock_mode
            with reader.lock_read() as data:
                assert data.readonly
                assert bytes(data[:5]) == b"hello"
                assert struct.unpack_from("<Q", data, 8)[0] == 2**63 + 5


def test_the_view_is_released_at_the_end_of_the_block(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        with shm.lock() as buf:
            buf[0] = 1
        with pytest.raises(ValueError, match="released"):
            buf[0]
        with pytest.raises(ValueError, match="released"):
            buf[0] = 2
        with pytest.raises(ValueError, match="released"):
            bytes(buf)
        with shm.lock_read() as data:
            assert data[0] == 1


def test_a_view_cannot_be_made_after_unlock(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        guard = shm.lock()
        assert guard.locked and len(guard) == 64
        guard.unlock()
        assert not guard.locked
        with pytest.raises(BufferError, match="no longer held"):
            memoryview(guard)
        with pytest.raises(qshm.LockError, match="unlocked already"):
            guard.unlock()
        with pytest.raises(qshm.LockError, match="unlocked already"):
            with guard:
                pass


def test_numpy_shares_the_segment_without_a_copy(key, np):
    with qshm.SharedMemory(key) as shm, qshm.SharedMemory(key) as other:
        shm.create(4096)
        other.attach()
        with shm.lock() as buf:
            arr = np.frombuffer(buf, dtype=np.uint32)
            assert not arr.flags.owndata and arr.flags.writeable
            again = np.frombuffer(buf, dtype=np.uint8)
            assert arr.ctypes.data == again.ctypes.data, "both arrays are the same memory"
            arr[:] = np.arange(1024, dtype=np.uint32)
            assert buf[4] == 1, "a write through the array is a write to the view"
            del arr, again
        with other.lock_read() as data:
            assert np.array_equal(np.frombuffer(data, dtype=np.uint32), np.arange(1024))


def test_a_read_only_attachment_gives_read_only_views(key, np):
    with qshm.SharedMemory(key) as shm, qshm.SharedMemory(key) as reader:
        shm.create(64)
        reader.attach(read_only=True)
        assert reader.read_only
        with pytest.raises(qshm.PermissionDenied, match="read-only"):
            reader.lock()
        guard = reader.lock_read()
        assert guard.read_only
        with guard as data:
            assert data.readonly
            with pytest.raises(TypeError):
                data[0] = 1
            arr = np.frombuffer(data, dtype=np.uint8)
            assert not arr.flags.writeable
            with pytest.raises(ValueError):
                arr[0] = 1
            del arr


def test_a_read_guard_refuses_writers(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        guard = shm.lock_read()
        with pytest.raises(TypeError, match="read-write"):
            struct.pack_into("<I", guard, 0, 1)  # asks for a writable buffer
        assert bytes(memoryview(guard)[:4]) == bytes(4)
        guard.unlock()


def test_a_numpy_array_kept_past_the_block_is_reported_and_never_dangles(key, np):
    with qshm.SharedMemory(key) as shm, qshm.SharedMemory(key) as other:
        shm.create(4096)
        other.attach()
        with pytest.raises(BufferError, match="still alive"):
            with shm.lock() as buf:
                arr = np.frombuffer(buf, dtype=np.uint8)
                arr[0] = 7
        # unlocked all the same: another handle takes the lock at once
        guard = other.try_lock()
        assert guard is not None
        guard.unlock()
        # the array still reads the (still mapped) segment; the handle cannot go meanwhile
        assert arr[0] == 7
        with pytest.raises(BufferError, match="view"):
            shm.detach()
        del arr
        gc.collect()
        shm.detach()
        assert not shm.is_attached


def test_a_slice_kept_past_the_block_is_reported(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        with pytest.raises(BufferError, match="a view"):
            with shm.lock() as buf:
                head = buf[:8]
                head[0] = 9
        assert head[0] == 9
        with pytest.raises(BufferError):
            shm.detach()
        head.release()
        shm.detach()


def test_an_exception_in_the_block_unlocks_and_is_not_masked(key, np):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        with pytest.raises(ZeroDivisionError):
            with shm.lock() as buf:
                arr = np.frombuffer(buf, dtype=np.uint8)  # alive when the block raises
                1 / 0
        del arr
        with shm.try_lock() as buf:  # unlocked
            assert buf[0] == 0


def test_memoryview_of_a_guard_holds_the_lock_while_it_lives(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        view = memoryview(shm.lock())
        view[0] = 3
        del view
        gc.collect()
        with shm.lock(timeout=0) as buf:  # the guard went with its view: unlocked
            assert buf[0] == 3


def test_a_second_lock_from_the_same_thread_is_an_error_not_a_deadlock(key):
    for kind in KINDS:
        for mode in MODES:
            with handle(f"{key}-{kind}-{mode}", kind, mode) as shm:
                shm.create(64)
                with shm.lock():
                    with pytest.raises(qshm.LockError, match="already holds"):
                        shm.lock(timeout=T)


@pytest.mark.parametrize("mode", MODES)
def test_another_thread_waits_with_the_gil_released(key, mode):
    with qshm.SharedMemory(key, lock_mode=mode) as shm:
        shm.create(64)
        got = []
        ticks = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks[0] += 1

        def locker():
            with shm.lock(timeout=T) as buf:
                got.append(bytes(buf[:4]))

        with shm.lock() as buf:
            buf[:4] = b"mine"
            waiter = threading.Thread(target=locker)
            waiter.start()
            time.sleep(0.3)
            assert not got, "the lock excludes threads of one process too"
            spinner = threading.Thread(target=spin)
            spinner.start()
            before = ticks[0]
            time.sleep(0.3)
            assert ticks[0] - before > 1000, "the waiting thread released the GIL"
            buf[:4] = b"done"
        waiter.join(T)
        stop.set()
        spinner.join(T)
        assert got == [b"done"]


def test_only_the_locking_thread_unlocks(key):
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        guard = shm.lock()
        errors = []

        def other():
            try:
                guard.unlock()
            except qshm.LockError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join(T)
        assert errors and "thread that locked" in errors[0]
        assert guard.locked
        guard.unlock()


def test_try_lock_and_timeouts(key):
    with qshm.SharedMemory(key) as shm, qshm.SharedMemory(key) as other:
        shm.create(64)
        other.attach()
        with shm.lock():
            # the same process, another handle, another thread: busy
            result = []
            t = threading.Thread(target=lambda: result.append(
                (other.try_lock(), other.try_lock_read())))
            t.start()
            t.join(T)
            assert result == [(None, None)]

            def timed():
                start = time.monotonic()
                with pytest.raises(TimeoutError, match="not obtained within 0.2 s"):
                    other.lock(timeout=0.2)
                result.append(time.monotonic() - start)

            t = threading.Thread(target=timed)
            t.start()
            t.join(T)
            assert 0.15 < result[-1] < 5, result
        with other.try_lock() as buf:
            assert buf.nbytes == 64


def test_a_guard_dropped_on_another_thread_is_leaked_with_a_warning(key):
    # Only the locking thread may unlock; a guard whose last reference goes on another
    # thread is leaked, with a warning, never unlocked there (in a child process: the
    # leaked lock keeps the segment until that process ends).
    code = f"""
import gc, threading, qshm
shm = qshm.SharedMemory({key!r})
shm.create(64)
box = []
t = threading.Thread(target=lambda: box.append(shm.lock()))
t.start()
t.join()
box.clear()  # the guard goes here, on the main thread
gc.collect()
print("dropped", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=T)
    assert out.returncode == 0 and out.stdout == "dropped\n", out.stderr
    assert "was dropped by another thread than the one that locked it" in out.stderr
    # the process is gone: its segment is stale, and the next create reclaims it
    with qshm.SharedMemory(key) as shm:
        shm.create(64)
        with shm.lock(timeout=T) as buf:
            assert buf[0] == 0


def test_a_guard_is_reused_only_when_nobody_refers_to_it(key):
    # an unlocked guard is kept by its handle and re-armed by the next lock, but only if
    # nothing else refers to it; a guard kept by the caller is never re-armed under it
    shm = qshm.SharedMemory(key)
    shm.create(64)
    kept = shm.lock()
    kept.unlock()
    for _ in range(3):
        with shm.lock() as buf:
            buf[0] += 1
        assert not kept.locked
    again = shm.lock()
    assert again is not kept and again.locked and not kept.locked
    again.unlock()
    del kept, again
    shm.lock().unlock()  # parks a guard in the handle
    del shm  # ... which does not keep the handle (or the segment) alive
    gc.collect()
    with pytest.raises(qshm.NotFound):
        qshm.SharedMemory(key).attach()
