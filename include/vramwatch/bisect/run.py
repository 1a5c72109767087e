"""A bisection through the nightly's own stages: build_engine for each ref, then bench ONE config on it.

The config's model file is the good build's (held fixed, so only the runtime varies), except when the metric is the
model buffer itself: that follows the quantized file, so each build then quantizes its own, and the result says so.

VRAM metrics need one bench per build: llama.cpp's buffers are exact, so a candidate is bad when its figure is the
bad build's (or nearer to it than to the good build's). Throughput metrics need the same-night A/B: each candidate
against the good build, interleaved (vramwatch.bench.ab), judged like the nightly's (vramwatch.regress.ab).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vramwatch.bench.ab import run_ab
from vramwatch.bench.runner import run_config
from vramwatch.bisect import refs
from vramwatch.bisect.metric import is_model_buffer, is_throughput, parse_metric, read_figure, unit
from vramwatch.bisect.search import (
    Probe,
    ab_probe,
    ab_verdict,
    endpoint_problem,
    expected_steps,
    figure_verdict,
    search,
)
from vramwatch.builds.detect import find_build
from vramwatch.builds.engine import build_engine
from vramwatch.builds.process import StepFailed
from vramwatch.builds.sources import is_commit, read_llama_cpp_commit, release_source
from vramwatch.config import BuildSource, Matrix, Paths
from vramwatch.errors import UserError
from vramwatch.models.prepare import prepare_models
from vramwatch.progress import for_stage
from vramwatch.records import (
    BenchConfig,
    BisectLevel,
    BisectRequest,
    BisectResult,
    BisectStep,
    BuildRecord,
    BuildRequest,
    Culprit,
    config_name,
)
from vramwatch.redact import mask

_say = for_stage("bisect")
Judge = Callable[[BenchConfig, BuildRecord], Probe]  # a built ref's verdict
Ends = list[tuple[str, str, Probe]]  # (ref, role, probe) of the good and the bad end


def build_source(matrix: Matrix, level: BisectLevel, repository: str) -> BuildSource:
    """Where the refs are built from: the matrix's release source, or a llama.cpp git repository (--repository, the
    matrix's own git location, else upstream) for commits. llama-bench is never needed here."""
    source = matrix.build.model_copy(update={"build_llama_bench": False})
    if level == "release":
        if source.source == "git":
            raise UserError(f"matrix {matrix.name} builds from git: it has no releases to bisect",
                            "use --level commit")
        return source
    location = repository or (source.location if source.source == "git" else "") or refs.UPSTREAM
    return source.model_copy(update={"source": "git", "location": mask(location)})  # as the matrix's own: masked


def _matrix_for(matrix: Matrix, wanted: str) -> Matrix:
    """The matrix cut down to the model (and quant) of the config `wanted` names, so preparing it makes one file."""
    model, _, rest = config_name(wanted).partition("/")
    quant = rest.partition("/")[0]
    entry = next((m for m in matrix.models if m.name == model), None)
    if entry is None or not quant:
        raise UserError(f"--config {wanted!r} names no model of matrix {matrix.name}",
                        f"give a config id model/quant/mode[@hash]; models: {', '.join(m.name for m in matrix.models)}")
    quants = [q for q in matrix.quants_for(entry) if q.upper() == quant.upper()] or matrix.quants_for(entry)
    return matrix.model_copy(update={"models": [entry.model_copy(update={"quants": quants})]})


def find_config(matrix: Matrix, wanted: str, build: BuildRecord, paths: Paths) -> BenchConfig:
    """The matrix's config with id `wanted` (model/quant/mode@hash; without @hash, by name), on the model file
    `build` makes (the cache's, when the nightly made it before)."""
    cut = _matrix_for(matrix, wanted)
    configs = [c for entry, model in prepare_models(cut, build, paths) for c in cut.bench_configs(model, entry)]
    for config in configs:
        if wanted in (config.config_id, config.config_name):
            return config
    raise UserError(f"--config {wanted!r} is not a config of matrix {matrix.name} (its settings may have changed)",
                    f"use one of: {', '.join(c.config_id for c in configs)}")


def _git_log(paths: Paths) -> Path:
    """Where the fetches and unpacks a bisection makes outside any build write their output."""
    log = paths.cache / "bisect.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return log


