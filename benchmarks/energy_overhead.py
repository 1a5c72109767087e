"""What reading energy costs the figures it sits beside: pp and tg tok/s of the bench child with and without it.

Three ways, interleaved round by round in one engine process so that drift hits them alike, each the bench child's
own run (vramwatch.bench.child.Bench) of one config:

- none:    no energy reading (what a machine without NVML and RAPL does);
- sampler: the power sampler thread at SAMPLE_HZ and no counter;
- full:    the counter at both ends of each window and the sampler.

On a machine without a GPU the NVML calls are answered by tests/support/nvml_trace.py (a power trace replayed in
NVML's shape), so what is measured is the cost of the sampler thread and the windows on the engine, not a driver's
call cost; on a GPU machine pass --nvml to use the real one. Target (issue 27): under 1 % on tok/s.
On a CPU backend the sampler thread competes with ggml's worker threads for the cores (they wait for each other at
every barrier), so a host with few cores, or a shared one, shows it most: compare several rounds.

    python benchmarks/energy_overhead.py [--model M.gguf] [--mode baseline|offload] [--rounds 5] [--reps 5] [--nvml]
        [--ways none full] [--out overhead.json]

Prints one row per (way, test): median tok/s over the rounds, and the change against none: the mean of the rounds'
paired ratios (each round runs every way once, in turn) with its 95 % interval, which says whether the rounds
resolve a 1 % change. --out writes the same as JSON with every round's tok/s (benchmarks/energy_report.py reads it).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("none", "sampler", "full")


def outer(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "include"))
    from vramwatch.builds.engine import newest_engine
    from vramwatch.config import Paths
    from vramwatch.models.inspect import model_file
    from vramwatch.records import BenchConfig

    engine = newest_engine(Paths())
    model = args.model or next(iter(sorted((ROOT / "models" / "quantized").glob("*-Q4_K_M-*.gguf"))), None)
    if model is None:
        raise SystemExit("no model: pass --model M.gguf, or run `make models` first")
    config = BenchConfig(model=model_file(Path(model)), mode=args.mode, reps=args.reps, n_prompt=args.n_prompt,
                         n_gen=args.n_gen, generation=None)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}{os.pathsep}{ROOT / 'tests'}",
           "VRAMWATCH_HOST_BW_MIB": "64"}  # the roofline's copy: not what is measured here
    print(f"engine llama-cpp-python {engine.llama_cpp_python_version} ({engine.request.backend}), "
          f"model {Path(model).name}, {args.rounds} rounds x {args.reps} reps, "
          f"NVML: {'real' if args.nvml else 'replayed trace'}")
    command = [engine.python, __file__, "--inner", "--rounds", str(args.rounds), "--ways", *args.ways] + (
        ["--nvml"] if args.nvml else [])
    done = subprocess.run(command, input=config.to_json(), capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"the engine process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    speeds = json.loads(done.stdout.strip().splitlines()[-1])
    rows = summary(speeds)
    print(f"{'way':<8} {'test':<4} {'median tok/s':>13} {'vs none':>8} {'95 % interval':>17}")
    for row in rows:
        interval = "" if row["ci_low_pct"] is None else f"[{row['ci_low_pct']:+.2f}, {row['ci_high_pct']:+.2f}]%"
        print(f"{row['way']:<8} {row['test']:<4} {row['median_ts']:>13.2f} {row['change_pct']:>+7.2f}% {interval:>17}")
    if args.out:
        args.out.write_text(json.dumps({
            "engine": {"llama_cpp_python": engine.llama_cpp_python_version, "llama_cpp_commit": engine.llama_cpp_commit,
                       "backend": engine.request.backend},
            "config": config.to_dict(), "config_name": config.config_name, "rounds": args.rounds,
            "nvml": "real" if args.nvml else "replayed trace", "speeds": speeds, "rows": rows}, indent=1) + "\n")
    return 0


# two-sided 95 % quantiles of Student's t by degrees of freedom (1-30); beyond, the normal's
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _half_width(logs: list[float]) -> float | None:
    """The 95 % t interval's half width of the mean of `logs` (None with fewer than two)."""
    if len(logs) < 2:
        return None
    quantile = T95[len(logs) - 2] if len(logs) - 1 <= len(T95) else 1.96
    return quantile * statistics.stdev(logs) / math.sqrt(len(logs))


def _pct(log_ratio: float) -> float:
    return round(100 * math.expm1(log_ratio), 3)


def summary(speeds: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Per way and test: the median tok/s, and the change against none as the geometric mean of the rounds' paired
    ratios with its 95 % t interval (None with fewer than two rounds)."""
    rows = []
    for test in ("pp", "tg"):
        for way, tests in speeds.items():
            logs = [math.log(x / base) for x, base in zip(tests[test], speeds["none"][test])]
            mean, half = statistics.fmean(logs), _half_width(logs)
            rows.append({"way": way, "test": test, "median_ts": round(statistics.median(tests[test]), 3),
                         "change_pct": _pct(mean), "ci_low_pct": None if half is None else _pct(mean - half),
                         "ci_high_pct": None if half is None else _pct(mean + half)})
    return rows


def inner(args: argparse.Namespace) -> int:
    """Runs in the engine's venv, as the bench child does."""
    from vramwatch.bench import child
    from vramwatch.bench.energy import EnergyMeter, Rapl
    from vramwatch.bench.gpu import Nvml
    from vramwatch.progress import to_stderr
    from vramwatch.records import BenchConfig

    to_stderr()
    config = BenchConfig.from_json(sys.stdin.read())

    def meter_for(way: str) -> type[EnergyMeter]:
        class Meter(EnergyMeter):
            @classmethod
            def open(cls, nvml: Nvml | None, device: int, has_gpu: bool, powercap: Path = Path()) -> EnergyMeter:
                if way == "none":
                    return cls(None, 0, None, "not read (benchmark)", "not read (benchmark)")
                if args.nvml and nvml:
                    source = nvml
                else:
                    from support.nvml_trace import RecordedNvml

                    source = Nvml(RecordedNvml())
                meter = cls(source, device if source is nvml else 0, Rapl.open()[0], "", "")
                meter.has_counter = way == "full" and meter.has_counter
                return meter
        return Meter

    speeds: dict[str, dict[str, list[float]]] = {way: {"pp": [], "tg": []} for way in args.ways}
    for _ in range(args.rounds):
        for way in args.ways:
            child.EnergyMeter = meter_for(way)
            result = child.Bench(config).run()
            if not result.ok:
                raise SystemExit(f"{way}: {result.status}: {result.error}")
            speeds[way]["pp"].append(result.pp.avg_ts)
            speeds[way]["tg"].append(result.tg.avg_ts)
    print(json.dumps(speeds))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the demo's tiny DeepSeek-MoE Q4_K_M)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n-prompt", type=int, default=128)
    parser.add_argument("--n-gen", type=int, default=32)
    parser.add_argument("--nvml", action="store_true", help="read the machine's NVML instead of the replayed trace")
    parser.add_argument("--mode", choices=("baseline", "offload"), default="baseline")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS),
                        help="which ways to interleave (none is always the reference)")
    parser.add_argument("--out", type=Path, help="also write the rounds and the summary here, as JSON")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.ways = ["none", *(way for way in args.ways if way != "none")]
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
