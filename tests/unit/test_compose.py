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


def test_the_gpu_worker_keeps_its_cache_engines_and_models_on_named_volumes():
    """Fault: the build cache (sdists, wheels, ccache, cmake trees) lived in the container layer: every recreate was a
    cold compile."""
    worker = COMPOSE["services"]["airflow-worker-gpu"]
    mounts = dict(volume.split(":")[::-1][:2] for volume in worker["volumes"])  # container path -> source
    for variable in ("VRAMWATCH_CACHE_DIR", "VRAMWATCH_BUILDS_DIR", "VRAMWATCH_MODELS_DIR"):
        folder = worker["environment"][variable]
        assert mounts.get(folder) in COMPOSE["volumes"], f"{variable}={folder} is not on a named volume"
    assert len({worker["environment"][v] for v in ("VRAMWATCH_CACHE_DIR", "VRAMWATCH_BUILDS_DIR",
                                                     "VRAMWATCH_MODELS_DIR")}) == 3


REPO = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
needs_docker_compose = pytest.mark.skipif(not DOCKER_COMPOSE.exists(),
                                          reason="docker-compose missing: run scripts/ensure_tools.py")
LONG_RUNNING = ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-log-groomer")
SECRETS = {"AIRFLOW_JWT_SECRET": "a-long-random-string", "AIRFLOW_FERNET_KEY": "a-fernet-key",
           "AIRFLOW_API_SECRET_KEY": "another-long-random-string"}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([str(DOCKER_COMPOSE), "-f", str(REPO / "docker-compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, env={**clean, **env}, timeout=120)


@needs_docker_compose
def test_docker_compose_accepts_the_file_and_refuses_to_run_without_its_secrets():
    """Fault: the JWT secret defaulted to change-me-in-production, a usable default anyone could sign tokens with."""
    assert compose_config(SECRETS).returncode == 0, compose_config(SECRETS).stderr
    for secret in SECRETS:
        refused = compose_config({name: value for name, value in SECRETS.items() if name != secret})
        assert refused.returncode != 0 and f"set {secret}" in refused.stderr


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


DOCKERFILES = {name: (REPO / "docker" / name).read_text() for name in ("Dockerfile", "Dockerfile.gpu")}
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = [name for name in SERVICES if name.startswith(("airflow-", "flower"))]


def test_each_image_takes_its_base_as_a_build_argument_with_the_official_image_by_default():
    """Registry images cannot be pulled everywhere (air-gapped hosts, this test machine): the base is an ARG."""
    for name, base, default in (("Dockerfile", "AIRFLOW_BASE_IMAGE", "apache/airflow:3.3.2-python3.11"),
                                ("Dockerfile.gpu", "CUDA_BASE_IMAGE", "nvidia/cuda:13.0.0-devel-ubuntu24.04")):
        assert f"ARG {base}={default}\nFROM ${{{base}}}" in DOCKERFILES[name]
        service = "airflow-worker-gpu" if name.endswith(".gpu") else "airflow-worker"
        assert SERVICES[service]["build"]["args"][base] == f"${{{base}:-{default}}}"


def test_the_gpu_image_has_a_user_with_a_home_that_owns_airflow_home():
    """Fault: Dockerfile.gpu created no user and left /opt/airflow root-owned; run as 50000:0 the worker exited 1
    (PermissionError writing airflow.cfg) and the vramwatch cache resolved to /.cache."""
    gpu = DOCKERFILES["Dockerfile.gpu"]
    assert 'useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow' in gpu and "HOME=/home/airflow" in gpu
    assert 'chown -R "${AIRFLOW_UID}:0" /opt/airflow' in gpu and "USER ${AIRFLOW_UID}" in gpu
    assert "ARG AIRFLOW_UID=50000" in gpu and SERVICES["airflow-worker-gpu"]["user"] == "${AIRFLOW_UID:-50000}:0"


def test_the_library_runs_from_the_mounted_include_folder_only():
    """Fault: include/ was mounted but not on the import path, so the image's baked copy of the library ran."""
    for name, text in DOCKERFILES.items():
        assert "COPY include" not in text and "pip install --no-deps /opt/vramwatch" not in text, name
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        assert service["environment"]["PYTHONPATH"] == "/opt/airflow/include", name
        assert "./include:/opt/airflow/include" in service["volumes"], name


def test_every_airflow_container_has_an_init_and_shares_the_api_secret_key():
    """Fault: no init reaped the bench children's zombies; no shared secret key let the API server read a remote
    worker's task logs."""
    for name in AIRFLOW_SERVICES:
        assert SERVICES[name]["init"] is True, name
        assert SERVICES[name]["environment"]["AIRFLOW__API__SECRET_KEY"].startswith("${AIRFLOW_API_SECRET_KEY:?"), name


def test_healthchecks_have_a_timeout_and_a_start_period():
    """Fault: a hung check had no timeout, and a slow first start counted against the retries."""
    for name in LONG_RUNNING:
        check = SERVICES[name]["healthcheck"]
        assert "timeout" in check or name == "postgres", name
        assert "start_period" in check or name == "airflow-log-groomer", name


def test_every_alert_setting_the_code_reads_is_passed_through():
    """Fault: only two of the e-mail settings reached the containers."""
    import re

    sources = [*(REPO / "include").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    read = {name for path in sources for name in re.findall(r"VRAMWATCH_ALERT_[A-Z_]*[A-Z]", path.read_text())}
    assert len(read) >= 8
    passed = COMPOSE["x-airflow-common"]["environment"]
    assert sorted(read - passed.keys()) == []
    assert all(passed[name].startswith(f"${{{name}:-") for name in read)


def test_the_alert_connections_the_dags_read_can_be_defined_from_the_environment():
    """Fault: Slack and the webhook were raw environment URLs, outside Airflow's secrets backend. The DAGs read them as
    Airflow connections (plugins/alert_connections.py); each default id's AIRFLOW_CONN_* variable reaches the
    containers, empty unless set (an empty one defines nothing: the metastore or a secrets backend may hold it)."""
    import re

    source = (REPO / "plugins" / "alert_connections.py").read_text()
    conn_ids = re.findall(r'os.environ.get\("VRAMWATCH_ALERT_[A-Z]+_CONN_ID", "([a-z_]+)"\)', source)
    assert sorted(conn_ids) == ["smtp_default", "vramwatch_slack", "vramwatch_webhook"]
    passed = COMPOSE["x-airflow-common"]["environment"]
    for conn_id in conn_ids:
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        assert passed[variable] == f"${{{variable}:-}}"


def test_sign_in_uses_a_password_the_deployment_chooses_kept_on_a_volume():
    """Fault: SimpleAuthManager generated a password inside the container, new at every recreate, written nowhere a
    user would look. (FAB's auth manager cannot be installed with the lock: see docker-compose.yaml.)"""
    env = COMPOSE["x-airflow-common"]["environment"]
    password_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "${_AIRFLOW_WWW_USER_USERNAME:-airflow}:admin"
    assert "airflow-auth:" + str(Path(password_file).parent) in COMPOSE["x-airflow-common"]["volumes"]
    init = SERVICES["airflow-init"]
    assert init["environment"]["WWW_PASSWORD"] == "${_AIRFLOW_WWW_USER_PASSWORD:-airflow}"
    assert f"> {password_file}" in init["command"][-1]


@pytest.mark.postgres
def test_init_creates_the_warehouse_database_when_missing_not_only_on_a_fresh_volume(tmp_path):
    """Fault: init-warehouse.sql ran only when PostgreSQL's volume was new; an existing one never got the database.
    Runs airflow-init's own statement twice against the real server."""
    from sqlalchemy import create_engine, text

    from vramwatch.warehouse.tempdb import temporary_database

    statement = SERVICES["airflow-init"]["environment"]["CREATE_WAREHOUSE"]
    assert '"$${CREATE_WAREHOUSE}"' in SERVICES["airflow-init"]["command"][-1]
    with temporary_database("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres") as url:
        admin = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}"'))
        said = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", statement], env={**os.environ, "VRAMWATCH_WAREHOUSE_URL": url},
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            said.append(done.stdout.split()[-1])
        admin.dispose()
        assert said == ["created", "exists"]


def test_flower_is_a_profile_to_watch_the_gpu_queue():
    flower = SERVICES["flower"]
    assert flower["profiles"] == ["flower"] and flower["command"] == "celery flower"
