"""The nightly as the deployment runs it: real Airflow processes, Celery workers, PostgreSQL and Redis on loopback.

The api-server, scheduler, dag-processor, triggerer and three Celery workers run on this machine: queue `default`
(no engine, no models), queue `gpu` with concurrency 1 (the models `make test` prepared) and a second GPU worker,
queue `gpu-1`, with builds and models folders of its own. The matrix builds from a bundle directory (build.source:
path), so nothing asks a package index; each GPU worker's disk holds the engine `make test` built, copied under the
bundle's build keys (a real worker builds its own; here that would compile llama.cpp again). A demo-sized night is
triggered through the REST API v2 with a JWT on each GPU worker, one after the other; then a third night on the first
worker, over a planted history that makes it page, triggers llamacpp_bisect, which must run on the gpu queue to its
end. Alerts go through Airflow connections (AIRFLOW_CONN_*) to receivers on 127.0.0.1. Bounded: start within 5
minutes, each night within 7, the bisection within 10; every process and database goes at the end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from support.airflow_cluster import (
    CPU_WORKER,
    GPU_WORKER,
    POLL_S,
    AirflowCluster,
    Worker,
    default_and_gpu_workers,
    demo_night_matrix,
)
from support.receivers import HttpReceiver, SmtpReceiver, serving, stop

from vramwatch.builds.backend import build_request
from vramwatch.builds.engine import list_builds
from vramwatch.config import Paths, load_matrix
from vramwatch.records import BenchResult, BuildRecord, BuildRequest, TestResult, ValidatedNight
from vramwatch.warehouse.store import Warehouse

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
DAG, BISECT_DAG = "llamacpp_nightly", "llamacpp_bisect"
MISSING = "missing-model"
GPU_TASKS = {"build_engine", "prepare_models", "bench", "detect_regressions", "prune"}
SECOND_QUEUE, SECOND_WORKER = "gpu-1", "gpu-worker-1"
SECOND_DAG = f"{DAG}_{SECOND_QUEUE}"
TONIGHT, BEFORE = "0.3.36", "0.3.35"  # the engine's release, and the planted history's release before it
PLANTED_COMMIT = "5" * 40  # the llama.cpp commit the planted nights say release BEFORE vendors
PLANTED_NIGHTS = 21  # a config's drift is judged from 20 good nights on (ThroughputPolicy.min_history)
# secrets of the alert connections: none may show in any log
SLACK_TOKEN = "T0DIST1/B0DIST1/slack-token-0123456789"
WEBHOOK_TOKEN = "webhook-token-0123456789"
SMTP_PASSWORD = "smtp-password-0123456789"


def bundle(folder: Path) -> Path:
    """A bundle directory listing releases BEFORE and TONIGHT. Both names are the cached sdist of the engine: every
    build of them is provisioned (provision_engine), so none is unpacked."""
    (sdist,) = (Paths().cache / "sdists").glob(f"llama_cpp_python-{TONIGHT}.tar.gz")
    folder.mkdir(parents=True)
    for version in (BEFORE, TONIGHT):
        (folder / f"llama_cpp_python-{version}.tar.gz").symlink_to(sdist)
    return folder


def provision_engine(builds: Path, request: BuildRequest) -> None:
    """A worker's disk provisioned with a copy of the demo engine as the build of `request` (its record names the
    copy), so that building it is a reuse."""
    (engine,) = [b for b in list_builds(Paths()) if b.ok and b.request.backend == "cpu"][:1]
    home, copy = Path(engine.python).parents[2], builds / request.key
    shutil.copytree(home, copy, symlinks=True)
    record = json.loads((home / "build.json").read_text())
    for field in ("python", "llama_bench"):
        record[field] = record[field].replace(str(home), str(copy))
    record["request"] = dataclasses.asdict(request)
    (copy / "build.json").write_text(json.dumps(record, indent=2) + "\n")


def ran_tasks(cluster: AirflowCluster, dag_id: str, run_id: str) -> list[dict]:
    """The run's task instances that ran on a worker (a skipped one has no host)."""
    return [t for t in cluster.task_instances(dag_id, run_id) if t["state"] != "skipped"]


