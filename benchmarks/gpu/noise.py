"""Issue 25's GPU noise measurement, as one detached plan: how much one config's tok/s moves from process to process.

One build (0.3.36 from the bundle, CUDA), the full-scale DeepSeek-MoE-16B source quantized Q4_K_M by it, then per
mode `PROCESSES` bench processes of the same config on the same engine, each exactly the nightly's own bench
(run through bench.ab.run_ab with the same engine on both sides, so the processes alternate as an A/B's do and a
drift of the machine during the run shows as it would there). What it keeps is every process's avg_ts per test:
the process-to-process spread the throughput verdicts must see through.

Started by `PLAN=noise bash benchmarks/gpu/seed_night.sh SECONDS` (carry: device), which waits and brings back
results.tgz: noise-measure.json (MeasuredNight: the build and one process per mode) and noise-<mode>.json (ABRun).
Here, `python benchmarks/noise_report.py DIR --out docs/results` turns them into the committed Markdown and JSON.
`python benchmarks/gpu/noise.py --rehearse` runs the same plan at tiny scale on the demo engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_night as plan  # noqa: E402  (the plan machinery: logs, steps, sources)

from vramwatch import pipeline  # noqa: E402
from vramwatch.bench.ab import run_ab  # noqa: E402
from vramwatch.config import Paths, SynthSource, load_matrix  # noqa: E402
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name  # noqa: E402

PROCESSES = 20  # per mode: run_ab alternates two sides, so 10 a side of the one engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the demo engine, here")
    parser.add_argument("--processes", type=int, default=PROCESSES, help="bench processes per mode (even)")
    args = parser.parse_args()
    matrix = load_matrix(plan.MATRICES / "noise.yaml")
    version = plan.VERSION
    if args.rehearse:
        demo = load_matrix("demo").build
        models = [m.model_copy(update={"source": SynthSource(synth=m.source.synth, scale="tiny")})
                  for m in matrix.models]
        matrix = matrix.model_copy(update={"build": demo, "models": models})
        version = demo.version
        plan.SCALE = "tiny"  # the sources the plan writes
    (plan.OUT / "logs").mkdir(parents=True, exist_ok=True)
    synth_dir = Paths().models / "synth"
    synth_dir.mkdir(parents=True, exist_ok=True)
    source = matrix.models[0].source
    plan.log(f"plan start: {source.synth} {matrix.quants} {matrix.modes}, {args.processes} processes per mode")
    with plan.step("build"):
        writer = None
        if not (synth_dir / file_name(get_spec(source.synth, source.scale))).is_file():
            writer = plan.synthesize(source.synth, synth_dir, plan.vocab_files(matrix, version))
        build = pipeline.build_engine(matrix, version, record_build=False)
        plan.log(f"  build {build.status} {build.duration_s} s, llama.cpp {build.llama_cpp_commit[:12]}")
        if writer is not None:
            plan.wait_synth(writer, source.synth)
    with plan.step("noise-measure"):
        measured = plan.measure("noise-measure", matrix, version)
    for result in measured.results:
        mode = result.config.mode
        with plan.step(f"noise-{mode}"):
            runs = run_ab((result.config, build), (result.config, build), args.processes // 2)
            (plan.OUT / f"noise-{mode}.json").write_text(runs.to_json(indent=1))
            plan.log(f"  {result.config.config_name}: " + "; ".join(
                f"{test} {sorted(round(x, 1) for side in sides.values() for x in side)}"
                for test, sides in runs.samples_ts.items()))
    plan.log("plan done")
    (plan.OUT / "DONE").touch()


if __name__ == "__main__":
    main()