def _commit_of(ref: str, role: str, matrix: Matrix, source: BuildSource, paths: Paths) -> str:
    """A commit-level end: a llama.cpp commit as given, a tag of the git repository, or the commit a release of the
    matrix's source vendors."""
    if is_commit(ref):
        return ref
    if matrix.build.source == "git":
        return find_build(source, ref).commit
    try:
        Version(ref)
    except InvalidVersion:
        raise UserError(f"--{role} {ref!r} is not a full llama.cpp commit hash",
                        "give 40-hex commit hashes (a build's llama_cpp_commit), or release versions") from None
    request = BuildRequest(version=ref, source=matrix.build.source, location=matrix.build.location)
    try:
        commit = read_llama_cpp_commit(release_source(request, paths, _git_log(paths)).path)
    except StepFailed as failure:
        raise UserError(f"cannot read which llama.cpp commit release {ref} vendors: {failure.error}",
                        "give the llama.cpp commit hashes themselves") from None
    if not is_commit(commit):
        raise UserError(f"the llama.cpp commit of release {ref} is unknown (its sdist carries no commit marker)",
                        "give the llama.cpp commit hashes themselves")
    _say(f"release {ref} vendors llama.cpp {commit[:12]}")
    return commit


class _Bisection:
    """One bisection's fixed parts: the source, the config, the metric; measure(ref) builds and benches a ref."""

    def __init__(self, matrix: Matrix, source: BuildSource, metric: str, paths: Paths) -> None:
        self.matrix, self.source, self.metric, self.paths = matrix, source, metric, paths
        self.config: BenchConfig | None = None
        self.good_build: BuildRecord | None = None
        self.bad_figure: float | None = None  # given: the bad end is not measured

    def build(self, ref: str) -> tuple[BuildRecord, float]:
        started = time.monotonic()
        record = build_engine(self.source, ref, self.paths)
        return record, round(time.monotonic() - started, 1)

    def config_for(self, build: BuildRecord) -> BenchConfig:
        assert self.config is not None
        if not is_model_buffer(self.metric):
            return self.config
        model = find_config(self.matrix, self.config.config_id, build, self.paths).model  # quantized by this build
        return dataclasses.replace(self.config, model=model)

    def measure(self, ref: str, judge: Judge) -> Probe:
        """Build `ref`, then judge it; a failed build is a skip whose reason is the build's error."""
        build, build_s = self.build(ref)
        if not build.ok:
            return Probe("skipped", reason=f"build failed: {build.error}", build_s=build_s,
                         llama_cpp_commit=build.llama_cpp_commit)
        started = time.monotonic()
        outcome = judge(self.config_for(build), build)
        return dataclasses.replace(outcome, build_s=build_s, bench_s=round(time.monotonic() - started, 1),
                                   llama_cpp_commit=build.llama_cpp_commit)


