"""The nightly as the deployment runs it: real Airflow processes, Celery workers, PostgreSQL and Redis on loopback.

The api-server, scheduler, dag-processor, triggerer and two Celery workers (queue `default`; queue `gpu` with
concurrency 1, the only one holding the engine and the models) run a demo-sized night triggered through the REST API
v2 with a JWT. Bounded: start within 5 minutes, the night within 7; every process and database goes at the end.
"""

from __future__ import annotations

import pytest
from support.airflow_cluster import CPU_WORKER, GPU_WORKER, AirflowCluster, default_and_gpu_workers, demo_night_matrix

from vramwatch.config import Paths
from vramwatch.warehouse.store import Warehouse

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
DAG = "llamacpp_nightly"
MISSING = "missing-model"
GPU_TASKS = {"build_engine", "prepare_models", "bench", "detect_regressions", "prune"}


@pytest.fixture(scope="module")
def distributed_night(tmp_path_factory, demo_models):
    tmp = tmp_path_factory.mktemp("distributed")
    paths = Paths()  # where the demo engine and models were prepared: the GPU worker's disk
    cluster = AirflowCluster(tmp, {"VRAMWATCH_MATRIX": str(demo_night_matrix(tmp, MISSING)),
                                   "VRAMWATCH_REPORTS_DIR": str(tmp / "reports")})
    try:
        with cluster.explained():
            cluster.start(default_and_gpu_workers(tmp, paths.builds, paths.models), pools={"gpu": 1}, timeout_s=300)
            run_id = cluster.trigger(DAG, {"force": True})
            state = cluster.wait_for_run(DAG, run_id, timeout_s=420)
        yield cluster, run_id, state, tmp
    finally:
        cluster.stop()


def test_the_night_succeeds_with_the_failed_config_red(distributed_night):
    """Fault: a config that could not be measured must be a failed bench task named by its config, while the night
    still validates, stores, reports and alerts."""
    cluster, run_id, state, _ = distributed_night
    with cluster.explained():
        tasks = cluster.task_instances(DAG, run_id)
        benches = {t["rendered_map_index"]: t["state"] for t in tasks if t["task_id"] == "bench"}
        assert benches.pop(f"{MISSING}/native/baseline") == "failed"
        assert set(benches) == {"deepseek-moe-16b-tiny/Q4_K_M/baseline", "deepseek-moe-16b-tiny/Q4_K_M/offload",
                                "phi-3.5-moe-tiny/Q4_K_M/baseline", "phi-3.5-moe-tiny/Q4_K_M/offload",
                                "gemma-3-270m/Q4_K_M/baseline"}
        assert set(benches.values()) == {"success"}
        others = {t["task_id"]: t["state"] for t in tasks if t["task_id"] != "bench"}
        assert others == dict.fromkeys(["detect_build", "build_engine", "prepare_models", "validate", "store",
                                        "detect_regressions", "report", "alert", "prune", "prune_reports"], "success")
        assert state == "success"


def test_every_gpu_task_ran_on_the_gpu_worker_and_the_rest_on_the_default_worker(distributed_night):
    cluster, run_id, _, _ = distributed_night
    with cluster.explained():
        for task in cluster.task_instances(DAG, run_id):
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
        assert len(statuses) == 5 and set(statuses.values()) == {"ok"}
        assert set(history["run_id"]) == {run_id}
        report = (tmp / "reports" / "latest.md").read_text()
        assert "deepseek-moe-16b-tiny" in report and MISSING in report
