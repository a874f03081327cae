"""Schema migrations (Alembic) run from code, so ``triphase db upgrade`` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.engine import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of triphase."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> str:
    """Bring the schema to ``revision``; returns the revision now in place."""
    config = _config(database)
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return current_revision(database) or ""


def upgrade_if_behind(database: Database) -> None:
    """Migrate to the newest revision unless the schema is there already (each process start)."""
    if current_revision(database) != head_revision():
        upgrade(database)


def downgrade(database: Database, revision: str) -> None:
    config = _config(database)
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
