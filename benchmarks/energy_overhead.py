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

    python benchmarks/energy_overhead.py [--model M.gguf] [--rounds 5] [--reps 5] [--nvml]

Prints one row per (way, test): median tok/s over the rounds and the change against none. Not a test.
"""

from __future__ import annotations

import argparse
import json
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
    config = BenchConfig(model=model_file(Path(model)), mode="baseline", reps=args.reps, n_prompt=args.n_prompt,
                         n_gen=args.n_gen, generation=None)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}{os.pathsep}{ROOT / 'tests'}",
           "VRAMWATCH_HOST_BW_MIB": "64"}  # the roofline's copy: not what is measured here
    print(f"engine llama-cpp-python {engine.llama_cpp_python_version} ({engine.request.backend}), "
          f"model {Path(model).name}, {args.rounds} rounds x {args.reps} reps, "
          f"NVML: {'real' if args.nvml else 'replayed trace'}")
    command = [engine.python, __file__, "--inner", "--rounds", str(args.rounds)] + (["--nvml"] if args.nvml else [])
    done = subprocess.run(command, input=config.to_json(), capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"the engine process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    speeds = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'way':<8} {'test':<4} {'median tok/s':>13} {'vs none':>8}")
    for test in ("pp", "tg"):
        base = statistics.median(speeds["none"][test])
        for way in WAYS:
            median = statistics.median(speeds[way][test])
            print(f"{way:<8} {test:<4} {median:>13.2f} {100 * (median - base) / base:>+7.2f}%")
    return 0


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

    speeds: dict[str, dict[str, list[float]]] = {way: {"pp": [], "tg": []} for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
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
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
