"""docs/results from a GPU run: the seed side by side, the partial sweep, stage times, engine-vs-llama-bench, report.

    python benchmarks/seed_reproduction.py MEASURED.json [...] --fidelity FIDELITY.json [...] \\
        --date YYYY-MM-DD --out docs/results

MEASURED.json are documents written by `vramwatch measure` (pipeline.measure) on a GPU worker, FIDELITY.json the
output of benchmarks/engine_vs_llama_bench.py --out. Writes into --out:
  seed-reproduction.json   one record per model x quant x baseline/offload (issue 8's schema, plus N and the context)
  seed-reproduction.md     the table, deviations from the seed, the partial sweep, every stage's wall time, what is
                           missing
  engine-vs-llama-bench.{json,md}  the fidelity rows with device, build, date and command
  seed-report.{md,html}    the nightly's own report of all of it (ingested into a throwaway SQLite warehouse)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch.records import BenchResult, MeasuredNight  # noqa: E402
from vramwatch.report.tables import sweep_points  # noqa: E402

# The seed's VRAM (GPU model + KV + compute buffers), GB as the seed prints them (GiB), GH200, llama.cpp b6686.
SEED_GIB = {
    ("phi-3.5-moe", "Q2_K"): (14.78, 1.34), ("phi-3.5-moe", "Q4_K_M"): (24.14, 1.72),
    ("phi-3.5-moe", "Q8_0"): (41.91, 2.46),
    ("deepseek-moe-16b", "Q2_K"): (7.28, 1.60), ("deepseek-moe-16b", "Q4_K_M"): (11.10, 1.86),
    ("deepseek-moe-16b", "Q8_0"): (17.11, 2.33),
}
SEED_MODELS = ("deepseek-moe-16b", "phi-3.5-moe", "gpt-oss-20b")
SEED_QUANTS = ("Q2_K", "Q4_K_M", "Q8_0")
TOLERANCE = 0.02  # issue 8: each VRAM figure within 2% of the seed's


def _gib(mib: float | None) -> float | None:
    return round(mib / 1024, 3) if mib is not None else None


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def record(result: BenchResult, date: str) -> dict:
    model, quant, mode = result.config.model.model, result.config.model.quant, result.config.mode
    seed = SEED_GIB.get((model, quant))
    return {
        "model": model, "quant": quant, "mode": mode,
        "vram_gib": round(result.memory.vram_gib, 3) if result.memory.vram_gib is not None else None,
        "seed_gib": seed[0 if mode == "baseline" else 1] if seed else None,
        "nvml_process_gib": _gib(result.memory.nvml_process_mib),
        "cuda_context_gib": _gib(result.memory.cuda_context_mib),
        "pp512_ts": round(result.pp.avg_ts, 1), "tg128_ts": round(result.tg.avg_ts, 1),
        "reps": len(result.tg.samples_ts), "n_overridden_tensors": result.n_overridden_tensors,
        "gpu": result.fingerprint.gpu_name, "llama_cpp_commit": result.fingerprint.llama_cpp_commit[:9],
        "date": date,
    }


def _deviation(r: dict) -> str:
    if not r["seed_gib"] or r["vram_gib"] is None:
        return "not in seed" if not r["seed_gib"] else "no GPU"
    dev = r["vram_gib"] / r["seed_gib"] - 1
    pct = round(dev * 100, 1) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return f"{pct:+.1f}%" + ("" if abs(dev) <= TOLERANCE else " (over 2%)")


def seed_section(rows: list[dict]) -> list[str]:
    lines = ["| Model | Quant | Mode | VRAM GiB | Seed GiB | Deviation | NVML process GiB | CUDA ctx GiB | pp512 t/s | "
             "tg128 t/s | N | GPU | llama.cpp | Date |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['quant']} | {r['mode']} | {_cell(r['vram_gib'])} | {_cell(r['seed_gib'])} | "
                     f"{_deviation(r)} | {_cell(r['nvml_process_gib'])} | {_cell(r['cuda_context_gib'])} | "
                     f"{r['pp512_ts']:.1f} | "
                     f"{r['tg128_ts']:.1f} | {r['reps']} | {r['gpu']} | {r['llama_cpp_commit']} | {r['date']} |")
    compared = [r for r in rows if r["seed_gib"] and r["vram_gib"] is not None]
    within = sum(abs(r["vram_gib"] / r["seed_gib"] - 1) <= TOLERANCE for r in compared)
    return lines + ["", f"{within} of {len(compared)} seed figures reproduced within 2%."]


def sweep_section(results: list[BenchResult]) -> list[str]:
    """One table per model x quant with partial configs, ordered as the report orders them (tables.sweep_points)."""
    lines = []
    for (model, quant), points in sweep_points([r for r in results if r.ok]).items():
        n_layer = points[0][1].config.model.n_layer
        lines += ["", f"## Partial offload sweep: {model} {quant}", "",
                  "Experts of the first n_cpu_moe layers in CPU memory (llama.cpp's --n-cpu-moe); 0 is baseline, "
                  f"{n_layer} is offload.", "",
                  "| n_cpu_moe | VRAM GiB | NVML process GiB | Tensors on CPU | pp512 t/s | tg128 t/s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for n, r in points:
            lines.append(f"| {n} | {_cell(r.memory.vram_gib)} | {_cell(_gib(r.memory.nvml_process_mib))} | "
                         f"{r.n_overridden_tensors} | {r.pp.avg_ts:.1f} | {r.tg.avg_ts:.1f} |")
    return lines


def stages_section(nights: dict[str, MeasuredNight]) -> list[str]:
    builds = {night.build.built_at: night.build for night in nights.values()}  # one line per machine's build
    lines = ["", "## Stage wall times", ""]
    for build in sorted(builds.values(), key=lambda b: b.built_at):
        lines.append(f"Engine build {build.request.key} at {build.built_at} (CUDA from the slim bundle, no network"
                     f"{', with llama-bench' if build.llama_bench else ''}): {build.duration_s:.0f} s, "
                     f"wheel {build.artifact_bytes / 1e6:.1f} MB.")
    lines += ["", "| Matrix | Configs | build_engine s | prepare_models s (synthesize, quantize) | bench s | "
              "after the build s |", "|---|---:|---:|---:|---:|---:|"]
    for name, night in nights.items():
        s = night.stage_seconds
        after = s.get("prepare_models", 0) + s.get("bench", 0)
        lines.append(f"| {name} | {len(night.results)} | {s.get('build_engine', 0):.1f} | "
                     f"{s.get('prepare_models', 0):.1f} | {s.get('bench', 0):.1f} | {after:.1f} |")
    deepseek = [n for name, n in nights.items() if "deepseek" in name and "sweep" not in name]
    if deepseek:
        total = sum(n.stage_seconds.get("prepare_models", 0) + n.stage_seconds.get("bench", 0) for n in deepseek)
        configs = sum(len(n.results) for n in deepseek)
        lines += ["", f"DeepSeek matrix ({configs} configs) after the build: {total / 60:.1f} min of GPU-machine time "
                  f"(target: under 10), quantization included."]
    return lines


def fidelity_markdown(runs: list[dict]) -> str:
    lines = ["# Engine vs llama-bench", "",
             "pp and tg tok/s of our bench engine against llama-bench built in the same cmake tree and run on the same "
             "shared libraries, same model, GPU, settings and run. Target: every ratio >= 0.97.", ""]
    for run in runs:
        lines += [f"Device {run['device']}, llama.cpp {run['llama_cpp_commit'][:12]} (llama-cpp-python "
                  f"{run['llama_cpp_python']}, {run['backend']}), {run['date']}, reps {run['reps']}, "
                  f"flash_attn {run['flash_attn']}.", "", f"    {run['command']}", "",
                  "| Model | Quant | Mode | Test | llama-bench t/s | engine t/s | ratio |",
                  "|---|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['quant']} | {r['mode']} | {r['test']} | {r['llama_bench_ts']:.2f} | "
                  f"{r['engine_ts']:.2f} | {r['ratio']:.3f} |" for r in run["rows"]]
        worst = min(r["ratio"] for r in run["rows"])
        lines += ["", f"Worst ratio {worst:.3f}: {'meets' if worst >= 0.97 else 'misses'} the 0.97 target.", ""]
    return "\n".join(lines)


def write_report(nights: dict[str, MeasuredNight], date: str, out: Path) -> tuple[int, dict[str, float]]:
    """All results as one night through the nightly's own ingest (validate, store, regress, report, alert); returns
    how many results that night held and each of those stages' wall time."""
    from vramwatch import pipeline

    results, seen = [], set()
    for night in nights.values():
        for result in night.results:
            if result.config.config_id not in seen:  # the sweep's baseline repeats deepseek-a's
                seen.add(result.config.config_id)
                results.append(result)
    first = next(iter(nights.values()))
    merged = MeasuredNight(build=first.build, results=results, stage_seconds={})
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["VRAMWATCH_WAREHOUSE_URL"] = f"sqlite:///{scratch}/warehouse.db"
        os.environ["VRAMWATCH_REPORTS_DIR"] = f"{scratch}/reports"
        summary = pipeline.ingest(merged, run_id=f"gpu__{date}", night=date, trigger="gpu-run", stage_seconds=seconds)
        shutil.copyfile(summary.report_md, out / "seed-report.md")
        shutil.copyfile(summary.report_html, out / "seed-report.html")
    return len(results), seconds