def run_bisect(matrix: Matrix, request: BisectRequest, paths: Paths | None = None) -> BisectResult:
    """Find the first release or commit after request.good whose metric for request.config is request.bad's.

    request.bad_figure: the bad build's figure when it is known already (a VRAM incident's, measured on the same GPU
    model): the bad end is then neither built nor benched. The good end is always measured: its build makes the model
    file.

    Progress goes to stderr ("step k of ~N: candidate ..."); bad input raises UserError; everything that stops the
    search (a failed endpoint build, endpoints that do not reproduce, a range that is not reachable) is a result
    whose `stopped` says where and why.
    """
    paths = paths or Paths()
    config_id, good, bad, level = request.config, request.good, request.bad, request.level
    metric, bad_figure = parse_metric(request.metric), request.bad_figure
    if bad_figure is not None and is_throughput(metric):
        raise UserError("a throughput bisection measures the bad build in an A/B: it takes no given figure",
                        "leave out the bad build's figure")
    _matrix_for(matrix, config_id)  # a config the matrix does not have fails now, not after a build
    started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    source = build_source(matrix, level, request.repository)
    result = BisectResult(config_id=config_id, level=level, metric=metric, unit=unit(metric), good=good, bad=bad,
                          started_at=started)
    if is_model_buffer(metric):
        result = dataclasses.replace(result, notes=["the metric is the model buffer: each build quantized its own "
                                                    "model file (the others bench the good build's)"])
    if level == "commit":
        good, bad = (_commit_of(good, "good", matrix, source, paths), _commit_of(bad, "bad", matrix, source, paths))
        result = dataclasses.replace(result, good=good, bad=bad)
    try:
        candidates, culprit_of = _candidates(source, level, good, bad, paths)
    except refs.RangeUnreachable as unreachable:
        return _done(result, clock, stopped=f"the range is not reachable: {unreachable}")
    result = dataclasses.replace(result, candidates=len(candidates))
    _say(f"{config_id} {metric}: {len(candidates)} {level}(s) between {good} and {bad}, "
         f"about {expected_steps(len(candidates))} step(s) after measuring both ends")

    bisection = _Bisection(matrix, source, metric, paths)
    bisection.bad_figure = bad_figure
    good_build, good_build_s = bisection.build(good)
    if not good_build.ok:
        step = BisectStep(good, "good", "skipped", reason=f"build failed: {good_build.error}", build_s=good_build_s)
        return _done(result, clock, steps=[step], stopped=f"the good build {good} failed: {good_build.error}")
    bisection.good_build = good_build
    bisection.config = find_config(matrix, config_id, good_build, paths)
    result = dataclasses.replace(result, config_id=bisection.config.config_id)
    judge, ends = (_throughput_judge if is_throughput(metric) else _vram_judge)(bisection, good, bad, good_build_s)
    steps = [BisectStep(ref, role, p.verdict, p.figure, p.reason, p.build_s, p.bench_s, p.llama_cpp_commit)
             for ref, role, p in ends]
    (_, _, good_probe), (_, _, bad_probe) = ends
    result = dataclasses.replace(result, figure_good=good_probe.figure, figure_bad=bad_probe.figure, steps=steps)
    for (ref, role, probe) in ends:
        _say(f"{role} end {ref}: {_figure_text(probe, result.unit)}, {probe.verdict}"
             + (f" ({probe.reason})" if probe.reason else ""))
    problem = endpoint_problem(good_probe, bad_probe)
    if problem:
        return _done(result, clock, stopped=problem)

    total = expected_steps(len(candidates))

    def said(step: int, ref: str, probe: Probe) -> None:
        _say(f"step {step} of ~{total}: candidate {ref} ... {_figure_text(probe, result.unit)} ... {probe.verdict}"
             + (f" ({probe.reason})" if probe.reason else "") + f" [build {probe.build_s:.0f} s, bench "
             f"{probe.bench_s:.0f} s]")

    found = search(candidates, lambda ref: bisection.measure(ref, judge), on_probe=said)
    steps += [BisectStep(candidates[i], "candidate", p.verdict, p.figure, p.reason, p.build_s, p.bench_s,
                         p.llama_cpp_commit) for i, p in found.probes]
    ref_at = {-1: good, len(candidates): bad} | dict(enumerate(candidates))
    commit_at = {step.ref: step.llama_cpp_commit for step in steps}
    last_good, first_bad = ref_at[found.last_good], ref_at[found.first_bad]
    result = dataclasses.replace(result, steps=steps, last_good=last_good, first_bad=first_bad,
                                 last_good_commit=commit_at.get(last_good, ""),
                                 first_bad_commit=commit_at.get(first_bad, ""))
    if found.found and first_bad == bad and bisection.bad_figure is not None:
        # Every candidate measured like the good end, so the verdict rests on the given figure alone. It may come from
        # other GPUs or settings (an H200 pair splits the buffers that one H200 holds): measure the bad end here.
        probe = bisection.measure(bad, judge)
        said(len(found.probes) + 1, bad, probe)
        steps = [s if s.role != "bad" else BisectStep(bad, "bad", probe.verdict, probe.figure, probe.reason,
                                                      probe.build_s, probe.bench_s, probe.llama_cpp_commit)
                 for s in steps]
        result = dataclasses.replace(result, steps=steps, figure_bad=probe.figure,
                                     first_bad_commit=probe.llama_cpp_commit)
        if probe.verdict != "bad":
            return _done(result, clock, stopped=f"every candidate measured like the good end, and so does the bad end "
                                                f"{bad} here ({_figure_text(probe, result.unit)}): the given figure "
                                                f"{bisection.bad_figure:g} {result.unit} did not reproduce on this "
                                                f"machine (other GPUs or settings?)")
        commit_at[bad] = probe.llama_cpp_commit
    if found.found:
        culprit = culprit_of(first_bad, commit_at.get(first_bad, ""))
        _say(f"culprit: {level} {first_bad} ({culprit.subject}) {culprit.link}")
        return _done(dataclasses.replace(result, culprit=culprit), clock)
    skips = "; ".join(f"{candidates[i]}: {p.reason}" for i, p in found.skipped)
    everywhere = " (every candidate was skipped)" if all(p.verdict == "skipped" for _, p in found.probes) else ""
    return _done(result, clock, stopped=f"the change lies between {last_good} and {first_bad}, but "
                                        f"{len(found.skipped)} candidate(s) between them could not be measured"
                                        f"{everywhere}: {skips}")


