"""Realistic BenchResult records built in code, for the validate and warehouse tests and benchmarks/bench_store.py.

Figures follow the seed document (DeepSeek-MoE-16B and Phi-3.5-MoE on one 80 GB GPU: baseline VRAM close to the
file size, offload ~1.3-2.5 GB) and a 16-core CPU host without a GPU for the no-GPU variant.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from vramwatch.records import (
    ABRun,
    BenchConfig,
    BenchResult,
    BisectResult,
    BisectStep,
    Culprit,
    Energy,
    Fingerprint,
    GenerationResult,
    Memory,
    ModelFile,
    Roofline,
    TestEnergy,
    TestResult,
)

H100_TOTAL_MIB = 81559.0
# (file GiB, baseline GPU model MiB, offload GPU model MiB) per model and quant
SIZES = {
    ("deepseek-moe-16b", "Q2_K"): (6.3, 6_180.0, 420.0),
    ("deepseek-moe-16b", "Q4_K_M"): (10.9, 10_010.0, 640.0),
    ("deepseek-moe-16b", "Q8_0"): (17.4, 16_010.0, 1_080.0),
    ("phi-3.5-moe", "Q2_K"): (15.0, 14_090.0, 300.0),
    ("phi-3.5-moe", "Q4_K_M"): (24.0, 23_300.0, 660.0),
    ("phi-3.5-moe", "Q8_0"): (42.0, 41_870.0, 1_420.0),
}
ARCH = {"deepseek-moe-16b": ("deepseek", 28, 64, 6), "phi-3.5-moe": ("phimoe", 32, 16, 2)}

GPU_HOST = Fingerprint(gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_driver="580.65.06", cuda_version="13.0",
                       compute_capability="9.0", cpu_model="AMD EPYC 9454 48-Core Processor", cpu_cores=16,
                       ram_gib=125.7, llama_cpp_commit="0c1e57098", llama_cpp_python_version="0.3.36",
                       build_flags="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90", backend="cuda")
CPU_HOST = Fingerprint(cpu_model="Intel(R) Xeon(R) CPU @ 2.20GHz", cpu_cores=2, ram_gib=23.5,
                       llama_cpp_commit="0c1e57098", llama_cpp_python_version="0.3.36", backend="cpu")


def model_file(model: str = "deepseek-moe-16b", quant: str = "Q4_K_M", path: str = "") -> ModelFile:
    file_gib = SIZES[(model, quant)][0]
    arch, n_layer, n_expert, n_used = ARCH[model]
    return ModelFile(model=model, quant=quant, path=path or f"/models/{model}-{quant}.gguf",
                     file_bytes=int(file_gib * 2**30), sha256=hashlib.sha256(f"{model}{quant}".encode()).hexdigest(),
                     arch=arch, n_params=16_400_000_000, n_layer=n_layer, n_expert=n_expert, n_expert_used=n_used,
                     synthetic=True, scale="full")


def _test(n_prompt: int, n_gen: int, mean: float, reps: int) -> TestResult:
    samples = [round(mean * (1 + 0.01 * (i - reps // 2)), 2) for i in range(reps)]
    return TestResult(n_prompt=n_prompt, n_gen=n_gen, samples_ts=samples, avg_ts=round(sum(samples) / reps, 2),
                      stddev_ts=round(0.01 * mean, 2))


def _window(tokens_per_s: float, tokens_per_rep: int, watts: float) -> TestEnergy:
    """One test's energy window as the bench measures it: repetitions until it lasts a second, the counter's joules
    and the samples' within 1 % of them."""
    reps = max(1, -(-tokens_per_s // tokens_per_rep))  # at least a second
    tokens = int(reps * tokens_per_rep)
    window_s = round(tokens / tokens_per_s, 4)
    return TestEnergy(tokens=tokens, window_s=window_s, counter_j=round(watts * window_s, 3),
                      sampled_j=round(watts * window_s * 0.99, 3), n_samples=int(window_s * 20) + 2,
                      power_avg_w=watts, power_peak_w=round(watts * 1.08, 2))


def energy(pp_ts: float, tg_ts: float, gpu: bool, pp_w: float = 520.0, tg_w: float = 310.0) -> Energy:
    """Energy of a result whose tests ran at these speeds: on a GPU, NVML's figures; on the CPU host, the reasons."""
    if not gpu:
        return Energy(gpu_reason="no GPU: GPU energy not measured",
                      host_reason="host energy not measured: no RAPL under /sys/class/powercap")
    return Energy(pp=_window(pp_ts, 512, pp_w), tg=_window(tg_ts, 128, tg_w), idle_w=71.5, power_limit_w=700.0,
                  host_reason="host energy not measured: no RAPL under /sys/class/powercap")


def result(model: str = "deepseek-moe-16b", quant: str = "Q4_K_M", mode: str = "baseline", n_cpu_moe: int = 0,
           gpu: bool = True, status: str = "ok", reps: int = 5, path: str = "") -> BenchResult:
    """One config's result. Non-ok statuses carry an error and no measurements, as the bench parent reports them."""
    config = BenchConfig(model=model_file(model, quant, path), mode=mode, n_cpu_moe=n_cpu_moe, reps=reps)
    fingerprint = GPU_HOST if gpu else CPU_HOST
    if status != "ok":
        errors = {"oom": "CUDA error: out of memory", "timeout": "no result within 900 s", "crashed": "exit code -11"}
        return BenchResult(config=config, status=status, error=errors.get(status, status), fingerprint=fingerprint,
                           started_at="2026-01-02T02:10:00+00:00", duration_s=12.5)
    _, baseline_mib, offload_mib = SIZES[(model, quant)]
    on_gpu = {"baseline": baseline_mib, "offload": offload_mib}.get(mode, (baseline_mib + offload_mib) / 2)
    host_model = baseline_mib - on_gpu
    if gpu:
        memory = Memory(
            buffers_mib={"CUDA0/model": on_gpu, "CUDA0/kv": 1_024.0, "CUDA0/compute": 204.5,
                         "CPU_Mapped/model": host_model + 210.0, "CUDA_Host/compute": 12.0},
            gpu_model_mib=on_gpu, gpu_kv_mib=1_024.0, gpu_compute_mib=204.5, gpu_output_mib=0.39,
            host_model_mib=host_model + 210.0, host_compute_mib=12.0, gpu_total_mib=H100_TOTAL_MIB,
            nvml_device_used_before_mib=519.0, nvml_device_used_after_mib=519.0 + on_gpu + 1_850.0,
            nvml_process_mib=on_gpu + 1_850.0, nvml_peak_device_mib=519.0 + on_gpu + 1_900.0,
            cuda_context_mib=600.0, host_rss_peak_mib=host_model + 2_400.0,
        )
        tg_mean, pp_mean = (118.0, 4_100.0) if mode == "baseline" else (31.0, 820.0)
    else:
        memory = Memory(buffers_mib={"CPU_Mapped/model": baseline_mib, "CPU/kv": 1_024.0, "CPU/compute": 300.0},
                        host_model_mib=baseline_mib, host_kv_mib=1_024.0, host_compute_mib=300.0,
                        host_rss_peak_mib=baseline_mib + 1_600.0)
        tg_mean, pp_mean = 9.5, 61.0
    return BenchResult(
        config=config, status="ok", pp=_test(512, 0, pp_mean, reps), tg=_test(0, 128, tg_mean, reps),
        generation=GenerationResult(tokens=81, tokens_per_s=tg_mean * 0.93, text_sha256="5f" * 32), memory=memory,
        n_overridden_tensors=0 if mode == "baseline" else 81, n_threads=16 if gpu else 2, flash_attn="auto",
        fingerprint=fingerprint,
        roofline=Roofline(active_bytes_per_token=1_570_000_000, gpu_bytes_per_token=1_570_000_000,
                          gpu_bandwidth_gbs=3_000.0 if gpu else None, host_bandwidth_gbs=21.0,
                          bound_tg_ts=1_910.0 if gpu else 13.4, fraction_of_bound=0.06 if gpu else 0.7),
        started_at="2026-01-02T02:10:00+00:00", duration_s=48.2, load_s=3.1, file_bytes_on_disk=config.model.file_bytes,
        energy=energy(pp_mean, tg_mean, gpu, *((520.0, 310.0) if mode == "baseline" else (260.0, 180.0))),
    )


def night(gpu: bool = True, models: tuple[str, ...] = ("deepseek-moe-16b", "phi-3.5-moe"),
          quants: tuple[str, ...] = ("Q2_K", "Q4_K_M"), n_cpu_moe_sweep: tuple[int, ...] = ()) -> list[BenchResult]:
    """Every model x quant in baseline and offload (plus partial over the sweep), all ok."""
    return [
        result(m, q, mode, n, gpu=gpu)
        for m in models for q in quants
        for mode, n in [("baseline", 0), ("offload", 0), *(("partial", n) for n in n_cpu_moe_sweep)]
    ]


def replace(record, **changes):
    """dataclasses.replace for frozen records, nested one level with "part__field" keys."""
    nested: dict[str, dict] = {}
    for key, value in list(changes.items()):
        if "__" in key:
            part, field = key.split("__", 1)
            nested.setdefault(part, {})[field] = changes.pop(key)
    for part, fields in nested.items():
        changes[part] = dataclasses.replace(getattr(record, part), **fields)
    return dataclasses.replace(record, **changes)


# A model name that is markup: rendered unescaped, the browser fails to load "x" and runs the handler.
XSS_TITLE = "xss-ran"
XSS_PAYLOAD = f"<img src=x onerror=\"document.title='{XSS_TITLE}'\">"


def markup_named_rows() -> list[BenchResult]:
    """Two rows of one config whose model name is XSS_PAYLOAD, with a status that is markup too: quarantined for
    config_unique and status_known, whose unexpected values (the config id, the status) Data Docs list."""
    row = result()
    row = replace(row, config__model=replace(row.config.model, model=XSS_PAYLOAD), status=XSS_PAYLOAD,
                  error="bench said so")
    return [row, row]


def bisection(found: bool = True, subject: str = "llama-cpp-python 0.3.33") -> BisectResult:
    """The issue's GPU case at release level: DeepSeek-MoE-16B Q4_K_M baseline, CUDA0 compute 236.26 -> 260.39 MiB
    between 0.3.30 and 0.3.36 (the culprit and figures between are made up). found False: 0.3.33's build failed,
    so it stops between 0.3.32 and 0.3.34."""
    steps = [
        BisectStep("0.3.30", "good", "good", 236.26, build_s=512.0, bench_s=41.0, llama_cpp_commit="a" * 40),
        BisectStep("0.3.36", "bad", "bad", 260.39, build_s=498.0, bench_s=40.0, llama_cpp_commit="f" * 40),
        BisectStep("0.3.33", "candidate", "skipped", None, "build failed: ggml.c:12: error: x", 60.0, 0.0)
        if not found else BisectStep("0.3.33", "candidate", "bad", 260.39, build_s=470.0, bench_s=39.0,
                                     llama_cpp_commit="c" * 40),
        BisectStep("0.3.32", "candidate", "good", 236.26, build_s=465.0, bench_s=40.0, llama_cpp_commit="b" * 40),
        BisectStep("0.3.34", "candidate", "bad", 260.39, build_s=480.0, bench_s=40.0, llama_cpp_commit="d" * 40),
    ]
    culprit = Culprit(ref="0.3.33", subject=subject, link="https://pypi.org/project/llama-cpp-python/0.3.33/",
                      llama_cpp_commit="c" * 40) if found else None
    return BisectResult(
        config_id="deepseek-moe-16b/Q4_K_M/baseline@1f3a9c0e", level="release", metric="CUDA0/compute", unit="MiB",
        good="0.3.30", bad="0.3.36", figure_good=236.26, figure_bad=260.39, candidates=5, culprit=culprit,
        last_good="0.3.32", first_bad="0.3.33" if found else "0.3.34", last_good_commit="b" * 40,
        first_bad_commit=("c" if found else "d") * 40, steps=steps,
        stopped="" if found else "the change lies between 0.3.32 and 0.3.34, but 1 candidate(s) between them could "
                                 "not be measured: 0.3.33: build failed: ggml.c:12: error: x",
        started_at="2026-11-29T23:00:00+00:00", duration_s=2650.0)


# Seconds one bench process of an A/B takes: the H200 nights of docs/results measured 11-36 s per config process
# (seed-reproduction.md, "Stage wall times"); 13 s is their median.
AB_PROCESS_SECONDS = 13.0


def simulated_ab(config_id: str, commits: tuple[str, str], levels: dict[str, tuple[float, float]], noise: float,
                 rng: np.random.Generator, processes: int, earlier: ABRun | None = None) -> ABRun:
    """An A/B as bench.ab.run_ab returns it, from engines whose true tok/s per test are levels[test] = (A, B) and
    whose processes vary by gaussian relative noise: `processes` more a side after those of `earlier`."""
    samples = {test: {side: list(earlier.samples_ts[test][side]) if earlier else [] for side in "AB"}
               for test in levels}
    for _ in range(processes):
        for side, index in (("A", 0), ("B", 1)):
            for test, level in levels.items():
                samples[test][side].append(float(level[index] * (1 + rng.normal(0, noise))))
    done = (earlier.processes if earlier else 0) + processes
    return ABRun(config_id=config_id, llama_cpp_commit_a=commits[0], llama_cpp_python_version_a="0.3.36",
                 llama_cpp_commit_b=commits[1], llama_cpp_python_version_b="0.3.36", processes=done,
                 samples_ts=samples, statuses={"A": ["ok"] * done, "B": ["ok"] * done},
                 seconds=2 * done * AB_PROCESS_SECONDS)
