"""Alembic migrations on both backends: upgrade to head, downgrade to nothing, upgrade again."""

from __future__ import annotations

from sqlalchemy import inspect

from db.engine import Database
from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.schema import Base


def test_upgrade_downgrade_roundtrip(database: Database) -> None:
    assert current_revision(database) == head_revision()
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    downgrade(database, "base")
    assert current_revision(database) is None
    assert not set(Base.metadata.tables) & set(inspect(database.engine).get_table_names())
    assert upgrade(database) == head_revision()


def test_migrations_match_the_models(database: Database) -> None:
    """Autogenerate finds nothing to do: the schema code and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []
