"""The CLI's tests run `vramwatch ...` through its one front door, vramwatch.cli.main.main, against a real SQLite
warehouse that VRAMWATCH_WAREHOUSE_URL points at."""

from __future__ import annotations

import pytest

from vramwatch.warehouse.store import Warehouse


@pytest.fixture
def warehouse(sqlite_warehouse_url, tmp_path, monkeypatch):
    opened = Warehouse(sqlite_warehouse_url)
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", opened.url)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    yield opened
    opened.close()
