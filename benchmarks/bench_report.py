"""How long the nightly report takes on a big history: 3 years x 100 configs, built in memory.

Target: write_report <= 5 s. Prints the figures (no assertion: speed is measured here, not tested).
Run: PYTHONPATH=include .venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from vramwatch.records import (
    BenchConfig,
    BenchResult,
    Fingerprint,
    Incident,
    Memory,
    ModelFile,
    RunRecord,
    TestResult,
)
from vramwatch.regress.detect import regressions
from vramwatch.report.write import write_report
from vramwatch.rows import flatten

NIGHTS, MODELS, QUANTS, MODES = 3 * 365, 10, ("Q2_K", "Q3_K_M", "Q4_K_M", "Q6_K", "Q8_0"), ("baseline", "offload")
GPU = Fingerprint(gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_driver="580.65.06", cuda_version="13.0",
                  cpu_model="AMD EPYC 9454", cpu_cores=16, ram_gib=125.7, backend="cuda")
START = date(2023, 1, 1)


def tonight_results(rng: np.random.Generator) -> list[BenchResult]:
    results = []
    for m in range(MODELS):
        for q, quant in enumerate(QUANTS):
            file_mib = 4_000.0 * (m + 1) * (q + 1) / 3
            model = ModelFile(model=f"moe-{m}", quant=quant, path="", file_bytes=int(file_mib * 2**20), sha256="",
                              arch="deepseek", n_params=0, n_layer=28, n_expert=64, n_expert_used=6, synthetic=True)
            for mode in MODES:
                on_gpu = file_mib if mode == "baseline" else file_mib * 0.08
                tg = (120.0 if mode == "baseline" else 30.0) * (1 + rng.normal(0, 0.015))
                memory = Memory(gpu_model_mib=on_gpu, gpu_kv_mib=1_024.0, gpu_compute_mib=204.5,
                                gpu_total_mib=81_559.0, nvml_process_mib=on_gpu + 1_850.0, cuda_context_mib=600.0)
                results.append(BenchResult(
                    config=BenchConfig(model=model, mode=mode, reps=5), status="ok", memory=memory,
                    pp=TestResult(512, 0, [tg * 30], tg * 30, 1.0), tg=TestResult(0, 128, [tg], tg, 0.3),
                    n_overridden_tensors=0 if mode == "baseline" else 81, fingerprint=GPU))
    return results


def history_frame(tonight: list[BenchResult], rng: np.random.Generator) -> pd.DataFrame:
    """NIGHTS - 1 earlier nights of the same configs (VRAM exact, tok/s with 1.5 % jitter), then tonight."""
    template = pd.DataFrame([flatten(r) for r in tonight])
    nights = [(START + timedelta(days=i)).isoformat() for i in range(NIGHTS - 1)]
    frame = template.loc[np.tile(template.index, len(nights))].reset_index(drop=True)
    frame["night"] = np.repeat(nights, len(template))
    frame["run_id"] = np.repeat([f"scheduled__{n}" for n in nights], len(template))
    frame["llama_cpp_commit"] = np.repeat([f"b{4000 + i}" for i in range(len(nights))], len(template))
    for column in ("tg_avg_ts", "pp_avg_ts"):
        frame[column] = frame[column] * (1 + rng.normal(0, 0.015, len(frame)))
    last = (START + timedelta(days=NIGHTS - 1)).isoformat()
    template["night"], template["run_id"], template["llama_cpp_commit"] = last, f"scheduled__{last}", "b5094"
    return pd.concat([frame, template], ignore_index=True)


def main() -> None:
    rng = np.random.default_rng(0)
    tonight = tonight_results(rng)
    t0 = time.perf_counter()
    history = history_frame(tonight, rng)
    built = time.perf_counter() - t0
    night = history["night"].iloc[-1]
    run = RunRecord(run_id=f"scheduled__{night}", night=night, trigger="scheduled", status="stored", started="",
                    ended="", build_version="0.3.36", llama_cpp_python_version="0.3.36", llama_cpp_commit="b5094",
                    backend="cuda")
    incidents = [Incident(incident_id=1, kind="vram", metric="gpu_compute_mib", state="open",
                          configs=["moe-3/Q4_K_M/offload"], summary="VRAM gpu_compute_mib +64 MiB",
                          opened_night=history["night"].iloc[-500])]
    print(f"history: {len(history):,} rows ({NIGHTS} nights x {len(tonight)} configs), built in {built:.2f} s")

    t0 = time.perf_counter()
    found = regressions(history, run.run_id)
    print(f"regress (detect + incidents, no rerun): {time.perf_counter() - t0:.2f} s, {len(found)} incident(s)")

    with tempfile.TemporaryDirectory() as out:
        walls, cpus = [], []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            md, html = write_report(run, tonight, history, incidents, out)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        sizes = f"{md.stat().st_size / 1024:.0f} KiB md, {html.stat().st_size / 1024:.0f} KiB html"
    # CPU time beside wall time: on a shared machine the wall clock also counts other processes' turns.
    print(f"write_report, 3 runs: wall best {min(walls):.2f} s / worst {max(walls):.2f} s, "
          f"CPU best {min(cpus):.2f} s / worst {max(cpus):.2f} s ({sizes})")
    print(f"target <= 5 s: {'met' if min(walls) <= 5 else 'MISSED'} (best wall {min(walls):.2f} s, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
