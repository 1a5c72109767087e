"""The bench parent and child against the real llama.cpp (the CPU engine) and real tiny GGUF models."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import gguf
import numpy as np
import pytest
from support.tiny_models import cached_tiny_model

import vramwatch
from vramwatch.bench import llama_log
from vramwatch.bench.cgroup import CgroupUnavailable, MemoryCgroup
from vramwatch.bench.gpu import Nvml
from vramwatch.bench.runner import pinned_gpus, run_config
from vramwatch.records import BenchConfig, BenchResult, BuildRecord, BuildRequest, GenerationTest, ModelFile

REPS = 2


@pytest.fixture(scope="module", autouse=True)
def small_bandwidth_probe():
    """The host bandwidth probe copies 1 GiB by default: 64 MiB is plenty to exercise it here."""
    previous = os.environ.get("VRAMWATCH_HOST_BW_MIB")
    os.environ["VRAMWATCH_HOST_BW_MIB"] = "64"
    yield
    if previous is None:
        os.environ.pop("VRAMWATCH_HOST_BW_MIB")
    else:
        os.environ["VRAMWATCH_HOST_BW_MIB"] = previous


@pytest.fixture(scope="module")
def engine(engine_build) -> BuildRecord:
    return engine_build


@pytest.fixture(scope="module")
def moe(vocab_dir) -> Path:
    return cached_tiny_model(vocab_dir, "tiny-moe")


@pytest.fixture(scope="module")
def dense(vocab_dir) -> Path:
    return cached_tiny_model(vocab_dir, "tiny-dense", moe=False)


def config_for(path: Path, mode: str, **changes) -> BenchConfig:
    model = ModelFile(model=path.stem, quant="F16", path=str(path), file_bytes=path.stat().st_size if path.exists()
                      else 0, sha256="", arch="deepseek", n_params=0, n_layer=2, n_expert=4, n_expert_used=2,
                      synthetic=True, scale="tiny")
    settings = dict(n_prompt=16, n_gen=4, reps=REPS, n_ctx=128, n_batch=16, n_ubatch=16,
                    generation=GenerationTest(max_tokens=8), timeout_s=240)
    settings.update(changes)
    return BenchConfig(model=model, mode=mode, **settings)


@pytest.fixture(scope="module")
def baseline(engine, moe) -> BenchResult:
    return run_config(config_for(moe, "baseline"), engine)


@pytest.fixture(scope="module")
def offload(engine, moe) -> BenchResult:
    return run_config(config_for(moe, "offload", generation=None), engine)


def assert_measured(result: BenchResult) -> None:
    assert result.status == "ok", result.error
    for test, n_prompt, n_gen in ((result.pp, 16, 0), (result.tg, 0, 4)):
        assert (test.n_prompt, test.n_gen) == (n_prompt, n_gen)
        assert len(test.samples_ts) == REPS and all(s > 0 for s in test.samples_ts)
        assert min(test.samples_ts) <= test.avg_ts <= max(test.samples_ts)
        assert test.stddev_ts >= 0


def test_baseline_is_measured_with_nothing_overridden(baseline, moe):
    assert_measured(baseline)
    assert baseline.file_bytes_on_disk == moe.stat().st_size  # read here, on the worker that has the file
    assert baseline.n_overridden_tensors == 0
    assert baseline.memory.buffers_mib["CPU_Mapped/model"] > 0
    assert baseline.memory.host_model_mib == baseline.memory.buffers_mib["CPU_Mapped/model"]
    assert baseline.memory.host_kv_mib > 0 and baseline.memory.host_compute_mib > 0
    assert baseline.memory.host_rss_peak_mib > 0
    assert baseline.flash_attn in ("on", "off")
    assert baseline.n_threads >= 1 and baseline.load_s > 0
    generation = baseline.generation
    assert 0 < generation.tokens <= 8 and generation.tokens_per_s > 0 and len(generation.text_sha256) == 64


def test_every_buffer_figure_carries_the_log_lines_it_was_read_from(baseline, offload):
    for result in (baseline, offload):
        memory = result.memory
        assert memory.buffers_mib and memory.source_lines.keys() == memory.buffers_mib.keys()
        for key, mib in memory.buffers_mib.items():
            device = key.split("/")[0]
            lines = memory.source_lines[key]
            assert lines and all(f" {device} " in line and "buffer size" in line for line in lines), key
            assert sum(float(re.search(r"=\s*([\d.]+)\s*MiB", line)[1]) for line in lines) == pytest.approx(mib), key


def test_without_a_gpu_every_gpu_reading_is_none_not_zero(baseline):
    memory = baseline.memory
    for name in ("gpu_total_mib", "nvml_device_used_before_mib", "nvml_device_used_after_mib", "nvml_process_mib",
                 "nvml_peak_device_mib", "cuda_context_mib"):
        assert getattr(memory, name) is None, name
    assert memory.vram_gib is None
    assert baseline.roofline.gpu_bandwidth_gbs is None and baseline.roofline.gpu_bytes_per_token == 0


def test_without_a_gpu_or_rapl_energy_is_absent_with_its_reasons(baseline):
    """This machine has no GPU and no RAPL: no energy figure at all, each absence said in words."""
    energy = baseline.energy
    assert energy.pp is None and energy.tg is None and energy.idle_w is None and energy.power_limit_w is None
    assert energy.gpu_reason == "no GPU: GPU energy not measured"
    assert energy.host_reason.startswith("host energy not measured")


def test_fingerprint_and_roofline_describe_this_machine_and_build(baseline, engine):
    fingerprint = baseline.fingerprint
    assert fingerprint.backend == "cpu" and fingerprint.gpu_name == "" and fingerprint.gpu_count == 0
    assert fingerprint.llama_cpp_python_version == "0.3.36" and fingerprint.llama_cpp_commit == engine.llama_cpp_commit
    assert fingerprint.cpu_cores >= 1 and fingerprint.ram_gib > 0 and fingerprint.host == socket.gethostname()
    roofline = baseline.roofline
    assert roofline.host_bandwidth_gbs > 0 and roofline.active_bytes_per_token == roofline.host_bytes_per_token > 0
    assert roofline.bound_tg_ts > 0 and roofline.fraction_of_bound == pytest.approx(
        baseline.tg.avg_ts / roofline.bound_tg_ts, rel=1e-2)


def test_offload_moves_every_expert_tensor(offload, baseline):
    assert_measured(offload)
    assert offload.n_overridden_tensors == 6  # 2 layers x gate/up/down expert tensors
    assert offload.generation is None
    assert offload.roofline.active_bytes_per_token == baseline.roofline.active_bytes_per_token


def test_partial_moves_only_the_first_layers_experts(engine, moe, tmp_path):
    log_path = tmp_path / "llama.log"
    result = run_config(config_for(moe, "partial", n_cpu_moe=1, generation=None), engine, llama_log_path=log_path)
    assert_measured(result)
    assert result.n_overridden_tensors == 3
    lines = [line.split("] ", 1)[1] for line in log_path.read_text().splitlines() if "] " in line]
    placed = llama_log.overridden_tensors(lines)
    assert sorted(placed) == ["blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight"]
    parsed = llama_log.parse_buffers(lines)
    assert parsed.mib == result.memory.buffers_mib  # the record is what the log says
    assert parsed.source_lines == result.memory.source_lines


def test_dense_model_has_nothing_to_offload(engine, dense):
    for mode, n_cpu_moe in (("offload", 0), ("partial", 1)):
        result = run_config(config_for(dense, mode, n_cpu_moe=n_cpu_moe), engine)
        assert result.status == "not_applicable" and "no expert tensors" in result.error
        assert result.pp is None and result.tg is None


def test_bad_model_files_are_invalid_model_in_one_line(engine, moe, tmp_path):
    foreign = tmp_path / "foreign.gguf"
    foreign.write_text("not a model at all\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(moe.read_bytes()[: moe.stat().st_size - 4096])
    for path in (tmp_path / "missing.gguf", foreign, truncated):
        result = run_config(config_for(path, "baseline"), engine)
        assert result.status == "invalid_model", path
        assert result.error and "\n" not in result.error and str(path) in result.error
        assert result.file_bytes_on_disk == (path.stat().st_size if path.exists() else None)


def test_child_itself_refuses_a_truncated_model(engine, moe, tmp_path):
    """The parent checks first; the child must still hold if the file changes between check and load."""
    import subprocess

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(moe.read_bytes()[:2_000_000])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "include"))
    done = subprocess.run([engine.python, "-m", "vramwatch.bench.child"], input=config_for(truncated, "offload").to_json(),
                          capture_output=True, text=True, env=env, timeout=120)
    marked = [line for line in done.stdout.splitlines() if line.startswith("VRAMWATCH_RESULT ")]
    assert done.returncode == 0 and len(marked) == 1
    result = BenchResult.from_json(marked[0].split(" ", 1)[1])
    assert result.status == "invalid_model" and "truncated" in result.error


def test_timeout_kills_the_child_and_says_timeout(engine, moe, baseline):
    # thousands of repetitions: far longer than the limit however fast the machine (the plain config takes ~0.5 s)
    result = run_config(config_for(moe, "baseline", timeout_s=0.5, reps=5000), engine)
    assert result.status == "timeout" and "timeout_s=0.5" in result.error
    # recorded by the parent, yet in the same environment as the child's own results: history compares them
    assert result.fingerprint.environment_id == baseline.fingerprint.environment_id


def test_a_dead_child_is_crashed_with_its_last_words(moe, tmp_path):
    script = tmp_path / "dies.sh"
    script.write_text("#!/bin/sh\necho 'GGML_ASSERT(false) failed' >&2\nkill -9 $$\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    quits = tmp_path / "quits.sh"
    quits.write_text("#!/bin/sh\necho 'CUDA error: out of memory' >&2\nexit 3\n")
    quits.chmod(quits.stat().st_mode | stat.S_IEXEC)
    build = BuildRecord(request=BuildRequest(version="x"), status="ok", python=str(script), source_dir="",
                        llama_cpp_python_version="", llama_cpp_commit="")
    killed = run_config(config_for(moe, "baseline"), build)
    assert killed.status == "crashed" and "SIGKILL" in killed.error and "GGML_ASSERT" in killed.error
    exited = run_config(config_for(moe, "baseline"), BuildRecord(**{**build.to_dict(), "python": str(quits),
                                                                     "request": build.request}))
    assert exited.status == "oom" and "code 3" in exited.error


def test_an_engine_without_llama_cpp_gives_a_crashed_record(moe):
    build = BuildRecord(request=BuildRequest(version="x"), status="ok", python=sys.executable, source_dir="",
                        llama_cpp_python_version="", llama_cpp_commit="")
    result = run_config(config_for(moe, "baseline"), build)
    assert result.status == "crashed" and "llama_cpp" in result.error


def test_ggml_calls_work_on_the_library_llama_cpp_loaded(engine):
    """The ctypes signatures used for the override pointer and the device copy, checked on the CPU device (the H100
    run of the same code measured ~3 TB/s device-to-device)."""
    import subprocess

    probe = (
        "import llama_cpp\n"
        "from vramwatch.bench.gpu import Ggml\n"
        "llama_cpp.llama_backend_init()\n"
        "ggml = Ggml(llama_cpp.llama_cpp._lib)\n"
        "cpu = ggml.lib.ggml_backend_dev_get(0)\n"
        "print(ggml.cpu_buffer_type() != 0, ggml.cpu_buffer_type_origin(), ggml.gpus(), ggml.name(cpu),\n"
        "      ggml.copy_bandwidth_gbs(cpu, mib=16, repeats=2) > 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "include"))
    done = subprocess.run([engine.python, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    has_pointer, origin, gpus, name, copied = done.stdout.split()
    assert has_pointer == "True" and "libggml" in origin and Path(origin).is_file()
    assert gpus == "[]" and name == "CPU" and copied == "True"


# The tiny MoE's F16 weights are ~105 MiB; loaded without mmap they are the child's own memory, far past this.
OOM_LIMIT_MIB = 64


@pytest.fixture
def memory_cgroups():
    """Skips where no memory cgroup can be made (not root, no memory controller): the kernel's OOM kill needs one."""
    try:
        MemoryCgroup.limited(OOM_LIMIT_MIB).remove()
    except CgroupUnavailable as exc:
        pytest.skip(f"needs a writable memory cgroup (run as root with the memory controller): {exc}")
    parent = MemoryCgroup.current().path
    yield
    assert not list(parent.glob("vramwatch-bench-*")), "a bench child's cgroup was left behind"


