"""Shared fixtures: real databases (SQLite and PostgreSQL), free ports, real peer tools."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from db.engine import Database
from db.migrate import upgrade
from db.repository import Repository

PG_ADMIN_URL = os.environ.get("TRIPHASE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(path_or_name: str) -> str:
    """The path of a real peer tool; in CI a missing tool fails the run instead of skipping."""
    found = shutil.which(path_or_name) or (path_or_name if os.access(path_or_name, os.X_OK) else None)
    if found:
        return found
    message = f"{path_or_name} is not installed (tests/run.sh installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_file(path: str) -> str:
    """A file a real peer needs (an Orthanc plugin); in CI a missing one fails the run instead of skipping."""
    if os.path.isfile(path):
        return path
    message = f"{path} is not installed (tests/run.sh installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}")
    upgrade(database)
    yield database
    database.close()


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture
def postgres_url(pg_available: bool) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not pg_available:
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL is not reachable")
    name = f"triphase_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same test on the embedded SQLite default and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'triphase.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    upgrade(database)
    yield database
    database.close()


@pytest.fixture
def repository(database: Database) -> Repository:
    return Repository(database)


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator:
    """Start real Orthanc servers (Debian package) for one test; all are stopped afterwards."""
    from tests.processes import Orthanc

    started: list[Orthanc] = []

    def start(**kwargs: object) -> Orthanc:
        orthanc = Orthanc(tmp_path / f"orthanc{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(orthanc)
        return orthanc.start()

    yield start
    for orthanc in started:
        orthanc.stop()
