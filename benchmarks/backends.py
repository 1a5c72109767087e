"""The warehouses a benchmark measures: a temporary SQLite file, then a throwaway PostgreSQL database when the server
(VRAMWATCH_BENCH_POSTGRES, default the local test server) answers; it is dropped afterwards."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from vramwatch.warehouse.tempdb import temporary_database

POSTGRES = os.environ.get("VRAMWATCH_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


def on_each_backend(measure: Callable[[str, str], T]) -> list[T]:
    """measure(url, label) on SQLite, then on PostgreSQL unless its server is unreachable (said in one line)."""
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = [measure(f"sqlite:///{tmp}/warehouse.db", "sqlite")]
    try:
        create_engine(POSTGRES).connect().close()
    except OperationalError as exc:
        print(f"postgresql skipped: server unreachable at {POSTGRES}: {str(exc.orig).strip().splitlines()[0]}")
    else:
        with temporary_database(POSTGRES) as url:
            outcomes.append(measure(url, "postgresql"))
    return outcomes
