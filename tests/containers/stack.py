"""docker-compose.yaml under podman on a machine without Docker and without registry access.

- Base images: a Debian bookworm made by mmdebstrap (Python 3.11, PostgreSQL, Redis), and from it the stand-ins in
  standins/ for the images compose and the Dockerfiles name (apache/airflow, nvidia/cuda, postgres, redis). The
  postgres and redis stand-ins are tagged with the names compose uses, so docker-compose.yaml is used as it is.
- Both images are built from docker/ with their base as the build argument, the machine's CA bundle and pip settings
  mounted into the build (read-only, for the build only: nothing of them is in an image).
- podman runs with containers.conf of this folder (runc, cgroupfs), serves the Docker API on a socket of its own, and
  docker-compose drives it. There is no systemd to run healthchecks on a timer, so `Stack` runs them.

The compose file is docker-compose.yaml less what this machine cannot have: the GPU reservation (no NVIDIA toolkit)
and the build sections (the images are built here first). The API port is published on a free loopback port, the
machine's CA bundle and pip settings are mounted (the engine venv installs its dependencies from the index, through
this machine's TLS proxy), healthchecks get 120 s and a 10-minute start period (two cores shared with other jobs),
the bench's host-bandwidth probe copies 64 MiB instead of 1 GiB, and the scheduler starts only the nights the test
triggers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEBIAN = "localhost/vramwatch-standin-debian:bookworm"
DEBIAN_PACKAGES = "passwd,python3.11,python3.11-venv,ca-certificates,curl,tini,postgresql,redis-server"
STANDINS = {  # stand-in -> the names it answers to
    "airflow": [], "cuda": [],
    "postgres": ["docker.io/library/postgres:16"], "redis": ["docker.io/library/redis:7.2-bookworm"],
}
IMAGES = {"vramwatch-airflow:latest": ("docker/Dockerfile", "AIRFLOW_BASE_IMAGE", "airflow"),
          "vramwatch-airflow-gpu:latest": ("docker/Dockerfile.gpu", "CUDA_BASE_IMAGE", "cuda")}
TOOLS = ("podman", "runc", "catatonit", "mmdebstrap", "docker-compose")
USER, PASSWORD = "airflow", "a-password-the-test-chose"
MATRIX_IN_CONTAINERS = "/opt/vramwatch-night.yaml"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(HERE / "containers.conf")}


def run(command: list[str], timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command[:6])} ... exit {done.returncode}:\n{done.stdout[-3000:]}"
                             f"{done.stderr[-3000:]}")
    return done


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return run(["podman", *args], timeout=timeout, check=check, env=podman_env())


def build_mounts() -> list[str]:
    """This machine's CA bundle and pip settings, for the builds' pip and apt only (read-only, never in an image)."""
    mounts = []
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/xdg/pip"):
        if Path(path).exists():
            mounts += ["--volume", f"{path}:{path}:ro"]
    return mounts


def build_standins(work: Path) -> None:
    """The Debian base (once per machine: podman keeps it) and the stand-ins (cached layers after the first)."""
    if podman("image", "exists", DEBIAN, check=False).returncode != 0:
        tarball = work / "debian.tar"
        run(["mmdebstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", str(tarball)],
            timeout=1200)
        podman("import", str(tarball), DEBIAN)
        tarball.unlink()
    for standin, names in STANDINS.items():
        tag = f"localhost/vramwatch-standin-{standin}:latest"
        podman("build", "--quiet", "--file", str(HERE / "standins" / f"Containerfile.{standin}"), "--tag", tag,
               str(HERE / "standins"))
        for name in names:
            podman("tag", tag, name)


def build_images() -> dict[str, float]:
    """Both images from docker/, as a user builds them but from the stand-ins; seconds each took."""
    took = {}
    for image, (dockerfile, argument, standin) in IMAGES.items():
        started = time.monotonic()
        podman("build", "--network", "host", *build_mounts(), "--build-arg",
               f"{argument}=localhost/vramwatch-standin-{standin}:latest", "--file", str(REPO / dockerfile),
               "--tag", image, str(REPO), timeout=1800)
        took[image] = round(time.monotonic() - started, 1)
    return took


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_file(work: Path, matrix: Path, port: int) -> Path:
    """docker-compose.yaml as this machine can run it (see the module's docstring), with the night's matrix."""
    spec = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    spec.pop("x-airflow-common")
    for name, service in spec["services"].items():
        service.pop("build", None)
        if "volumes" in service:
            service["volumes"] = [str(REPO / v[2:v.index(":")]) + v[v.index(":"):] if v.startswith("./") else v
                                  for v in service["volumes"]]
            if name.startswith("airflow-"):  # the night's matrix, and the way this machine reaches the index
                service["volumes"] += [f"{matrix}:{MATRIX_IN_CONTAINERS}:ro", *build_mounts()[1::2]]
                # only the nights the test triggers: no scheduled night (or weekly refresh) of its own
                service["environment"]["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        if "healthcheck" in service:  # 2 cores shared with other jobs: a Python start can take more than 10 s,
            # and an API server's start minutes; Stack checks every few seconds, not every `interval`, so the start
            # period, not the retries, gives a slow start its time (a check that passes ends it at once)
            service["healthcheck"].update(timeout="120s", start_period="600s")
    gpu_worker = spec["services"]["airflow-worker-gpu"]
    gpu_worker.pop("deploy")  # the GPU reservation: no NVIDIA toolkit here
    # the roofline's host-bandwidth probe copies 1 GiB four times per bench (15 s a bench on 2 shared cores); the
    # figure is not what this test checks, so it probes 64 MiB, as the bench unit tests do
    gpu_worker["environment"]["VRAMWATCH_HOST_BW_MIB"] = "64"
    spec["services"]["airflow-apiserver"]["ports"] = [f"127.0.0.1:{port}:8080"]
    path = work / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Stack:
    """The compose project under podman: up, down, REST calls, the services' health."""

    def __init__(self, work: Path, matrix: Path) -> None:
        self.work = work
        self.project = f"vwtest{secrets.token_hex(3)}"
        self.port = free_port()
        self.file = compose_file(work, matrix, self.port)
        self.socket = work / "podman.sock"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**podman_env(), "DOCKER_HOST": f"unix://{self.socket}", "COMPOSE_HTTP_TIMEOUT": "600",
                    "AIRFLOW_JWT_SECRET": secrets.token_hex(32), "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
                    "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(), "_AIRFLOW_WWW_USER_USERNAME": USER,
                    "_AIRFLOW_WWW_USER_PASSWORD": PASSWORD, "VRAMWATCH_MATRIX": MATRIX_IN_CONTAINERS}
        self.service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                                        env=podman_env(), stdout=subprocess.DEVNULL,
                                        stderr=(work / "podman-service.log").open("wb"))
        deadline = time.monotonic() + 60
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        self._stop_checks = threading.Event()
        self._checks = threading.Thread(target=self._run_healthchecks, daemon=True)
        self._checks.start()
        self._token = ""

    # ------------------------------------------------------------------------------------------------ lifecycle

    def compose(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return run(["docker-compose", "--project-name", self.project, "--file", str(self.file), *args],
                   timeout=timeout, env=self.env)

    def up(self) -> None:
        self.compose("up", "--detach", "--no-build")
        self._token = ""

    def down(self, volumes: bool = False) -> None:
        self.compose("down", *(["--volumes"] if volumes else []))

    def close(self) -> None:
        """Everything the project made goes: containers, volumes, networks (by its label, should compose fail);
        then podman's API service."""
        self._stop_checks.set()
        try:
            run(["docker-compose", "--project-name", self.project, "--file", str(self.file), "down", "--volumes",
                 "--remove-orphans"], timeout=600, check=False, env=self.env)
        finally:
            label = f"label=com.docker.compose.project={self.project}"
            for kind in ("container", "volume", "network"):
                listing = ["ls", "--quiet", "--filter", label, *(["--all"] if kind == "container" else [])]
                left = podman(kind, *listing, check=False).stdout.split()
                if left:
                    podman(kind, "rm", "--force", *left, check=False)
            self.service.terminate()
            self.service.wait(timeout=60)

    def containers(self) -> dict[str, str]:
        """service -> container id, of this project's running containers."""
        listed = podman("ps", "--filter", f"label=com.docker.compose.project={self.project}", "--format",
                        '{{.ID}} {{index .Labels "com.docker.compose.service"}}').stdout.split("\n")
        return {line.split()[1]: line.split()[0] for line in listed if line.strip()}

    def health(self) -> dict[str, str]:
        """service -> its health status ("healthy", "starting", "unhealthy")."""
        return self._health(self.containers())

    @staticmethod
    def _health(containers: dict[str, str]) -> dict[str, str]:
        """The health of these containers (service -> id) in one podman call: polled every second or two, one call a
        container would be a podman start each."""
        if not containers:
            return {}
        inspected = json.loads(podman("inspect", *containers.values()).stdout)
        states = {entry["Id"][:12]: entry["State"] for entry in inspected}
        return {service: (states[container[:12]].get("Health") or states[container[:12]].get("Healthcheck") or {})
                .get("Status", "none") for service, container in containers.items()}

    def wait_healthy(self, services: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = self.health()
            if all(states.get(service) == "healthy" for service in services):
                return
            time.sleep(2)
        raise AssertionError(f"not healthy after {timeout_s:.0f} s: {self.health()}\n{self.logs()}")

    def exec(self, service: str, *command: str, user: str = "") -> subprocess.CompletedProcess:
        return podman("exec", *(["--user", user] if user else []), self.containers()[service], *command)

    def logs(self, chars: int = 2500) -> str:
        return "\n".join(f"===== {service}\n{podman('logs', container, check=False).stderr[-chars:]}"
                         for service, container in self.containers().items())

    def _run_healthchecks(self) -> None:
        """What a systemd timer does for podman elsewhere: each container's check, side by side (a slow `airflow jobs
        check` must not hold up the others), until the container is healthy. A check starts 2 s after the container's
        last one ended, or as long after as that one took: the quick checks (pg_isready, curl) that gate the next
        services answer within seconds, and a slow one (an Airflow CLI start, seconds of CPU) runs at most half the
        time, leaving the CPU to the services it waits for. Looks every second while a container starts, every 5 s
        once all are healthy (a restarted one starts again)."""
        running: dict[str, tuple[subprocess.Popen, float]] = {}  # container -> its check, when that started
        due: dict[str, float] = {}  # container -> when its next check may start
        starting = ["not looked yet"]
        while not self._stop_checks.wait(1 if starting else 5):
            try:
                containers = self.containers()
                starting = [containers[service] for service, status in self._health(containers).items()
                            if status != "healthy"]
            except (AssertionError, subprocess.TimeoutExpired, KeyError, json.JSONDecodeError):
                continue  # a container that went in between
            now = time.monotonic()
            for container, (check, started) in list(running.items()):
                if check.poll() is not None:
                    del running[container]
                    due[container] = now + max(2.0, now - started)
            for container in starting:
                if container not in running and now >= due.get(container, now):
                    running[container] = (subprocess.Popen(["podman", "healthcheck", "run", container],
                                                           env=podman_env(), stdout=subprocess.DEVNULL,
                                                           stderr=subprocess.DEVNULL), now)
        for check, _ in running.values():
            check.wait(timeout=300)

    # ------------------------------------------------------------------------------------------------ REST API

    def api(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            if not self._token:
                self._token = self.api("POST", "/auth/token", {"username": USER, "password": PASSWORD},
                                       auth=False)["access_token"]
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode() if body else None,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from None
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {"text": raw.decode(errors="replace")}

    def night(self, dag_id: str, timeout_s: float) -> tuple[str, str]:
        """Trigger a forced night and wait for it: (run id, final state)."""
        run_id = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                          {"logical_date": None, "conf": {"force": True}})["dag_run_id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return run_id, state
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} not done after {timeout_s:.0f} s: {self.tasks(dag_id, run_id)}")

    def tasks(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The task's log as the API server serves it (from the worker that ran it, signed with the shared key)."""
        log = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1?full_content=true")
        return json.dumps(log)
