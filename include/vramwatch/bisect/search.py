"""The bisection itself, pure: no builds, no I/O. vramwatch.bisect.run gives it a probe that builds and benches.

Given the candidates strictly between a good ref and a bad ref (oldest first) and probe(candidate) -> Probe, it
finds the first bad candidate in about log2(n + 1) probes, like `git bisect` and asv's `find`:
- the range is (last known good, first known bad); it probes the untried candidate nearest its middle;
- a skipped candidate (its build failed, its bench failed, its A/B could not decide) stays skipped, and the next
  probe is its nearest untried neighbour, as `git bisect skip` does;
- it ends when no untried candidate is left in the range. If the range holds nothing but skipped candidates, the
  culprit is ambiguous: "between X and Y", with the skips' reasons.
The first bad one may be the bad ref itself (every candidate good).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vramwatch.config import ThroughputPolicy
from vramwatch.records import BisectVerdict
from vramwatch.regress.ab import Ask, Grow, sequential_night


@dataclass(frozen=True)
class Probe:
    """What measuring one build said: its verdict, its figure (None when not measured) and why it was skipped."""

    verdict: BisectVerdict
    figure: float | None = None
    reason: str = ""
    build_s: float = 0.0
    bench_s: float = 0.0
    llama_cpp_commit: str = ""


@dataclass(frozen=True)
class SearchResult:
    """The narrowed range as indexes into the candidates: -1 is the good ref, len(candidates) the bad ref."""

    last_good: int
    first_bad: int
    probes: list[tuple[int, Probe]] = field(default_factory=list)  # in the order they ran

    @property
    def found(self) -> bool:
        """The range is down to one step: first_bad is the culprit."""
        return self.first_bad - self.last_good == 1

    @property
    def skipped(self) -> list[tuple[int, Probe]]:
        """The skipped candidates inside the final range: why the culprit is ambiguous."""
        return [(i, p) for i, p in self.probes if p.verdict == "skipped" and self.last_good < i < self.first_bad]


def expected_steps(n: int) -> int:
    """Probes a search of n candidates needs without skips: the "~N" of "step k of ~N"."""
    return max(1, math.ceil(math.log2(n + 1))) if n else 0


def _next_candidate(last_good: int, first_bad: int, skipped: set[int]) -> int | None:
    untried = [i for i in range(last_good + 1, first_bad) if i not in skipped]
    if not untried:
        return None
    middle = (last_good + first_bad) / 2
    return min(untried, key=lambda i: (abs(i - middle), i))


def search(candidates: Sequence[str], probe: Callable[[str], Probe],
           on_probe: Callable[[int, str, Probe], None] | None = None) -> SearchResult:
    """Bisect `candidates` (oldest first, endpoints excluded and already known good and bad) with `probe`.

    on_probe(step, candidate, outcome) is called after each probe, step counting from 1.
    """
    last_good, first_bad = -1, len(candidates)
    skipped: set[int] = set()
    probes: list[tuple[int, Probe]] = []
    while (index := _next_candidate(last_good, first_bad, skipped)) is not None:
        outcome = probe(candidates[index])
        probes.append((index, outcome))
        if on_probe:
            on_probe(len(probes), candidates[index], outcome)
        if outcome.verdict == "bad":
            first_bad = index
        elif outcome.verdict == "good":
            last_good = index
        else:
            skipped.add(index)
    return SearchResult(last_good, first_bad, probes)


def endpoint_problem(good: Probe, bad: Probe) -> str | None:
    """Why the endpoints cannot start a bisection (None when they can): either could not be measured, or they do
    not show the change (the good ref measures bad, or the bad ref good)."""
    for role, outcome in (("good", good), ("bad", bad)):
        if outcome.verdict == "skipped":
            return f"the {role} build could not be measured: {outcome.reason}"
    if good.verdict != "good" or bad.verdict != "bad":
        return (f"the endpoints do not reproduce the change: good measures {good.verdict}, bad measures "
                f"{bad.verdict}" + (f" ({good.reason or bad.reason})" if good.reason or bad.reason else ""))
    return None


def figure_verdict(figure: float, good: float, bad: float) -> tuple[BisectVerdict, str]:
    """A candidate's verdict from an exact figure (a llama.cpp buffer, deterministic to the byte): bad when it is the
    bad build's figure or nearer to it than to the good build's; skipped exactly halfway (it cannot say)."""
    to_good, to_bad = abs(figure - good), abs(figure - bad)
    if to_bad < to_good:
        return "bad", "" if to_bad == 0 else f"nearer the bad build's {bad:g} than the good build's {good:g}"
    if to_good < to_bad:
        return "good", "" if to_good == 0 else f"nearer the good build's {good:g} than the bad build's {bad:g}"
    return "skipped", f"{figure:g} lies halfway between the good build's {good:g} and the bad build's {bad:g}"


def ab_verdict(outcome: str, changed: str, describe: str) -> tuple[BisectVerdict, str]:
    """A candidate's verdict from its A/B against the good build: bad when it shows the endpoints' change
    (`changed`: "slower" or "faster"), good on "no change" and, for a slowdown, on "not slower" (cleared of a
    slowdown beyond the policy, which is what the bisection asks), skipped on anything else (it could not decide)."""
    if outcome == changed:
        return "bad", describe
    if outcome == "no change" or (changed == "slower" and outcome == "not slower"):
        return "good", describe
    return "skipped", f"the A/B against the good build did not decide: {describe}"


def ab_probe(metric: str, reference_commit: str, grow: Grow, policy: ThroughputPolicy) -> tuple[str, Probe]:
    """(the A/B's outcome, its probe) for one build against the good one: the nightly's sequential A/B
    (regress.ab.sequential_night, this one ask), which adds processes while the answer is open, within the policy's
    processes and GPU minutes. The probe's figure is the ratio; its reason the verdict's line."""
    (ended,) = sequential_night([Ask("candidate", reference_commit, (metric,))], grow, policy)
    if ended.run is None:
        return "inconclusive", Probe("skipped", reason=ended.why_not)
    (verdict,) = ended.verdicts
    return verdict.verdict, Probe("good", verdict.ratio, verdict.describe())
