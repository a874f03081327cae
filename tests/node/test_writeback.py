"""Write-back of a received file starts while it is being written, and the fsync still decides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node import writeback
from node.writeback import KICK_BYTES, Writeback

pytestmark = pytest.mark.timeout(30)


def test_write_back_is_started_for_each_new_stretch_of_enough_bytes(tmp_path: Path) -> None:
    assert writeback.AVAILABLE  # Linux: the call is there, so the node uses it
    fd = os.open(tmp_path / "received", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        started = Writeback(fd)
        os.write(fd, b"\x01" * (KICK_BYTES // 2))
        started.written(KICK_BYTES // 2)
        assert started.started_to == 0  # not enough yet: no call for every small fragment
        os.write(fd, b"\x02" * KICK_BYTES)
        started.written(KICK_BYTES * 3 // 2)
        assert started.started_to == KICK_BYTES * 3 // 2
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "received").read_bytes() == b"\x01" * (KICK_BYTES // 2) + b"\x02" * KICK_BYTES


def test_a_closed_descriptor_is_not_an_error_here(tmp_path: Path) -> None:
    """Errors are the fsync's to report; starting write-back never raises."""
    fd = os.open(tmp_path / "gone", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    Writeback(fd).written(KICK_BYTES * 2)
