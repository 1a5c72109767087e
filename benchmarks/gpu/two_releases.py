"""Issue 15's GPU run, as one detached plan: two llama-cpp-python releases through the nightly's own stages
(pipeline.measure: CUDA build from the bundle, the full-scale DeepSeek-MoE-16B source quantized by each build, one
bench process per config), then the same-night A/B the regress stage runs when a build moves tok/s: tonight's
(the newer release's) config on both engines, interleaved, pipeline.same_night_ab's processes each.

Started by `PLAN=two_releases bash benchmarks/gpu/seed_night.sh SECONDS` (carry: device), which waits and brings
back results.tgz: measure-<version>.json (MeasuredNight) and ab-<mode>.json (ABRun). Here,
`python benchmarks/two_releases.py` ingests them as two consecutive nights and writes docs/results.
`python benchmarks/gpu/two_releases.py --rehearse` runs the same plan at tiny scale on the demo engine (both
"releases" the demo's), to check the plan before spending GPU time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_night as plan  # noqa: E402  (the plan machinery: logs, steps, sources)

from vramwatch import pipeline  # noqa: E402
from vramwatch.config import Paths, SynthSource, load_matrix  # noqa: E402
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name  # noqa: E402

VERSIONS = ("0.3.30", "0.3.36")  # llama.cpp e3a74b29 and 0c1e5709: the pair issue 15 names
MODES = ("offload", "baseline")  # A/B order: offload's tg moved -19 % between these releases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the demo engine, here")
    args = parser.parse_args()
    matrix = load_matrix(plan.MATRICES / "two-releases.yaml")
    versions = VERSIONS
    if args.rehearse:
        demo = load_matrix("demo").build
        models = [m.model_copy(update={"source": SynthSource(synth=m.source.synth, scale="tiny")})
                  for m in matrix.models]
        matrix = matrix.model_copy(update={"build": demo, "models": models})
        versions = (demo.version, demo.version)
        plan.SCALE = "tiny"  # the source the plan writes (seed_night.synthesize reads it)
    (plan.OUT / "logs").mkdir(parents=True, exist_ok=True)
    synth_dir = Paths().models / "synth"
    synth_dir.mkdir(parents=True, exist_ok=True)
    plan.log(f"plan start: releases {', '.join(versions)}, A/B {', '.join(MODES)}")
    source = matrix.models[0].source
    builds, measured = {}, {}
    writer = None
    for version in versions:
        with plan.step(f"build-{version}"):
            if writer is None and not (synth_dir / file_name(get_spec(source.synth, source.scale))).is_file():
                writer = plan.synthesize(source.synth, synth_dir, plan.vocab_files(matrix, version))
            builds[version] = pipeline.build_engine(matrix, version, record_build=False)
            plan.log(f"  build {builds[version].status} {builds[version].duration_s} s, llama.cpp "
                     f"{builds[version].llama_cpp_commit[:12]}")
        with plan.step(f"measure-{version}"):
            if writer is not None:
                plan.wait_synth(writer, source.synth)
                writer = None
            measured[version] = plan.measure(f"measure-{version}", matrix, version)
    previous, tonight = versions
    run_ab = pipeline.same_night_ab(builds[tonight])
    for mode in MODES:
        with plan.step(f"ab-{mode}"):
            (config,) = [r.config for r in measured[tonight].results if r.config.mode == mode]
            ab = run_ab(config, builds[previous].llama_cpp_commit, 5, None)
            if isinstance(ab, str):
                raise RuntimeError(ab)
            (plan.OUT / f"ab-{mode}.json").write_text(ab.to_json(indent=1))
            plan.log(f"  {config.config_name}: " + "; ".join(
                f"{test} A {samples['A']} B {samples['B']}" for test, samples in ab.samples_ts.items()))
    plan.log("plan done")
    (plan.OUT / "DONE").touch()


if __name__ == "__main__":
    main()
