"""Fidelity of our bench engine: pp and tg tok/s against llama-bench built from the same llama.cpp source.

Same model, same GPU, same run, same settings (n_prompt, n_gen, reps, threads, flash-attn, mmap, batch sizes), in
baseline and offload (every expert tensor in CPU memory: llama-bench -ot '<pattern>=CPU'). Target: both ratios >= 0.97.

    python benchmarks/engine_vs_llama_bench.py --build builds/<key>/build.json --llama-bench PATH \\
        --model models/deepseek-moe-16b/Q4_K_M.gguf [--modes baseline offload] [--reps 5] [--out fidelity.json]

Prints one table row per (model, mode, test) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch.bench import run_config  # noqa: E402
from vramwatch.bench.cli import model_file  # noqa: E402
from vramwatch.bench.placement import override_patterns  # noqa: E402
from vramwatch.records import BenchConfig, BuildRecord  # noqa: E402


def llama_bench(binary: Path, model: Path, mode: str, args: argparse.Namespace, threads: int) -> dict[str, float]:
    cmd = [str(binary), "-m", str(model), "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.reps),
           "-ngl", "999", "-t", str(threads), "-fa", args.flash_attn, "-b", str(args.n_batch),
           "-ub", str(args.n_ubatch), "-mmp", "1", "-o", "json"]
    if mode == "offload":
        cmd += ["-ot", ",".join(f"{pattern}=CPU" for pattern in override_patterns(mode))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {("pp" if t["n_gen"] == 0 else "tg"): t["avg_ts"] for t in json.loads(out)}


def engine(build: BuildRecord, model: Path, mode: str, args: argparse.Namespace) -> tuple[dict[str, float], int]:
    config = BenchConfig(model=model_file(model), mode=mode, n_prompt=args.n_prompt, n_gen=args.n_gen,
                         reps=args.reps, n_batch=args.n_batch, n_ubatch=args.n_ubatch, flash_attn=args.flash_attn,
                         n_threads=args.threads, generation=None)
    result = run_config(config, build)
    if not result.ok:
        raise SystemExit(f"engine failed on {model} {mode}: {result.status}: {result.error}")
    return {"pp": result.pp.avg_ts, "tg": result.tg.avg_ts}, result.n_threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, required=True, help="build.json of the engine under test")
    parser.add_argument("--llama-bench", type=Path, required=True, help="llama-bench binary from the same source")
    parser.add_argument("--model", type=Path, nargs="+", required=True)
    parser.add_argument("--modes", nargs="+", default=["baseline", "offload"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--n-batch", type=int, default=2048)
    parser.add_argument("--n-ubatch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores, as the engine defaults")
    parser.add_argument("--flash-attn", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    build = BuildRecord.from_json(args.build.read_text())
    rows = []
    print(f"{'model':<40} {'mode':<9} {'test':<6} {'llama-bench t/s':>16} {'engine t/s':>11} {'ratio':>6}")
    for model in args.model:
        for mode in args.modes:
            ours, threads = engine(build, model, mode, args)  # the engine resolves threads; llama-bench gets the same
            theirs = llama_bench(args.llama_bench, model, mode, args, threads)
            for test in ("pp", "tg"):
                label = f"{test}{args.n_prompt if test == 'pp' else args.n_gen}"
                ratio = ours[test] / theirs[test]
                rows.append({"model": model.name, "mode": mode, "test": label, "llama_bench_ts": theirs[test],
                             "engine_ts": ours[test], "ratio": round(ratio, 4), "n_threads": threads})
                print(f"{model.name:<40} {mode:<9} {label:<6} {theirs[test]:>16.2f} {ours[test]:>11.2f} {ratio:>6.3f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    worst = min(r["ratio"] for r in rows)
    print(f"worst ratio {worst:.3f} ({'meets' if worst >= 0.97 else 'misses'} the 0.97 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
