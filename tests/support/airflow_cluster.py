"""A real distributed Airflow 3.3 on loopback, as docker-compose.yaml runs it: api-server, scheduler, dag-processor,
triggerer and Celery workers, PostgreSQL for Airflow's metadata and the vramwatch warehouse, Redis as the broker.

Every database is fresh and uniquely named and dropped on stop (the metadata database is a copy of a template migrated
once per Airflow version, which stays as a cache); the broker's keys carry a unique prefix in their own
Redis DB number and are deleted on stop; every process runs in its own process group, which stop() ends. Logs of
all processes land in one folder; `log_tails()` is what a failing test prints.

Used by tests/e2e/test_distributed_night.py and scripts/screenshots.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
PG = "postgres@127.0.0.1:5432"
REDIS_DB = 9  # the broker's Redis DB number: no other test uses it; keys are prefixed per cluster anyway
# `airflow db migrate` on PostgreSQL costs 4.5 CPU-seconds (13 s on the shared machine) per cluster; a copy of a
# database already migrated by this Airflow version costs a fraction of a second
METADATA_TEMPLATE = "vw_airflow_template_" + importlib.metadata.version("apache-airflow").replace(".", "_")
USER = "admin"
POLL_S = 0.5  # between looks at a run's or a process's state: a REST call or a log read, cheap beside a task


def demo_night_matrix(folder: Path, missing_model: str = "missing-model", build: dict | None = None) -> Path:
    """The demo matrix's synthetic models at one quant, plus a model whose file is missing (its config fails, the
    night goes on), keeping every build on the GPU worker's disk (a developer's builds/ here). The real quality model
    is left out: its perplexity takes two minutes on a CPU, and tests/e2e/test_nightly_dag.py covers it.
    `build`: settings of the matrix's build section to replace (a bundle directory as its source, say)."""
    matrix = yaml.safe_load((REPO / "include/vramwatch/matrices/demo.yaml").read_text())
    matrix["build"].update(build or {})
    missing = {"name": missing_model, "source": {"path": str(folder / "gone.gguf")}, "quants": ["native"],
               "modes": ["baseline"]}
    matrix["models"] = [missing, *(m for m in matrix["models"] if not m.get("quality"))]
    matrix.update(quants=["Q4_K_M"], keep_builds=1000)
    path = folder / "demo-night.yaml"
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Worker:
    """One Celery worker: the queues it serves, how many tasks at once, and its own environment (builds, models)."""

    hostname: str
    queues: str
    concurrency: int
    env: dict[str, str] = field(default_factory=dict)


CPU_WORKER, GPU_WORKER = "cpu-worker", "gpu-worker-0"


def default_and_gpu_workers(folder: Path, gpu_builds: Path, gpu_models: Path) -> list[Worker]:
    """A default worker that owns no engine and no model (what needs them must run on the GPU worker), and a GPU
    worker on queue `gpu`, one task at a time, with the engines and models of its own disk."""
    return [Worker(CPU_WORKER, "default", 2, {"VRAMWATCH_BUILDS_DIR": str(folder / CPU_WORKER / "builds"),
                                              "VRAMWATCH_MODELS_DIR": str(folder / CPU_WORKER / "models")}),
            Worker(GPU_WORKER, "gpu", 1, {"VRAMWATCH_BUILDS_DIR": str(gpu_builds),
                                          "VRAMWATCH_MODELS_DIR": str(gpu_models)})]