def file_tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folders`: (size, mtime in ns) by path."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for folder in folders for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def receivers():
    """Slack (a fake: an HTTP receiver), the JSON webhook and an SMTP server with a login, on 127.0.0.1."""
    slack, webhook = serving(HttpReceiver()), serving(HttpReceiver())
    smtp = serving(SmtpReceiver(login=("ops", SMTP_PASSWORD)))
    yield slack, webhook, smtp
    stop(slack, webhook, smtp)


def alert_connections(slack: HttpReceiver, webhook: HttpReceiver, smtp: SmtpReceiver) -> dict[str, str]:
    """The three alert channels as Airflow connections in AIRFLOW_CONN_* variables (JSON), as docker-compose passes
    them; the Slack provider's hook logs the URL it posts to at DEBUG, so its loggers log at DEBUG here."""
    return {
        "AIRFLOW_CONN_VRAMWATCH_SLACK": json.dumps({
            "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.server_address[1]}/services",
            "password": SLACK_TOKEN}),
        "AIRFLOW_CONN_VRAMWATCH_WEBHOOK": json.dumps({
            "conn_type": "http", "host": f"http://127.0.0.1:{webhook.server_address[1]}/hooks/{WEBHOOK_TOKEN}"}),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port, "login": "ops", "password": SMTP_PASSWORD,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "vramwatch@example.com"}}),
        "VRAMWATCH_ALERT_EMAIL_TO": "oncall@example.com",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow.task.hooks=DEBUG",
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, demo_models, receivers):
    tmp = tmp_path_factory.mktemp("distributed")
    matrix_file = demo_night_matrix(tmp, MISSING, build={"source": "path", "location": str(bundle(tmp / "bundle")),
                                                          "version": TONIGHT})
    source = load_matrix(str(matrix_file)).build
    disks = {GPU_WORKER: tmp / GPU_WORKER / "builds", SECOND_WORKER: tmp / SECOND_WORKER / "builds"}
    for version in (TONIGHT, BEFORE):  # the first worker bisects between the two: both are built there
        provision_engine(disks[GPU_WORKER], build_request(source, version))
    provision_engine(disks[SECOND_WORKER], build_request(source, TONIGHT))
    second = {"VRAMWATCH_BUILDS_DIR": str(disks[SECOND_WORKER]),
              "VRAMWATCH_MODELS_DIR": str(tmp / SECOND_WORKER / "models")}
    cluster = AirflowCluster(tmp, {"VRAMWATCH_MATRIX": str(matrix_file),
                                   "VRAMWATCH_REPORTS_DIR": str(tmp / "reports"),
                                   "VRAMWATCH_GPU_QUEUES": f"gpu,{SECOND_QUEUE}",
                                   **alert_connections(*receivers)})
    workers = [*default_and_gpu_workers(tmp, disks[GPU_WORKER], Paths().models),
               Worker(SECOND_WORKER, SECOND_QUEUE, 1, second)]
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
    first = (tmp / GPU_WORKER / "builds", Paths().models)
    before = file_tree(*first)
    with cluster.explained():
        run_id = cluster.trigger(SECOND_DAG, {"force": True})
        state = cluster.wait_for_run(SECOND_DAG, run_id, timeout_s=420)
    return cluster, run_id, state, tmp, before, file_tree(*first)


def scaled(test: TestResult | None, factor: float) -> TestResult | None:
    return test and dataclasses.replace(test, samples_ts=[x * factor for x in test.samples_ts],
                                        avg_ts=test.avg_ts * factor, stddev_ts=test.stddev_ts * factor)


def plant_slower_build(warehouse: Warehouse, run_id: str) -> str:
    """Nights before the stored run `run_id`, made of its own rows: PLANTED_NIGHTS - 1 on release BEFORE, where one
    config generated three times as fast (every other figure half as fast: faster tonight pages nobody), then one
    night on tonight's release as measured (the drop's first night). The next night on TONIGHT finds that config's
    generation speed regressed since BEFORE, and a bisection between the two releases explains it. Returns its id."""
    measured = [r for r in warehouse.results_for_run(run_id) if r.ok]
    run = warehouse.run(run_id)
    target = measured[0].config.config_id
    builds = {version: BuildRecord(request=BuildRequest(version=version), status="ok", python="", source_dir="",
                                   llama_cpp_python_version=version, llama_cpp_commit=commit, built_at=run.started)
              for version, commit in ((BEFORE, PLANTED_COMMIT), (TONIGHT, run.llama_cpp_commit))}

    def faster_before(result: BenchResult) -> BenchResult:
        tg = 3.0 if result.config.config_id == target else 0.5
        return dataclasses.replace(result, pp=scaled(result.pp, 0.5), tg=scaled(result.tg, tg))

    for back in range(PLANTED_NIGHTS, 0, -1):
        night = (date.fromisoformat(run.night) - timedelta(days=back)).isoformat()
        version = TONIGHT if back == 1 else BEFORE
        rows = measured if version == TONIGHT else [faster_before(r) for r in measured]
        warehouse.store_run(f"planted__{night}", night, builds[version], ValidatedNight(accepted=rows, quarantined=[]),
                            "scheduled", lane="")
    return target


def triggered_bisection(cluster: AirflowCluster, timeout_s: float) -> dict:
    """The llamacpp_bisect run the night triggers, once it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = cluster.api("GET", f"/api/v2/dags/{BISECT_DAG}/dagRuns")["dag_runs"]
        if runs:
            (run,) = runs
            return run
        time.sleep(POLL_S)
    raise AssertionError(f"no {BISECT_DAG} run after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def bisected_night(distributed_night):
    """The first worker's third night over a planted history in which one config generated faster on BEFORE: it
    pages, and its bisect task triggers a llamacpp_bisect run, which this waits for (never unpausing that DAG). The
    night's prune waits for the one gpu slot the bisection holds, so the night ends after it."""
    cluster, first_run, _, tmp = distributed_night
    target = plant_slower_build(Warehouse(cluster.warehouse_url), first_run)
    with cluster.explained():
        run_id = cluster.trigger(DAG, {"force": True})
        bisection = triggered_bisection(cluster, timeout_s=900)  # the night first: build, benches, prune
        bisect_state = cluster.wait_for_run(BISECT_DAG, bisection["dag_run_id"], timeout_s=600)
        state = cluster.wait_for_run(DAG, run_id, timeout_s=300)
    return cluster, run_id, state, target, bisection, bisect_state, tmp


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
               "report", "alert", "prune", "prune_reports", "publish"]
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


def test_a_night_that_pages_triggers_a_bisection_that_runs_on_the_gpu_queue_to_its_end(bisected_night):
    """Fault: llamacpp_bisect was paused at creation, so the run the nightly triggered for a new incident stayed
    queued forever. The run it triggers now runs (no one unpauses the DAG here): the search on the GPU worker's queue
    and pool, between the two releases the incident names, then its store on the default worker. Both releases are
    one engine here, so the planted drop should not reproduce in the ends' A/B (3 processes a side on a loaded
    machine may still call it): a result without a culprit is stored on the incident and turns the run red, one with
    a culprit green."""
    cluster, run_id, state, target, bisection, bisect_state, _ = bisected_night
    with cluster.explained():
        assert state == "failed"  # the missing model, as every night here
        triggers = [t["state"] for t in cluster.task_instances(DAG, run_id) if t["task_id"] == "bisect"]
        assert triggers == ["success"]
        conf = bisection["conf"]
        assert (conf["config"], conf["good"], conf["bad"], conf["level"], conf["metric"]) == (
            target, BEFORE, TONIGHT, "release", "tg_avg_ts")
        tasks = {t["task_id"]: t for t in cluster.task_instances(BISECT_DAG, bisection["dag_run_id"])}
        search, store = tasks["bisect"], tasks["store"]
        assert (search["state"], search["hostname"], search["queue"], search["pool"]) == (
            "success", GPU_WORKER, "gpu", "gpu")
        (incident,) = [i for i in Warehouse(cluster.warehouse_url).incidents() if i.incident_id == conf["incident_id"]]
        found = incident.bisection
        # the two ends measured, the good one good; the bad one as its A/B on one engine found it (the sequential A/B
        # calls an inconclusive end good, and the search then stops: the change did not reproduce)
        assert found is not None and len(found.steps) == 2 and found.steps[0].role == "good"
        ended = "success" if found.culprit else "failed"
        assert (store["state"], store["hostname"]) == ("success", CPU_WORKER)  # stored, found or not
        assert (tasks["culprit_named"]["state"], bisect_state) == (ended, ended)  # then the colour it ends in
        assert found.culprit is not None or found.stopped


def test_alerts_go_through_the_airflow_connections_and_no_secret_of_theirs_is_in_any_log(bisected_night, receivers):
    """Fault: Slack and the webhook were raw environment URLs, so the secrets backend never held them and Airflow never
    masked them. The night's regression and the bisection's follow-up go out through the connections (Slack by the
    provider's SlackWebhookNotifier); the Slack hook's DEBUG line that names the URL it posts to shows the token
    masked, and no token or password shows in any task or process log."""
    cluster, run_id, _, target, _, _, tmp = bisected_night
    slack, webhook, smtp = receivers
    with cluster.explained():
        events = [body["event"] for body in webhook.bodies]
        assert "regression" in events and "bisection" in events
        assert all(path == f"/hooks/{WEBHOOK_TOKEN}" for path, _ in webhook.requests)
        assert all(path == f"/services/{SLACK_TOKEN}" for path, _ in slack.requests)
        name = target.split("@")[0]
        assert any("[throughput] tg_avg_ts" in body["text"] and name in body["text"] for body in slack.bodies)
        assert any(body["text"].startswith(f"Bisection of {name}: ") for body in slack.bodies)
        assert any("regression" in message["Subject"] for _, message in smtp.messages)
        (alert_log,) = (tmp / "airflow" / "logs").glob(f"dag_id={DAG}/run_id={run_id}/task_id=alert/attempt=*.log")
        port = slack.server_address[1]
        assert f"Sending a request - url: http://127.0.0.1:{port}/services/***" in alert_log.read_text()
        logs = [*(tmp / "airflow" / "logs").rglob("*.log"), *(tmp / "process-logs").glob("*.log")]
        leaked = {str(log): secret for log in logs for secret in (SLACK_TOKEN, WEBHOOK_TOKEN, SMTP_PASSWORD)
                  if secret in log.read_text(errors="replace")}
        assert leaked == {}
