"""The deployment as its users start it: both images built from docker/, docker-compose.yaml's services healthy, and a
demo night triggered through the REST API that runs on the CPU backend through the GPU-queue worker's container.
Then the GPU worker is restarted, the stack goes down and up, and the second night builds nothing.

Needs root with podman, runc, mmdebstrap and docker-compose (scripts/ensure_tools.py installs them); skips otherwise.
stack.py says what stands in for the registries and the GPU. Timings go to the terminal (`pytest -s`) and to
<tmp>/timings.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from containers.stack import REPO, Stack, build_images, build_standins, missing_tools, podman
from vramwatch.config import Paths

pytestmark = [pytest.mark.containers,
              pytest.mark.skipif(os.geteuid() != 0 or bool(missing_tools()),
                                 reason=f"needs root and {', '.join(missing_tools()) or 'nothing'}: run "
                                        "scripts/ensure_tools.py")]
DAG = "llamacpp_nightly"
GPU_TASKS = {"build_engine", "prepare_models", "bench", "detect_regressions", "prune"}
LONG_RUNNING = {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-log-groomer"}


def say(timings: dict, what: str, seconds: float) -> None:
    timings[what] = round(seconds, 1)
    print(f"\n[containers] {what}: {seconds:.0f} s", flush=True)


def night_matrix(folder: Path, one_config: bool = False) -> Path:
    """The demo matrix's synthetic models at one quant (4 configs); the real quality model's CPU perplexity is left
    out, as in the distributed test. One config: the first of those, for a night that is there for what the caches
    kept (engine, models), not for another four benches.

    Benches on one thread: the stack's own services share the two cores, and two bench threads that wait for each
    other at every step while a third process holds a core decode a tiny model at 2 tokens/s (8 s a rep)."""
    matrix = yaml.safe_load((REPO / "include/vramwatch/matrices/demo.yaml").read_text())
    matrix["models"] = [model for model in matrix["models"] if not model.get("quality")]
    matrix["quants"] = ["Q4_K_M"]
    matrix["n_threads"] = 1
    if one_config:
        matrix["models"], matrix["modes"] = matrix["models"][:1], matrix["modes"][:1]
    path = folder / "night.yaml"
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    path.chmod(0o644)
    return path


def seed_engine_cache(stack: Stack) -> None:
    """This machine's engine cache (the llama-cpp-python sdist and the CPU wheel built from it) into the GPU worker's
    cache volume, where a worker's earlier nights would have left them: a 2-core machine compiles llama.cpp for
    10+ minutes. Without it here, the first night compiles."""
    cache = Paths().cache
    for folder in ("sdists", "wheels"):
        if (cache / folder).is_dir():
            podman("cp", str(cache / folder), f"{stack.containers()['airflow-worker-gpu']}:/opt/vramwatch-gpu/cache/")
    stack.exec("airflow-worker-gpu", "chown", "-R", "50000:0", "/opt/vramwatch-gpu/cache", user="0")


def started_at(container: str) -> str:
    return json.loads(podman("inspect", container).stdout)[0]["State"]["StartedAt"]


@pytest.fixture(scope="module")
def timings(tmp_path_factory):
    found: dict[str, float] = {}
    yield found
    (tmp_path_factory.getbasetemp() / "timings.json").write_text(json.dumps(found, indent=2))
    print(f"\n[containers] timings: {found} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, timings):
    work = tmp_path_factory.mktemp("containers")
    work.chmod(0o755)  # the matrix is mounted from here into containers that run as uid 50000
    started = time.monotonic()
    build_standins(work)
    say(timings, "stand-in base images", time.monotonic() - started)
    for image, seconds in build_images().items():
        say(timings, f"build {image}", seconds)
    stack = Stack(work, night_matrix(work))
    try:
        started = time.monotonic()
        stack.up()
        stack.wait_healthy(LONG_RUNNING, timeout_s=900)
        say(timings, "up until every service is healthy", time.monotonic() - started)
        seed_engine_cache(stack)
        yield stack
    finally:
        stack.close()


def test_every_service_is_healthy_and_the_gpu_worker_runs_as_uid_50000_with_a_home(stack):
    """Fault: the GPU image had no user, no HOME and a root-owned AIRFLOW_HOME: as 50000:0 its worker exited 1."""
    health = stack.health()
    assert {service: health.get(service) for service in LONG_RUNNING} == dict.fromkeys(LONG_RUNNING, "healthy")
    who = stack.exec("airflow-worker-gpu", "sh", "-c", 'id -u; echo "$HOME"; test -w "$AIRFLOW_HOME" && echo ok')
    assert who.stdout.split() == ["50000", "/home/airflow", "ok"]
    import_path = stack.exec("airflow-worker", "python", "-c", "import vramwatch; print(vramwatch.__file__)")
    assert import_path.stdout.strip() == "/opt/airflow/include/vramwatch/__init__.py"  # the mount, the one copy


def test_a_night_through_the_rest_api_runs_on_the_gpu_workers_container(stack, timings):
    started = time.monotonic()
    run_id, state = stack.night(DAG, timeout_s=2400)
    say(timings, "first container night", time.monotonic() - started)
    tasks = [t for t in stack.tasks(DAG, run_id) if t["state"] != "skipped"]
    assert state == "success", {(t["task_id"], t["rendered_map_index"]): t["state"] for t in tasks}
    gpu_host = json.loads(podman("inspect", stack.containers()["airflow-worker-gpu"]).stdout)[0]["Config"]["Hostname"]
    for task in tasks:
        on_gpu = (task["hostname"], task["queue"]) == (gpu_host, "gpu")
        assert on_gpu == (task["task_id"] in GPU_TASKS), f"{task['task_id']}: {task['hostname']} {task['queue']}"
    assert len([t for t in tasks if t["task_id"] == "bench"]) == 4
    report = stack.exec("airflow-apiserver", "cat", "/opt/vramwatch-data/reports/latest.md").stdout
    assert "deepseek-moe-16b-tiny" in report and "phi-3.5-moe-tiny" in report


def test_the_gpu_worker_survives_a_restart(stack):
    worker = stack.containers()["airflow-worker-gpu"]
    started_before = started_at(worker)
    podman("restart", worker, timeout=300)
    stack.wait_healthy({"airflow-worker-gpu"}, timeout_s=600)
    assert started_at(worker) != started_before  # healthy again after a start of its own, not still the old process


def test_after_down_and_up_the_second_night_builds_nothing(stack, timings):
    """Fault: the build cache lived in the container layer, so every recreate was a cold compile."""
    started = time.monotonic()
    stack.down()
    night_matrix(stack.work, one_config=True)  # the file the services mount: the night after `up` benches one config
    stack.up()
    stack.wait_healthy(LONG_RUNNING, timeout_s=900)
    say(timings, "down and up until healthy", time.monotonic() - started)
    started = time.monotonic()
    run_id, state = stack.night(DAG, timeout_s=1800)
    say(timings, "second container night", time.monotonic() - started)
    assert state == "success"
    assert [t["task_id"] for t in stack.tasks(DAG, run_id)].count("bench") == 1  # the matrix of this night
    build_log = stack.task_log(DAG, run_id, "build_engine")  # served from the GPU worker's container
    assert "result: reused 0.3.36-" in build_log and "build wheel" not in build_log
