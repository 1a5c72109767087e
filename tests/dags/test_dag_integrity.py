"""Policy tests over every DAG in dags/: imports cleanly and fast, owned, tagged, retried, GPU work on the GPU queue."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vramwatch.records import BisectRequest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
# Modules that must never load when the DAG processor parses a file: they cost seconds, or load llama.cpp.
HEAVY_MODULES = ("llama_cpp", "great_expectations", "pandas", "sqlalchemy.orm", "gguf", "numpy",
                 "vramwatch.bench", "vramwatch.warehouse", "vramwatch.report", "vramwatch.models")
GPU_TASKS = {"build_engine", "prepare_models", "bench", "detect_regressions", "prune"}  # prune: the worker's disk
BISECT_GPU_TASKS = {"bisect"}  # llamacpp_bisect's: builds every candidate and benches it


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "llamacpp_nightly" in dagbag.dags


def test_every_dag_file_parses_in_under_300_ms(dagbag):
    # DagBag's own per-file parse duration: what the DAG processor's import timeout is judged on.
    slow = {s.file: s.duration.total_seconds() for s in dagbag.dagbag_stats if s.duration.total_seconds() >= 0.3}
    assert not slow, f"DAG files slower than 0.3 s to parse: {slow}"


def test_dag_files_import_no_heavy_modules():
    probe = textwrap.dedent(f"""
        import runpy, sys
        import airflow.sdk  # Airflow's own cost is not the DAG file's
        before = set(sys.modules)
        for path in {sorted(str(p) for p in DAGS.glob('*.py'))!r}:
            runpy.run_path(path)
        loaded = set(sys.modules) - before
        heavy = sorted(m for m in loaded if m.split('.')[0] in {HEAVY_MODULES!r} or m in {HEAVY_MODULES!r}
                       or any(m.startswith(h + '.') for h in {HEAVY_MODULES!r}))
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("dag_id", ["llamacpp_nightly", "llamacpp_weekly_refresh", "llamacpp_bisect"])
def test_dag_is_owned_tagged_and_scheduled(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.tags, "every DAG needs tags"
    assert dag.catchup is False
    owners = {t.owner for t in dag.tasks}
    assert owners and "airflow" not in owners, f"tasks need a real owner, got {owners}"


def test_every_task_retries(dagbag):
    for dag in dagbag.dags.values():
        no_retries = [t.task_id for t in dag.tasks if t.retries < 1]
        assert not no_retries, f"{dag.dag_id}: tasks without retries: {no_retries}"


def test_every_task_has_an_execution_timeout(dagbag):
    """Fault: only builds, benches and bisections had one; a task after the store waited on a held lock for as long
    as the lock was held. Every task now has one (config.TASK_TIMEOUT unless it needs longer)."""
    from vramwatch.config import TASK_TIMEOUT

    for dag in dagbag.dags.values():
        endless = [t.task_id for t in dag.tasks if t.execution_timeout is None]
        assert not endless, f"{dag.dag_id}: tasks without an execution_timeout: {endless}"
    assert dagbag.dags["llamacpp_nightly"].get_task("store").execution_timeout == TASK_TIMEOUT


@pytest.mark.parametrize(("dag_id", "gpu_tasks"), [("llamacpp_nightly", GPU_TASKS),
                                                   ("llamacpp_bisect", BISECT_GPU_TASKS)])
def test_gpu_tasks_run_on_the_gpu_queue_and_pool(dagbag, dag_id, gpu_tasks):
    dag = dagbag.dags[dag_id]
    for task in dag.tasks:
        if task.task_id in gpu_tasks:
            assert (task.queue, task.pool) == ("gpu", "gpu"), task.task_id
        else:
            assert task.queue != "gpu", f"{task.task_id} needs no GPU and must not hold the GPU queue"


def test_each_gpu_worker_has_its_own_nightly_on_its_own_queue_and_pool(monkeypatch):
    """Fault: one global `gpu` queue and pool sent a night's benches to a GPU worker without its engine and models."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VRAMWATCH_GPU_QUEUES", "gpu,gpu-1")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    for dag_id, queue in (("llamacpp_nightly", "gpu"), ("llamacpp_nightly_gpu-1", "gpu-1")):
        dag = bag.dags[dag_id]
        assert {(t.queue, t.pool) for t in dag.tasks if t.task_id in GPU_TASKS} == {(queue, queue)}, dag_id
        assert {t.queue for t in dag.tasks if t.task_id not in GPU_TASKS} == {"default"}, dag_id
        bisect = bag.dags[dag_id.replace("nightly", "bisect")]  # its incidents are searched on the same worker
        assert dag.get_task("bisect").partial_kwargs["trigger_dag_id"] == bisect.dag_id
        assert (bisect.get_task("bisect").queue, bisect.get_task("bisect").pool) == (queue, queue)
    forced = {t.trigger_dag_id for t in bag.dags["llamacpp_weekly_refresh"].tasks}
    assert forced == {"llamacpp_nightly", "llamacpp_nightly_gpu-1"}


def test_a_bad_gpu_queue_list_fails_the_import_naming_the_fix(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VRAMWATCH_GPU_QUEUES", "gpu,gpu 1")
    errors = DagBag(dag_folder=str(DAGS)).import_errors
    assert errors and all("not a queue name: ['gpu 1']" in e and "e.g. gpu,gpu-1" in e for e in errors.values())


def test_nightly_reads_like_the_pipeline(dagbag):
    dag = dagbag.dags["llamacpp_nightly"]
    order = ["detect_build", "build_engine", "prepare_models", "bench", "validate", "store",
             "detect_regressions", "report", "alert", "prune"]
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids, f"{upstream} -> {downstream}"
    assert dag.get_task("prune_reports").upstream_task_ids == {"alert"}
    assert "build_engine" in dag.get_task("validate").upstream_task_ids  # results must have run on the build's backend
    assert dag.timetable.expression == "0 2 * * *" and str(dag.timetable.timezone) == "UTC"
    assert dag.params["force"] is False


def test_bench_tasks_are_named_by_config_and_pruning_runs_whatever_the_alert_did(dagbag):
    dag = dagbag.dags["llamacpp_nightly"]
    assert dag.get_task("bench").map_index_template == "{{ config_name }}"
    assert {dag.get_task(t).trigger_rule for t in ("prune", "prune_reports")} == {"all_done"}


def test_the_nightly_triggers_a_bisection_per_new_incident_and_the_bisection_stores_it(dagbag):
    nightly, bisect = dagbag.dags["llamacpp_nightly"], dagbag.dags["llamacpp_bisect"]
    trigger = nightly.get_task("bisect")
    assert trigger.partial_kwargs["trigger_dag_id"] == "llamacpp_bisect"
    assert trigger.upstream_task_ids == {"bisections"}
    # after the night's own GPU task (prune), whatever it did: the bisection then holds the one GPU slot for hours
    assert nightly.get_task("bisections").upstream_task_ids == {"detect_regressions", "prune"}
    assert nightly.get_task("bisections").trigger_rule == "all_done"
    assert bisect.get_task("store").upstream_task_ids == {"bisect"}
    assert type(bisect.timetable).__name__ == "NullTimetable"  # no schedule: only triggered
    assert {"config", "good", "bad", "level", "metric", "incident_id"} <= set(bisect.params)
    assert bisect.get_task("bisect").execution_timeout.total_seconds() >= 6 * 3600  # hours of builds


def test_the_nightly_and_the_bisection_end_by_publishing_the_site_whatever_came_before(dagbag):
    nightly, bisect = dagbag.dags["llamacpp_nightly"], dagbag.dags["llamacpp_bisect"]
    assert nightly.get_task("publish").upstream_task_ids == {"alert"}
    assert bisect.get_task("publish").upstream_task_ids == {"store"}
    # publish succeeds whatever came before: the bisection's colour comes from its last task, after store and publish
    assert bisect.get_task("culprit_named").upstream_task_ids == {"bisect", "store", "publish"}
    assert not bisect.get_task("culprit_named").downstream_task_ids
    assert {dag.get_task("publish").trigger_rule for dag in (nightly, bisect)} == {"all_done"}


def test_weekly_refresh_forces_the_nightly(dagbag):
    (task,) = dagbag.dags["llamacpp_weekly_refresh"].tasks
    assert task.trigger_dag_id == "llamacpp_nightly" and task.conf == {"force": True}


def test_a_matrix_that_cannot_run_fails_the_dag_import_naming_each_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodels: [{name: m, source: {synth: deepseek-moe-16b}}]\nquants: [Q4_K_X]\n"
                   "modes: [baseline]\nn_prompt: 4096\nn_ctx: 4096\n")
    env = {**os.environ, "VRAMWATCH_MATRIX": str(bad)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run([airflow, "dags", "list-import-errors", "--local", "-o", "json"], capture_output=True,
                         text=True, env=env, timeout=300)
    errors = {Path(e["filepath"]).name: e["error"] for e in json.loads(out.stdout[out.stdout.index("[{"):])}
    # every DAG file reads the matrix: its queue and pool, its GPU workers
    assert set(errors) == {"llamacpp_nightly.py", "llamacpp_bisect.py", "llamacpp_weekly_refresh.py"}
    for error in errors.values():
        assert "n_prompt: 4096 prompt tokens plus one generated do not fit n_ctx 4096" in error
        assert "quants: 'Q4_K_X' is not a llama.cpp file type" in error


def test_the_bisect_dags_params_are_a_bisection_request_and_take_the_nightlys_conf(dagbag):
    """The nightly triggers llamacpp_bisect with a BisectRequest as conf: the DAG's params are that record's fields,
    its defaults included, and the conf validates against them as Airflow checks a triggered run's."""
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["llamacpp_bisect"].params
    assert list(params) == [field.name for field in dataclasses.fields(BisectRequest)]
    assert (params["level"], params["metric"], params["incident_id"]) == ("release", "gpu_compute_mib", None)
    request = BisectRequest("m/Q4_K_M/baseline", "0.3.30", "0.3.36", metric="tg_avg_ts", incident_id=3, run_id="r")

    conf = copy.deepcopy(params)
    conf.update(request.to_dict())
    assert BisectRequest.from_dict(conf.validate()) == request
    with pytest.raises(ParamValidationError, match="'tag' is not one of"):
        conf.update({"level": "tag"})
