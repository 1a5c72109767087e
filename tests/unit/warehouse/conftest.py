"""The warehouse's backends: every test taking `url` runs once on SQLite and once on PostgreSQL.

PostgreSQL tests use a throwaway database created for the session (dropped at the end) and are skipped, with the
reason, when the server at PG_SERVER is unreachable.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from vramwatch.warehouse import migrate
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
    with temporary_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    database = request.getfixturevalue("postgres_database")
    yield database
    engine = sa.create_engine(database)  # leave the shared database empty for the next test
    migrate.downgrade(engine, "base")
    engine.dispose()
