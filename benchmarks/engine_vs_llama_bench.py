"""Fidelity of our bench engine: pp and tg tok/s against llama-bench built in the engine's own cmake tree.

Same model, same GPU, same run, same settings (n_prompt, n_gen, reps, threads, flash-attn, mmap, batch sizes), in
baseline and offload (every expert tensor in CPU memory: llama-bench -ot '<pattern>=CPU'), and the same shared
libraries: llama-bench runs on the engine venv's libllama/libggml. Target: both ratios >= 0.97.

    python benchmarks/engine_vs_llama_bench.py --model models/deepseek-moe-16b/Q4_K_M.gguf \\
        [--build builds/<key>/build.json] [--modes baseline offload] [--reps 5] [--out fidelity.json]

The build defaults to the newest one under builds/ (VRAMWATCH_BUILDS_DIR); it needs build.build_llama_bench: true.

Prints one table row per (model, mode, test); --out writes them as JSON with the device, build, date and command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch.bench.placement import override_patterns  # noqa: E402
from vramwatch.bench.runner import run_config
from vramwatch.builds.engine import newest_engine
from vramwatch.builds.llama_bench import llama_bench_env  # noqa: E402
from vramwatch.config import Paths  # noqa: E402
from vramwatch.models.inspect import model_file  # noqa: E402
from vramwatch.records import BenchConfig, BenchResult, BuildRecord  # noqa: E402


def llama_bench(build: BuildRecord, model: Path, mode: str, args: argparse.Namespace, threads: int) -> dict[str, float]:
    cmd = [build.llama_bench, "-m", str(model), "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.reps),
           "-ngl", "999", "-t", str(threads), "-fa", args.flash_attn, "-b", str(args.n_batch),
           "-ub", str(args.n_ubatch), "-lm", "mmap", "-o", "json"]
    if mode == "offload":
        cmd += ["-ot", ";".join(f"{pattern}=CPU" for pattern in override_patterns(mode))]  # "," would start a new test
    done = subprocess.run(cmd, capture_output=True, text=True, env=llama_bench_env(build))
    if done.returncode:
        raise SystemExit(f"llama-bench failed on {model} {mode} (exit {done.returncode}): {done.stderr[-1500:]}")
    return {("pp" if t["n_gen"] == 0 else "tg"): t["avg_ts"] for t in json.loads(done.stdout)}


def engine(build: BuildRecord, model: Path, mode: str, args: argparse.Namespace) -> BenchResult:
    config = BenchConfig(model=model_file(model), mode=mode, n_prompt=args.n_prompt, n_gen=args.n_gen,
                         reps=args.reps, n_batch=args.n_batch, n_ubatch=args.n_ubatch, flash_attn=args.flash_attn,
                         n_threads=args.threads, generation=None)
    result = run_config(config, build)
    if not result.ok:
        raise SystemExit(f"engine failed on {model} {mode}: {result.status}: {result.error}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, help="build.json of the engine under test (default: the newest)")
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

    build = BuildRecord.from_json(args.build.read_text()) if args.build else newest_engine(Paths())
    if not build.llama_bench:
        raise SystemExit(f"build {build.request.key} has no llama-bench: set build.build_llama_bench: true and rebuild")
    rows, device = [], ""
    print(f"{'model':<24} {'quant':<7} {'mode':<9} {'test':<6} {'llama-bench t/s':>16} {'engine t/s':>11} {'ratio':>6}")
    for model in args.model:
        for mode in args.modes:
            result = engine(build, model, mode, args)  # the engine resolves threads; llama-bench gets the same
            device = result.fingerprint.gpu_name or result.fingerprint.cpu_model
            ours = {"pp": result.pp.avg_ts, "tg": result.tg.avg_ts}
            theirs = llama_bench(build, model, mode, args, result.n_threads)
            name, quant = result.config.model.model, result.config.model.quant
            for test in ("pp", "tg"):
                label = f"{test}{args.n_prompt if test == 'pp' else args.n_gen}"
                ratio = ours[test] / theirs[test]
                rows.append({"model": name, "quant": quant, "mode": mode, "test": label,
                             "llama_bench_ts": round(theirs[test], 2), "engine_ts": round(ours[test], 2),
                             "ratio": round(ratio, 4), "n_threads": result.n_threads})
                print(f"{name:<24} {quant:<7} {mode:<9} {label:<6} {theirs[test]:>16.2f} {ours[test]:>11.2f} "
                      f"{ratio:>6.3f}")
    if args.out:
        args.out.write_text(json.dumps({
            "device": device, "llama_cpp_commit": build.llama_cpp_commit,
            "llama_cpp_python": build.llama_cpp_python_version, "backend": build.request.backend,
            "date": datetime.now(timezone.utc).date().isoformat(), "reps": args.reps, "flash_attn": args.flash_attn,
            "command": "python benchmarks/engine_vs_llama_bench.py " + shlex.join(sys.argv[1:]), "rows": rows,
        }, indent=1))
    worst = min(r["ratio"] for r in rows)
    print(f"worst ratio {worst:.3f} ({'meets' if worst >= 0.97 else 'misses'} the 0.97 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
