"""Durable write order and the spool's guarantees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db.settings import GeneralSettings
from node.settings import NodeSettings
from node.spool import LowDiskSpace, Spool


def test_from_settings_uses_the_configured_folder_or_data_dir(tmp_path: Path) -> None:
    general = GeneralSettings(data_dir=tmp_path / "data")
    default = Spool.from_settings(NodeSettings(min_free_disk_mb=2), general)
    assert (default.root, default.min_free_bytes) == (general.spool_dir, 2 * 1024 * 1024)
    assert Spool.from_settings(NodeSettings(spool_dir=tmp_path / "elsewhere"), general).root == tmp_path / "elsewhere"


def test_write_fsync_rename_dirsync_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The success response may only follow: write, fsync, rename, directory fsync."""
    spool = Spool(tmp_path / "spool")
    calls: list[str] = []
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if Path(f"/proc/self/fd/{fd}").resolve().is_dir() else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr("node.spool.os.write", write)
    monkeypatch.setattr("node.spool.os.fsync", fsync)
    monkeypatch.setattr("node.spool.os.replace", replace)
    stored = spool.store("1.2", "1.2.3", "1.2.3.4", [b"meta", b"body"])
    # New study and series folders are made durable in their parents before the file goes in.
    assert calls == ["write", "write", "fsync-file", "fsync-dir", "fsync-dir", "rename", "fsync-dir"]
    assert (tmp_path / "spool" / stored.relative_path).read_bytes() == b"metabody"
    calls.clear()
    spool.store("1.2", "1.2.3", "1.2.3.5", [b"x"])
    assert calls == ["write", "fsync-file", "rename", "fsync-dir"]


def test_replace_is_reported_and_atomic(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert not spool.store("1", "1.1", "1.1.1", [b"first"]).replaced
    again = spool.store("1", "1.1", "1.1.1", [b"second"])
    assert again.replaced and spool.absolute(again.relative_path).read_bytes() == b"second"
    assert spool.instance_files() == ["1/1.1/1.1.1.dcm"]


def test_low_space_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=10**15)
    with pytest.raises(LowDiskSpace):
        spool.store("1", "1.1", "1.1.1", [b"x"])
    assert spool.instance_files() == [] and spool.leftover_temp_files() == []


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)

    def broken(fd: int, data: bytes) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("node.spool.os.write", broken)
    with pytest.raises(OSError):
        spool.store("1", "1.1", "1.1.1", [b"x"])
    assert spool.leftover_temp_files() == [] and spool.instance_files() == []


def test_instance_files_ignores_temp_and_quarantine(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.store("1", "1.1", "1.1.1", [b"x"])
    (tmp_path / ".tmp" / "x.part").write_bytes(b"partial")
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "1.1.2.dcm").write_bytes(b"bad")
    assert spool.instance_files() == ["1/1.1/1.1.1.dcm"]
    assert [p.name for p in spool.leftover_temp_files()] == ["x.part"]
