"""The exceptions of qshm: one class per category of Qt's ``QSharedMemory::SharedMemoryError``.

Every one derives from :class:`SharedMemoryError`; those with an OS error number behind them
are also ``OSError`` subclasses (``errno`` is set), and bad arguments are also ``ValueError``
subclasses, so ``except FileNotFoundError`` or ``except ValueError`` catch them too.
The message is the library's one line, naming the operation and the key.
"""

__all__ = [
    "SharedMemoryError",
    "PermissionDenied",
    "InvalidSize",
    "InvalidKey",
    "AlreadyExists",
    "NotFound",
    "LockError",
    "OutOfResources",
    "UnknownError",
]


class SharedMemoryError(Exception):
    """Base class of qshm's errors.

    Attributes: ``kind`` (the name of Qt's ``SharedMemoryError`` value), ``operation``
    (``"create"``, ``"attach"``, ``"lock"``, ...) and ``key`` (the legacy key, else the native
    key).
    """

    kind = "UnknownError"
    operation = None
    key = None

    def __str__(self):
        # the library's message, also for the OSError subclasses (whose own __str__ would
        # print "[Errno N] strerror" once errno is set)
        return str(self.args[0]) if self.args else ""


class PermissionDenied(SharedMemoryError, PermissionError):
    """The caller lacks the permissions the operation needs (``EACCES``): another user's
    segment, ``lock()`` on a read-only attachment, or a segment this user may only read."""

    kind = "PermissionDenied"


class InvalidSize(SharedMemoryError, ValueError):
    """A size that no segment can have: below 1 byte, or beyond the address space."""

    kind = "InvalidSize"


class InvalidKey(SharedMemoryError, ValueError):
    """An empty or unusable key (Qt's ``KeyError``, renamed so as not to shadow Python's)."""

    kind = "KeyError"


class AlreadyExists(SharedMemoryError, FileExistsError):
    """``create`` found a live segment (or another user's object) under the key."""

    kind = "AlreadyExists"


class NotFound(SharedMemoryError, FileNotFoundError):
    """No segment has this key (``attach``), or the handle is not attached (``detach``)."""

    kind = "NotFound"


class LockError(SharedMemoryError, OSError):
    """The lock could not be taken: not attached, held already by this thread, in a
    ``fork()``ed child (attach anew there), or the lock primitive failed (``errno`` set)."""

    kind = "LockError"


class OutOfResources(SharedMemoryError, OSError):
    """Not enough memory, ``/dev/shm`` space or system resources (``ENOMEM``, ``ENOSPC``, ...)."""

    kind = "OutOfResources"


class UnknownError(SharedMemoryError, OSError):
    """Any other failure of the system (``errno`` set when the OS gave one)."""

    kind = "UnknownError"


# Shown (and pickled) as qshm.NotFound etc., where users import them from.
for _name in __all__:
    globals()[_name].__module__ = "qshm"
del _name
