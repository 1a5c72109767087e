"""llamacpp_bisect: which llama-cpp-python release (or llama.cpp commit) changed a config's VRAM or speed.

bisect (GPU queue: builds each candidate between good and bad, benches the one config) -> store (the result on its
incident, as JSON under reports/bisect/, in the report of the night that opened the incident, and an alert)
-> publish (the static site, with the search and its steps)

Its params are a bisection request's fields (vramwatch.records.BisectRequest: config, good, bad, level, metric, ...);
llamacpp_nightly triggers it with one request as conf for each new VRAM or throughput incident; trigger it by hand
with the same params. One per GPU worker, as the nightlies: llamacpp_bisect on the first, llamacpp_bisect_<queue> on
another (its results under reports/<queue>/bisect/). Orchestration only: each task is one call into vramwatch.pipeline.
The task log shows each step: "step k of ~N: candidate X ... figure ... verdict".
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from alert_connections import alert_connections
from dag_defaults import (  # plugins/: on sys.path everywhere
    DEFAULT_ARGS,
    MATRIX_NAME,
    START_DATE,
    TAGS,
    bench_task,
    params_of,
    publish_task,
)

from vramwatch.config import GpuWorker, gpu_workers, load_matrix
from vramwatch.records import BisectRequest

MATRIX = load_matrix(MATRIX_NAME)


def bisect_dag(worker: GpuWorker) -> None:
    """One GPU worker's bisections: every candidate is built and benched on that worker's queue and pool."""
    gpu = {"queue": worker.queue, "pool": worker.pool}

    @dag(
        dag_id=worker.bisect_dag_id,
        schedule=None,  # triggered: by the nightly on a new incident, or by hand
        is_paused_upon_creation=False,  # paused, every bisection the nightly triggers would wait queued forever
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # one search at a time: each holds the GPU worker for hours of builds
        default_args={**DEFAULT_ARGS, "retries": 1},  # a retried search builds every candidate again
        tags=[*TAGS, "bisect", "gpu"],
        params=params_of(BisectRequest),
        doc_md=__doc__,
    )
    def llamacpp_bisect():
        @bench_task(**gpu, execution_timeout=timedelta(hours=12))  # its candidates' bench children die with it
        def bisect(params: dict | None = None) -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.bisect, MATRIX, params)

        @task
        def store(result: dict, params: dict | None = None) -> str:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.store_bisection, result, params, lane=worker,
                                     connections=alert_connections())

        # last, after store and publish: a search that found nothing is stored, alerted and published, then turns
        # the run red (a leaf decides the run's colour, and publish succeeds whatever came before it)
        @task
        def culprit_named(result: dict) -> str:
            if result["culprit"] is None or result["stopped"]:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"no culprit for {result['config_id']} between {result['good']} and "
                                           f"{result['bad']}: {result['stopped'] or 'the search ended without one'}")
            return result["culprit"]

        search = bisect()
        stored = store(search)
        named = culprit_named(search)
        [stored, publish_task(stored)] >> named  # the site shows the search, found or stopped

    llamacpp_bisect()


for gpu_worker in gpu_workers(MATRIX):
    bisect_dag(gpu_worker)
