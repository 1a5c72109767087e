"""Issue 27's GPU energy run, as one detached plan: what a token of each model and mode costs in joules, and what
reading the energy costs the tok/s beside it.

One build (0.3.36 from the bundle, CUDA), then, in priority order (each step writes <out>/<step>.json when it ends,
so a lease that ends early still leaves the most important results):

- energy-deepseek: the nightly's own measure (pipeline.measure) of DeepSeek-MoE-16B Q4_K_M, baseline and offload
  (benchmarks/gpu/energy.yaml): a MeasuredNight whose results carry the energy fields (J/token of pp and tg, average
  and peak W, idle W, the counter-vs-samples agreement, the board's power limit, the host's share or why not);
- overhead-baseline, overhead-offload: benchmarks/energy_overhead.py on that DeepSeek file, the real NVML, no energy
  reading against the full reading (counter and sampler), interleaved round by round in one engine process;
- energy-phi: the same measure of Phi-3.5-MoE Q4_K_M (its Q8_0 source requantized, ~6 min; DeepSeek's F16 source is
  removed first so RAM holds Phi's files; the 44.5 GB Phi source is written on the disk during the build and
  DeepSeek's quantization, as seed_night.py does, and waited for before anything is benched);
- energy-noise: DeepSeek Q4_K_M in NOISE_PROCESSES bench processes per mode on the one engine (bench.ab.run_ab, the
  same engine on both sides): the process-to-process spread of J/token the energy A/B must see through.

Started by `PLAN=energy bash benchmarks/gpu/seed_night.sh SECONDS` (carry: device), which waits and brings back
results.tgz. Here, `python benchmarks/energy_report.py DIR --date D --out docs/results` turns it into the committed
Markdown and JSON. `python benchmarks/gpu/energy.py --rehearse` runs the same plan at tiny scale on the demo engine
(no GPU: every energy figure is absent with its reason; the overhead reads a replayed NVML trace).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_night as plan  # noqa: E402  (the plan machinery: logs, steps, sources)

from vramwatch import pipeline  # noqa: E402
from vramwatch.bench.ab import run_ab  # noqa: E402
from vramwatch.config import Matrix, Paths  # noqa: E402
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name, planned_file_bytes  # noqa: E402
from vramwatch.records import MeasuredNight  # noqa: E402

STEPS = ("energy-deepseek", "overhead-baseline", "overhead-offload", "energy-phi", "energy-noise")  # after "build"
DEEPSEEK, PHI = "deepseek-moe-16b", "phi-3.5-moe"
# Rounds of the overhead's paired comparison: baseline tg varies ~0.75 % between processes on an H100
# (2026-12-07-h100-noise.md), less between runs in one process; 12 pairs gave intervals of ±1.1 % (tg) and ±2.2 %
# (pp) on an H100 (2026-12-07-h100-energy.md), so 40 pairs (~6 min) bring them near ±0.6 and ±1.2 %;
# offload varies ~10 % between processes: its rounds (~12 s a run) show the direction, not a 1 % resolution.
ROUNDS = {"baseline": 40, "offload": 4}
NOISE_PROCESSES = 6  # per mode (3 a side of the one engine): ~25 s baseline, ~80 s offload on an H100
# --rehearse: every step runs, fewer rounds and processes (plan.load gives the rehearsal's bench sizes)
REHEARSAL = {"rounds": 2, "noise_processes": 2}


def only(matrix: Matrix, model: str) -> Matrix:
    return matrix.model_copy(update={"models": [m for m in matrix.models if m.name == model]})


def overhead(name: str, matrix: Matrix, model: Path, mode: str, rounds: int, real_nvml: bool) -> None:
    """benchmarks/energy_overhead.py on one file and mode, with the matrix's tests, into <out>/<name>.json (its
    table into the step's log)."""
    command = [sys.executable, str(plan.REPO / "benchmarks" / "energy_overhead.py"), "--model", str(model),
               "--mode", mode, "--rounds", str(rounds), "--reps", str(matrix.reps), "--n-prompt",
               str(matrix.n_prompt), "--n-gen", str(matrix.n_gen), "--ways", "none", "full",
               "--out", str(plan.OUT / f"{name}.json"), *(["--nvml"] if real_nvml else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout, done.stderr[-4000:], sep="\n")
    if done.returncode:
        raise RuntimeError(f"energy_overhead.py exit {done.returncode}: {done.stderr[-300:]}")
    for line in done.stdout.splitlines()[-4:]:
        plan.log(f"  {line}")


def energy_log(measured: MeasuredNight) -> None:
    for r in measured.results:
        e = r.energy
        plan.log(f"  {r.config.config_name}: pp {e.pp and e.pp.j_per_tok} J/tok, tg {e.tg and e.tg.j_per_tok} J/tok, "
                 f"idle {e.idle_w} W, peak {e.power_peak_w} W, limit {e.power_limit_w} W, agreement "
                 f"{e.agreement_pct} %, note: {e.note or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the demo engine, here")
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP",
                        help=f"run the build and just these steps, in plan order ({', '.join(STEPS)})")
    args = parser.parse_args()
    if args.rehearse:
        plan.SCALE = "tiny"  # the sources the plan writes, and load()'s matrix
    wanted = [s for s in STEPS if s in set(args.only or STEPS)]
    matrix = plan.load("energy")
    rounds, noise_processes = ROUNDS, NOISE_PROCESSES
    if args.rehearse:
        rounds, noise_processes = dict.fromkeys(ROUNDS, REHEARSAL["rounds"]), REHEARSAL["noise_processes"]
    version = matrix.build.version
    (plan.OUT / "logs").mkdir(parents=True, exist_ok=True)
    paths = Paths()
    synth_dir = paths.models / "synth"
    synth_dir.mkdir(parents=True, exist_ok=True)
    plan.log(f"plan start: build, {', '.join(wanted)}; models in {paths.models}, builds in {paths.builds}")
    phi_spec = get_spec(PHI, plan.SCALE)
    phi_writer = None
    with plan.step("build"):  # the sources are written while the engine builds
        vocab_dir = plan.vocab_files(matrix, version)
        deepseek_writer = (None if (synth_dir / file_name(get_spec(DEEPSEEK, plan.SCALE))).is_file()
                           else plan.synthesize(DEEPSEEK, synth_dir, vocab_dir))
        plan.DISK.mkdir(parents=True, exist_ok=True)
        phi_on_disk = shutil.disk_usage(plan.DISK).free > planned_file_bytes(phi_spec, vocab_dir) + (4 << 30)
        if "energy-phi" in wanted and phi_on_disk and not (plan.DISK / file_name(phi_spec)).is_file():
            phi_writer = plan.synthesize(PHI, plan.DISK, vocab_dir)
        plan.log(f"phi source: {'on disk' if phi_on_disk else 'in RAM by its prepare step'}")
        build = pipeline.build_engine(matrix, version, record_build=False)
        plan.log(f"  build {build.status} {build.duration_s} s, llama.cpp {build.llama_cpp_commit[:12]} {build.error}")
        if deepseek_writer is not None:
            plan.wait_synth(deepseek_writer, DEEPSEEK)

    def phi_written() -> None:
        nonlocal phi_writer
        if phi_writer is not None:
            plan.wait_synth(phi_writer, PHI)
            phi_writer = None

    measured: MeasuredNight | None = None
    for name in wanted:
        with plan.step(name):
            if name == "energy-phi":  # DeepSeek's source goes; its quantized file too when Phi's source needs RAM
                gone = [*synth_dir.glob(f"{DEEPSEEK}-{plan.SCALE}-*"), *([] if phi_on_disk else (
                    paths.models / "quantized").glob(f"{DEEPSEEK}-{plan.SCALE}-*"))]
                for done in gone:
                    done.unlink()
                phi_written()
                phi_name = file_name(phi_spec)
                if (plan.DISK / phi_name).is_file() and not (synth_dir / phi_name).is_symlink():
                    (synth_dir / phi_name).symlink_to(plan.DISK / phi_name)  # where the models stage looks
                energy_log(plan.measure(name, only(matrix, PHI), version))
                continue
            if measured is None:  # every DeepSeek step benches the file energy-deepseek makes
                pipeline.prepare_models(only(matrix, DEEPSEEK), build)  # quantized while Phi's source is written
                phi_written()  # nothing else may load the CPU while energy and tok/s are measured
                measured = plan.measure("energy-deepseek", only(matrix, DEEPSEEK), version)
                energy_log(measured)
            if name.startswith("overhead-"):
                mode = name.removeprefix("overhead-")
                overhead(name, matrix, Path(measured.results[0].config.model.path), mode, rounds[mode],
                         not args.rehearse)
            elif name == "energy-noise":
                if not Path(measured.results[0].config.model.path).is_file():
                    raise RuntimeError("DeepSeek's Q4_K_M file was removed to make room for Phi's source in RAM")
                for result in measured.results:
                    runs = run_ab((result.config, build), (result.config, build), noise_processes // 2)
                    (plan.OUT / f"energy-noise-{result.config.mode}.json").write_text(runs.to_json(indent=1))
                    plan.log(f"  {result.config.config_name}: " + "; ".join(
                        f"{metric} {sorted(round(x, 4) for side in sides.values() for x in side)}"
                        for metric, sides in runs.samples_ts.items()))
    phi_written()
    plan.log("plan done")
    (plan.OUT / "DONE").touch()


if __name__ == "__main__":
    main()