def _candidates(source: BuildSource, level: BisectLevel, good: str,
                bad: str, paths: Paths) -> tuple[list[str], Callable[[str, str], Culprit]]:
    """The refs strictly between good and bad, and how to name a culprit among them."""
    if level == "release":
        return refs.releases_between(source, good, bad), refs.release_culprit
    commit_range = refs.commits_between(source.location, good, bad, paths, _git_log(paths))
    return ([c.commit for c in commit_range.commits],
            lambda commit, _: refs.commit_culprit(commit_range.repo, commit))


def _vram_judge(bisection: _Bisection, good: str, bad: str, good_build_s: float) -> tuple[Judge, Ends]:
    """Measure both ends; a candidate is judged by which end's exact figure it has."""
    metric = bisection.metric
    assert bisection.config is not None and bisection.good_build is not None

    def figure_of(config: BenchConfig, build: BuildRecord) -> Probe:
        figure, why = read_figure(run_config(config, build), metric)
        return Probe("skipped", reason=why) if figure is None else Probe("good", figure)

    started = time.monotonic()
    good_probe = dataclasses.replace(figure_of(bisection.config, bisection.good_build), build_s=good_build_s,
                                     bench_s=round(time.monotonic() - started, 1),
                                     llama_cpp_commit=bisection.good_build.llama_cpp_commit)
    given = bisection.bad_figure
    bad_probe = (bisection.measure(bad, figure_of) if given is None
                 else Probe("bad", given, reason="given, not measured"))
    if good_probe.figure is not None and bad_probe.figure is not None:
        bad_probe = dataclasses.replace(bad_probe, verdict="bad" if bad_probe.figure != good_probe.figure else "good")

    def judge(config: BenchConfig, build: BuildRecord) -> Probe:
        measured = figure_of(config, build)
        if measured.figure is None:
            return measured
        verdict, why = figure_verdict(measured.figure, good_probe.figure, bad_probe.figure)  # type: ignore[arg-type]
        return Probe(verdict, measured.figure, why)

    return judge, [(good, "good", good_probe), (bad, "bad", bad_probe)]


def _throughput_judge(bisection: _Bisection, good: str, bad: str, good_build_s: float) -> tuple[Judge, Ends]:
    """A/B the bad end against the good one; each candidate is judged by its own A/B against the good build."""
    metric, policy = bisection.metric, bisection.matrix.policy.throughput
    assert bisection.config is not None and bisection.good_build is not None
    reference = (bisection.config, bisection.good_build)

    def ab(config: BenchConfig, build: BuildRecord) -> tuple[str, Probe]:
        return ab_probe(metric, bisection.good_build.llama_cpp_commit,  # type: ignore[union-attr]
                        lambda _ask, more, earlier: run_ab(reference, (config, build), more, earlier), policy)

    good_probe = Probe("good", 1.0, build_s=good_build_s, llama_cpp_commit=bisection.good_build.llama_cpp_commit)
    outcomes: dict[str, str] = {}

    def bad_end(config: BenchConfig, build: BuildRecord) -> Probe:
        outcomes["bad"], probe = ab(config, build)
        return dataclasses.replace(probe, verdict="bad" if outcomes["bad"] in ("slower", "faster") else "good")

    bad_probe = bisection.measure(bad, bad_end)

    def judge(config: BenchConfig, build: BuildRecord) -> Probe:
        outcome, probe = ab(config, build)
        verdict, why = ab_verdict(outcome, outcomes["bad"], probe.reason)
        return dataclasses.replace(probe, verdict=verdict, reason=why)

    return judge, [(good, "good", good_probe), (bad, "bad", bad_probe)]


def _figure_text(probe: Probe, unit_name: str) -> str:
    if probe.figure is None:
        return "no figure"
    return f"{probe.figure:.3f}x" if unit_name == "x" else f"{probe.figure:.2f} {unit_name}"


def _done(result: BisectResult, clock: float, **changes: object) -> BisectResult:
    finished = dataclasses.replace(result, duration_s=round(time.monotonic() - clock, 1), **changes)  # type: ignore
    _say(finished.headline())
    return finished


def write_result(result: BisectResult, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.to_json(indent=2) + "\n")
