"""Enum columns keep their plain stored strings on both backends, and read back as members."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from db.engine import Database
from db.repository import InstanceRecord, Repository
from db.schema import Association, AuditEvent, Study
from db.vocabulary import AssociationResult, CompletedBy, Severity


def test_enum_columns_round_trip_as_plain_strings(repository: Repository, database: Database) -> None:
    association = repository.open_association(calling_ae="PACS", called_ae="TRIPHASE", address="127.0.0.1",
                                              port=1, peer_name=None)
    repository.close_association(association, result=AssociationResult.ABORTED, stored=0, failed=0,
                                 bytes_stored=0)
    repository.record_instance(InstanceRecord("1.2", "1.2.1", "1.2.1.1", "1.2.840.10008.5.1.4.1.1.2",
                                              "1.2.840.10008.1.2.1", "1.2/1.2.1/1.2.1.1.dcm", 1, "0" * 64),
                               quiet_period_s=1, hard_cap_s=60)
    repository.complete_study("1.2")
    with database.session() as s:
        stored = s.execute(text("SELECT result FROM associations")).scalar_one()
        by = s.execute(text("SELECT completed_by FROM studies")).scalar_one()
        severities = set(s.execute(text("SELECT severity FROM audit_events")).scalars())
        assert (type(stored), stored, type(by), by) == (str, "aborted", str, "manual")
        assert severities == {"info", "warning"}
        assert s.scalars(select(Association.result)).one() is AssociationResult.ABORTED
        assert s.scalars(select(Study.completed_by)).one() is CompletedBy.MANUAL
        assert set(s.scalars(select(AuditEvent.severity))) == {Severity.INFO, Severity.WARNING}
        assert s.scalars(select(Association).where(Association.result == "aborted")).one().id == association


def test_a_value_outside_the_enum_is_refused(repository: Repository) -> None:
    association = repository.open_association(calling_ae="PACS", called_ae="TRIPHASE", address="127.0.0.1",
                                              port=1, peer_name=None)
    with pytest.raises(StatementError):
        repository.close_association(association, result=cast(AssociationResult, "vanished"), stored=0,
                                     failed=0, bytes_stored=0)
