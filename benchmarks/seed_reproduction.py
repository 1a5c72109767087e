"""Side-by-side of our GPU measurements and the seed table (../shared/SEED-quantization-summary.md).

    python benchmarks/seed_reproduction.py MEASURED.json [MEASURED.json ...] --out docs/results/seed-reproduction

MEASURED.json are documents written by `vramwatch measure` (pipeline.measure) on a GPU worker. Writes OUT.json (one
record per model x quant x mode) and OUT.md (the table, deviations from the seed, and what was not measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch.records import MeasuredNight  # noqa: E402

# The seed's VRAM (GPU model + KV + compute buffers), GB as the seed prints them (GiB), GH200, llama.cpp b6686.
SEED_GIB = {
    ("phi-3.5-moe", "Q2_K"): (14.78, 1.34), ("phi-3.5-moe", "Q4_K_M"): (24.14, 1.72),
    ("phi-3.5-moe", "Q8_0"): (41.91, 2.46),
    ("deepseek-moe-16b", "Q2_K"): (7.28, 1.60), ("deepseek-moe-16b", "Q4_K_M"): (11.10, 1.86),
    ("deepseek-moe-16b", "Q8_0"): (17.11, 2.33),
}
SEED_MODELS = ("deepseek-moe-16b", "phi-3.5-moe", "gpt-oss-20b")
SEED_QUANTS = ("Q2_K", "Q4_K_M", "Q8_0")


def records(measured: MeasuredNight, date: str) -> list[dict]:
    rows = []
    for result in measured.results:
        if not result.ok:
            continue
        model, mode = result.config.model.model, result.config.mode
        quant = result.config.model.quant
        seed = SEED_GIB.get((model, quant))
        nvml = result.memory.nvml_process_mib
        rows.append({
            "model": model, "quant": quant, "mode": mode,
            "vram_gib": round(result.memory.vram_gib, 3),
            "seed_gib": seed[0 if mode == "baseline" else 1] if seed else None,
            "nvml_process_gib": round(nvml / 1024, 3) if nvml is not None else None,
            "cuda_context_gib": round(result.memory.cuda_context_mib / 1024, 3)
            if result.memory.cuda_context_mib is not None else None,
            "pp512_ts": round(result.pp.avg_ts, 1), "tg128_ts": round(result.tg.avg_ts, 1),
            "reps": len(result.tg.samples_ts), "n_overridden_tensors": result.n_overridden_tensors,
            "gpu": result.fingerprint.gpu_name, "llama_cpp_commit": result.fingerprint.llama_cpp_commit[:9],
            "date": date,
        })
    return rows


def markdown(rows: list[dict], stage_seconds: dict[str, float], build_seconds: float) -> str:
    lines = ["# Seed reproduction: VRAM and speed from the nightly's own stages", "",
             "VRAM = llama.cpp's GPU model + KV + compute buffers (the seed's metric), GiB. NVML = the process's GPU "
             "memory (adds the CUDA context and the VMM pool). Synthetic shape-true weights; n_ctx 4096; "
             "pp512/tg128 like llama-bench.", "",
             "| Model | Quant | Mode | VRAM GiB | Seed GiB | Deviation | NVML process GiB | CUDA ctx GiB | pp512 t/s | "
             "tg128 t/s | N | GPU | llama.cpp | Date |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        deviation = f"{(r['vram_gib'] / r['seed_gib'] - 1) * 100:+.1f}%" if r["seed_gib"] else "not in seed"
        seed = f"{r['seed_gib']:.2f}" if r["seed_gib"] else "–"
        lines.append(f"| {r['model']} | {r['quant']} | {r['mode']} | {r['vram_gib']:.2f} | {seed} | {deviation} | "
                     f"{r['nvml_process_gib']:.2f} | {r['cuda_context_gib']:.2f} | {r['pp512_ts']:.1f} | "
                     f"{r['tg128_ts']:.1f} | {r['reps']} | {r['gpu']} | {r['llama_cpp_commit']} | {r['date']} |")
    done = {(r["model"], r["quant"]) for r in rows}
    missing = [f"{m} {q}" for m in SEED_MODELS[:2] for q in SEED_QUANTS if (m, q) not in done]
    lines += ["", f"Engine build (CUDA, slim bundle, when first built): {build_seconds:.0f} s. "
              "Stage wall times of the measuring runs (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in stage_seconds.items())]
    if missing:
        lines += ["", "Not measured yet (GPU time ran out): " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measured", type=Path, nargs="+")
    parser.add_argument("--date", required=True, help="the day the GPU run was made, YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="path without suffix")
    args = parser.parse_args()
    rows, stages, build_seconds = [], {}, 0.0
    for path in args.measured:
        measured = MeasuredNight.from_json(path.read_text())
        rows += records(measured, args.date)
        build_seconds = max(build_seconds, measured.build.duration_s)
        for stage, seconds in measured.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    text = markdown(rows, stages, build_seconds)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
