"""Python and the qshm command-line tool (Rust) on the same segments and locks."""
import signal
import subprocess
import time

import pytest

import qshm
from conftest import KINDS, MODES, T, cli_key_args, handle


def run(cli, *args):
    out = subprocess.run([cli, *args], capture_output=True, timeout=T)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_python_writes_the_cli_reads_and_writes_back(key, kind, mode, cli):
    with handle(key, kind, mode) as shm:
        shm.create(4096)
        with shm.lock() as buf:
            buf[:11] = b"from python"
        assert run(cli, "cat", *cli_key_args(key, kind), "--len", "11") == b"from python"
        seen = shm.generation()
        run(cli, "write", *cli_key_args(key, kind), "--text", "from rust", "--offset", "100")
        assert shm.wait_for_change(seen, T) != seen, "qshm write notifies"
        with shm.lock_read() as buf:
            assert bytes(buf[100:109]) == b"from rust"
        assert f"{4096}" in run(cli, "stat", *cli_key_args(key, kind)).decode()


@pytest.mark.parametrize("kind", KINDS)
def test_python_attaches_to_a_segment_the_cli_holds(key, kind, cli, peers):
    holder = peers([cli, "create", *cli_key_args(key, kind), "100", "--fill", "0x61", "--hold", str(T)])
    holder.expect("created")
    shm = handle(key, kind)
    shm.attach()
    assert shm.size == 100
    with shm.lock() as buf:
        assert bytes(buf) == b"a" * 100
        buf[:2] = b"py"
    holder.kill(signal.SIGTERM)  # the CLI detaches; Python is the last user
    assert run(cli, "cat", *cli_key_args(key, kind), "--len", "2") == b"py"
    shm.detach()
    with pytest.raises(qshm.NotFound):
        handle(key, kind).attach()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_the_cli_and_python_exclude_each_other(key, kind, mode, cli, peers):
    with handle(key, kind, mode) as shm:
        shm.create(64)
        locker = peers([cli, "lock", *cli_key_args(key, kind, mode), "--hold", str(T)])
        locker.expect("locked")
        assert shm.try_lock() is None
        with pytest.raises(TimeoutError):
            shm.lock(timeout=0.2)
        locker.kill(signal.SIGTERM)
        with shm.lock(timeout=T) as buf:
            buf[:4] = b"mine"
            reader = peers([cli, "cat", *cli_key_args(key, kind), "--len", "4"])
            time.sleep(0.3)
            assert reader.proc.poll() is None, "qshm cat waits for the lock"
        assert reader.expect("mine") == "mine"
        assert reader.finish() == (0, "")


def test_keys_and_their_string_forms_agree_with_the_cli(key, cli):
    text = run(cli, "key", key).decode()
    for kind in ("systemv", "posix"):
        native = qshm.SharedMemory.legacy_native_key(key, kind)
        assert native.legacy_key == key
        assert native.type == (qshm.KeyType.SystemV if kind == "systemv" else qshm.KeyType.PosixRealtime)
        assert f"string:     {native}\n" in text, (str(native), text)
        assert qshm.NativeIpcKey.from_string(str(native)) == native
        assert qshm.SharedMemory(key, type=kind).native_key == native.native
    assert qshm.SharedMemory(key).native_ipc_key == qshm.SharedMemory.legacy_native_key(key)
    safe = qshm.SharedMemory.platform_safe_key(key)
    assert f"POSIX:      {safe}\n" in text
    with qshm.SharedMemory.native(safe) as shm:
        shm.create(16)
        assert run(cli, "stat", "--native", str(safe))
