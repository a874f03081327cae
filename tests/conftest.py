"""Shared fixtures: real databases (SQLite and PostgreSQL), free ports, real peer tools."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

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
    missing(f"{path_or_name} is not installed (tests/run.sh installs it)")


def require_file(path: Path, what: str) -> Path:
    """A file a test needs (a server plugin, a fetched web app); missing in CI fails, else skips."""
    if path.is_file():
        return path
    missing(f"{what} is missing: {path} (tests/run.sh installs it)")


def missing(message: str) -> NoReturn:
    """Something a test needs is absent: in CI that fails the run, elsewhere the test is skipped."""
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
    with new_postgres_database(PG_ADMIN_URL) as url:
        yield url


@contextlib.contextmanager
def new_postgres_database(server_url: str, prefix: str = "triphase_test") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server_url.rsplit('/', 1)[0]}/{name}"
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
