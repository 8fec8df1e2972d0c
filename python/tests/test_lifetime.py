"""Lifetime by qshm's rules: the last detach destroys, a process that exits (or is garbage
collected) detaches, nothing is tracked or deleted behind the user's back, and a handle
inherited through fork() is inert in the child."""
import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading

import pytest

import qshm
from conftest import KINDS, MODES, PY_PEER, T, handle


@pytest.mark.parametrize("kind", KINDS)
def test_size_is_exact_and_the_last_detach_destroys(key, kind):
    creator = handle(key, kind)
    assert not creator.is_attached and creator.size == 0
    creator.create(4097)
    assert creator.is_attached and creator.size == 4097 and not creator.read_only
    other = handle(key, kind)
    other.attach()
    assert other.size == 4097
    creator.detach()
    with other.lock() as buf:  # the segment lives while anyone is attached
        buf[0] = 1
    other.detach()
    with pytest.raises(qshm.NotFound):
        handle(key, kind).attach()


@pytest.mark.parametrize("kind", KINDS)
def test_the_with_block_and_garbage_collection_detach(key, kind):
    with handle(key, kind) as shm:
        shm.create(64)
    assert not shm.is_attached
    with pytest.raises(qshm.NotFound):
        handle(key, kind).attach()
    shm = handle(key, kind)
    shm.create(64)
    del shm
    gc.collect()
    with pytest.raises(qshm.NotFound):
        handle(key, kind).attach()


def test_a_handle_in_use_is_not_detached_under_its_lock(key):
    shm = qshm.SharedMemory(key)
    shm.create(64)
    guard = shm.lock()
    with pytest.raises(qshm.LockError, match="locked"):
        shm.detach()
    with pytest.raises(qshm.LockError, match="locked"):
        with shm:
            pass  # the end of the block tries to detach
    with pytest.raises(ZeroDivisionError):  # ... and never masks the block's own error
        with shm:
            1 / 0
    assert shm.is_attached
    guard.unlock()
    shm.detach()


@pytest.mark.parametrize("kind", KINDS)
def test_a_process_that_attaches_and_exits_leaves_the_segment_alone(key, kind, cli):
    # multiprocessing.shared_memory unlinks the segment when such a process exits (its
    # resource tracker); qshm leaves it to the last detach.
    with handle(key, kind) as shm:
        shm.create(64)
        with shm.lock() as buf:
            buf[:5] = b"alive"
        code = f"""
import qshm
shm = qshm.SharedMemory({key!r}, type={kind!r})
shm.attach()
with shm.lock_read() as buf:
    print(bytes(buf[:5]).decode())
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=T)
        assert (out.returncode, out.stdout, out.stderr) == (0, "alive\n", "")
        args = [key, "--len", "5"] + (["--posix"] if kind == "posix" else [])
        cat = subprocess.run([cli, "cat", *args], capture_output=True, timeout=T)
        assert cat.stdout == b"alive", cat.stderr
        assert "multiprocessing.resource_tracker" not in sys.modules


@pytest.mark.parametrize("kind", KINDS)
def test_interpreter_exit_unlocks_and_detaches_silently(key, kind):
    # the peer creates, locks, and exits with both still in module globals
    out = subprocess.run([sys.executable, PY_PEER, "exit-attached", key, kind, "128"],
                         capture_output=True, text=True, timeout=T)
    assert (out.returncode, out.stdout, out.stderr) == (0, "LEAVING\n", "")
    with pytest.raises(qshm.NotFound):
        handle(key, kind).attach()
    # ... and as an attacher while another process keeps the segment: the lock is free
    with handle(key, kind) as shm:
        shm.create(128)
        out = subprocess.run([sys.executable, PY_PEER, "exit-attached", key, kind, "0"],
                             capture_output=True, text=True, timeout=T)
        assert (out.returncode, out.stdout, out.stderr) == (0, "LEAVING\n", "")
        with shm.lock(timeout=T) as buf:
            assert bytes(buf[:6]) == b"exited"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_handle_inherited_through_fork_is_inert(key, kind, mode):
    with handle(key, kind, mode) as shm:
        shm.create(64)
        guard = shm.lock()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                guard.unlock()  # an inherited guard: does not unlock the parent's lock
                del guard
                try:
                    shm.lock(timeout=1)
                except qshm.LockError as e:
                    code = 0 if "fork" in str(e) else 2
                del shm
                gc.collect()  # the inherited handle only unmaps here
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with handle(key, kind) as other:
            other.attach()
            busy = []
            probe = threading.Thread(target=lambda: busy.append(other.try_lock() is None))
            probe.start()
            probe.join(T)
            assert busy == [True], "the parent still holds its lock"
            guard.unlock()
            with other.lock(timeout=T) as buf:
                buf[0] = 1
        with shm.lock() as buf:  # the parent's handle works on
            assert buf[0] == 1


def _child_uses_inherited(shm, queue):
    try:
        shm.lock(timeout=1)
        queue.put("locked")
    except qshm.LockError as e:
        queue.put(f"LockError: {e}")


def _child_attaches_anew(key, kind, queue):
    shm = qshm.SharedMemory(key, type=kind)
    shm.attach()
    with shm.lock(timeout=T) as buf:
        buf[:5] = b"child"
    shm.detach()
    queue.put("done")


@pytest.mark.parametrize("kind", KINDS)
def test_multiprocessing_children_attach_anew(key, kind):
    ctx = multiprocessing.get_context("fork")
    with handle(key, kind) as shm:
        shm.create(64)
        queue = ctx.Queue()
        child = ctx.Process(target=_child_uses_inherited, args=(shm, queue))
        child.start()
        assert "inherited through fork" in queue.get(timeout=T)
        child.join(T)
        child = ctx.Process(target=_child_attaches_anew, args=(key, kind, queue))
        child.start()
        assert queue.get(timeout=T) == "done"
        child.join(T)
        assert child.exitcode == 0
        with shm.lock_read() as buf:
            assert bytes(buf[:5]) == b"child"
        # spawn: the handle cannot travel, the key can
        with pytest.raises(TypeError, match="cannot pickle a qshm.SharedMemory"):
            pickle.dumps(shm)
        assert pickle.loads(pickle.dumps(shm.native_ipc_key)) == shm.native_ipc_key
