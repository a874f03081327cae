"""The console over PostgreSQL: the same pages and a guarded action on the production backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db.engine import Database
from db.migrate import upgrade
from db.queries import audit_events
from tests.web.conftest import PATIENT_ID, STUDY_SENT, TOKEN, XSS_DESCRIPTION, build_scenario, client_over

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    upgrade(database)
    yield database
    database.close()


def test_console_on_postgresql(pg_database: Database, tmp_path: Path) -> None:
    scenario = build_scenario(pg_database, tmp_path)
    client = client_over(scenario)
    for path in ("/studies", f"/studies/{STUDY_SENT}", "/failures", "/models"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert PATIENT_ID not in response.text and XSS_DESCRIPTION not in response.text
    assert "pacs-main" in client.get(f"/studies/{STUDY_SENT}").text
    assert client.post("/actions/resend", data={"job_id": str(scenario.failed_job)}).status_code == 401
    assert client.post("/actions/resend", data={"job_id": str(scenario.failed_job), "token": TOKEN}).status_code == 200
    assert audit_events(pg_database, kind_prefix="web.resend")