class AirflowCluster:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        """`env`: the vramwatch settings every process shares (matrix, reports); the cluster adds Airflow's own."""
        self.tmp = tmp
        self.logs = tmp / "process-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        suffix = secrets.token_hex(4)
        self.metadata_db, self.warehouse_db = f"vw_airflow_{suffix}", f"vw_warehouse_{suffix}"
        self.key_prefix = f"vw-{suffix}-"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.warehouse_url = f"postgresql+psycopg2://{PG}/{self.warehouse_db}"
        self.processes: dict[str, subprocess.Popen] = {}
        self._token = ""
        home = tmp / "airflow"
        home.mkdir(exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USER: self.password}))
        self.env = {
            **os.environ, **env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG}/{self.metadata_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{PG}/{self.metadata_db}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.key_prefix,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only triggered runs: no 02:00 night of its own
            "VRAMWATCH_WAREHOUSE_URL": self.warehouse_url,
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "tests")]),
            "GX_ANALYTICS_ENABLED": "False",
        }

    # ---------------------------------------------------------------------------------------------- lifecycle

    def start(self, workers: list[Worker], pools: dict[str, int], timeout_s: float = 300) -> None:
        """Databases, schema, every process, the pools; returns once the API says all parts are healthy, every
        worker is ready and the DAG processor has parsed the DAGs."""
        deadline = time.monotonic() + timeout_s
        self._migrated_template(timeout_s)
        self._psql(f"CREATE DATABASE {self.metadata_db} TEMPLATE {METADATA_TEMPLATE}")
        self._psql(f"CREATE DATABASE {self.warehouse_db}")
        self._spawn("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port),
                                   "--workers", "1"])
        for part in ("scheduler", "dag-processor", "triggerer"):
            self._spawn(part, [AIRFLOW, part])
        for worker in workers:
            env = {**self.env, **worker.env, "VRAMWATCH_WORKER_HOSTNAME": worker.hostname,
                   "AIRFLOW__CORE__HOSTNAME_CALLABLE": "support.worker_hostname.from_environment",
                   "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            self._spawn(f"worker-{worker.hostname}", [
                AIRFLOW, "celery", "worker", "--queues", worker.queues, "--concurrency", str(worker.concurrency),
                "--celery-hostname", f"{worker.hostname}@%h", "--without-gossip", "--without-mingle"], env)
        self._until(deadline, "the API server's health endpoint says every part is healthy", self._healthy)
        for worker in workers:
            log = self.logs / f"worker-{worker.hostname}.log"
            self._until(deadline, f"Celery worker {worker.hostname} is ready",
                        lambda log=log: " ready." in log.read_text(errors="replace"))
        for name, slots in pools.items():
            self.api("POST", "/api/v2/pools", {"name": name, "slots": slots,
                                               "description": "GPU benches of one worker: one at a time"})
        self._until(deadline, "the DAG processor has parsed llamacpp_nightly",
                    lambda: self._status("/api/v2/dags/llamacpp_nightly") == 200)

    def stop(self) -> None:
        """End every process group this cluster started, then drop its databases and broker keys."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(10)
            _signal_group(process, signal.SIGKILL)  # children that outlived their parent (task supervisors)
        for database in (self.metadata_db, self.warehouse_db):
            self._psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        import redis

        broker = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        keys = list(broker.scan_iter(match=f"{self.key_prefix}*"))
        if keys:
            broker.delete(*keys)

    def _migrated_template(self, timeout_s: float) -> None:
        """METADATA_TEMPLATE, migrated under a name of this cluster's own and renamed when done, unless it exists: a
        cluster that starts beside this one never copies a half-migrated database."""
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{METADATA_TEMPLATE}'"):
            return
        scratch = f"vw_airflow_migrating_{secrets.token_hex(4)}"
        self._psql(f"CREATE DATABASE {scratch}")
        env = {**self.env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG}/{scratch}"}
        migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True,
                                 timeout=timeout_s)
        try:
            assert migrate.returncode == 0, (f"airflow db migrate failed:\n{migrate.stdout[-3000:]}"
                                             f"{migrate.stderr[-3000:]}")
            self._psql(f"ALTER DATABASE {scratch} RENAME TO {METADATA_TEMPLATE}")
        except (AssertionError, subprocess.CalledProcessError):
            self._psql(f"DROP DATABASE IF EXISTS {scratch}")
            if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{METADATA_TEMPLATE}'"):
                raise  # not a cluster beside this one that made it first

    @contextmanager
    def explained(self) -> Iterator[None]:
        """An assertion that fails inside says what every process logged last."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"===== {log.name} (last {chars} characters)\n{log.read_text(errors='replace')[-chars:]}"
                         for log in sorted(self.logs.glob("*.log")))

    # ---------------------------------------------------------------------------------------------- the REST API

    def token(self) -> str:
        """A JWT from the simple auth manager's token endpoint, for the configured user and password."""
        if not self._token:
            self._token = self._request("POST", "/auth/token", {"username": USER, "password": self.password},
                                        auth=False)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        return self._request(method, path, body)

    def trigger(self, dag_id: str, conf: dict) -> str:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        """The run's final state (success or failed); fails the caller when it is still going after timeout_s."""
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(POLL_S)
        done = {(t["task_id"], t["rendered_map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}
        raise AssertionError(f"run {run_id} still {state} after {timeout_s:.0f} s; tasks: {done}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]

    # ---------------------------------------------------------------------------------------------- internals

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from None

    def _status(self, path: str) -> int:
        try:
            self.api("GET", path)
            return 200
        except AssertionError:
            return 0

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=10) as response:
                health = json.loads(response.read())
        except OSError:
            return False
        return all(part.get("status") == "healthy" for part in health.values())

    def _until(self, deadline: float, what: str, check) -> None:
        while time.monotonic() < deadline:
            exited = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if exited:
                raise AssertionError(f"waiting until {what}: processes exited: {exited}\n{self.log_tails()}")
            if check():
                return
            time.sleep(POLL_S)
        raise AssertionError(f"timed out waiting until {what}\n{self.log_tails()}")

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(command, env=env or self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _psql(statement: str) -> str:
        """Run `statement` in the server's postgres database; returns what it printed (rows unaligned, no header)."""
        return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qAtc", statement],
                              check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # the group this cluster made for the process: its own children only
    except ProcessLookupError:
        pass
