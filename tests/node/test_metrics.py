"""The node's /metrics after real traffic: stores, a refusal, a rejected association, a completion.

The text comes over HTTP from prometheus-client's own server and is read back with
prometheus-client's parser, so the format is Prometheus' and the names are the documented ones.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from db.engine import Database
from db.repository import Repository
from node.statuses import StoreStatus
from tests.association_wire import request_association
from tests.concurrency import wait_until
from tests.conftest import free_port
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory
from tests.node.test_scp import encode_body, scu, send_raw, store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_node_metrics_count_real_traffic(start_node: NodeFactory, sqlite_database: Database) -> None:
    port = free_port()
    running = start_node(sqlite_database, metrics_port=port, quiet_period_s=0.5)
    study = generate_uid()
    assert store(running.port, [ct_dataset(study, generate_uid(), index=i) for i in range(2)]) == [0, 0]
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    mismatched = ct_dataset(generate_uid(), generate_uid())
    assert send_raw(assoc, generate_uid(), encode_body(mismatched)) == StoreStatus.DATASET_DOES_NOT_MATCH
    assoc.release()
    assert request_association(running.port, "STRANGER").rejection is not None
    wait_until(lambda: bool(running.dispatcher.completed), timeout=10)
    wait_until(lambda: scrape(port).get(("triphase_associations_total", (("result", "released"),))) == 2)

    samples = scrape(port)
    assert samples[("triphase_instances_stored_total", ())] == 2
    assert samples[("triphase_instances_refused_total", (("status", "0xA900"),))] == 1
    assert samples[("triphase_associations_total", (("result", "rejected"),))] == 1
    assert samples[("triphase_studies_completed_total", (("reason", "quiet"),))] == 1
    assert samples[("triphase_jobs_total", (("state", "ready"),))] == 1
    assert samples[("triphase_queue_depth", (("queue", "outbox"),))] == 1  # nothing publishes in this test
    assert samples[("triphase_step_seconds_count", (("step", "receive"),))] == 1
    received = samples[("triphase_step_seconds_sum", (("step", "receive"),))]
    assert 0 <= received < 5, received  # two instances sent at once: arrival took well under a second

    # Publishing (here by hand, as the worker's sweeper does) moves the job on: queued is counted
    # from the committed audit event, and the outbox is drained.
    [pending] = Repository(sqlite_database).claim_outbox("test:1")
    assert Repository(sqlite_database).mark_published(pending.outbox_id)
    samples = scrape(port)
    assert samples[("triphase_jobs_total", (("state", "queued"),))] == 1
    assert samples[("triphase_queue_depth", (("queue", "outbox"),))] == 0
