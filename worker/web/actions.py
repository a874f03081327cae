"""The console's two actions, with exactly the effect of their commands, each audited with its client.

``resend`` is ``triphase resend JOB`` (:meth:`Repository.requeue_send`) and ``complete`` is
``triphase studies complete UID`` (:meth:`Repository.complete_study` by ``manual``). The repository
writes its own events for the change; the ``web.<action>`` event adds who asked, from where, and
what came of it, including a refusal (a job in the wrong state, an unknown study).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from db.repository import Repository
from db.vocabulary import CompletedBy, Severity


class Action(StrEnum):
    RESEND = "resend"
    COMPLETE = "complete"

    @classmethod
    def parse(cls, name: str) -> Action | None:
        try:
            return cls(name)
        except ValueError:
            return None


@dataclass(frozen=True)
class ActionOutcome:
    status_code: int
    title: str
    message: str
    back: str


def _resend(repository: Repository, form: Mapping[str, str], client: str) -> ActionOutcome:
    raw = form.get("job_id", "")
    if not raw.isdigit():
        return ActionOutcome(400, "Bad request", "A job number is needed.", "/failures")
    job_id = int(raw)
    try:
        repository.requeue_send(job_id)
    except (LookupError, ValueError) as exc:
        repository.audit("web.resend", f"refused: {exc}", severity=Severity.WARNING, job_id=job_id,
                         detail={"client": client, "done": False})
        return ActionOutcome(404 if isinstance(exc, LookupError) else 409, "Not resent", str(exc), "/failures")
    repository.audit("web.resend", f"job #{job_id} queued for sending again", job_id=job_id,
                     detail={"client": client, "done": True})
    return ActionOutcome(200, "Queued", f"Job #{job_id} is queued for sending again.", "/failures")


def _complete(repository: Repository, form: Mapping[str, str], client: str) -> ActionOutcome:
    study_uid = form.get("study_uid", "")
    if not study_uid or len(study_uid) > 64 or not set(study_uid) <= set("0123456789."):
        return ActionOutcome(400, "Bad request", "A Study Instance UID is needed.", "/studies")
    back = f"/studies/{study_uid}"
    try:
        completed = repository.complete_study(study_uid, by=CompletedBy.MANUAL)
    except LookupError as exc:
        repository.audit("web.complete", f"refused: {exc}", severity=Severity.WARNING, study_uid=study_uid,
                         detail={"client": client, "done": False})
        return ActionOutcome(404, "Not completed", "No such study.", "/studies")
    if completed is None:
        repository.audit("web.complete", "already complete", study_uid=study_uid,
                         detail={"client": client, "done": False})
        return ActionOutcome(409, "Not completed", "The study is already complete.", back)
    repository.audit("web.complete", f"completed by hand; job #{completed.job_id}", study_uid=study_uid,
                     job_id=completed.job_id, detail={"client": client, "done": True})
    return ActionOutcome(200, "Completed", f"Study completed; job #{completed.job_id} is queued for analysis.", back)


def run_action(repository: Repository, action: Action, form: Mapping[str, str], client: str) -> ActionOutcome:
    """Carry out an authorised action (the token has been checked by the caller)."""
    if action is Action.RESEND:
        return _resend(repository, form, client)
    return _complete(repository, form, client)
