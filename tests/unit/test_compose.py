"""The production compose file: the services Airflow 3.3 needs, and a GPU worker that runs one bench at a time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yaml").read_text())


def test_has_the_airflow_3_services():
    expected = {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-worker", "airflow-worker-gpu", "airflow-triggerer", "airflow-init"}
    assert expected <= set(COMPOSE["services"])


def test_gpu_worker_takes_only_the_gpu_queue_one_task_at_a_time_with_a_gpu():
    worker = COMPOSE["services"]["airflow-worker-gpu"]
    assert "--queues gpu" in worker["command"] and "--concurrency 1" in worker["command"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1


def test_workers_reach_the_api_server_and_the_warehouse_is_its_own_database():
    env = COMPOSE["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080")
    assert env["VRAMWATCH_WAREHOUSE_URL"].endswith("/vramwatch")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"


def test_init_creates_one_pool_per_gpu_worker_queue():
    init = COMPOSE["services"]["airflow-init"]["command"][-1]
    assert '"$${VRAMWATCH_GPU_QUEUES:-gpu}"' in init and 'airflow pools set "$$queue" 1' in init
    assert COMPOSE["x-airflow-common"]["environment"]["VRAMWATCH_GPU_QUEUES"] == "${VRAMWATCH_GPU_QUEUES:-gpu}"


def test_the_gpu_worker_keeps_its_engines_and_models_in_a_folder_of_its_own():
    env = COMPOSE["services"]["airflow-worker-gpu"]["environment"]
    assert env["VRAMWATCH_BUILDS_DIR"] == "/opt/vramwatch-data/workers/gpu/builds"
    assert env["VRAMWATCH_MODELS_DIR"] == "/opt/vramwatch-data/workers/gpu/models"


REPO = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
needs_docker_compose = pytest.mark.skipif(not DOCKER_COMPOSE.exists(),
                                          reason="docker-compose missing: run scripts/ensure_tools.py")
LONG_RUNNING = ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-log-groomer")
SECRETS = {"AIRFLOW_JWT_SECRET": "a-long-random-string", "AIRFLOW_FERNET_KEY": "a-fernet-key"}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([str(DOCKER_COMPOSE), "-f", str(REPO / "docker-compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, env={**clean, **env}, timeout=120)


@needs_docker_compose
def test_docker_compose_accepts_the_file_and_refuses_to_run_without_its_secrets():
    """Fault: the JWT secret defaulted to change-me-in-production, a usable default anyone could sign tokens with."""
    assert compose_config(SECRETS).returncode == 0, compose_config(SECRETS).stderr
    refused = compose_config({"AIRFLOW_FERNET_KEY": "k"})
    assert refused.returncode != 0 and "set AIRFLOW_JWT_SECRET" in refused.stderr


def test_every_long_running_service_has_a_healthcheck_and_logs_are_groomed():
    """Fault: scheduler, dag-processor, triggerer and workers had no healthchecks; task logs had no retention."""
    assert [s for s in LONG_RUNNING if "healthcheck" not in COMPOSE["services"][s]] == []
    assert "-mtime" in COMPOSE["services"]["airflow-log-groomer"]["command"][-1]


def test_the_data_folders_belong_to_the_containers_user():
    """Fault: /opt/vramwatch-data was created root-owned while the containers run as AIRFLOW_UID."""
    assert 'chown -R "${AIRFLOW_UID:-50000}:0" /opt/vramwatch-data' in COMPOSE["services"]["airflow-init"]["command"][-1]


def test_the_celery_worker_command_exists_in_an_environment_built_from_the_lock():
    """Fault: the images installed only the pinned requirements, which lacked the Celery provider: the GPU worker's
    `airflow celery worker` failed with "invalid choice: 'celery'". This venv is built from the same files."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run([airflow, "celery", "worker", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--queues" in done.stdout and "--concurrency" in done.stdout
