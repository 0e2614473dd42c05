"""A fresh PostgreSQL database per test run on the machine's server (127.0.0.1:5432,
user postgres, trust), dropped afterwards. Usage in a test module::

    from tests.helpers.postgres import pg_url  # noqa: F401  (the session fixture)

``db_url`` (import it with ``pg_url``) runs a test on an empty database of each kind.

The machine service is never started here; when it does not answer, the tests
that need it are skipped with that reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("DCLCOMMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _drop(admin: object, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]


def _admin_connect() -> object:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """``postgresql://…/dclcomms_test_<hex>``: created for this run, dropped at its end."""
    try:
        admin = _admin_connect()
    except Exception as e:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not reachable: {e}")
    name = f"dclcomms_test_{uuid.uuid4().hex[:12]}"
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
        try:
            yield f"{base}/{name}"
        finally:
            _drop(admin, name)
    finally:
        admin.close()  # type: ignore[attr-defined]


def fresh_pg_database(pg_url: str) -> Iterator[str]:
    """Another empty database next to ``pg_url`` (for tests that need an empty one)."""
    admin = _admin_connect()
    name = f"dclcomms_test_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
        try:
            yield f"{pg_url.rsplit('/', 1)[0]}/{name}"
        finally:
            _drop(admin, name)
    finally:
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gk.sqlite3'}"
    else:
        base = request.getfixturevalue("pg_url")
        yield from fresh_pg_database(base)
