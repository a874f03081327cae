"""Where a received data set lands while it arrives: a file in the spool's ``.tmp``, never memory.

pynetdicom assembles a C-STORE data set in memory unless ``STORE_RECV_CHUNKED_DATASET`` is on;
then it writes the Part-10 file (preamble, its own file meta, the data set as received) into a
``NamedTemporaryFile`` as the P-DATA fragments arrive. :func:`install` makes that file a
:class:`ReceivedFile` in the receiving node's spool ``.tmp`` folder, so that

- memory stays bounded whatever the instance's size;
- the file is on the spool's file system and is renamed into place, never copied;
- writing stops once the instance exceeds ``max_instance_mb``, once free space would fall below
  the spool's watermark, or when the file system refuses the write: the rest of the data set is
  read and dropped, the file is truncated, and the C-STORE handler answers with a failure status;
- its pages start on their way to the disk as they are written (:mod:`node.writeback`), so the
  fsync before the answer waits for less;
- its SHA-256 is computed from the bytes as they are written, never by reading the file back
  (hashlib lets go of the GIL for them), and the handler reads its header from the first bytes,
  kept in memory as they are written (:data:`HEAD_BYTES`); when the request is handed to another
  thread, its fsync starts on the receiving thread the moment the data set is complete
  (:func:`flush_early`).

pynetdicom's temporary file has no per-association argument; the file is created on the DUL
thread of the association that receives it, which is how the node (its AE) is found.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import os
import struct
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pynetdicom import AE, _config, dimse_messages
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event

from node import file_meta
from node.spool import Spool
from node.writeback import Writeback

PREFIX = "recv-"
_SPACE_CHECK_BYTES = 16 * 1024 * 1024  # free space is checked each time this much more was written
_META_OFFSET = 132  # 128-byte preamble and "DICM"
_GROUP_LENGTH = struct.Struct("<8xL")  # (0002,0000) UL, explicit VR little endian
HEAD_BYTES = 64 * 1024
"""The first bytes of each file are also kept in memory: the handler reads the header from them."""


class IntakeProblem(enum.Enum):
    """Why writing a received data set stopped before its end."""

    TOO_LARGE = "too_large"
    LOW_DISK = "low_disk"
    WRITE_FAILED = "write_failed"


@dataclass(frozen=True)
class IntakeLimits:
    max_instance_bytes: int  # 0 = no cap
    spool: Spool


class _Output:
    """The ``file`` attribute pynetdicom flushes after every fragment (writes are unbuffered)."""

    def flush(self) -> None:
        return None


def _discard(fd: int, path: str) -> None:
    """Close and remove a received file nobody claimed (an association aborted mid-transfer)."""
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.unlink(path)
    except OSError:
        pass


class ReceivedFile:
    """A data set being received: the stand-in for pynetdicom's ``NamedTemporaryFile``."""

    def __init__(self, limits: IntakeLimits) -> None:
        self.limits = limits
        fd, self.name = tempfile.mkstemp(prefix=PREFIX, suffix=".part", dir=limits.spool.tmp_dir)
        self._fd = fd
        self.file = _Output()
        self.size = 0  # bytes written, file meta included
        self.received = 0  # bytes received, written or not
        self.problem: IntakeProblem | None = None
        self.error = ""
        self._hasher = hashlib.sha256()  # of every byte written, as it is written
        self._head = bytearray()  # the first HEAD_BYTES written
        self._sync_lock = threading.Lock()
        self._sync_error: OSError | None = None
        self._synced = False
        self._next_space_check = 0
        self._writeback = Writeback(fd)  # the disk starts on the pages while the rest arrives
        self._finalizer = weakref.finalize(self, _discard, fd, self.name)

    @property
    def sha256(self) -> str:
        """The hash of what was written (asked once the data set is complete: the receiving thread
        has written its last byte before it hands the request on)."""
        return self._hasher.hexdigest()

    def write(self, data: bytes) -> int:
        self.received += len(data)
        if self.problem is None:
            self._check(len(data))
        if self.problem is None:
            try:
                self._write_all(data)
            except OSError as exc:
                self._stop(IntakeProblem.WRITE_FAILED, exc.strerror or str(exc))
        return len(data)

    def _check(self, incoming: int) -> None:
        cap = self.limits.max_instance_bytes
        if cap and self.received > cap:
            self._stop(IntakeProblem.TOO_LARGE, f"larger than {cap // (1024 * 1024)} MiB")
        elif self.size + incoming >= self._next_space_check:
            self._next_space_check = self.size + incoming + _SPACE_CHECK_BYTES
            try:
                self.limits.spool.check_space(_SPACE_CHECK_BYTES)
            except OSError as exc:
                problem = IntakeProblem.LOW_DISK if exc.errno == errno.ENOSPC else IntakeProblem.WRITE_FAILED
                self._stop(problem, str(exc))

    def _write_all(self, data: bytes) -> None:
        self._hasher.update(data)  # a write that fails stops the intake, and its hash is not asked
        if len(self._head) < HEAD_BYTES:
            self._head += data[:HEAD_BYTES - len(self._head)]
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]
        self._writeback.written(self.size)

    def _stop(self, problem: IntakeProblem, error: str) -> None:
        """Write nothing more and give back the space already used."""
        self.problem, self.error = problem, error
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass

    def sync(self) -> None:
        """fsync the file (before the spool renames it into place); once.

        The handler's fsync thread calls it and the spool asks again: a second call returns once the
        first is done, or raises the first call's error. fsync is never retried after a failure: Linux
        forgets a write-back error once it has reported it, so a second fsync could succeed over
        lost data.
        """
        with self._sync_lock:
            if self._sync_error is not None:
                raise self._sync_error
            if self._synced:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._sync_error = exc
                raise
            self._synced = True

    @property
    def head(self) -> bytes:
        """The file's first bytes (up to :data:`HEAD_BYTES`) as written, read from memory."""
        return bytes(self._head)

    def dataset_offset(self) -> int:
        """Where the data set starts: after the preamble and the file meta group."""
        end = _META_OFFSET + _GROUP_LENGTH.size
        if len(self._head) >= end:
            return end + int(_GROUP_LENGTH.unpack_from(self._head, _META_OFFSET)[0])
        with open(self._fd, "rb", closefd=False) as handle:
            handle.seek(_META_OFFSET)
            group_length: int = _GROUP_LENGTH.unpack(handle.read(_GROUP_LENGTH.size))[0]
        return end + group_length

    def reader(self) -> BinaryIO:
        """A reader of the file from its start (the caller closes it)."""
        return open(self.name, "rb")

    def close(self) -> None:
        """pynetdicom closes (and then unlinks) the file once the handler has answered."""
        self._finalizer.detach()
        try:
            os.close(self._fd)
        except OSError:
            pass


