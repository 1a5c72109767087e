"""Issue 18's GPU run, as one detached plan: which llama-cpp-python release between 0.3.30 and 0.3.36 grew
DeepSeek-MoE-16B Q4_K_M baseline's CUDA0 compute buffer (236.26 -> 260.39 MiB in docs/results' two-release night)?

It runs vramwatch.bisect.run_bisect at the release level, the same call as `vramwatch bisect`: every release is built
with CUDA from the bundle, the good build's Q4_K_M file is held fixed, one bench per build. Before that, the good
build is made while the full-scale synthetic source is written (both take minutes, so they overlap; the bisection
then reuses that build). Last, the rebuild benchmark times an incremental CUDA rebuild in the persistent build tree.

Started by `PLAN=bisect_releases bash benchmarks/gpu/seed_night.sh SECONDS` (carry device/wheels plus one half of
the bundle per call: the seven slim sdists and their wheels are over one call's 64 MiB, so the first call carries
device/bundle-a and the second device/bundle-b; seed_night.sh merges each into device/bundle). Brings back
results.tgz: bisect.json (BisectResult) and rebuild.json. Prepared here with
`vramwatch builds bundle --version V --out DIR --python 3.12` per release, then each sdist repacked without the
vocab GGUFs other than DeepSeek's and without the ggml backends other than CPU and CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_night as plan  # noqa: E402  (the plan machinery: logs, steps, sources)

from vramwatch import pipeline  # noqa: E402
from vramwatch.bisect.run import run_bisect, write_result  # noqa: E402
from vramwatch.builds.backend import build_request  # noqa: E402
from vramwatch.builds.slim import LLAMA  # noqa: E402
from vramwatch.config import Paths, load_matrix  # noqa: E402
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name  # noqa: E402
from vramwatch.records import BisectRequest  # noqa: E402

GOOD, BAD = "0.3.30", "0.3.36"
RELEASES = ("0.3.30", "0.3.31", "0.3.32", "0.3.33", "0.3.34", "0.3.35", "0.3.36")
CONFIG = "deepseek-moe-16b/Q4_K_M/baseline"
METRIC = "CUDA0/compute"
BAD_FIGURE = 260.39  # the bad end as the incident measured it (docs/results/2026-11-29-h200-two-releases): one build less
BUNDLE_WAIT_S = 900  # the second call brings the other half of the bundle
# One GPU, as a GPU worker has: on two, llama.cpp splits the layers and CUDA0's compute buffer is another figure
# (104.16 MiB on an H200 pair where one H200 holds 236.26), so figures from the nightly would not compare.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")


def wait_for_bundle(bundle: Path) -> None:
    """Every release's sdist must be in the bundle before the releases between the ends are listed."""
    deadline = time.monotonic() + BUNDLE_WAIT_S
    while True:
        missing = [v for v in RELEASES if not (bundle / f"llama_cpp_python-{v}.tar.gz").is_file()]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bundle still lacks {', '.join(missing)}: carry device/bundle-b")
        time.sleep(5)


def deepseek_vocab(bundle: Path, version: str) -> Path:
    """The folder holding DeepSeek's vocab GGUF, from a release's sdist (the one vocab this bundle keeps)."""
    vocab = plan.OUT / "vocab"
    vocab.mkdir(exist_ok=True)
    subprocess.run(["tar", "xzf", str(bundle / f"llama_cpp_python-{version}.tar.gz"), "-C", str(vocab), "--wildcards",
                    "*ggml-vocab-deepseek-llm.gguf"], check=True)
    return next(vocab.rglob("ggml-vocab-deepseek-llm.gguf")).parent


def last_built(result) -> str:
    """The release whose tree the build slot holds now: the bad end when the bisection measured it after the
    candidates (every candidate measured good), else the last candidate."""
    bad = next(step for step in result.steps if step.role == "bad")
    return bad.ref if bad.build_s else result.steps[-1].ref


def timed_rebuild(matrix, version: str) -> None:
    """Issue 18's rebuild figure: the build of a llama.cpp tree one CUDA file away from the one built last
    (last_built), in the slot's persistent tree. The file changes in the unpacked release source
    and that release's engine and wheel are dropped, so build_engine rebuilds it as it would a neighbouring commit."""
    paths = Paths()
    request = build_request(matrix.build, version)
    changed = paths.cache / "src" / version / LLAMA / "ggml" / "src" / "ggml-cuda" / "norm.cu"
    changed.write_text(changed.read_text() + "\n// vramwatch: a one-file change for the rebuild benchmark\n")
    shutil.rmtree(paths.cache / "wheels" / request.key)
    shutil.rmtree(paths.builds / request.key)
    build = pipeline.build_engine(matrix, version, record_build=False)
    log_text = (paths.builds / request.key / "build.log").read_text()
    compiled = len(re.findall(r"^\s*\[\d+/\d+\] .* -c ", log_text, re.MULTILINE))  # ninja's compile lines (nvcc: -c X -o Y)
    figures = {"version": version, "changed": str(changed.relative_to(paths.cache)), "status": build.status,
               "rebuild_s": build.duration_s, "objects_compiled": compiled}
    (plan.OUT / "rebuild.json").write_text(json.dumps(figures, indent=1))
    plan.log(f"  {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad-end", action="store_true",
                        help="only measure the bad end here, through the nightly's GPU half (pipeline.measure), so "
                             "its figure compares with candidates measured on the same GPUs")
    bad_end_only = parser.parse_args().bad_end
    matrix = load_matrix(plan.MATRICES / "bisect-release.yaml")
    (plan.OUT / "logs").mkdir(parents=True, exist_ok=True)
    plan.log(f"plan start: bisect {CONFIG} {METRIC} between {GOOD} and {BAD}")
    synth_dir = Paths().models / "synth"
    synth_dir.mkdir(parents=True, exist_ok=True)
    source = matrix.models[0].source
    first = BAD if bad_end_only else GOOD
    writer = None
    if not (synth_dir / file_name(get_spec(source.synth, source.scale))).is_file():
        writer = plan.synthesize(source.synth, synth_dir, deepseek_vocab(plan.REPO / matrix.build.location, first))
    with plan.step(f"build-{first}"):
        build = pipeline.build_engine(matrix, first, record_build=False)
        plan.log(f"  build {build.status} {build.duration_s} s, llama.cpp {build.llama_cpp_commit[:12]}")
    if writer is not None:
        plan.wait_synth(writer, source.synth)
    if bad_end_only:
        with plan.step("bad-end"):
            plan.measure(f"measure-{BAD}", matrix, BAD)
        plan.log("plan done")
        (plan.OUT / "DONE").touch()
        return
    wait_for_bundle(plan.REPO / matrix.build.location)
    with plan.step("bisect"):
        result = run_bisect(matrix, BisectRequest(CONFIG, GOOD, BAD, metric=METRIC, bad_figure=BAD_FIGURE))
        write_result(result, plan.OUT / "bisect.json")
        plan.log(f"  {result.headline()}")
        for step in result.steps:
            plan.log(f"  {step.role} {step.ref}: {step.figure} {step.verdict} build {step.build_s} s "
                     f"bench {step.bench_s} s {step.reason}")
    with plan.step("rebuild"):
        timed_rebuild(matrix, last_built(result))
    plan.log("plan done")
    (plan.OUT / "DONE").touch()


if __name__ == "__main__":
    main()
