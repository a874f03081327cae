"""The token guards the actions: without it nothing changes; with it the change is made and audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.engine import Database
from db.queries import audit_events
from db.schema import Job, OutboxEntry, Study
from tests.web.conftest import CLIENT, STUDY_RECEIVING, TOKEN, ClientFactory, Scenario


def _job_state(database: Database, job_id: int) -> str:
    with database.session() as session:
        return session.scalars(select(Job.state).where(Job.id == job_id)).one()


def _outbox(database: Database) -> int:
    with database.session() as session:
        return len(session.scalars(select(OutboxEntry.id)).all())


@pytest.mark.parametrize(("configured", "headers", "form_token", "status"), [
    ("", {}, TOKEN, 403),  # no token configured: actions are disabled
    (TOKEN, {}, "", 401),
    (TOKEN, {}, "wrong", 403),
    (TOKEN, {"Authorization": "Bearer wrong"}, "", 403),
    (TOKEN, {}, TOKEN[:-1], 403),
])
def test_resend_without_the_right_token_changes_nothing(client_for: ClientFactory, scenario: Scenario,
                                                        configured: str, headers: dict[str, str], form_token: str,
                                                        status: int) -> None:
    outbox = _outbox(scenario.database)
    response = client_for(token=configured).post(
        "/actions/resend", data={"job_id": str(scenario.failed_job), "token": form_token}, headers=headers)
    assert response.status_code == status
    assert _job_state(scenario.database, scenario.failed_job) == "failed"
    assert _outbox(scenario.database) == outbox
    assert not audit_events(scenario.database, kind_prefix="job.resend")
    denied = audit_events(scenario.database, kind_prefix="web.denied")
    assert denied and denied[-1].detail == {"client": CLIENT[0], "action": "resend"}
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_resend_with_the_token_requeues_the_job_and_audits_the_client(client_for: ClientFactory,
                                                                      scenario: Scenario) -> None:
    response = client_for().post("/actions/resend", data={"job_id": str(scenario.failed_job), "token": TOKEN})
    assert response.status_code == 200
    assert _job_state(scenario.database, scenario.failed_job) == "queued"
    assert audit_events(scenario.database, kind_prefix="job.resend")
    (event,) = audit_events(scenario.database, kind_prefix="web.resend")
    assert event.job_id == scenario.failed_job and event.detail == {"client": CLIENT[0], "done": True}


def test_resend_of_a_job_that_cannot_be_resent_is_refused_and_audited(client_for: ClientFactory,
                                                                      scenario: Scenario) -> None:
    response = client_for().post("/actions/resend", headers={"Authorization": f"Bearer {TOKEN}"},
                                 data={"job_id": str(scenario.skipped_job)})
    assert response.status_code == 409
    assert _job_state(scenario.database, scenario.skipped_job) == "skipped"
    (event,) = audit_events(scenario.database, kind_prefix="web.resend")
    assert event.detail == {"client": CLIENT[0], "done": False}


def test_complete_with_a_bearer_token_completes_the_study_by_hand(client_for: ClientFactory,
                                                                  scenario: Scenario) -> None:
    client = client_for()
    assert client.post("/actions/complete", data={"study_uid": STUDY_RECEIVING}).status_code == 401
    response = client.post("/actions/complete", data={"study_uid": STUDY_RECEIVING},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    with scenario.database.session() as session:
        study = session.scalars(select(Study).where(Study.study_uid == STUDY_RECEIVING)).one()
        assert (study.state, study.completed_by) == ("complete", "manual")
    (event,) = audit_events(scenario.database, kind_prefix="web.complete")
    assert event.study_uid == STUDY_RECEIVING and event.detail == {"client": CLIENT[0], "done": True}
    again = client.post("/actions/complete", data={"study_uid": STUDY_RECEIVING, "token": TOKEN})
    assert again.status_code == 409


def test_action_forms_appear_only_when_a_token_is_configured(client_for: ClientFactory) -> None:
    assert 'action="/actions/complete"' in client_for().get(f"/studies/{STUDY_RECEIVING}").text
    assert "/actions/" not in client_for(token="").get(f"/studies/{STUDY_RECEIVING}").text
    assert "/actions/" not in client_for(token="").get("/failures").text


def test_actions_are_post_only(client_for: ClientFactory) -> None:
    assert client_for().get("/actions/resend").status_code == 405