def flush_early(received: object) -> None:
    """Start the fsync of a completely received file before its handler asks for it.

    Called on the association's DUL thread once the request is on its way to a handler on the
    association thread (most C-STORE requests are served on the DUL thread itself, see
    :mod:`node.wakeups`, and their handler's spool syncs the file in turn): the peer waits for
    the answer before it sends more, so this thread has nothing else to do, and the fsync runs
    here while the handler reads the header, with no hand-off to another thread. The handler
    then finds it done, or waits for it in :meth:`ReceivedFile.sync`; an error is
    remembered by the file and answered by the handler.
    """
    if not isinstance(received, ReceivedFile) or received.problem is not None:
        return
    with contextlib.suppress(OSError):  # remembered by the file, which raises it to the handler
        received.sync()


class Intake:
    """The received files of every node in this process, found by the AE they were sent to."""

    def __init__(self) -> None:
        self._limits: weakref.WeakKeyDictionary[AE, IntakeLimits] = weakref.WeakKeyDictionary()
        self._files: weakref.WeakValueDictionary[str, ReceivedFile] = weakref.WeakValueDictionary()
        self._fallback: IntakeLimits | None = None
        self._lock = threading.Lock()

    def register(self, ae: AE, limits: IntakeLimits) -> None:
        with self._lock:
            self._limits[ae] = limits
            self._fallback = limits

    def open(self, *_args: object, **_kwargs: object) -> ReceivedFile:
        """Called by pynetdicom on the association's DUL thread when a C-STORE data set starts."""
        thread = threading.current_thread()
        with self._lock:
            limits = self._limits.get(thread.assoc.ae) if isinstance(thread, DULServiceProvider) else None
            # Another AE in this process (a test's or the demo's folder store): the last node's spool.
            limits = limits or self._fallback
        if limits is None:
            raise RuntimeError("no node has installed the intake")
        received = ReceivedFile(limits)
        with self._lock:
            self._files[received.name] = received
        return received

    def claim(self, path: Path) -> ReceivedFile | None:
        """The file behind ``event.dataset_path``."""
        with self._lock:
            return self._files.get(str(path))


INTAKE = Intake()


def received_file(event: Event) -> ReceivedFile | None:
    """The file a C-STORE event's data set was received into; None if it was kept in memory."""
    try:
        path: Path | None = event.dataset_path  # None when the data set was kept in memory
    except AttributeError:  # not a C-STORE request
        return None
    return INTAKE.claim(path) if isinstance(path, Path) else None


def dataset_bytes(event: Event) -> bytes:
    """A C-STORE event's data set as received (no file meta), from memory or from its file.

    For small SCPs in the same process as a node (the folder store); the node itself never
    reads a data set whole.
    """
    received = received_file(event)
    if received is None:
        request = event.request
        data = request.DataSet if isinstance(request, C_STORE) else None
        return data.getvalue() if data is not None else b""
    with received.reader() as handle:
        handle.seek(received.dataset_offset())
        return handle.read()


def install(ae: AE, limits: IntakeLimits) -> None:
    """Receive this AE's C-STORE data sets into files in its spool (process-wide pynetdicom switch)."""
    INTAKE.register(ae, limits)
    _config.STORE_RECV_CHUNKED_DATASET = True
    # pynetdicom names the class in its module; the module's namespace is where it is looked up.
    vars(dimse_messages)["NamedTemporaryFile"] = INTAKE.open
    file_meta.install()
