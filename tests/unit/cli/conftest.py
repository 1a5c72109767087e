"""The CLI's tests run `vramwatch ...` through its one front door, vramwatch.cli.main.main, against a real SQLite
warehouse that VRAMWATCH_WAREHOUSE_URL points at."""

from __future__ import annotations

import pytest

from vramwatch.warehouse.store import Warehouse


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    opened = Warehouse(f"sqlite:///{tmp_path}/warehouse.db")
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", opened.url)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    yield opened
    opened.close()
