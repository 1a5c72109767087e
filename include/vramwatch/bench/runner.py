"""The parent of a bench child: spawn it in the build's own Python, enforce the timeout, always return a record.

The child may hang (a deadlocked backend), be killed (the kernel's OOM killer), abort (GGML_ASSERT) or print
something unexpected; none of that may take the nightly down with it or leave a config without a row. Whatever
happens, `run_config` returns a BenchResult whose status says what happened and whose error is one line.

No child outlives its parent (on a GPU worker it would hold VRAM through the next config's bench): it runs in a
process group of its own, which the parent kills when the bench ends, on exit, on SIGTERM/SIGINT/SIGHUP and on
Airflow's on_kill (`end_children`); the child asks the kernel for SIGKILL when its parent dies (kill -9, which no
handler sees; bench/child.py); and each child is listed in a pid file, so the next bench on this worker ends one
that still outlived an earlier run and says so.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import vramwatch
from vramwatch.bench import host, llama_log
from vramwatch.bench.cgroup import CgroupUnavailable, MemoryCgroup
from vramwatch.bench.gpu import Nvml
from vramwatch.config import Paths
from vramwatch.gguf_file import GGUFError, read_model
from vramwatch.progress import for_stage, relay
from vramwatch.records import (
    BENCH_PARENT_ENV,
    RESULT_MARKER,
    BenchConfig,
    BenchResult,
    BuildRecord,
    Fingerprint,
    error_line,
)

INCLUDE_DIR = Path(vramwatch.__file__).resolve().parents[1]
STDERR_TAIL = 50
_child_said = relay("bench")
_say = for_stage("bench")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_live: dict[int, subprocess.Popen] = {}  # pid -> the children of this process now benching
_live_lock = threading.Lock()


def run_config(config: BenchConfig, build: BuildRecord, *,
               llama_log_path: str | os.PathLike[str] | None = None) -> BenchResult:
    """Bench one config in a child of `build.python`. Never raises for a failed bench: the status says it.

    `llama_log_path` keeps llama.cpp's whole log (every level) of that run. The child's stderr lines are progress,
    relayed as they come (vramwatch.progress: INFO on the `vramwatch.bench` logger). The result records the model
    file's size as this worker read it: the file lives here, validation does not.
    """
    path = config.model.path
    on_disk = os.path.getsize(path) if path and os.path.isfile(path) else None
    end_leftover_children()
    result = _bench(config, build, llama_log_path)
    return dataclasses.replace(result, file_bytes_on_disk=on_disk)


def _bench(config: BenchConfig, build: BuildRecord,
           llama_log_path: str | os.PathLike[str] | None) -> BenchResult:
    """run_config's work: check the model and engine, make the child's cgroup, run the child in it."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def failed(status: str, error: str) -> BenchResult:
        return BenchResult(config=config, status=status, error=error_line(error), started_at=started_at,
                           fingerprint=machine_fingerprint(build))

    if config.model.error:  # the models stage could not make the file
        return failed("invalid_model", config.model.error)
    try:
        read_model(config.model.path)
    except GGUFError as exc:
        return failed("invalid_model", str(exc))
    if not build.ok:
        return failed("crashed", f"build {build.request.key} is not usable (status {build.status}): {build.error}")
    if not Path(build.python).is_file():
        return failed("crashed", f"engine python not found: {build.python}")

    if config.host_memory_limit_mib:
        try:
            cgroup = MemoryCgroup.limited(config.host_memory_limit_mib)
        except CgroupUnavailable as exc:
            return failed("crashed", f"host_memory_limit_mib={config.host_memory_limit_mib} cannot be enforced: "
                                     f"{exc}; run the bench as root (or in a delegated cgroup), or set it to 0")
    else:
        cgroup = MemoryCgroup.current()
    try:
        return _run_child(config, build, cgroup, failed, llama_log_path)
    finally:
        if cgroup and cgroup.owned:
            cgroup.remove()