def cpu_half_line(n_results: int, seconds: dict[str, float]) -> list[str]:
    stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items())
    return ["", f"The CPU half, all {n_results} results ingested as one night on the machine that wrote these docs "
            f"({os.cpu_count()} cores): {stages}."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measured", type=Path, nargs="+")
    parser.add_argument("--fidelity", type=Path, nargs="*", default=[])
    parser.add_argument("--date", required=True, help="the day the GPU run was made, YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="folder, e.g. docs/results")
    args = parser.parse_args()

    nights = {path.stem: MeasuredNight.from_json(path.read_text()) for path in args.measured}
    sweep = [n for name, n in nights.items() if "sweep" in name]
    seed_nights = [n for name, n in nights.items() if "sweep" not in name]  # the sweep's baseline repeats one
    rows = [record(r, args.date) for n in seed_nights for r in n.results
            if r.ok and r.config.mode in ("baseline", "offload")]
    order = {m: i for i, m in enumerate(SEED_MODELS)}
    rows.sort(key=lambda r: (order.get(r["model"], 9), r["quant"], r["mode"]))
    (args.out / "seed-reproduction.json").write_text(json.dumps(rows, indent=1) + "\n")

    done = {(r["model"], r["quant"]) for r in rows}
    missing = [f"{m} {q}" for m in SEED_MODELS[:2] for q in SEED_QUANTS if (m, q) not in done]
    failed = [f"{r.config.config_id} ({r.status}: {r.error[:120]})" for n in nights.values() for r in n.results
              if not r.ok]
    lines = ["# Seed reproduction: VRAM and speed from the nightly's own stages", "",
             "VRAM = llama.cpp's GPU model + KV + compute buffers (the seed's metric), GiB. NVML = the process's GPU "
             "memory (adds the CUDA context and the VMM pool). Synthetic shape-true weights, quantized by the build "
             "under test; n_ctx 4096; pp512/tg128 like llama-bench (N runs each). The seed ran on a GH200 with "
             "llama.cpp b6686.", "", *seed_section(rows),
             *sweep_section([r for n in sweep for r in n.results]), *stages_section(nights),
             *cpu_half_line(*write_report(nights, args.date, args.out))]
    if args.fidelity:
        lines += ["", "## Engine vs llama-bench", "", "See engine-vs-llama-bench.md."]
    if missing or failed:
        lines += ["", "## Not measured", ""] + [f"- {m}: not run" for m in missing] + [f"- {f}" for f in failed]
    text = "\n".join(lines) + "\n"
    (args.out / "seed-reproduction.md").write_text(text)
    print(text)

    if args.fidelity:
        runs = [json.loads(path.read_text()) for path in args.fidelity]
        (args.out / "engine-vs-llama-bench.json").write_text(json.dumps(runs, indent=1) + "\n")
        (args.out / "engine-vs-llama-bench.md").write_text(fidelity_markdown(runs))
        print(fidelity_markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
