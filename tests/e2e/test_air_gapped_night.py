"""The demo night on an air-gapped worker: every non-loopback connection refused, the pinned engine already built.

The night runs in a network namespace of its own (`unshare --net`: only `lo`, no route anywhere else), so nothing it
tries can leave; the test first proves that from inside, then runs the whole night there with `airflow dags test`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
                                 reason="a network namespace needs root, unshare and ip")]
PROBE = """
import socket, urllib.request
print("interfaces", sorted(name for _, name in socket.if_nameindex()))
for where in (("192.0.2.1", 443), ("10.0.0.1", 80)):  # documentation and private addresses: no route
    try:
        socket.create_connection(where, timeout=5)
        print("reached", where)
    except OSError as exc:
        print("refused", where, exc.errno)
try:
    urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=10)
    print("reached pypi.org")
except OSError as exc:
    print("refused pypi.org")
"""


def offline(command: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """`command` in a new network namespace whose only interface is loopback (brought up, as a host's would be)."""
    return subprocess.run(["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_the_demo_night_runs_with_every_non_loopback_connection_refused(tmp_path, demo_models,
                                                                        airflow_sqlite_db):
    matrix = yaml.safe_load((REPO / "include/vramwatch/matrices/demo.yaml").read_text())
    matrix["models"] = [m for m in matrix["models"] if not m.get("quality")]  # the CPU perplexity adds minutes
    matrix.update(quants=["Q4_K_M"], keep_builds=1000)  # builds/ is this checkout's: prune none of them
    (tmp_path / "night.yaml").write_text(yaml.safe_dump(matrix, sort_keys=False))
    env = {**os.environ,
           "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_sqlite_db(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "VRAMWATCH_MATRIX": str(tmp_path / "night.yaml"),
           "VRAMWATCH_WAREHOUSE_URL": f"sqlite:///{tmp_path}/warehouse.db",
           "VRAMWATCH_REPORTS_DIR": str(tmp_path / "reports"), "PYTHONPATH": str(REPO / "include")}

    probe = offline([sys.executable, "-c", PROBE], env, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == ["interfaces ['lo']", "refused ('192.0.2.1', 443) 101",
                                         "refused ('10.0.0.1', 80) 101", "refused pypi.org"]  # 101: ENETUNREACH

    night = offline([AIRFLOW, "dags", "test", "llamacpp_nightly", "--conf", json.dumps({"force": True})], env,
                    timeout=1800)
    said = night.stdout + night.stderr
    assert night.returncode == 0, said[-6000:]
    assert "no index reachable, using the pinned build 0.3.36" in said
    assert "result: reused" in said  # the engine built before: nothing to download, nothing to compile
    from vramwatch.warehouse.store import Warehouse

    history = Warehouse(env["VRAMWATCH_WAREHOUSE_URL"]).history()
    assert len(history) == 4 and set(history["status"]) == {"ok"}  # 2 models x Q4_K_M x 2 modes, all measured
    assert (tmp_path / "reports" / "latest.md").is_file()