def test_a_child_the_kernel_oom_kills_is_oom_not_crashed(engine, moe, memory_cgroups):
    """Fault: the kernel's OOM killer SIGKILLs the bench child (issue 17: reported `crashed`, like any SIGKILL).

    The runner runs in a real memory cgroup limited to OOM_LIMIT_MIB, so its child starts there too; the child loads
    ~105 MiB of weights and the kernel kills it. The runner reads the cgroup's oom_kill counter, which rose."""
    import subprocess

    runner = ("import sys\n"
              "from vramwatch.bench.runner import run_config\n"
              "from vramwatch.records import BenchConfig, BuildRecord\n"
              "config = BenchConfig.from_json(sys.stdin.readline())\n"
              "build = BuildRecord.from_json(sys.stdin.readline())\n"
              "print(run_config(config, build).to_json())\n")
    cgroup = MemoryCgroup.limited(OOM_LIMIT_MIB)
    try:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "include"))
        process = subprocess.Popen([sys.executable, "-c", runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
        cgroup.add(process.pid)  # before it reads the config: the child it starts is in the cgroup from birth
        config = config_for(moe, "baseline", use_mmap=False, generation=None)
        stdout, stderr = process.communicate(config.to_json() + "\n" + engine.to_json() + "\n", timeout=240)
    finally:
        cgroup.remove()
    assert process.returncode == 0, stderr[-2000:]  # the kernel killed the child, not the runner
    result = BenchResult.from_json(stdout.splitlines()[-1])
    assert result.status == "oom", result.error
    assert "killed by the kernel's OOM killer" in result.error and str(cgroup.path) in result.error


def test_host_memory_limit_gives_the_child_its_own_cgroup_and_oom_past_it(engine, moe, memory_cgroups):
    """Fault: a config outgrows the host memory it may use: the kernel kills it alone, and it ends `oom`."""
    config = config_for(moe, "baseline", use_mmap=False, generation=None, host_memory_limit_mib=OOM_LIMIT_MIB)
    result = run_config(config, engine)
    assert result.status == "oom", result.error
    assert f"killed by the kernel's OOM killer (host memory limit {OOM_LIMIT_MIB} MiB" in result.error
    assert "\n" not in result.error
    roomy = run_config(replace(config, host_memory_limit_mib=1024), engine)  # the limit itself breaks nothing
    assert roomy.status == "ok", roomy.error


# ----------------------------------------------------------------------------------------------- no child outlives us


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet holds no memory and no GPU: it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def bench_child_of(parent: int, seconds: float = 60) -> int:
    """The pid of `parent`'s bench child, once it is benching (it has said something on stderr)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent and b"vramwatch.bench.child" in cmdline:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no bench child of {parent} within {seconds} s")


def long_bench_cli(engine, moe, tmp_path) -> subprocess.Popen:
    """`vramwatch bench` with thousands of repetitions: the child runs far longer than the test."""
    env = os.environ | {"PYTHONPATH": str(Path(vramwatch.__file__).parents[1]),
                        "VRAMWATCH_BUILDS_DIR": str(tmp_path / "builds")}
    cli = subprocess.Popen([sys.executable, "-m", "vramwatch.cli", "bench", str(moe), "--reps", "5000",
                            "--timeout", "600", "--no-generation", "--n-prompt", "16", "--n-gen", "4", "--n-ctx",
                            "128", "--python", engine.python], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    for line in cli.stderr:  # the child's first progress lines: it is past its start and benching
        if "[bench]" in line:
            break
    return cli


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_the_bench_child_dies_with_a_killed_cli(engine, moe, tmp_path, stop):
    """Fault: the child, in a session of its own, lived on under PID 1 after a kill -9 or SIGTERM of the CLI (on a
    GPU worker it held VRAM through the next config's bench). SIGKILL: the kernel kills it (PR_SET_PDEATHSIG);
    SIGTERM: the parent kills its process group before it exits."""
    cli = long_bench_cli(engine, moe, tmp_path)
    child = bench_child_of(cli.pid)
    cli.send_signal(stop)
    cli.wait(timeout=10)
    assert gone_within(child, 2.0), f"bench child {child} still runs after {stop.name} of its CLI"
    if stop == signal.SIGTERM:
        assert cli.returncode == -signal.SIGTERM  # it still dies of the signal, as before


@pytest.mark.parametrize("dag_id, task_id", [("llamacpp_nightly", "bench"),
                                              ("llamacpp_nightly", "detect_regressions"),  # the same-night A/B
                                              ("llamacpp_bisect", "bisect")])  # each candidate's bench
def test_airflow_on_kill_of_a_task_that_benches_ends_its_child(engine, moe, tmp_path, monkeypatch, dag_id, task_id):
    """Fault: Airflow's on_kill (what "mark failed", a worker shutdown and its SIGTERM call) did nothing for a bench
    task, and the child outlived the task; the bisection's and the A/B's tasks still had none. Each DAG task that runs
    bench children, as the DAG file declares it, is killed while a real child benches, as a task's execute would run
    it (here in a thread)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VRAMWATCH_BUILDS_DIR", str(tmp_path / "builds"))
    monkeypatch.setenv("VRAMWATCH_MATRIX", "demo")
    dags = Path(__file__).resolve().parents[3] / "dags"
    declared = DagBag(dag_folder=str(dags / f"{dag_id}.py")).dags[dag_id].get_task(task_id)
    # the class Airflow runs the task as: a mapped task (the nightly's one bench per config) names it
    operator_class = getattr(declared, "operator_class", type(declared))
    operator = operator_class(task_id=task_id, python_callable=lambda: None, op_args=[], op_kwargs={})
    results: list[BenchResult] = []
    worker = threading.Thread(daemon=True, target=lambda: results.append(
        run_config(config_for(moe, "baseline", reps=5000, timeout_s=600, generation=None), engine)))
    worker.start()
    child = bench_child_of(os.getpid())
    time.sleep(1.0)
    operator.on_kill()
    assert gone_within(child, 2.0), f"the bench child outlived {dag_id}.{task_id}'s on_kill"
    worker.join(timeout=10)
    assert results and results[0].status == "crashed" and "SIGKILL" in results[0].error


def test_airflow_execution_timeout_of_a_bench_ends_its_child(engine, moe, tmp_path, monkeypatch):
    """A bench task past its execution_timeout, through Airflow's own timeout path (SIGALRM, AirflowTaskTimeout,
    then on_kill): the child is gone within 2 s."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    monkeypatch.setenv("VRAMWATCH_BUILDS_DIR", str(tmp_path / "builds"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))
    from dag_defaults import BenchOperator

    config = config_for(moe, "baseline", reps=5000, timeout_s=600, generation=None)
    operator = BenchOperator(task_id="bench", python_callable=lambda: None, op_args=[], op_kwargs={},
                             execution_timeout=timedelta(seconds=3))
    children: list[int] = []
    watcher = threading.Thread(target=lambda: children.append(bench_child_of(os.getpid())), daemon=True)
    watcher.start()
    with pytest.raises(AirflowTaskTimeout):
        _run_execute_callable({}, lambda context: run_config(config, engine), operator)
    watcher.join(timeout=5)
    assert children and gone_within(children[0], 2.0)


def test_a_leftover_child_of_an_earlier_run_is_ended_before_the_next_bench(moe, tmp_path, monkeypatch, caplog):
    """Fault: nothing looked for a child an earlier, killed run left behind. The next bench on this worker ends any
    listed child whose parent is gone, and says so; a child whose parent still runs (an A/B pair's) is left alone."""
    monkeypatch.setenv("VRAMWATCH_BUILDS_DIR", str(tmp_path / "builds"))
    # an orphan in a session of its own, as a killed nightly left its child: its parent sh has exited
    orphan = int(subprocess.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                text=True, check=True).stdout)
    neighbour = subprocess.Popen(["sleep", "300"], start_new_session=True)  # a bench of a parent that still runs
    listed = tmp_path / "builds" / "bench-children"
    listed.mkdir(parents=True)
    for pid, parent in ((orphan, 999_999), (neighbour.pid, os.getpid())):
        (listed / f"{pid}.json").write_text(json.dumps({
            "pid": pid, "started": proc_started(pid), "parent": parent, "parent_started": proc_started(parent) or "1",
            "config": "m/Q4_K_M/baseline"}))
    quits = tmp_path / "quits.sh"
    quits.write_text("#!/bin/sh\nexit 3\n")
    quits.chmod(quits.stat().st_mode | stat.S_IEXEC)
    build = BuildRecord(request=BuildRequest(version="x"), status="ok", python=str(quits), source_dir="",
                        llama_cpp_python_version="", llama_cpp_commit="")
    try:
        with caplog.at_level(logging.INFO, logger="vramwatch"):
            run_config(config_for(moe, "baseline"), build)
        assert gone_within(orphan, 2.0)
        assert f"ended a bench child left over from an earlier run: pid {orphan} (m/Q4_K_M/baseline)" in caplog.text
        assert alive(neighbour.pid)
        assert not (listed / f"{orphan}.json").exists() and (listed / f"{neighbour.pid}.json").exists()
    finally:
        neighbour.kill()
        neighbour.wait()
        if alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def proc_started(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except OSError:
        return None


def test_a_gguf_header_without_tensors_is_invalid_model_not_crashed(moe, tmp_path):
    """Fault: a GGUF with a valid header and no tensors passed the parent's check, and the child's failure on it
    ended the config `crashed`, as if the engine had failed. It is invalid_model now, and no child starts."""
    header_only = tmp_path / "header-only.gguf"
    header_only.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    build = BuildRecord(request=BuildRequest(version="x"), status="ok", python=sys.executable, source_dir="",
                        llama_cpp_python_version="", llama_cpp_commit="")
    result = run_config(config_for(header_only, "baseline"), build)
    assert result.status == "invalid_model" and "no tensors" in result.error and str(header_only) in result.error


def test_each_config_is_shown_exactly_its_gpus():
    """A worker's GPUs, its own CUDA_VISIBLE_DEVICES first: a one-GPU config sees one, a two-GPU config two, in PCI
    bus order (NVML's), and a worker told to use none gives none."""
    assert pinned_gpus(1, {"CUDA_VISIBLE_DEVICES": "2,3"}) == {"CUDA_VISIBLE_DEVICES": "2",
                                                               "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert pinned_gpus(2, {"CUDA_VISIBLE_DEVICES": "2, 3"})["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert pinned_gpus(2, {"CUDA_VISIBLE_DEVICES": "1"})["CUDA_VISIBLE_DEVICES"] == "1"  # too few: the child says so
    assert pinned_gpus(1, {"CUDA_VISIBLE_DEVICES": ""})["CUDA_VISIBLE_DEVICES"] == ""
    uuids = "GPU-8a4c0b1e,GPU-77f0c2d9"
    assert pinned_gpus(1, {"CUDA_VISIBLE_DEVICES": uuids, "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) == {
        "CUDA_VISIBLE_DEVICES": "GPU-8a4c0b1e", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}  # the worker's own order kept
    # no list of its own: the first of every GPU NVML counts (without NVML: the config's own count from 0)
    nvml = Nvml.open()
    count = len(nvml.handles) if nvml else 2
    assert pinned_gpus(2, {})["CUDA_VISIBLE_DEVICES"] == ",".join(str(i) for i in range(min(count, 2)))


def test_the_bench_child_runs_with_its_gpus_pinned(tmp_path, monkeypatch):
    """The environment the engine's python really gets, whatever the worker's own holds."""
    model = tmp_path / "one-tensor.gguf"
    writer = gguf.GGUFWriter(str(model), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    says = tmp_path / "says.sh"
    says.write_text("#!/bin/sh\necho \"sees GPUs [$CUDA_VISIBLE_DEVICES] in $CUDA_DEVICE_ORDER order\" >&2\nexit 1\n")
    says.chmod(says.stat().st_mode | stat.S_IEXEC)
    build = BuildRecord(request=BuildRequest(version="x"), status="ok", python=str(says), source_dir="",
                        llama_cpp_python_version="", llama_cpp_commit="")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    one, two = (run_config(config_for(model, "baseline", gpus=gpus), build) for gpus in (1, 2))
    assert "sees GPUs [4] in PCI_BUS_ID order" in one.error
    assert "sees GPUs [4,5] in PCI_BUS_ID order" in two.error


def test_a_two_gpu_config_on_a_machine_without_two_is_not_applicable(engine, moe):
    result = run_config(config_for(moe, "baseline", gpus=2), engine)
    assert result.status == "not_applicable"
    assert result.error == "gpus=2: the bench sees 0 GPU(s) (none)"
    # a one-GPU config's split settings change nothing on the CPU: it runs
    row = run_config(config_for(moe, "baseline", split_mode="row", generation=None), engine)
    assert row.ok, row.error
