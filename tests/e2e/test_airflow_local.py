"""scripts/airflow_local.py, stopped as a service manager or a CI job stops it: SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def processes_under(folder: Path) -> list[int]:
    """Every process whose environment names `folder` (each Airflow part has its AIRFLOW_HOME there)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def databases(names: list[str]) -> list[str]:
    engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                                  {"names": names}).all()
    engine.dispose()
    return [row[0] for row in rows]


def test_sigterm_stops_every_component_and_drops_the_databases_as_ctrl_c_does(tmp_path):
    """Fault: Ctrl-C cleaned up, SIGTERM left all six components and both databases behind."""
    folder = tmp_path / "local"
    script = subprocess.Popen([sys.executable, str(REPO / "scripts" / "airflow_local.py"), "--folder", str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO / "include")})
    said = []
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and "Ctrl-C stops everything" not in "".join(said):
            line = script.stdout.readline()
            assert line, "airflow_local.py ended before Airflow was up:\n" + "".join(said)
            said.append(line)
        warehouse = re.search(r"warehouse: \S+/(vw_warehouse_(\w+))", "".join(said))
        assert warehouse, "".join(said)
        names = [warehouse[1], f"vw_airflow_{warehouse[2]}"]
        assert sorted(databases(names)) == sorted(names) and len(processes_under(folder)) >= 6

        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=180) == 0
    finally:
        if script.poll() is None:
            script.kill()
    assert databases(names) == [] and processes_under(folder) == []
