"""Which real database errors are worth a retry: provoked on SQLite and PostgreSQL, then classified."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from db.engine import Database
from db.migrate import upgrade
from db.repository import Repository
from db.schema import Job
from db.transient import is_transient
from tests.conftest import free_port
from tests.db.test_job_races import completed_job


def test_a_locked_sqlite_file_is_transient_and_a_missing_table_is_not(sqlite_database: Database) -> None:
    impatient = Database(sqlite_database.url, busy_timeout_s=0.05)
    try:
        with sqlite_database.session() as holder, pytest.raises(OperationalError) as locked:
            holder.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock, until the block ends
            with impatient.session() as session:
                session.execute(text("SELECT 1"))
        assert "database is locked" in str(locked.value) and is_transient(locked.value)
        with pytest.raises(OperationalError) as missing, impatient.session() as session:
            session.execute(text("SELECT * FROM no_such_table"))
        assert not is_transient(missing.value)
    finally:
        impatient.close()


def test_a_serialization_failure_is_transient_and_a_duplicate_key_is_not(postgres_url: str) -> None:
    database = Database(postgres_url)
    upgrade(database)
    job = completed_job(Repository(database))
    engine = create_engine(postgres_url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as first, pytest.raises(DBAPIError) as conflict:
            first.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": job})  # its snapshot
            with database.session() as session:  # another transaction changes the row and commits
                session.get(Job, job).state = "queued"  # type: ignore[union-attr]
            first.execute(text("UPDATE jobs SET state = 'failed' WHERE id = :id"), {"id": job})
        assert getattr(conflict.value.orig, "sqlstate", None) == "40001" and is_transient(conflict.value)
        with pytest.raises(DBAPIError) as duplicate, database.session() as session:
            session.execute(text("INSERT INTO jobs (id, study_id, study_revision, state, attempts, shadow, "
                                 "annotation_required, created_at, updated_at) SELECT id, study_id, study_revision, "
                                 "state, attempts, shadow, annotation_required, created_at, updated_at FROM jobs"))
        assert getattr(duplicate.value.orig, "sqlstate", None) == "23505" and not is_transient(duplicate.value)
    finally:
        engine.dispose()
        database.close()


def test_a_database_that_cannot_be_reached_is_transient() -> None:
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                           connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as refused, engine.connect():
        pass
    engine.dispose()
    assert is_transient(refused.value)
    assert not is_transient(ValueError("job state queued -> sent is not allowed"))
