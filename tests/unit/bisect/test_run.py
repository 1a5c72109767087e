"""A commit-level bisection on CPU with real builds: a local llama.cpp repository made from the engine's vendored
tree, with a planted buffer change and a broken build (support.llama_repo). The first run on a machine compiles
the good end in full (18 min on the shared 2-core machine); the persistent build tree and ccache make each further
commit 1.5-2.5 min, and the wheel cache makes a second run cheap (4 min)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from support.llama_repo import planted_llama_repo

from vramwatch.bisect.run import run_bisect
from vramwatch.config import Paths, load_matrix
from vramwatch.records import BisectRequest

CONFIG = "deepseek-moe-16b-tiny/Q4_K_M/baseline"


def test_commit_bisection_names_the_planted_commit_and_steps_around_the_broken_build(engine_build):
    """Fault: a candidate does not build (a syntax error): it is skipped with the compiler's error as the reason, and
    the bisection still names the commit that changed the CPU compute buffer. Fault: a given bad figure that this
    machine does not reproduce (it came from other GPUs) named the bad end itself as the culprit, unmeasured."""
    paths = Paths()
    paths.builds = paths.cache / "test-bisect-builds"  # apart: the newest build here must stay the nightly's engine
    repo = planted_llama_repo(Path(engine_build.source_dir) / "vendor" / "llama.cpp", paths.cache / "test-repos")

    request = BisectRequest(CONFIG, repo.good, repo.bad, level="commit", metric="CPU/compute",
                            repository=str(repo.path))
    result = run_bisect(load_matrix("demo"), request, paths=paths)

    assert result.finished, result.stopped
    assert result.culprit.ref == repo.planted and result.culprit.link.endswith(repo.planted)
    assert result.culprit.subject == "context: cap the micro-batch at half of n_ubatch"
    assert result.figure_bad < result.figure_good  # half the micro-batch, a smaller compute buffer
    candidates = [step for step in result.steps if step.role == "candidate"]
    assert [step.ref for step in candidates] == [repo.broken, repo.commits[3], repo.planted]
    broken = candidates[0]
    assert broken.verdict == "skipped" and broken.figure is None
    assert broken.reason.startswith("build failed") and "llama-context.cpp" in broken.reason
    assert [step.verdict for step in candidates[1:]] == ["good", "bad"]
    assert candidates[2].figure == result.figure_bad and all(step.build_s > 0 for step in result.steps)

    # again with the bad end's figure given (as a VRAM incident knows it): the bad end is not built, same culprit
    again = run_bisect(load_matrix("demo"), replace(request, bad_figure=result.figure_bad), paths=paths)
    assert again.culprit == result.culprit
    bad_end = next(step for step in again.steps if step.role == "bad")
    assert (bad_end.reason, bad_end.build_s, bad_end.llama_cpp_commit) == ("given, not measured", 0.0, "")

    # a given figure from elsewhere (issue 18's first H200 run: one GPU's figure, a two-GPU machine): every candidate
    # measures like the good end, so the bad end is measured before it is named, and here it does not reproduce
    elsewhere = run_bisect(load_matrix("demo"), replace(request, bad_figure=result.figure_good * 3), paths=paths)
    assert elsewhere.culprit is None and "did not reproduce on this machine" in elsewhere.stopped
    bad_end = next(step for step in elsewhere.steps if step.role == "bad")
    assert (bad_end.figure, bad_end.verdict) == (result.figure_bad, "good") and bad_end.build_s > 0
