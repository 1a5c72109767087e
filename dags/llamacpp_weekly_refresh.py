"""llamacpp_weekly_refresh: once a week, run the nightly even when upstream was quiet.

The nightly skips nights without a new llama.cpp build; a weekly forced run keeps every config's history fresh, so
drift from drivers, CUDA or the machine itself still shows up within a week. It forces every GPU worker's nightly.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag

from vramwatch.config import TASK_TIMEOUT, gpu_workers, load_matrix


@dag(
    dag_id="llamacpp_weekly_refresh",
    schedule="0 4 * * 0",  # Sundays, after the nightly's 02:00 slot
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "vramwatch", "retries": 2, "retry_delay": timedelta(minutes=5),
                  "execution_timeout": TASK_TIMEOUT},
    tags=["vramwatch", "llama.cpp", "benchmark"],
    doc_md=__doc__,
)
def llamacpp_weekly_refresh():
    for worker in gpu_workers(load_matrix(os.environ.get("VRAMWATCH_MATRIX", "seed"))):
        TriggerDagRunOperator(task_id=f"force_{worker.nightly_dag_id.removeprefix('llamacpp_')}",
                              trigger_dag_id=worker.nightly_dag_id, conf={"force": True})


llamacpp_weekly_refresh()
