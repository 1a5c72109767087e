"""The nightly as the deployment runs it: real Airflow processes, Celery workers, PostgreSQL and Redis on loopback.

The api-server, scheduler, dag-processor, triggerer and three Celery workers run on this machine: queue `default`
(no engine, no models), queue `gpu` with concurrency 1 (the engine and models `make test` prepared) and a second GPU
worker, queue `gpu-1`, with builds and models folders of its own. A demo-sized night is triggered through the REST
API v2 with a JWT on each GPU worker, one after the other. Bounded: start within 5 minutes, each night within 7;
every process and database goes at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.airflow_cluster import (
    CPU_WORKER,
    GPU_WORKER,
    AirflowCluster,
    Worker,
    default_and_gpu_workers,
    demo_night_matrix,
)

from vramwatch.builds.engine import list_builds
from vramwatch.config import Paths
from vramwatch.warehouse.store import Warehouse

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
DAG = "llamacpp_nightly"
MISSING = "missing-model"
GPU_TASKS = {"build_engine", "prepare_models", "bench", "detect_regressions", "prune"}
SECOND_QUEUE, SECOND_WORKER = "gpu-1", "gpu-worker-1"
SECOND_DAG = f"{DAG}_{SECOND_QUEUE}"


def own_engine(first: Paths, builds: Path) -> None:
    """The second worker's disk, provisioned with a copy of the demo engine under its own builds folder (its record
    names the copy). A real worker builds its own; here that would download the engine's dependencies."""
    (engine,) = [b for b in list_builds(first) if b.ok and b.request.backend == "cpu"][:1]
    home = Path(engine.python).parents[2]
    shutil.copytree(home, builds / home.name, symlinks=True)
    record = json.loads((home / "build.json").read_text())
    for field in ("python", "llama_bench"):
        record[field] = record[field].replace(str(home), str(builds / home.name))
    (builds / home.name / "build.json").write_text(json.dumps(record, indent=2) + "\n")


def ran_tasks(cluster: AirflowCluster, dag_id: str, run_id: str) -> list[dict]:
    """The run's task instances that ran on a worker (a skipped one has no host)."""
    return [t for t in cluster.task_instances(dag_id, run_id) if t["state"] != "skipped"]


