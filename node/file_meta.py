"""The File Meta Information of a received instance, encoded directly.

pynetdicom starts every file it receives a C-STORE data set into with a File Meta Information group
that it builds as a pydicom Dataset and writes with pydicom, about 0.3 ms of Python per instance
on the thread that reads the socket. The group is fixed by PS3.10 7.1 (explicit VR little endian,
seven elements here), so :func:`install` makes pynetdicom's receive path write the same bytes with
``struct`` instead. ``tests/node/test_file_meta.py`` checks them against pydicom's.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from pydicom.filewriter import write_file_meta_info as pydicom_write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, dimse_messages
from pynetdicom.dsutils import create_file_meta as pynetdicom_create_file_meta

_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_LONG = struct.Struct("<HH2s2xL")  # group, element, VR, reserved, 32-bit length (OB, UN, SQ, ...)
_UL = struct.Struct("<L")
VERSION = b"\x00\x01"


class FileMetaValues(NamedTuple):
    """What pynetdicom's ``create_file_meta`` would put in the group, as plain values."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION


def _short(element: int, vr: bytes, value: bytes) -> bytes:
    return _SHORT.pack(0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = str(value).encode("ascii")
    return encoded + b"\0" if len(encoded) % 2 else encoded


def _text(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b" " if len(encoded) % 2 else encoded


def encode(values: FileMetaValues) -> bytes:
    """The whole group, (0002,0000) first, as pydicom writes it for these values."""
    body = b"".join((
        _LONG.pack(0x0002, 0x0001, b"OB", len(VERSION)) + VERSION,
        _short(0x0002, b"UI", _uid(values.sop_class_uid)),
        _short(0x0003, b"UI", _uid(values.sop_instance_uid)),
        _short(0x0010, b"UI", _uid(values.transfer_syntax)),
        _short(0x0012, b"UI", _uid(values.implementation_uid)),
        _short(0x0013, b"SH", _text(values.implementation_version)),
    ))
    return _short(0x0000, b"UL", _UL.pack(len(body))) + body


def create_file_meta(**values: Any) -> FileMetaValues:
    """Stands in for pynetdicom's ``create_file_meta`` in its receive path."""
    return FileMetaValues(**values)


def write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """Stands in for pydicom's ``write_file_meta_info`` in pynetdicom's receive path: one write."""
    if isinstance(file_meta, FileMetaValues):
        fp.write(encode(file_meta))
    else:
        pydicom_write_file_meta_info(fp, file_meta, enforce_standard=enforce_standard)


def install() -> None:
    """Make pynetdicom's C-STORE receive path (a process-wide switch) write the group directly.

    pynetdicom looks both names up in its module's namespace, as it does ``NamedTemporaryFile``
    (:func:`node.intake.install`).
    """
    namespace = vars(dimse_messages)
    if namespace.get("create_file_meta") is pynetdicom_create_file_meta:
        namespace["create_file_meta"] = create_file_meta
        namespace["write_file_meta_info"] = write_file_meta_info
