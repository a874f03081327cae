"""Study completion: by content when the study is whole, else a quiet period or a hard cap.

DICOM has no "end of study" message, so completion is inferred. The fastest sure sign is the
content: every role the study's task requires is present, each series has stopped growing, the
lesion annotation is there when the sender's studies need one, and nothing more has arrived for
``settle_s``. Which roles a task requires is known to the grouping rules, which live with the
worker; the node never imports them. The process that builds the node injects a
:class:`RoleCheck` (``triphase node`` and the demo do), and a node without one completes by the
quiet period and the hard cap alone. Completing by roles is an optimisation, never a guess: when
the check is unsure, the study waits for the quiet period.

A study completed by the quiet period or the cap that still lacks a required role gets a job that
is skipped at once, with the missing roles named. The deadlines live in the study row (set by
every stored instance), so any node process sharing the database may complete a study exactly
once, and a restarted node picks up where it stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from db.repository import CompletedStudy, Completion, ReceivingStudy, Repository, StudyFile
from db.schema import utcnow
from db.vocabulary import CompletedBy
from node.dispatch import JobDispatcher
from node.sop_classes import is_annotation

log = logging.getLogger(__name__)

# A study that pauses this long is read ahead by the role check (cached until its next instance),
# so that completion by roles happens right at the end of the settle period.
PRECHECK_S = 1.0


@dataclass(frozen=True)
class RoleReport:
    """What the grouping rules see in the instances received so far.

    ``task`` is None when no task applies (no CT or MR image series); ``missing`` names required
    roles no series fills; ``unsure`` says why the roles found may not be whole yet (an ambiguous
    choice, gaps in a series, fewer images than a header announces, unreadable files).
    """

    task: str | None
    found: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unsure: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.task is not None and not self.missing and not self.unsure

    def as_detail(self) -> dict[str, object]:
        return {"task": self.task, "roles_found": list(self.found), "roles_missing": list(self.missing),
                "unsure": list(self.unsure)}


class RoleCheck(Protocol):
    def __call__(self, study_uid: str, files: Sequence[Path]) -> RoleReport:
        """Which roles of its task the study's files fill (files may include non-images)."""


@dataclass(frozen=True)
class SenderPolicy:
    """What a sender's configuration says about its studies."""

    shadow: bool = False
    annotation_required: bool = False


def _default_policy(calling_ae: str | None) -> SenderPolicy:
    return SenderPolicy()


class CompletionRules:
    """Decides, for one receiving study, whether and how it completes now.

    Reports are cached per study revision and last arrival, so a settled study is read once, not
    at every poll. A study that pauses for ``precheck_s`` is read then, so that when it has
    settled the report is already there and completion costs no reading.
    """

    def __init__(self, repository: Repository, spool_root: Path | None, role_check: RoleCheck | None,
                 policy: Callable[[str | None], SenderPolicy]) -> None:
        self.repository = repository
        self.spool_root = spool_root
        self.role_check = role_check if spool_root is not None else None
        self.policy = policy
        self._reports: dict[int, tuple[tuple[int, dt.datetime], RoleReport]] = {}

    def decide(self, study: ReceivingStudy, *, settled: bool = True) -> Completion | None:
        """How ``study`` completes now, or None; a study not yet ``settled`` is only read ahead."""
        policy = self.policy(study.calling_ae)
        if study.due is None and self.role_check is None:
            return None
        files = self.repository.study_files(study.study_id)
        report = self._report(study, files)
        annotated = any(is_annotation(f.sop_class_uid) for f in files)
        if study.due is None:  # settled only: complete when whole, else wait
            if not settled or report is None or not report.ready or (policy.annotation_required and not annotated):
                return None
            return Completion(CompletedBy.ROLES, shadow=policy.shadow, annotation_required=policy.annotation_required,
                              detail={**report.as_detail(), "annotation": annotated})
        detail: dict[str, object] = {"annotation": annotated} | (report.as_detail() if report else {})
        skip = None
        if report is not None and report.task is not None and report.missing:
            skip = (f"required role(s) missing when the study completed by {study.due}: "
                    f"{', '.join(report.missing)} (task {report.task}); not analysed")
        return Completion(study.due, shadow=policy.shadow, annotation_required=policy.annotation_required,
                          skip_reason=skip, detail=detail)

    def forget(self, keep: set[int]) -> None:
        """Drop cached reports of studies no longer receiving."""
        for study_id in set(self._reports) - keep:
            del self._reports[study_id]

    def _report(self, study: ReceivingStudy, files: list[StudyFile]) -> RoleReport | None:
        if self.role_check is None or self.spool_root is None:
            return None
        key = (study.revision, study.last_received_at)
        cached = self._reports.get(study.study_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            report = self.role_check(study.study_uid, [self.spool_root / f.path for f in files])
        except Exception:  # a check that fails must not block completion: the quiet period decides
            log.exception("role check of study #%d failed; it completes by the quiet period", study.study_id)
            report = RoleReport(None, unsure=("the role check failed",))
        self._reports[study.study_id] = (key, report)
        log.debug("study #%d: %s", study.study_id, report)
        return report


class CompletionMonitor:
    """A background thread that completes due and whole studies every ``poll_s`` seconds."""

    def __init__(self, repository: Repository, dispatcher: JobDispatcher, *, poll_s: float = 1.0,
                 settle_s: float = 5.0, spool_root: Path | None = None, role_check: RoleCheck | None = None,
                 policy: Callable[[str | None], SenderPolicy] = _default_policy) -> None:
        self.repository = repository
        self.dispatcher = dispatcher
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.rules = CompletionRules(repository, spool_root, role_check, policy)
        # A study whose last instance came before this process started may have been cut off by a
        # crash or a stop: it completes by its (renewed) quiet period, or by roles once more arrives.
        self.started_at = utcnow()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="study-completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Complete what is due or whole now and dispatch it; returns how many studies completed."""
        now = now or utcnow()
        precheck = min(self.settle_s, PRECHECK_S) if self.rules.role_check is not None else None
        studies = self.repository.receiving_studies(now, settle_s=precheck)
        settled_before = now - dt.timedelta(seconds=self.settle_s)
        completed: list[CompletedStudy] = []
        for study in studies:
            settled = self.started_at <= study.last_received_at <= settled_before
            completion = self.rules.decide(study, settled=settled)
            if completion is None:
                continue
            done = self.repository.complete_revision(study, completion)
            if done is not None:
                completed.append(done)
        self.rules.forget({s.study_id for s in studies} - {c.study_id for c in completed})
        if completed:
            self.dispatcher.dispatch(completed)
        return len(completed)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end completion for good
                log.exception("study completion check failed; retrying in %.1f s", self.poll_s)
