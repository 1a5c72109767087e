"""Same-night A/B verdicts on throughput: a sequential test with a budget, its error rate held over the whole night.
Pure: vramwatch.bench.ab runs the processes, vramwatch.regress.detect says which configs need one.

The test (`compare`), for one metric (pp or tg tokens/s, one sample per process and side). Process noise is
multiplicative (a busy host or a throttled GPU slows a process by a fraction), so the samples are compared on a log
scale: d = mean(log B) - mean(log A), ratio = exp(d), the ratio of the two geometric means. Its standard error and
Welch's degrees of freedom give a t interval, exact for gaussian noise on the log scale; one slow process widens
the interval more than it moves the ratio, so an outlier costs processes, never a false page. Where the config's
night noise is known from its history, it bounds the standard error from below and lends its degrees of freedom
(`_logs`). (The bootstrap of the
medians it replaces was far too narrow at 3-5 processes a side: the source of most false pages of issue 25.)

The verdict, given the policy's `min_effect` m (a fraction) and a one-sided level alpha:
  "slower"       the interval lies wholly below 1 - m: a slowdown beyond the policy, the only verdict that pages
                 (p = the one-sided p-value of "B is slower than A by more than m");
  "faster"       the interval lies wholly above 1 + m;
  "no change"    the interval lies within [1 - m, 1 + m];
  "not slower"   the interval lies above 1 - m but reaches past 1 + m: the build is cleared of a slowdown the
                 policy cares about, which is what the night needs to know;
  "inconclusive" the interval contains 1 - m (the budget ran out first), or a side has fewer than MIN_SAMPLES ok
                 processes.
Each verdict also says the smallest slowdown it could have detected (`min_detectable`): the slowdown that, with the
same spread and processes, would be called "slower" four times in five. An A/B that ends "inconclusive" with its
ratio above 1 - m is not evidence of a slowdown, and the report says what it could have seen.

Every figure of rows.AB_JUDGED is judged so: tok/s of pp and tg by the policy's page_pct, energy per token (J/token)
by its energy_page_pct. A figure where higher is worse is compared as its reciprocal (`sides`: tokens per joule, so
"slower" is a rise beyond the policy) and its final verdict given back as measured (`as_measured`: "higher").

Sequential, with a budget (`plan`, `decide_night`). Each A/B starts with `ab_processes` a side and grows along a
fixed schedule of looks (about x1.6 each, up to `ab_max_processes`) while any of its metrics is still open, and while
the night's GPU minutes (`ab_budget_minutes`) last; open A/Bs are grown one look at a time, round-robin, so one
noisy config cannot spend the night's budget alone. Error control: the night's false-page rate, over all its A/Bs
and metrics, is at most 1 - ab_confidence. Every look tests at alpha / (looks x hypotheses) (Bonferroni over the
looks and the night's hypotheses: the strictest step of Holm's procedure, so a stop is never undone later); when the
night is over, Holm's step-down procedure over the night's final p-values (alpha / looks each) decides which are
"slower". The error rate holds however the looks fall, because each look is charged its own share of alpha.
An A/B stops early when more processes would most likely end "not slower" (`futile`, judged on an interval).

Two nights. An A/B the night could not settle while it still may show a slowdown (`leaning_slower`) goes on the next
night against the same reference, its samples pooled with the new ones (`Ask.prior`, `pooled`); that night's error
control is that night's, as for any of its A/Bs. "Watching" (regress.detect) is only an open A/B whose "slower at
all" p-value passes Holm over every test of the night (`screened`): with a hundred configs some A/B always leans
slower.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vramwatch.config import ThroughputPolicy
from vramwatch.records import AB_SIDES, ABOutcome, ABRun, ABVerdict
from vramwatch.rows import AB_JUDGED, oriented

MIN_SAMPLES = 3  # per side: with fewer, the spread of a side is not known at all
CONFIDENCE = 0.95
POWER = 0.8  # min_detectable: the slowdown caught this often
GROWTH = 1.6  # each look has about this many times the processes of the one before


def schedule(start: int, most: int) -> list[int]:
    """Processes a side at each look: start, about x GROWTH each, ending exactly at `most`."""
    looks = [start]
    while looks[-1] < most:
        looks.append(min(most, max(looks[-1] + 1, round(looks[-1] * GROWTH))))
    return looks


@dataclass(frozen=True)
class _Logs:
    d: float  # mean(log B) - mean(log A)
    se: float
    df: float


NOISE_DF = 20  # degrees of freedom of a config's night noise: at least min_history nights measured it


def _logs(a: np.ndarray, b: np.ndarray, noise: float | None) -> _Logs:
    log_a, log_b = np.log(a), np.log(b)
    d = float(np.mean(log_b) - np.mean(log_a))
    spread_a, spread_b = float(np.var(log_a, ddof=1)), float(np.var(log_b, ddof=1))  # of one process
    var_a, var_b = spread_a / len(a), spread_b / len(b)  # of each side's mean
    se = math.sqrt(var_a + var_b)
    if noise:
        # The config's night noise bounds its process noise (each night's figure is one process): the standard
        # error is never taken below what it implies, and while it is the larger it is a known sigma. When the
        # processes spread wider, their spread is pooled with the night noise's NOISE_DF degrees of freedom instead
        # of standing alone: at 3 processes a side Welch's few degrees of freedom made a critical value of 20 at a
        # night's per-look level, an interval no budget could narrow.
        known = noise * math.sqrt(1 / len(a) + 1 / len(b))
        if known >= se:
            return _Logs(d, known, math.inf)
        spread = (NOISE_DF * noise**2 + (len(a) - 1) * spread_a + (len(b) - 1) * spread_b) / (
            NOISE_DF + len(a) + len(b) - 2)
        return _Logs(d, max(known, math.sqrt(spread * (1 / len(a) + 1 / len(b)))), NOISE_DF + len(a) + len(b) - 2.0)
    # Welch-Satterthwaite; identical samples on both sides (se 0) have all the degrees of freedom there are
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1)) if se else len(a) + len(b) - 2.0
    return _Logs(d, se, df)


def compare(metric: str, a: Sequence[float], b: Sequence[float], min_effect: float, *,
            confidence: float = CONFIDENCE, alpha: float | None = None, noise: float | None = None) -> ABVerdict:
    """The verdict on B (tonight's build) against A (the reference) for one metric, by the rule above.

    The interval is two-sided at `confidence`, i.e. one-sided at alpha = (1 - confidence) / 2 on each end, unless
    `alpha` (the one-sided level a sequential night grants this look) is given. `noise`: the config's relative
    night-to-night noise, where known. Each night's figure is one process, so the night noise is at least the
    process noise: the standard error is never taken below what it implies, and while it is the larger, it is a
    known sigma (a normal quantile) instead of an estimate from a few processes (Student's t with few degrees of
    freedom, whose tails would cost many processes)."""
    from scipy.stats import t as student  # a second to import: only when an A/B is judged, not in every command

    alpha = (1 - confidence) / 2 if alpha is None else alpha
    samples_a, samples_b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_a = float(np.exp(np.mean(np.log(samples_a)))) if len(samples_a) else None
    mean_b = float(np.exp(np.mean(np.log(samples_b)))) if len(samples_b) else None
    ratio = mean_b / mean_a if mean_a and mean_b is not None else None
    figures = dict(metric=metric, n_a=len(samples_a), n_b=len(samples_b), median_a=mean_a, median_b=mean_b,
                   ratio=ratio, confidence=1 - 2 * alpha)
    short = [f"{len(samples)} on side {side}" for side, samples in (("A", samples_a), ("B", samples_b))
             if len(samples) < MIN_SAMPLES]
    if short:
        return ABVerdict(**figures, ci_low=None, ci_high=None, p_value=None, verdict="inconclusive",
                         reason=f"too few ok processes: {' and '.join(short)}, at least {MIN_SAMPLES} a side needed")
    logs = _logs(samples_a, samples_b, noise)
    bound = math.log(1 - min_effect)
    critical = float(student.ppf(1 - alpha, logs.df))
    ci_low, ci_high = math.exp(logs.d - critical * logs.se), math.exp(logs.d + critical * logs.se)
    if logs.se:
        p_slower = float(student.cdf((logs.d - bound) / logs.se, logs.df))
        # "slower at all" screens for watching over a whole night's tests, far in the tail, where a night noise
        # taken as a known sigma (df inf) is too sure of itself: it is an estimate from about NOISE_DF nights
        p_any = float(student.cdf(logs.d / logs.se, min(logs.df, NOISE_DF)))
    else:
        p_slower, p_any = (0.0 if logs.d < bound else 1.0), (0.0 if logs.d < 0 else 1.0)
    detectable = 1 - (1 - min_effect) * math.exp(-(critical + float(student.ppf(POWER, logs.df))) * logs.se)
    verdict, reason = _decide(ci_low, ci_high, min_effect)
    return ABVerdict(**figures, ci_low=ci_low, ci_high=ci_high, p_value=p_slower, verdict=verdict, reason=reason,
                     min_detectable=detectable, p_any=p_any)


def _decide(ci_low: float, ci_high: float, min_effect: float) -> tuple[ABOutcome, str]:
    policy = f"{min_effect:.0%}"
    if ci_high < 1 - min_effect:
        return "slower", f"the whole interval is more than {policy} below 1"
    if ci_low > 1 + min_effect:
        return "faster", f"the whole interval is more than {policy} above 1"
    if ci_low >= 1 - min_effect and ci_high <= 1 + min_effect:
        return "no change", f"the whole interval is within ±{policy}"
    if ci_low >= 1 - min_effect:
        return "not slower", f"the whole interval is above -{policy}: no slowdown the policy cares about"
    if ci_high >= 1:
        return "inconclusive", f"the interval contains both 1 and -{policy}: too noisy to decide"
    return "inconclusive", f"the interval is below 1 but reaches past -{policy}: a change not shown to exceed it"


def decided(verdict: ABVerdict) -> bool:
    """Whether a look settles this metric: slower beyond the policy, or cleared of it."""
    return verdict.verdict != "inconclusive"


@dataclass(frozen=True)
class NightPlan:
    """The night's sequential design: its looks and the one-sided level of each test at each look."""

    looks: list[int]  # processes a side
    alpha: float  # the night's family-wise one-sided error rate
    hypotheses: int  # metrics x A/Bs the night asked for

    @classmethod
    def of(cls, policy: ThroughputPolicy, hypotheses: int) -> NightPlan:
        return cls(schedule(policy.ab_processes, policy.ab_max_processes), 1 - policy.ab_confidence,
                   max(1, hypotheses))

    def level(self, processes: int) -> float:
        """The one-sided level of a look at `processes` a side, before the night's correction: alpha shared out
        over the looks in proportion to their processes (a weighted Bonferroni: the shares add up to alpha), so the
        last look, where a real slowdown is most often shown, gets the most of it."""
        return self.alpha * processes / sum(self.looks)

    def per_look(self, processes: int) -> float:
        """A look's level over the night: its share, divided among the night's hypotheses (Holm's strictest
        step)."""
        return self.level(processes) / self.hypotheses

    def next_look(self, processes: int) -> int | None:
        """Processes a side at the look after one with `processes` (None: the last look is done)."""
        return next((n for n in self.looks if n > processes), None)


def decide_night(verdicts: Sequence[ABVerdict], samples: Sequence[tuple[Sequence[float], Sequence[float]]],
                 plan: NightPlan, min_effect: float | Mapping[str, float],
                 noises: Sequence[float | None] = (), processes: Sequence[int] = ()) -> list[ABVerdict]:
    """The night's final verdicts: each metric of each A/B judged once more, at its last look's share of alpha
    (NightPlan.level), at the level Holm's step-down procedure grants it over all of the night's final p-values.
    `samples` = (A, B) of each verdict, in order (pooled with an earlier night's where carried); `noises` their
    configs' night noise; `min_effect` one for every metric, or each metric's; `processes` tonight's processes a
    side of each (its last look; default: its samples)."""
    effect = min_effect if isinstance(min_effect, Mapping) else {v.metric: min_effect for v in verdicts}
    tested = [i for i, v in enumerate(verdicts) if v.p_value is not None]
    looks = list(processes) or [min(v.n_a, v.n_b) for v in verdicts]
    share = {i: plan.level(looks[i]) for i in tested}
    granted = {i: share[i] / plan.hypotheses for i in tested}  # Bonferroni: what every look had
    # weighted Holm (weights: the last looks' shares): the rejected ones hand their share on to the rest
    remaining = sum(share.values())
    for index in sorted(tested, key=lambda i: verdicts[i].p_value / share[i]):
        granted[index] = share[index] * sum(share.values()) / (plan.hypotheses * remaining)
        if verdicts[index].p_value > granted[index]:
            break  # Holm stops here: this one and the rest keep the Bonferroni level
        remaining -= share[index]
    noises = list(noises) or [None] * len(verdicts)
    return [compare(v.metric, *samples[i], effect[v.metric], alpha=granted[i], noise=noises[i]) if i in granted
            else v for i, v in enumerate(verdicts)]


def screened(p_values: Sequence[float], alpha: float, family: int) -> list[bool]:
    """Which of a night's p-values Holm's step-down procedure rejects at `alpha` among `family` tests (at least
    these; a test not listed is one that was not rejected): "watching" must mean a slowdown the night's many tests
    did not make by chance, not any A/B the budget stopped while its ratio leaned below 1, nor any of two hundred
    series one night below its usual spread."""
    shown = [False] * len(p_values)
    family = max(family, len(p_values))
    for rank, (p, index) in enumerate(sorted((p, i) for i, p in enumerate(p_values))):
        if p > alpha / (family - rank):
            break
        shown[index] = True
    return shown


@dataclass(frozen=True)
class Ask:
    """An A/B the night wants: tonight's config against the build of its last night at level, on some metrics."""

    config_id: str
    reference_commit: str
    metrics: tuple[str, ...]  # names of rows.AB_JUDGED ("pp", "tg", "tg_j_per_tok", ...) it is asked about
    # metric -> the config's relative night noise (of its oriented figure: rows.oriented)
    noise: dict[str, float] = dataclasses.field(default_factory=dict)
    # the last night's A/B of this config against the same reference, left open leaning slower: its samples are
    # pooled with tonight's (the builds since the reference, judged together; see `pooled`)
    prior: ABRun | None = None


@dataclass(frozen=True)
class NightAB:
    """How an asked A/B ended: its processes, its final verdicts (one per asked metric), or why it did not run."""

    ask: Ask
    run: ABRun | None
    verdicts: list[ABVerdict]
    why_not: str = ""  # it did not run: its engine is gone, no runner here, the budget was spent before it
    stopped: str = ""  # why it did not grow further: decided, the most processes, the budget


# Runs `more` processes a side of an asked A/B after those of the A/B so far (None at first); returns the grown A/B,
# or why it cannot run (bench.ab.run_ab behind the caller's lookup of engines).
Grow = Callable[[Ask, int, "ABRun | None"], "ABRun | str"]


def min_effect_of(metric: str, policy: ThroughputPolicy) -> float:
    """What change of `metric` pages, as a fall of its oriented figure (rows.oriented: lower is worse): the policy's
    page_pct of tok/s; its energy_page_pct of J/token, whose rise by p is a fall of tokens per joule by p / (1 + p)."""
    judged = AB_JUDGED[metric].judged
    assert judged is not None
    pct = getattr(policy, judged.page_pct) / 100
    return pct / (1 + pct) if judged.higher_is_worse else pct


def sides(run: ABRun, metric: str) -> tuple[list[float], list[float]]:
    """A metric's samples of side A and of side B, oriented (lower is worse), as every verdict compares them (none
    where no process measured it: the verdict says too few)."""
    measured = run.samples_ts.get(metric, {})
    a, b = ([float(oriented(AB_JUDGED[metric], x)) for x in measured.get(side, [])] for side in AB_SIDES)
    return a, b


def _inverse(value: float | None) -> float | None:
    return None if value is None else 1 / value


def as_measured(verdict: ABVerdict) -> ABVerdict:
    """A verdict in its figure's own terms: one where higher is worse (J/token, judged as its reciprocal) gets its
    means, ratio and interval as measured (a ratio above 1 is worse) and the rise it could have detected."""
    judged = AB_JUDGED[verdict.metric].judged
    if judged is None or not judged.higher_is_worse:
        return verdict
    detectable = None if verdict.min_detectable is None else 1 / (1 - verdict.min_detectable) - 1
    return dataclasses.replace(verdict, median_a=_inverse(verdict.median_a), median_b=_inverse(verdict.median_b),
                               ratio=_inverse(verdict.ratio), ci_low=_inverse(verdict.ci_high),
                               ci_high=_inverse(verdict.ci_low), min_detectable=detectable, higher_is_worse=True)


def pooled(ask: Ask, run: ABRun, metric: str) -> tuple[list[float], list[float]]:
    """(A, B) oriented samples of `metric` (`sides`): tonight's, after the prior night's where the ask carries one.
    Each night runs as many processes a side, interleaved, so a shift of the whole machine between nights falls on
    both sides alike and cancels in the difference of the means; it can only widen the spread (a conservative
    interval). B then mixes two builds since the reference: "slower" means their average is beyond the policy, so at
    least one of them is, and the range named is the reference to tonight's."""
    a, b = sides(run, metric)
    if ask.prior is None:
        return a, b
    earlier_a, earlier_b = sides(ask.prior, metric)
    return [*earlier_a, *a], [*earlier_b, *b]


def _look(ask: Ask, run: ABRun, plan: NightPlan, policy: ThroughputPolicy) -> list[ABVerdict]:
    return [compare(m, *pooled(ask, run, m), min_effect_of(m, policy), alpha=plan.per_look(run.processes),
                    noise=ask.noise.get(m)) for m in ask.metrics]


FUTILE_P = 0.7  # an open metric whose p-value of "slower beyond the policy" is at least this has nothing to show


def futile(verdict: ABVerdict) -> bool:
    """An open metric that more processes would most likely end in "not slower": its one-sided p-value of "slower
    beyond the policy" is FUTILE_P or more, i.e. a (2 FUTILE_P - 1) two-sided interval already lies above
    1 - min_effect. Judged on the interval, not the ratio alone: at 3 processes a side and 7 % noise a real -12 %
    shows a ratio above 0.975 one time in 28, and that ratio rule stopped such A/Bs for good. (0.7: the lowest
    that kept a 12-config night's mean A/B cost under 10 GPU minutes at 7 % noise in benchmarks/verdicts.py.)"""
    return verdict.verdict == "inconclusive" and verdict.p_value is not None and verdict.p_value >= FUTILE_P


def leaning_slower(verdict: ABVerdict) -> bool:
    """An open metric the night could not settle and that still may be a slowdown beyond the policy: the next
    night's A/B of the config goes on from it (Ask.prior)."""
    return verdict.verdict == "inconclusive" and verdict.p_value is not None and not futile(verdict)


def sequential_night(asks: Sequence[Ask], grow: Grow, policy: ThroughputPolicy) -> list[NightAB]:
    """Run the night's A/Bs as one sequential design (the rule above): each ask's first look in order of priority
    (`asks` comes most suspicious first), then the open A/B most likely to be a real slowdown (the smallest
    p-value) grows to its next look, and so on, within the night's budget; then Holm over the night's final
    p-values."""
    plan = NightPlan.of(policy, sum(len(a.metrics) for a in asks))
    effect, budget = {m: min_effect_of(m, policy) for a in asks for m in a.metrics}, policy.ab_budget_minutes * 60
    runs: dict[int, ABRun] = {}
    looks: dict[int, list[ABVerdict]] = {}
    why_not: dict[int, str] = {}
    stopped: dict[int, str] = {}
    spent = 0.0
    spent_out = f"the night's A/B budget ({policy.ab_budget_minutes:g} GPU min) was spent"

    def step(i: int) -> None:
        nonlocal spent
        run, ask = runs.get(i), asks[i]
        target = plan.next_look(run.processes if run else 0)
        if target is None:
            stopped[i] = f"the most processes a side ({policy.ab_max_processes})"
            return
        more = target - (run.processes if run else 0)
        per_process = sum(r.seconds for r in runs.values()) / max(1, sum(2 * r.processes for r in runs.values()))
        if spent + 2 * more * per_process > budget:
            (stopped if run else why_not)[i] = spent_out if run else f"{spent_out} before it"
            return
        grown = grow(ask, more, run)
        if isinstance(grown, str):
            (stopped if run else why_not)[i] = f"no more processes: {grown}" if run else grown
            return
        if run is not None and grown.processes <= run.processes:  # a runner that cannot add processes
            stopped[i] = f"no more processes: the A/B stayed at {run.processes} a side"
            return
        spent += grown.seconds - (run.seconds if run else 0.0)
        runs[i], looks[i] = grown, _look(ask, grown, plan, policy)
        if all(decided(v) for v in looks[i]):
            stopped[i] = "decided"
        elif all(decided(v) or futile(v) for v in looks[i]):
            stopped[i] = f"no slowdown in sight: each open interval ({2 * FUTILE_P - 1:.0%}) lies above the policy"

    for i in range(len(asks)):
        step(i)
    while growing := [i for i in runs if i not in stopped]:
        step(min(growing, key=lambda i: min(1.0 if v.p_value is None else v.p_value for v in looks[i])))
    order = [(i, asks[i].metrics[k], k) for i in sorted(looks) for k in range(len(asks[i].metrics))]
    final = decide_night([looks[i][k] for i, _m, k in order], [pooled(asks[i], runs[i], m) for i, m, _k in order],
                         plan, effect, [asks[i].noise.get(m) for i, m, _k in order],
                         [runs[i].processes for i, _m, _k in order])
    by_ask: dict[int, list[ABVerdict]] = {}
    for (i, _m, _k), verdict in zip(order, final):
        by_ask.setdefault(i, []).append(as_measured(verdict))
    return [NightAB(ask, runs.get(i), by_ask.get(i, []), why_not.get(i, ""), stopped.get(i, ""))
            for i, ask in enumerate(asks)]
