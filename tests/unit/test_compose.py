"""The production compose file: the services Airflow 3.3 needs, and a GPU worker that runs one bench at a time."""

from pathlib import Path

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
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_workers_reach_the_api_server_and_the_warehouse_is_its_own_database():
    env = COMPOSE["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080")
    assert env["VRAMWATCH_WAREHOUSE_URL"].endswith("/vramwatch")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"


def test_init_creates_the_gpu_pool():
    assert "airflow pools set gpu 1" in "".join(COMPOSE["services"]["airflow-init"]["command"])
