"""llamacpp_nightly: how much VRAM and speed each model x quant costs on the newest llama.cpp build.

detect_build -> build_engine -> prepare_models -> bench (one mapped task per config, GPU queue)
  -> validate -> store -> detect_regressions -> report -> alert -> prune (GPU worker) + prune_reports
                                                                  -> publish (the static site)
                                                                  -> every_config_measured (red if any was not)
                                             -> bisections (after prune) -> bisect (one llamacpp_bisect run per new incident)

Orchestration only: every task is one call into vramwatch.pipeline, through pipeline.run_task (XComs in, records to
the stage, JSON out). The matrix (models, quants, modes, queue) is VRAMWATCH_MATRIX (a shipped name or a YAML path;
default "seed"); an invalid matrix fails the import naming the field.
One nightly per GPU worker (VRAMWATCH_GPU_QUEUES, else the matrix's queue): a night's engine, models and benches stay
on that worker's queue and pool; the first worker's is llamacpp_nightly, another's llamacpp_nightly_<its queue>, and
each triggers its own worker's bisections.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from alert_connections import alert_connections
from dag_defaults import DEFAULT_ARGS, MATRIX_NAME, START_DATE, TAGS, bench_task, publish_task  # plugins/

from vramwatch.config import GpuWorker, gpu_workers, load_matrix

MATRIX = load_matrix(MATRIX_NAME)
NIGHT_TIMEOUT = timedelta(hours=22)  # nights start daily at 02:00


def _night(dag_run) -> str:
    # Manual runs in Airflow 3 may have no logical date; when the run started is defined for every run.
    return dag_run.run_after.date().isoformat()


def nightly(worker: GpuWorker) -> None:
    """The night of one GPU worker. Its lane (worker.label, empty for the first worker) keeps the night's run id and
    reports apart from other workers' in the shared warehouse and reports folder."""
    gpu = {"queue": worker.queue, "pool": worker.pool}

    def _alert_on_failure(context: dict) -> None:
        from vramwatch import pipeline

        pipeline.run_task(pipeline.failure_alert, context, worker, alert_connections())

    @dag(
        dag_id=worker.nightly_dag_id,
        schedule="0 2 * * *",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        # a night stuck (behind a bisection in the one-slot gpu pool, say) fails and pages before the next is due,
        # instead of blocking it; the failure callback below alerts with the reason "timed_out"
        dagrun_timeout=NIGHT_TIMEOUT,
        default_args=DEFAULT_ARGS,
        tags=[*TAGS, "benchmark", "gpu"],
        params={"force": Param(False, type="boolean", description="Run even when no new build appeared")},
        on_failure_callback=_alert_on_failure,
        doc_md=__doc__,
    )
    def llamacpp_nightly():
        @task.short_circuit
        def detect_build(params: dict | None = None) -> dict | None:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.build_to_bench, MATRIX, bool(params and params["force"]), worker)

        @task(**gpu, execution_timeout=timedelta(hours=2))
        def build_engine(check: dict) -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.build_engine, MATRIX, check["latest"])

        @task(**gpu, execution_timeout=timedelta(hours=3))
        def prepare_models(build: dict) -> list[dict]:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.prepare_models, MATRIX, build)

        @bench_task(**gpu, retries=1, execution_timeout=timedelta(seconds=MATRIX.timeout_s * 2),
                    map_index_template="{{ config_name }}")  # the grid names each mapped bench by its config
        def bench(config: dict, build: dict) -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException

            from vramwatch import pipeline

            context = get_current_context()
            context["config_name"] = pipeline.config_name_of(config)
            result = pipeline.run_task(pipeline.bench, config, build)
            if result["status"] != "ok":  # red in the grid, no retry; its record still goes on to validate and store
                context["ti"].xcom_push(key="return_value", value=result)
                raise AirflowFailException(f"{context['config_name']}: {result['status']}: {result['error']}")
            return result

        @task(trigger_rule="all_done")  # a config that was not measured fails its bench task; the night goes on
        def validate(results: list[dict], build: dict, dag_run=None) -> dict:
            from vramwatch import pipeline

            # indexed reads: iterating the lazy sequence probes one XCom past the end and logs a 404 error
            return pipeline.run_task(pipeline.validate, [results[i] for i in range(len(results))], _night(dag_run),
                                     build, worker, run_id=worker.run_id(dag_run.run_id))  # Data Docs: the run's folder

        @task
        def store(build: dict, validated: dict, dag_run=None) -> str:
            from vramwatch import pipeline

            # the DAG run's own run id, so a retried task replaces that run's rows
            return pipeline.run_task(pipeline.store, worker.run_id(dag_run.run_id), _night(dag_run), build, validated,
                                     str(dag_run.run_type))

        @bench_task(**gpu, execution_timeout=timedelta(hours=3))  # a tok/s change is rerun A/B on the GPU before it pages
        def detect_regressions(build: dict, stored_as: str) -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.detect_regressions, stored_as, MATRIX.policy, build=build)

        # after prune (below), whatever prune did: a triggered bisection takes the one GPU slot for hours, and the
        # night's own GPU task must not wait behind it
        @task(trigger_rule="all_done")
        def bisections(verdicts: dict, run_id: str | None = None) -> list[dict]:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.bisections_to_start, verdicts, MATRIX, worker.run_id(run_id))

        @task
        def report(verdicts: dict, run_id: str | None = None) -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.report, worker.run_id(run_id), verdicts, lane=worker,
                                     connections=alert_connections(),  # says when no alert can go
                                     prices=MATRIX.prices)

        @task
        def alert(summary: dict) -> int:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.alert, summary, worker, alert_connections())

        # prune and prune_reports run whatever the alert did: a failed alert must not leave ~75 GB a build on the disk
        @task(**gpu, trigger_rule="all_done")  # this GPU worker's disk: the engines and models of the builds used last
        def prune() -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.prune, MATRIX)

        @task(trigger_rule="all_done")  # the reports folder lives with the default workers and the UI
        def prune_reports() -> dict:
            from vramwatch import pipeline

            return pipeline.run_task(pipeline.prune_reports, MATRIX, lane=worker)

        @task(trigger_rule="all_done")  # last, once the night is stored, reported and alerted: an unmeasured config
        def every_config_measured(configs: list[dict], results: list[dict], alerted: int) -> int:  # turns it red
            from airflow.sdk.exceptions import AirflowFailException

            from vramwatch import pipeline

            results = [results[i] for i in range(len(results))]
            measured = {pipeline.config_name_of(r["config"]) for r in results if r["status"] == "ok"}
            why = {pipeline.config_name_of(r["config"]): f"{r['status']}: {r['error']}" for r in results}
            missing = [name for name in map(pipeline.config_name_of, configs) if name not in measured]
            if missing:
                raise AirflowFailException(f"{len(missing)} of {len(configs)} configs not measured: "
                                           + "; ".join(f"{name} ({why.get(name, 'no result')})" for name in missing))
            return len(configs)

        check = detect_build()
        build = build_engine(check)
        configs = prepare_models(build)
        results = bench.partial(build=build).expand(config=configs)
        validated = validate(results, build)
        stored = store(build, validated)
        verdicts = detect_regressions(build, stored)
        alerted = alert(report(verdicts))
        pruned = prune()
        alerted >> [pruned, prune_reports()]
        publish_task(alerted)  # the static site, once the night is stored, reported and alerted
        every_config_measured(configs, results, alerted)
        # each new VRAM or speed incident gets its culprit searched, in a run of its own (hours on the GPU worker)
        to_search = bisections(verdicts)
        pruned >> to_search
        TriggerDagRunOperator.partial(task_id="bisect", trigger_dag_id=worker.bisect_dag_id).expand(conf=to_search)

    llamacpp_nightly()


for gpu_worker in gpu_workers(MATRIX):
    nightly(gpu_worker)
