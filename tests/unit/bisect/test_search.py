"""The pure bisection core: a probe function stands in for build + bench (pure logic, no external system)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.samples import simulated_ab

from vramwatch.bisect.search import (
    Probe,
    ab_probe,
    ab_verdict,
    endpoint_problem,
    expected_steps,
    figure_verdict,
    search,
)
from vramwatch.config import ThroughputPolicy
from vramwatch.regress.ab import compare

REFS = [f"r{i}" for i in range(20)]


def planted(first_bad: int, skip: set[int] = frozenset(), calls: list[str] | None = None):
    """A probe whose candidates from `first_bad` on are bad and those in `skip` fail to build."""

    def probe(ref: str) -> Probe:
        if calls is not None:
            calls.append(ref)
        index = REFS.index(ref)
        if index in skip:
            return Probe("skipped", reason=f"build failed: {ref} has a syntax error")
        return Probe("bad" if index >= first_bad else "good", figure=260.39 if index >= first_bad else 236.26)

    return probe


@pytest.mark.parametrize("first_bad", range(len(REFS) + 1))
def test_finds_the_first_bad_candidate_in_about_log2_probes(first_bad):
    calls: list[str] = []
    found = search(REFS, planted(first_bad, calls=calls))

    assert found.found and found.first_bad == first_bad and found.last_good == first_bad - 1
    assert len(calls) <= math.ceil(math.log2(len(REFS) + 1)) == expected_steps(len(REFS))
    assert len(set(calls)) == len(calls)  # never probes a candidate twice


def test_every_candidate_good_names_the_bad_end_itself():
    found = search(REFS[:3], planted(first_bad=99))
    assert found.found and found.first_bad == 3 and found.last_good == 2


def test_steps_around_a_broken_build_to_its_neighbour():
    """Fault: a candidate's build fails (a syntax error): it is skipped with the reason and a neighbour probed."""
    refs = REFS[:6]  # the middle, r2, does not build
    calls: list[str] = []
    found = search(refs, planted(first_bad=4, skip={2}, calls=calls))

    assert calls == ["r2", "r3", "r4"]
    assert found.found and refs[found.first_bad] == "r4"
    skipped = [(refs[i], p.reason) for i, p in found.probes if p.verdict == "skipped"]
    assert skipped == [("r2", "build failed: r2 has a syntax error")]


def test_skips_next_to_the_change_leave_a_range_with_the_reasons():
    """Fault: the builds right before the change fail: the culprit is ambiguous, "between X and Y", and says why."""
    found = search(REFS[:8], planted(first_bad=5, skip={3, 4}))

    assert not found.found and (found.last_good, found.first_bad) == (2, 5)
    assert [i for i, _ in found.skipped] == [3, 4]
    assert all("syntax error" in p.reason for _, p in found.skipped)


def test_a_build_failing_everywhere_ends_with_every_candidate_skipped():
    """Fault: no candidate builds: the range stays the endpoints', each candidate tried once."""
    found = search(REFS[:6], planted(first_bad=3, skip=set(range(6))))

    assert not found.found and (found.last_good, found.first_bad) == (-1, 6)
    assert sorted(i for i, _ in found.probes) == list(range(6)) and len(found.skipped) == 6


def test_no_candidates_means_the_bad_end_is_the_culprit_without_a_probe():
    found = search([], planted(first_bad=0))
    assert found.found and found.first_bad == 0 and found.probes == [] and expected_steps(0) == 0


def test_reports_each_probe_as_it_happens():
    seen: list[tuple[int, str, str]] = []
    search(REFS[:7], planted(first_bad=4), on_probe=lambda step, ref, p: seen.append((step, ref, p.verdict)))
    assert seen == [(1, "r3", "good"), (2, "r5", "bad"), (3, "r4", "bad")]


def test_endpoints_that_do_not_reproduce_stop_the_bisection():
    """Fault: the bad build measures like the good one (the change does not reproduce): no search."""
    good, bad = Probe("good", 236.26), Probe("bad", 260.39)
    assert endpoint_problem(good, bad) is None
    assert "do not reproduce" in endpoint_problem(good, Probe("good", 236.26))
    assert endpoint_problem(Probe("skipped", reason="build failed: x"), bad) == (
        "the good build could not be measured: build failed: x")


@pytest.mark.parametrize(("figure", "verdict"), [
    (260.39, "bad"), (236.26, "good"), (255.0, "bad"), (240.0, "good"), ((236.26 + 260.39) / 2, "skipped")])
def test_an_exact_buffer_figure_is_judged_by_the_end_it_matches_or_approaches(figure, verdict):
    assert figure_verdict(figure, good=236.26, bad=260.39)[0] == verdict


@pytest.mark.parametrize(("outcome", "verdict"), [
    ("slower", "bad"), ("no change", "good"), ("not slower", "good"), ("inconclusive", "skipped"),
    ("faster", "skipped")])
def test_a_throughput_candidate_is_judged_by_its_ab_against_the_good_build(outcome, verdict):
    """Session 8: "not slower" (cleared of a slowdown beyond the policy, the bisection's question) was skipped."""
    assert ab_verdict(outcome, "slower", "tg 0.81x")[0] == verdict
    assert ab_verdict("not slower", "faster", "tg 1.02x")[0] == "skipped"  # it does not clear a speed-up


def test_a_throughput_candidate_gets_the_sequential_ab_not_one_look():
    """Session 8: a candidate was judged on one look of 3 processes a side, which at 3.5 % noise cannot show a -8 %
    slowdown beyond the 5 % policy: skipped, and the culprit left ambiguous. The nightly's sequential A/B grows."""
    def engines(seed: int):
        rng = np.random.default_rng(seed)
        return lambda ask, more, earlier: simulated_ab("x", ("good", "candidate"), {"tg": (118.0, 118.0 * 0.92)},
                                                       0.035, rng, more, earlier)

    policy = ThroughputPolicy()
    outcome, probe = ab_probe("tg", "good", engines(2), policy)

    one_look = engines(2)(None, policy.ab_processes, None).samples_ts["tg"]  # the same first look, alone
    assert compare("tg", one_look["A"], one_look["B"], 0.05).verdict == "inconclusive"
    assert outcome == "slower" and probe.figure < 0.95 and "slower" in probe.reason
    assert ab_verdict(outcome, "slower", probe.reason)[0] == "bad"
