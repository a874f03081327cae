"""UID checks made before a UID becomes part of a file path.

A UID from the network is untrusted input: ``..``, separators, NULs or a 10 kB string must never
reach the file system. DICOM UIDs are digits and dots, at most 64 characters (PS3.5 9.1).
"""

from __future__ import annotations

import re

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_STRICT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


class InvalidUID(ValueError):
    """A UID that may not be used as an identifier or a path component."""


class MissingUID(InvalidUID):
    """A required UID is absent or empty (answered as a missing identifier, not a bad one)."""


def check_uid(value: object, what: str) -> str:
    """Return ``value`` stripped of DICOM padding if it is a safe UID, else raise InvalidUID.

    Components with leading zeros are not conformant but are sent by real modalities; they are
    accepted because they are still only digits and dots and cannot escape the spool. An absent
    or empty UID raises :class:`MissingUID`.
    """
    if not isinstance(value, str):
        raise MissingUID(f"{what} is missing")
    uid = value.rstrip("\x00 ")
    if not uid:
        raise MissingUID(f"{what} is empty")
    if len(uid) > MAX_UID_LENGTH:
        raise InvalidUID(f"{what} is {len(uid)} characters long (at most {MAX_UID_LENGTH})")
    if not _UID.fullmatch(uid):
        raise InvalidUID(f"{what} is not a UID (only digits and dots are allowed)")
    return uid


def is_conformant_uid(uid: str) -> bool:
    """True when no component has a leading zero (a warning-level problem, not an error)."""
    return bool(_STRICT_UID.fullmatch(uid))
