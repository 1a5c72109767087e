"""Real Airflow on this machine, as docker-compose.yaml deploys it and tests/e2e/test_distributed_night.py tests it.

The api-server, scheduler, dag-processor, triggerer, a default Celery worker and a GPU worker (queue `gpu`, one task
at a time, the engines and models of builds/ and models/: run `make models` first) on the PostgreSQL and Redis of
127.0.0.1, in fresh databases that go when it stops. The nightly runs the demo matrix at one quant, plus a model whose
file is missing, so one bench task is red.

    .venv/bin/python scripts/airflow_local.py [--trigger] [--folder DIR]

It prints where to sign in, the user and the password; Ctrl-C or SIGTERM (kill, systemd, a CI job's cancel) stops
every process and drops the databases.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

from support.airflow_cluster import USER, AirflowCluster, default_and_gpu_workers, demo_night_matrix  # noqa: E402

from vramwatch.config import Paths  # noqa: E402

DAG = "llamacpp_nightly"


def start(folder: Path) -> AirflowCluster:
    """The cluster, started, with the `gpu` pool; logs, reports and Airflow's home under `folder`."""
    paths = Paths()
    cluster = AirflowCluster(folder, {"VRAMWATCH_MATRIX": str(demo_night_matrix(folder)),
                                      "VRAMWATCH_REPORTS_DIR": str(folder / "reports")})
    try:
        cluster.start(default_and_gpu_workers(folder, paths.builds, paths.models), pools={"gpu": 1})
    except BaseException:
        cluster.stop()
        raise
    return cluster


def interrupt_on_sigterm() -> None:
    """SIGTERM ends this script as Ctrl-C does, through the same cleanup; a second one waits for that cleanup."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trigger", action="store_true", help="trigger a forced night once Airflow is up")
    parser.add_argument("--folder", type=Path, help="where logs, reports and Airflow's home go (default: a temp dir)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="vramwatch-airflow-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"starting Airflow (logs: {folder / 'process-logs'}) ...", flush=True)
    interrupt_on_sigterm()
    try:
        cluster = start(folder)  # stops what it started if interrupted
    except KeyboardInterrupt:
        return
    try:
        print(f"Airflow: {cluster.url}  user {USER}  password {cluster.password}\n"
              f"VRAM history page: {cluster.url}/vramwatch/\nwarehouse: {cluster.warehouse_url}", flush=True)
        if args.trigger:
            run_id = cluster.trigger(DAG, {"force": True})
            print(f"triggered {DAG} run {run_id}: {cluster.url}/dags/{DAG}/runs/{run_id}", flush=True)
        print("Ctrl-C stops everything", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
