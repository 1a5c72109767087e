"""llamacpp_weekly_refresh: once a week, run the nightly even when upstream was quiet.

The nightly skips nights without a new llama.cpp build; a weekly forced run keeps every config's history fresh, so
drift from drivers, CUDA or the machine itself still shows up within a week. It forces every GPU worker's nightly.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag
from dag_defaults import DEFAULT_ARGS, MATRIX_NAME, START_DATE, TAGS  # plugins/: on sys.path everywhere

from vramwatch.config import gpu_workers, load_matrix


@dag(
    dag_id="llamacpp_weekly_refresh",
    schedule="0 4 * * 0",  # Sundays, after the nightly's 02:00 slot
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "benchmark"],
    doc_md=__doc__,
)
def llamacpp_weekly_refresh():
    for worker in gpu_workers(load_matrix(MATRIX_NAME)):
        TriggerDagRunOperator(task_id=f"force_{worker.nightly_dag_id.removeprefix('llamacpp_')}",
                              trigger_dag_id=worker.nightly_dag_id, conf={"force": True})


llamacpp_weekly_refresh()
