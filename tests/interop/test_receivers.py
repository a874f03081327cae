"""Several receiving processes on one port (``[node] receivers``): dcmtk over concurrent associations,
every instance stored once, every study completed once, a receiver that dies started again, one
``/metrics`` for all of them, and SIGTERM stopping the whole group."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from db.engine import Database
from db.queries import audit_events
from tests.certificates import make_pki
from tests.conftest import free_port, require_tool
from tests.factories import write_study
from tests.interop.test_door import dcmtk, tls_only_node
from tests.processes import NodeProcess, child_pids, is_running

pytestmark = pytest.mark.interop
PEERS = [{"name": "dcmtk", "ae_title": "STORESCU"}]


def children(pid: int) -> set[int]:
    """The receivers (spawn also starts a resource tracker, which is not one)."""
    return set(child_pids(pid, excluding=b"resource_tracker"))


def wait_for_children(pid: int, count: int, timeout: float = 60, *, without: int = 0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) == count and without not in found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"expected {count} receivers, found {children(pid)}")


def storescu(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    binary = require_tool("/usr/bin/storescu")  # by path: a virtual environment puts pynetdicom's first
    return subprocess.run([binary, "-to", "20", "-ta", "20", "-td", "20", "-aet", "STORESCU", "-aec", "TRIPHASE",
                           "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TCP_NODELAY="1"))


def wait_for_listening(node: NodeProcess, receivers: int, timeout: float = 60) -> None:
    """Until every receiver has logged that it listens (a spawned process starts in seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log()
        if all(f"receiver {i} listening" in log for i in range(1, receivers + 1)):
            return
        time.sleep(0.2)
    raise AssertionError(f"receivers did not start: {node.log()[-2000:]}")


def stored_total(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("triphase_instances_stored_total"))


def test_receivers_share_the_port_and_complete_each_study_once(tmp_path: Path) -> None:
    metrics_port = free_port()
    late_uid = ""
    node = NodeProcess(tmp_path / "node", peers=PEERS,
                       extra_node={"receivers": 3, "quiet_period_s": 2.0, "completion_poll_s": 0.2,
                                   "max_per_address": 16, "metrics_port": metrics_port})
    studies = [write_study(tmp_path / f"study{i}", series=2, per_series=6) for i in range(5)]
    try:
        node.start()
        assert node.proc is not None
        first = wait_for_children(node.proc.pid, 2)
        wait_for_listening(node, 2)
        # Two associations for each study (its two halves), ten at once: they land on several processes.
        parts = [files[half::2] for _, files in studies for half in (0, 1)]
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            results = list(pool.map(lambda part: storescu(node.port, part), parts))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]

        deadline = time.monotonic() + 60
        listing: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listing = json.loads(node.cli("studies", "--json").stdout)
            if len(listing) == 5 and all(s["state"] == "complete" for s in listing):
                break
            time.sleep(0.5)
        assert sorted((s["study_uid"], s["instances"], s["revision"]) for s in listing) == sorted(
            (uid, 12, 1) for uid, _ in studies)
        assert stored_total(metrics_port) == 60  # every receiver's counter, added up
        # ten associations over three sockets: not all on the first process's
        assert re.search(r"node\.scp\[receiver \d\]: association #\d+ released", node.log())

        # A receiver that dies is started again, and the port still takes associations.
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_children(node.proc.pid, 2, timeout=30, without=victim)
        late_uid, late = write_study(tmp_path / "late", series=1, per_series=4)
        assert storescu(node.port, late).returncode == 0
    finally:
        assert node.terminate() == 0
    assert node.proc is not None and not children(node.proc.pid)
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        completed = sorted(str(e.study_uid) for e in audit_events(database) if e.kind == "study.complete")
        # once each, whichever process received the instances
        assert [uid for uid in completed if uid != late_uid] == sorted(uid for uid, _ in studies)
    finally:
        database.close()
    assert "receiver 1 exited" in node.log() or "receiver 2 exited" in node.log()


def test_receivers_stop_when_the_first_process_is_killed(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", peers=PEERS, extra_node={"receivers": 2})
    try:
        node.start()
        assert node.proc is not None
        [receiver] = wait_for_children(node.proc.pid, 1)
        node.proc.kill()
        node.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and is_running(receiver):
            time.sleep(0.2)
        assert not is_running(receiver)
    finally:
        node.kill()
    assert "the node's first process has gone" in node.log()


def test_receivers_share_the_tls_port(tmp_path: Path) -> None:
    """With TLS only, every receiver listens on the TLS port the first process bound (0 = a free one)."""
    pki = make_pki(tmp_path / "pki")
    node = tls_only_node(tmp_path / "node", pki, [{"name": "echo", "ae_title": "ECHOSCU"}])
    node.extra_node = {**node.extra_node, "receivers": 2}
    try:
        node.start()
        assert node.proc is not None
        wait_for_listening(node, 1)
        tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
        for _ in range(12):  # new connections spread over both listening sockets
            ok = dcmtk("echoscu", *tls, "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(node.port))
            assert ok.returncode == 0, ok.stderr
    finally:
        assert node.terminate() == 0
    log = node.log()
    assert "node.scp: association #" in log and "node.scp[receiver 1]: association #" in log, log


def released_by(log: str) -> dict[str, int]:
    """Associations released, per process: "first", "receiver 1", ..."""
    counts: dict[str, int] = {}
    for label in re.findall(r"node\.scp(?:\[(receiver \d+)\])?: association #\d+ released", log):
        counts[label or "first"] = counts.get(label or "first", 0) + 1
    return counts


def echo_association(port: int) -> Association:
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIPHASE")
    assert assoc.is_established
    return assoc


def test_concurrent_associations_are_spread_evenly_and_a_stopped_receiver_loses_its_turn(tmp_path: Path) -> None:
    """Four associations held open at once land two on each process (the kernel alone often put
    three or four on one); a receiver that cannot accept (SIGSTOP) does not hold connections up."""
    node = NodeProcess(tmp_path / "node", peers=PEERS, extra_node={"receivers": 2, "max_per_address": 16})
    try:
        node.start()
        assert node.proc is not None
        [receiver] = wait_for_children(node.proc.pid, 1)
        wait_for_listening(node, 1)
        held = [echo_association(node.port) for _ in range(4)]
        assert all(assoc.send_c_echo().Status == 0 for assoc in held)
        for assoc in held:
            assoc.release()
        deadline = time.monotonic() + 10
        while sum(released_by(node.log()).values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert released_by(node.log()) == {"first": 2, "receiver 1": 2}

        # Both hold nothing and have accepted as many: the stopped receiver may be due, but after
        # the takeover time the first process takes the connection.
        os.kill(receiver, signal.SIGSTOP)
        try:
            for _ in range(3):
                started = time.monotonic()
                assoc = echo_association(node.port)
                assert time.monotonic() - started < 3
                assoc.release()
        finally:
            os.kill(receiver, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while sum(released_by(node.log()).values()) < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert released_by(node.log())["first"] == 5
    finally:
        assert node.terminate() == 0