def file_tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folders`: (size, mtime in ns) by path."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for folder in folders for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, demo_models):
    tmp = tmp_path_factory.mktemp("distributed")
    first = Paths()  # where the demo engine and models were prepared: the first GPU worker's disk
    second = {"VRAMWATCH_BUILDS_DIR": str(tmp / SECOND_WORKER / "builds"),
              "VRAMWATCH_MODELS_DIR": str(tmp / SECOND_WORKER / "models")}
    own_engine(first, Path(second["VRAMWATCH_BUILDS_DIR"]))
    cluster = AirflowCluster(tmp, {"VRAMWATCH_MATRIX": str(demo_night_matrix(tmp, MISSING)),
                                   "VRAMWATCH_REPORTS_DIR": str(tmp / "reports"),
                                   "VRAMWATCH_GPU_QUEUES": f"gpu,{SECOND_QUEUE}"})
    workers = [*default_and_gpu_workers(tmp, first.builds, first.models), Worker(SECOND_WORKER, SECOND_QUEUE, 1, second)]
    try:
        with cluster.explained():
            cluster.start(workers, pools={"gpu": 1, SECOND_QUEUE: 1}, timeout_s=300)
        yield cluster, tmp
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def distributed_night(cluster):
    cluster, tmp = cluster
    with cluster.explained():
        run_id = cluster.trigger(DAG, {"force": True})
        state = cluster.wait_for_run(DAG, run_id, timeout_s=420)
    return cluster, run_id, state, tmp


@pytest.fixture(scope="module")
def second_workers_night(distributed_night):
    """The second GPU worker's night, after the first's; with the first worker's file tree before and after it."""
    cluster, _, _, tmp = distributed_night
    first = Paths()
    before = file_tree(first.builds, first.models)
    with cluster.explained():
        run_id = cluster.trigger(SECOND_DAG, {"force": True})
        state = cluster.wait_for_run(SECOND_DAG, run_id, timeout_s=420)
    return cluster, run_id, state, tmp, before, file_tree(first.builds, first.models)


def test_the_night_fails_after_storing_reporting_and_alerting_with_the_failed_config_red(distributed_night):
    """Fault: a config that could not be measured must be a failed bench task named by its config, while the night
    still validates, stores, reports and alerts; a green run hid it in the DAG list, so the last task turns it red."""
    cluster, run_id, state, _ = distributed_night
    with cluster.explained():
        tasks = cluster.task_instances(DAG, run_id)
        benches = {t["rendered_map_index"]: t["state"] for t in tasks if t["task_id"] == "bench"}
        assert benches.pop(f"{MISSING}/native/baseline") == "failed"
        assert set(benches) == {"deepseek-moe-16b-tiny/Q4_K_M/baseline", "deepseek-moe-16b-tiny/Q4_K_M/offload",
                                "phi-3.5-moe-tiny/Q4_K_M/baseline", "phi-3.5-moe-tiny/Q4_K_M/offload"}
        assert set(benches.values()) == {"success"}
        others = {t["task_id"]: t["state"] for t in tasks if t["task_id"] != "bench"}
        ran = ["detect_build", "build_engine", "prepare_models", "validate", "store", "detect_regressions", "bisections",
               "report", "alert", "prune", "prune_reports"]
        assert others == {**dict.fromkeys(ran, "success"), "bisect": "skipped",  # no new incident: nothing to bisect
                          "every_config_measured": "failed"}
        assert state == "failed"


def test_every_gpu_task_ran_on_the_gpu_worker_and_the_rest_on_the_default_worker(distributed_night):
    cluster, run_id, _, _ = distributed_night
    with cluster.explained():
        for task in ran_tasks(cluster, DAG, run_id):
            where = (task["hostname"], task["queue"], task["pool"])
            expected = (GPU_WORKER, "gpu", "gpu") if task["task_id"] in GPU_TASKS else (CPU_WORKER, "default",
                                                                                        "default_pool")
            assert where == expected, f"{task['task_id']} {task['rendered_map_index'] or ''}: {where}"


def test_the_night_is_stored_in_the_postgres_warehouse_and_reported(distributed_night):
    cluster, run_id, _, tmp = distributed_night
    with cluster.explained():
        history = Warehouse(cluster.warehouse_url).history()
        statuses = dict(zip(history["config_name"], history["status"]))
        assert statuses.pop(f"{MISSING}/native/baseline") == "invalid_model"
        assert len(statuses) == 4 and set(statuses.values()) == {"ok"}
        assert set(history["run_id"]) == {run_id}
        report = (tmp / "reports" / "latest.md").read_text()
        assert "deepseek-moe-16b-tiny" in report and MISSING in report


def test_a_second_gpu_worker_runs_its_night_on_its_own_queue_disk_and_reports(second_workers_night):
    """Fault: one global gpu queue and pool, and one reports folder: a second GPU worker got benches for an engine it
    did not have, and its night would have overwritten the first worker's report."""
    cluster, run_id, state, tmp, before, after = second_workers_night
    with cluster.explained():
        assert state == "failed"  # its missing model too
        for task in ran_tasks(cluster, SECOND_DAG, run_id):
            where = (task["hostname"], task["queue"], task["pool"])
            expected = (SECOND_WORKER, SECOND_QUEUE, SECOND_QUEUE) if task["task_id"] in GPU_TASKS else (
                CPU_WORKER, "default", "default_pool")
            assert where == expected, f"{task['task_id']} {task['rendered_map_index'] or ''}: {where}"
        changed = sorted(set(before.items()) ^ set(after.items()))
        assert not changed  # not a file of the first worker's builds and models was written, added or removed
        quantized = sorted(p.name for p in (tmp / SECOND_WORKER / "models" / "quantized").glob("*.gguf"))
        assert len(quantized) == 2, quantized  # it made its own models (two MoE at Q4_K_M), with its own engine
        history = Warehouse(cluster.warehouse_url).history()
        mine = history[history["run_id"] == f"{SECOND_QUEUE}/{run_id}"]
        assert len(mine) == 5 and set(mine["status"]) == {"ok", "invalid_model"}
        assert (tmp / "reports" / SECOND_QUEUE / "latest.md").is_file() and (tmp / "reports" / "latest.md").is_file()
