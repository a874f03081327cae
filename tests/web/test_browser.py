"""The real server in a real browser: uvicorn on a free port, Debian's headless Chromium in front."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.conftest import free_port, require_tool
from tests.web.conftest import PATIENT_ID, STUDY_RECEIVING, STUDY_SENT, Scenario, client_over

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(scenario: Scenario) -> Iterator[str]:
    """The console served by uvicorn in a thread; its base URL."""
    port = free_port()
    app = client_over(scenario).app
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the console did not start"
    yield url
    instance.should_exit = True
    thread.join(timeout=10)


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("chromium")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", *arguments],
                          capture_output=True, text=True, timeout=40, check=False,
                          env={**os.environ, "HOME": str(tmp_path)})


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (filtered) scanlines of a PNG, with nothing but zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, size = 8, b"", (0, 0)
    while offset < len(data):
        (length,), kind = struct.unpack(">I", data[offset:offset + 4]), data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_the_studies_page_renders_in_chromium(server: str, tmp_path: Path) -> None:
    result = chromium(tmp_path, "--dump-dom", f"{server}/studies")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'href="/studies/{STUDY_SENT}"' in result.stdout and STUDY_RECEIVING in result.stdout
    assert PATIENT_ID not in result.stdout
    with urllib.request.urlopen(f"{server}/studies") as response:  # the same page straight from the server
        assert response.headers["X-Frame-Options"] == "DENY"


def test_a_screenshot_of_the_studies_page_is_not_blank(server: str, tmp_path: Path) -> None:
    shot = tmp_path / "console.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", f"{server}/studies")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 900)
    assert shot.stat().st_size > 10_000
    assert len(set(pixels)) > 32, "the screenshot is (nearly) uniform"
