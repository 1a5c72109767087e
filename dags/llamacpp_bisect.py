"""llamacpp_bisect: which llama-cpp-python release (or llama.cpp commit) changed a config's VRAM or speed.

bisect (GPU queue: builds each candidate between good and bad, benches the one config) -> store (the result on its
incident, as JSON under reports/bisect/, in the report of the night that opened the incident, and an alert)

llamacpp_nightly triggers it for each new VRAM or throughput incident (conf: incident_id, config, good, bad, level,
metric, run_id); trigger it by hand with the same params. One per GPU worker, as the nightlies: llamacpp_bisect on the first,
llamacpp_bisect_<queue> on another (its results under reports/<queue>/bisect/). Orchestration only: each task is one call into vramwatch.pipeline.
The task log shows each step: "step k of ~N: candidate X ... figure ... verdict".
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from smtp_connection import smtp_connection  # plugins/: on sys.path in every Airflow component

from vramwatch.config import GpuWorker, gpu_workers, load_matrix

MATRIX_NAME = os.environ.get("VRAMWATCH_MATRIX", "seed")
MATRIX = load_matrix(MATRIX_NAME)


def bisect_dag(worker: GpuWorker) -> None:
    """One GPU worker's bisections: every candidate is built and benched on that worker's queue and pool."""
    gpu = {"queue": worker.queue, "pool": worker.pool}

    @dag(
        dag_id=worker.bisect_dag_id,
        schedule=None,  # triggered: by the nightly on a new incident, or by hand
        is_paused_upon_creation=False,  # paused, every bisection the nightly triggers would wait queued forever
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # one search at a time: each holds the GPU worker for hours of builds
        default_args={"owner": "vramwatch", "retries": 1, "retry_delay": timedelta(minutes=5),
                      "show_return_value_in_logs": False},
        tags=["vramwatch", "llama.cpp", "bisect", "gpu"],
        params={
            "config": Param("", type="string", description="config id model/quant/mode@hash (the hash may be left out)"),
            "good": Param("", type="string", description="a build without the change: release version or commit"),
            "bad": Param("", type="string", description="a build with the change"),
            "level": Param("release", enum=["release", "commit"], description="releases, or llama.cpp commits"),
            "metric": Param("gpu_compute_mib", type="string",
                            description="a buffer (CUDA0/compute), a component (gpu_compute_mib), or pp / tg"),
            "repository": Param("", type="string", description="commit level: llama.cpp URL or local mirror"),
            "incident_id": Param(None, type=["null", "integer"], description="the incident the result belongs to"),
            "run_id": Param("", type="string", description="the night that opened it: its report is written again "
                                                          "with the result"),
        },
        doc_md=__doc__,
    )
    def llamacpp_bisect():
        @task(**gpu, execution_timeout=timedelta(hours=12))
        def bisect(params: dict | None = None) -> dict:
            from vramwatch import pipeline

            return pipeline.task_bisect(MATRIX_NAME, params or {})

        @task
        def store(result: dict, params: dict | None = None) -> str:
            from vramwatch import pipeline

            params = params or {}
            written = pipeline.task_store_bisection(result, params.get("incident_id"), worker.label, smtp_connection(),
                                                    params.get("run_id", ""))
            if result["culprit"] is None or result["stopped"]:  # stored and alerted, and red: nothing was found
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"no culprit for {result['config_id']} between {result['good']} and "
                                           f"{result['bad']}: {result['stopped'] or 'the search ended without one'}")
            return written

        store(bisect())

    llamacpp_bisect()


for gpu_worker in gpu_workers(MATRIX):
    bisect_dag(gpu_worker)
