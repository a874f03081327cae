"""Real processes for tests: ``triphase node`` and Orthanc, each on free loopback ports.

Every wait is bounded; every process is stopped by its PID when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port, require_file, require_tool

TRIPHASE = str(Path(sys.executable).with_name("triphase"))
#: Debian's orthanc-dicomweb package (QIDO-RS, WADO-RS, STOW-RS under /dicom-web/).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, parent, ..., utime, stime, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one its parent has not reaped yet is not)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def child_pids(parent: int, *, excluding: bytes | None = None) -> list[int]:
    """Live child processes of ``parent``; ``excluding`` leaves out those whose command line holds
    it (e.g. b"multiprocessing" for spawned helpers, b"resource_tracker" for their tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _stat_fields(int(entry.name))[:2]
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(ppid) == parent and state != "Z" and (excluding is None or excluding not in cmdline):
            found.append(int(entry.name))
    return sorted(found)


def cpu_ticks(pid: int) -> int:
    """CPU time (user + system, in clock ticks) a process has used; 0 once it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and of the children it has reaped; (0, 0) once
    it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[13])) / tick, (int(fields[12]) + int(fields[14])) / tick


def rss_bytes() -> int:
    """This process's resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@dataclass
class NodeProcess:
    """``triphase node`` as a subprocess with its own data directory and configuration file."""

    data_dir: Path
    peers: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
    extra_node: dict[str, Any] = field(default_factory=dict)
    db_url: str = ""
    extra_toml: str = ""  # further sections, e.g. [broker] and [worker]
    publish: bool = False  # publish completed studies to the broker (only tests of the worker do)
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "triphase.toml"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        node = {"port": self.port, "min_free_disk_mb": 0, "shutdown_grace_s": 3, **self.extra_node}
        lines = [f'data_dir = "{self.data_dir}"', "[db]", f'url = "{self.db_url}"', "[node]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in node.items()]
        for peer in self.peers:
            lines.append("[[node.peers]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in peer.items()]
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_toml)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
        env["TRIPHASE_CONFIG"] = str(self.config_path)
        return env

    def start(self) -> NodeProcess:
        self.write_config()
        log = (self.data_dir / "node.log").open("ab")
        command = [TRIPHASE, "node", "--publish" if self.publish else "--no-publish"]
        self.proc = subprocess.Popen(command, env=self.env(), stdout=log, stderr=log)
        wait_for_port(self.port, proc=self.proc)
        return self

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another ``triphase`` command against this node's configuration."""
        return subprocess.run([TRIPHASE, *args], env=self.env(), capture_output=True, text=True, timeout=timeout)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:  # the stacks of a stuck node say why it is stuck
                stacks = subprocess.run([str(Path(sys.executable).with_name("py-spy")), "dump", "-p",
                                         str(self.proc.pid)], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                stacks = "(py-spy not available)"
            raise AssertionError(f"node did not stop after SIGTERM\n{stacks}\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Orthanc:
    """A real Orthanc (Debian package) with its own configuration and storage in a temp folder."""

    folder: Path
    modalities: dict[str, Any] = field(default_factory=dict)
    aet: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    dicomweb: bool = False  # load the DICOMweb plugin, serving under /dicom-web/
    extra_config: dict[str, Any] = field(default_factory=dict)  # merged over the defaults (e.g. DICOM TLS)
    proc: subprocess.Popen | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self) -> Orthanc:
        binary = require_tool("/usr/sbin/Orthanc")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "triphase-test", "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": self.aet, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "StorageDirectory": str(self.folder / "storage"), "IndexDirectory": str(self.folder / "index"),
            "DicomModalities": self.modalities, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True, "OverwriteInstances": True,
            "SaveJobs": False, "StableAge": 2, "Plugins": [], "HttpServerEnabled": True,
            "DicomScuTimeout": 30, "DicomAssociationCloseDelay": 0,
        }
        if self.dicomweb:
            plugin = require_file(DICOMWEB_PLUGIN, "Orthanc's DICOMweb plugin (orthanc-dicomweb)")
            config |= {"Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        config |= self.extra_config
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        env = dict(os.environ, TCP_NODELAY="1")
        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([binary, str(path)], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                wait_for_port(self.dicom_port, timeout=5)
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not start in 60 s")

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json", timeout: float = 120) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def get(self, path: str) -> Any:
        return self._request("GET", path, timeout=5)

    def post(self, path: str, body: Any, timeout: float = 120) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctype = "application/dicom" if isinstance(body, bytes) else "application/json"
        return self._request("POST", path, data, ctype, timeout=timeout)

    def upload(self, paths: list[Path]) -> str:
        """Upload files over REST; returns the Orthanc id of their study."""
        study_ids = {self.post("/instances", p.read_bytes())["ParentStudy"] for p in paths}
        assert len(study_ids) == 1, study_ids
        return study_ids.pop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
