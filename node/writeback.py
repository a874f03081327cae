"""Start writing a received file to disk while the rest of its data set is still arriving.

Before a C-STORE is answered its file is fsynced. Left alone, the kernel writes the pages out only
then, so the fsync waits for all of them. Here the pages are handed to the disk as each fragment
is written (Linux's ``sync_file_range`` with ``SYNC_FILE_RANGE_WRITE``: start writing, do not
wait), and the fsync waits only for what is still in flight. Measured on this project's VM for a
512 KiB file written in two halves 1 ms apart: the fsync took 0.2-0.3 ms instead of 0.9 ms.

Nothing is promised here and no error is reported: the fsync still runs, and still reports every
write-back error, since starting write-back without waiting does not consume the file's error
state. Where the call does not exist (not Linux), this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2
KICK_BYTES = 128 * 1024
"""Start write-back each time this much more has been written."""


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
AVAILABLE = _SYNC_FILE_RANGE is not None


class Writeback:
    """Per open file: how far write-back has been started."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started_to = 0

    def written(self, size: int) -> None:
        """The file is now ``size`` bytes long: start writing what is new, once there is enough."""
        if _SYNC_FILE_RANGE is None or size - self.started_to < KICK_BYTES:
            return
        _SYNC_FILE_RANGE(self.fd, self.started_to, size - self.started_to, SYNC_FILE_RANGE_WRITE)
        self.started_to = size
