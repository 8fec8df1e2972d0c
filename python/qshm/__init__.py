"""qshm: Qt-compatible named shared memory for Python, without Qt.

Named shared-memory segments with a system-wide lock, byte-compatible with Qt's
``QSharedMemory``, ``QSystemSemaphore`` and ``QNativeIpcKey`` (Qt 5.15 and 6) and with Rust
programs using the qshm crate: the same key gives the same segment and the same lock.

    import qshm

    with qshm.SharedMemory("market") as shm:      # the legacy key a Qt program would use
        shm.create(4096)                          # AlreadyExists if someone else has it
        with shm.lock() as buf:                   # system-wide lock; buf: a memoryview
            buf[:5] = b"hello"
    # the last handle to detach destroys the segment

A segment lives while any process is attached and is destroyed by the last detach, also
after crashes (the next ``create`` reclaims it); nothing is registered with
``multiprocessing``'s resource tracker. See ``help(qshm.SharedMemory)`` and
``help(qshm.LockGuard)``.
"""

from ._errors import (
    AlreadyExists,
    InvalidKey,
    InvalidSize,
    LockError,
    NotFound,
    OutOfResources,
    PermissionDenied,
    SharedMemoryError,
    UnknownError,
)
from ._qshm import (
    Generation,
    KeyType,
    LockGuard,
    LockMode,
    NativeIpcKey,
    SemaphoreMode,
    SharedMemory,
    SystemSemaphore,
    __version__,
)

__all__ = [
    "SharedMemory",
    "LockGuard",
    "Generation",
    "SystemSemaphore",
    "NativeIpcKey",
    "KeyType",
    "LockMode",
    "SemaphoreMode",
    "SharedMemoryError",
    "PermissionDenied",
    "InvalidSize",
    "InvalidKey",
    "AlreadyExists",
    "NotFound",
    "LockError",
    "OutOfResources",
    "UnknownError",
    "__version__",
]