def _run_child(config: BenchConfig, build: BuildRecord, cgroup: MemoryCgroup | None,
               failed: Callable[[str, str], BenchResult],
               llama_log_path: str | os.PathLike[str] | None) -> BenchResult:
    """Spawn, feed, wait for and classify one child in `cgroup` (the runner's own, or one made for the child)."""
    oom_kills_before = cgroup.oom_kills() if cgroup else None
    try:
        child = subprocess.Popen(
            [build.python, "-m", "vramwatch.bench.child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=_child_env(build, llama_log_path) | pinned_gpus(config.gpus, os.environ),
            text=True, start_new_session=True,
        )
    except OSError as exc:
        return failed("crashed", f"cannot start {build.python}: {exc}")
    _track(child, config)
    stdout: list[str] = []
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    readers = [
        threading.Thread(target=_collect, args=(child.stdout, stdout.append), daemon=True),
        threading.Thread(target=_collect, args=(child.stderr, lambda line: _relay(line, tail)), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        if cgroup and cgroup.owned:
            try:  # before it has its config: the model and every buffer it allocates count against the limit
                cgroup.add(child.pid)
            except OSError as exc:
                return failed("crashed", f"cannot move the bench child into {cgroup.path}: {exc.strerror}")
        try:
            child.stdin.write(config.to_json())
            child.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its exit status and stderr say why
        try:
            returncode = child.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(child)
            return failed("timeout", f"no result within timeout_s={config.timeout_s:g} s; killed the child "
                                     f"(last output: {_last(tail)})")
    finally:
        _kill(child)
        for reader in readers:
            reader.join(timeout=5)

    results = [line[len(RESULT_MARKER):] for line in stdout if line.startswith(RESULT_MARKER)]
    if results:
        try:
            return BenchResult.from_json(results[-1])
        except (ValueError, TypeError, KeyError) as exc:
            return failed("crashed", f"unreadable result line from the child: {exc}")
    if returncode == -signal.SIGKILL and cgroup and oom_kills_before is not None:
        oom_kills_after = cgroup.oom_kills() or 0
        if oom_kills_after > oom_kills_before:  # the kernel killed for memory in the child's cgroup: the child
            return failed("oom", f"child killed by the kernel's OOM killer ({cgroup.describe()}, oom_kill "
                                 f"{oom_kills_before} -> {oom_kills_after}): {_last(tail)}")
    status = "oom" if llama_log.classify_failure(list(tail)) == "oom" else "crashed"
    if returncode < 0:
        how = f"killed by {signal.Signals(-returncode).name}" if -returncode in signal.valid_signals() else "killed"
    else:
        how = f"exited with code {returncode} without a result"
    return failed(status, f"child {how}: {_last(tail)}")


def machine_fingerprint(build: BuildRecord) -> Fingerprint:
    """What the parent knows of this machine and build when no child reported: the same facts the child records,
    so a timeout or crash lands in the same environment's history as the config's earlier ok nights."""
    gpu: dict[str, object] = {}
    nvml = Nvml.open() if build.request.backend == "cuda" else None
    if nvml:
        try:
            gpu = nvml.fingerprint(nvml.device_of(os.getpid()))
        finally:
            nvml.close()
    return Fingerprint(cpu_model=host.cpu_model(), cpu_cores=host.physical_cores(), ram_gib=host.ram_gib(),
                       host=host.hostname(), llama_cpp_commit=build.llama_cpp_commit,
                       llama_cpp_python_version=build.llama_cpp_python_version, build_flags=build.request.cmake_args,
                       backend=build.request.backend, **gpu)


def pinned_gpus(gpus: int, worker_env: Mapping[str, str]) -> dict[str, str]:
    """The environment that shows a bench child exactly its config's GPUs: the first `gpus` of the worker's own
    (its CUDA_VISIBLE_DEVICES, else every GPU NVML counts, else 0, 1, ...), numbered in PCI bus order as NVML numbers
    them. llama.cpp otherwise splits a model over every GPU it sees: a one-GPU config on a two-GPU machine would
    measure a layer split. A worker with fewer GPUs than asked pins what it has, and the child reports the config
    not_applicable."""
    own = [part.strip() for part in worker_env.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    if "CUDA_VISIBLE_DEVICES" not in worker_env:  # set, even empty, it is the worker's: only what it lists
        nvml = Nvml.open()
        count = len(nvml.handles) if nvml else gpus
        if nvml:
            nvml.close()
        own = [str(index) for index in range(count)]
    return {"CUDA_VISIBLE_DEVICES": ",".join(own[:gpus]),
            "CUDA_DEVICE_ORDER": worker_env.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}


def _child_env(build: BuildRecord, llama_log_path: str | os.PathLike[str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(INCLUDE_DIR)  # only our records: the engine venv must not see the parent's packages
    env["PYTHONUNBUFFERED"] = "1"
    env[BENCH_PARENT_ENV] = str(os.getpid())
    env["VRAMWATCH_LLAMA_CPP_COMMIT"] = build.llama_cpp_commit
    env["VRAMWATCH_BUILD_FLAGS"] = build.request.cmake_args  # the CUDA architectures are among them
    if llama_log_path:
        env["VRAMWATCH_LLAMA_LOG"] = str(Path(llama_log_path).resolve())
    return env


def _collect(stream: TextIO, sink) -> None:
    for line in stream:
        sink(line.rstrip("\n"))


def _relay(line: str, tail: deque[str]) -> None:
    if line.strip():
        tail.append(line)
    _child_said(line)


def _kill(child: subprocess.Popen) -> None:
    """Kill the child's whole process group (it is its own session leader), then reap it and forget it."""
    _kill_group(child.pid)
    child.wait()
    with _live_lock:
        _live.pop(child.pid, None)
    _pid_file(child.pid).unlink(missing_ok=True)


def _kill_group(pgid: int) -> None:
    try:  # even after the leader exited: what it started may still be in its group
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------- no child outlives us


def end_children() -> int:
    """Kill the process group of every bench child this process has running (on exit, a stop signal, Airflow's
    on_kill); returns how many there were. Safe in a signal handler: it only sends signals."""
    with _live_lock:
        pids = list(_live)
    for pid in pids:
        _kill_group(pid)
    return len(pids)


def _children_dir() -> Path:
    return Paths().builds / "bench-children"


def _pid_file(pid: int) -> Path:
    return _children_dir() / f"{pid}.json"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, it names one
    process, never a later one that reused the pid. None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _track(child: subprocess.Popen, config: BenchConfig) -> None:
    """Remember the child: in this process (end_children) and in a pid file (end_leftover_children)."""
    with _live_lock:
        _live[child.pid] = child
    _install_stop_handlers()
    folder = _children_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"pid": child.pid, "started": _started(child.pid), "parent": os.getpid(),
             "parent_started": _started(os.getpid()), "config": config.config_name}
    _pid_file(child.pid).write_text(json.dumps(entry))


def end_leftover_children() -> list[str]:
    """End every bench child listed on this worker whose parent is gone (a killed nightly from before the child died
    with its parent: an older version, a kernel without PR_SET_PDEATHSIG), and say so; returns what it said. A child
    whose parent still runs is another bench's (an A/B pair), and is left alone."""
    folder = _children_dir()
    ended = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            pid, parent = int(entry["pid"]), int(entry["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if entry.get("parent_started") is not None and _started(parent) == entry["parent_started"]:
            continue  # its parent runs: not a leftover
        if entry.get("started") is not None and _started(pid) == entry["started"]:
            _kill_group(pid)
            ended.append(f"ended a bench child left over from an earlier run: pid {pid} "
                         f"({entry.get('config', '?')}), whose parent {parent} is gone")
            _say(ended[-1])
        path.unlink(missing_ok=True)
    return ended


def _install_stop_handlers() -> None:
    """Before the stop signals end this process, end its children: chained in front of whatever handled them (the
    CLI's default, Airflow's SIGTERM handler that calls on_kill). Only the main thread may set handlers; a bench in
    another thread relies on `finally`, atexit and the child's death signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if previous in (signal.SIG_IGN, None) or getattr(previous, "ends_bench_children", False):
            continue
        signal.signal(signum, _ending_children(signum, previous))


def _ending_children(signum: int, previous: Callable | int) -> Callable:
    def handler(received: int, frame: object) -> None:
        end_children()
        if callable(previous):
            previous(received, frame)
        else:  # SIG_DFL: die of the signal as if no one had caught it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    handler.ends_bench_children = True  # type: ignore[attr-defined]
    return handler


atexit.register(end_children)


def _last(tail: deque[str]) -> str:
    return tail[-1].strip() if tail else "no output"
