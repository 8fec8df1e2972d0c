"""Bad input raises a clear exception of the right class, never crashes the interpreter,
and makes nothing (the autouse leftover check)."""
import errno
import math

import pytest

import qshm
from conftest import KINDS, handle


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_key_is_invalid(kind):
    for op in (lambda s: s.create(64), lambda s: s.attach()):
        with pytest.raises(qshm.InvalidKey) as e:
            op(handle("", kind))
        assert isinstance(e.value, ValueError) and isinstance(e.value, qshm.SharedMemoryError)
        assert e.value.kind == "KeyError" and e.value.key == ""
    with pytest.raises(qshm.InvalidKey):
        qshm.SharedMemory.native("").create(64)


@pytest.mark.parametrize("kind", KINDS)
def test_a_huge_or_unusable_key_is_invalid_with_a_short_message(kind):
    with pytest.raises(qshm.InvalidKey) as e:
        qshm.SharedMemory.native("/" + "x" * 100_000, type="posix").create(64)
    assert len(str(e.value)) < 400, str(e.value)
    for bad in ("/a/b", "/sem.x", "/qshm-lock.x", "no-slash\0nul"):
        with pytest.raises(qshm.SharedMemoryError):
            qshm.SharedMemory.native(bad).create(64)


@pytest.mark.parametrize("size", [0, -1, -(2**80), 2**63, 2**64, 2**200])
def test_sizes_no_segment_can_have(key, size):
    with pytest.raises(qshm.InvalidSize) as e:
        qshm.SharedMemory(key).create(size)
    assert isinstance(e.value, ValueError)
    assert e.value.operation == "create" and e.value.key == key


def test_more_than_the_machine_holds_is_out_of_resources(key):
    with pytest.raises(qshm.OutOfResources) as e:
        qshm.SharedMemory(key, type="posix").create(2**62)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOMEM


@pytest.mark.parametrize("size", ["64", 64.0, None, b"64", [64]])
def test_a_size_of_another_type_is_a_type_error(key, size):
    with pytest.raises(TypeError, match="size must be an int"):
        qshm.SharedMemory(key).create(size)


@pytest.mark.parametrize("bad", [42, b"market", None, 1.5, ["market"]])
def test_a_key_of_another_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="key must be a str"):
        qshm.SharedMemory(bad)
    with pytest.raises(TypeError):
        qshm.SystemSemaphore(bad)


def test_a_key_that_is_not_unicode_text_is_refused():
    with pytest.raises(UnicodeEncodeError):
        qshm.SharedMemory("bad\udc80key")


def test_bad_options(key):
    with pytest.raises(qshm.InvalidKey, match="key type"):
        qshm.SharedMemory(key, type="windows")
    with pytest.raises(TypeError, match="qshm.KeyType"):
        qshm.SharedMemory(key, type=3)
    with pytest.raises(ValueError, match="lock_mode"):
        qshm.SharedMemory(key, lock_mode="slow")
    with pytest.raises(ValueError, match="permissions"):
        qshm.SharedMemory(key, permissions=0o10000)
    with pytest.raises(OverflowError):
        qshm.SharedMemory(key, permissions=-1)
    with pytest.raises(TypeError, match="type= is for legacy"):
        qshm.SharedMemory(qshm.NativeIpcKey("/x"), type="posix")
    with pytest.raises(qshm.InvalidKey, match="not a native key string"):
        qshm.NativeIpcKey.from_string("nonsense")
    with pytest.raises(ValueError, match="mode"):
        qshm.SystemSemaphore(key, 0, "sometimes")


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan])
def test_bad_timeouts(key, timeout):
    with qshm.SharedMemory(key) as shm:
        shm.create(8)
        for call in (shm.lock, shm.lock_read, lambda t: shm.wait_for_change(shm.generation(), t)):
            with pytest.raises(ValueError, match="timeout"):
                call(timeout)
    with pytest.raises(TypeError):
        qshm.SharedMemory(key).lock("soon")


def test_operations_in_the_wrong_state(key):
    shm = qshm.SharedMemory(key)
    for call in (shm.lock, shm.lock_read, shm.try_lock, shm.generation, shm.notify_all):
        with pytest.raises(qshm.LockError, match="not attached"):
            call()
    with pytest.raises(qshm.NotFound) as e:
        shm.detach()
    assert isinstance(e.value, FileNotFoundError) and e.value.errno == errno.ENOENT
    with pytest.raises(qshm.NotFound) as e:
        shm.attach()
    assert "doesn't exist" in str(e.value) and e.value.errno == errno.ENOENT
    shm.create(8)
    with pytest.raises(qshm.AlreadyExists, match="already attached"):
        shm.create(8)
    with pytest.raises(qshm.AlreadyExists) as e:
        qshm.SharedMemory(key).create(8)
    assert isinstance(e.value, FileExistsError) and e.value.errno == errno.EEXIST
    with pytest.raises(TypeError):
        shm.wait_for_change(5)
    shm.detach()


def test_exceptions_mirror_qt_categories():
    expected = {
        "PermissionDenied": (PermissionError, "PermissionDenied"),
        "InvalidSize": (ValueError, "InvalidSize"),
        "InvalidKey": (ValueError, "KeyError"),
        "AlreadyExists": (FileExistsError, "AlreadyExists"),
        "NotFound": (FileNotFoundError, "NotFound"),
        "LockError": (OSError, "LockError"),
        "OutOfResources": (OSError, "OutOfResources"),
        "UnknownError": (OSError, "UnknownError"),
    }
    for name, (base, kind) in expected.items():
        cls = getattr(qshm, name)
        assert issubclass(cls, qshm.SharedMemoryError) and issubclass(cls, base), name
        assert cls.kind == kind and cls.__module__ == "qshm"
    assert not issubclass(qshm.SharedMemoryError, OSError)
