"""The warehouse's backends: every test taking `url` (or `empty_url`) runs once on SQLite and once on PostgreSQL.

`url` is a warehouse at the newest schema with no rows; `empty_url` a database with nothing in it, for the tests
that migrate (they move the schema, which no other test may inherit). PostgreSQL tests use throwaway databases
created on the server (dropped at the end) and are skipped, with the reason, when the server at PG_SERVER is
unreachable.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.warehouses import empty_rows

from vramwatch.warehouse.store import Warehouse
from vramwatch.warehouse.tempdb import temporary_database

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server's URL, for tests that make databases of their own."""
    try:
        sa.create_engine(PG_SERVER).connect().close()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {str(exc.orig).strip().splitlines()[0]}")
    return PG_SERVER


@pytest.fixture(scope="session")
def postgres_database(postgres_server):
    """The session's PostgreSQL warehouse, migrated once: each test that uses it empties it after (empty_rows)."""
    with temporary_database(postgres_server) as url:
        Warehouse(url).close()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, sqlite_warehouse_url):
    """A warehouse at the newest schema, without rows."""
    if request.param == "sqlite":
        yield sqlite_warehouse_url
        return
    database = request.getfixturevalue("postgres_database")
    yield database
    empty_rows(database)  # for the next test, even if this one failed


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """A database with no schema yet, of this test's own: migrations start from nothing."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    with temporary_database(request.getfixturevalue("postgres_server")) as database:
        yield database
