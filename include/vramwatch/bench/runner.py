"""The parent of a bench child: spawn it in the build's own Python, enforce the timeout, always return a record.

The child may hang (a deadlocked backend), be killed (the kernel's OOM killer), abort (GGML_ASSERT) or print
something unexpected; none of that may take the nightly down with it or leave a config without a row. Whatever
happens, `run_config` returns a BenchResult whose status says what happened and whose error is one line.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import vramwatch
from vramwatch.bench import host, llama_log
from vramwatch.bench.cgroup import CgroupUnavailable, MemoryCgroup
from vramwatch.bench.gpu import Nvml
from vramwatch.gguf_file import GGUFError, read_gguf
from vramwatch.progress import relay
from vramwatch.records import RESULT_MARKER, BenchConfig, BenchResult, BuildRecord, Fingerprint, error_line

INCLUDE_DIR = Path(vramwatch.__file__).resolve().parents[1]
STDERR_TAIL = 50
_child_said = relay("bench")


def run_config(config: BenchConfig, build: BuildRecord, *,
               llama_log_path: str | os.PathLike[str] | None = None) -> BenchResult:
    """Bench one config in a child of `build.python`. Never raises for a failed bench: the status says it.

    `llama_log_path` keeps llama.cpp's whole log (every level) of that run. The child's stderr lines are progress,
    relayed as they come (vramwatch.progress: INFO on the `vramwatch.bench` logger). The result records the model
    file's size as this worker read it: the file lives here, validation does not.
    """
    path = config.model.path
    on_disk = os.path.getsize(path) if path and os.path.isfile(path) else None
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
        read_gguf(config.model.path)
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
            stderr=subprocess.PIPE, env=_child_env(build, llama_log_path), text=True, start_new_session=True,
        )
    except OSError as exc:
        return failed("crashed", f"cannot start {build.python}: {exc}")
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


def _child_env(build: BuildRecord, llama_log_path: str | os.PathLike[str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(INCLUDE_DIR)  # only our records: the engine venv must not see the parent's packages
    env["PYTHONUNBUFFERED"] = "1"
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
    """Kill the child's whole process group (it is its own session leader), then reap it."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()


def _last(tail: deque[str]) -> str:
    return tail[-1].strip() if tail else "no output"
