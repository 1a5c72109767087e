"""Same-night A/B verdicts on throughput, and when an A/B is worth running. Pure: vramwatch.bench.ab runs it.

When (`needs_ab`). Tonight's result is compared with the previous build's last one. An A/B (ten bench processes at
the default of five a side) is worth running when the relative difference exceeds both the policy's `min_effect`
and twice the config's relative night-to-night noise (the standard deviation of its nightly results over their
median; None while unknown, then `min_effect` alone decides). The effect floor keeps real but irrelevant changes
quiet (Bencher's statistically-significant-but-tiny alarms are its users' top complaint); the noise term keeps a
jittery config (CPU offload) from asking for an A/B every night. The trigger only spends bench time: nothing pages
on it. It stands in for asv's "lasting 2 commits" and PyTorch HUD's two consecutive bad points: instead of waiting
a night for the second point, the A/B measures both builds again tonight, side by side.

The test (`compare`), for one metric (pp or tg tokens/s, one sample per process and side):
- ratio = median(B) / median(A): medians, so that one slow process (a busy host) moves neither side.
- Its interval: a percentile bootstrap, each side resampled on its own (the processes of A and of B are independent
  samples), seeded so that the same samples always give the same interval; 95 % by default.
- The two-sided Mann-Whitney U p-value beside it, rank-based, with no assumption on the noise's shape. With 5 v 5
  processes its smallest value is 2/252 = 0.008: every B process beyond every A process.
- The verdict, given the policy's `min_effect` (a fraction):
  "slower"       the whole interval is below 1 and the ratio is at most 1 - min_effect: a confirmed slowdown
                 beyond the policy, the only verdict that pages;
  "faster"       the whole interval is above 1 and the ratio is at least 1 + min_effect;
  "no change"    the whole interval lies within [1 - min_effect, 1 + min_effect];
  "inconclusive" anything else (the interval reaches past the policy on one side without excluding 1, or a real
                 change too small to say whether it exceeds the policy), and whenever a side has fewer than
                 MIN_SAMPLES ok processes: the report's "unconfirmed".
  Simulated on gaussian process noise, 5 v 5 processes, min_effect 5 %: with 3.5 % noise an unchanged build is
  called slower in 0.9 % of A/Bs, a -10 % build in 94 %, a -19 % one always; with 7 % noise (offload tg on an H200)
  1.3 %, 42 % and 95 %. Most unchanged builds come out inconclusive, not "no change": five processes a side cannot
  bound a noisy ratio within ±5 %, and the report says so rather than calling it clean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vramwatch.records import ABOutcome, ABVerdict

MIN_SAMPLES = 3  # per side: with fewer, a bootstrap of the median has almost nothing to resample
CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0


def needs_ab(previous: float, tonight: float, noise: float | None, min_effect: float) -> bool:
    """Whether tonight's figure differs from the previous build's last one by more than min_effect and 2 x noise
    (both relative: fractions of `previous`)."""
    change = abs(tonight - previous) / previous
    return change > min_effect and (noise is None or change > 2 * noise)


def compare(metric: str, a: Sequence[float], b: Sequence[float], min_effect: float, *,
            confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> ABVerdict:
    """The verdict on B (tonight's build) against A (the reference) for one metric, by the rule above."""
    samples_a, samples_b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    median_a = float(np.median(samples_a)) if len(samples_a) else None
    median_b = float(np.median(samples_b)) if len(samples_b) else None
    ratio = median_b / median_a if median_a and median_b is not None else None
    figures = dict(metric=metric, n_a=len(samples_a), n_b=len(samples_b), median_a=median_a, median_b=median_b,
                   ratio=ratio, confidence=confidence)
    short = [f"{len(samples)} on side {side}" for side, samples in (("A", samples_a), ("B", samples_b))
             if len(samples) < MIN_SAMPLES]
    if short:
        return ABVerdict(**figures, ci_low=None, ci_high=None, p_value=None, verdict="inconclusive",
                         reason=f"too few ok processes: {' and '.join(short)}, at least {MIN_SAMPLES} a side needed")
    from scipy.stats import mannwhitneyu  # a second to import: only when an A/B is judged, not in every command

    ci_low, ci_high = _bootstrap_ratio_interval(samples_a, samples_b, confidence, resamples, seed)
    p_value = float(mannwhitneyu(samples_b, samples_a, alternative="two-sided").pvalue)
    verdict, reason = _decide(ratio, ci_low, ci_high, min_effect)
    return ABVerdict(**figures, ci_low=ci_low, ci_high=ci_high, p_value=p_value, verdict=verdict, reason=reason)


def _bootstrap_ratio_interval(a: np.ndarray, b: np.ndarray, confidence: float, resamples: int,
                              seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    medians_a = np.median(rng.choice(a, size=(resamples, len(a))), axis=1)
    medians_b = np.median(rng.choice(b, size=(resamples, len(b))), axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians_b / medians_a, [tail, 100 - tail])
    return float(low), float(high)


def _decide(ratio: float, ci_low: float, ci_high: float, min_effect: float) -> tuple[ABOutcome, str]:
    policy = f"{min_effect:.0%}"
    if ci_high < 1 and ratio <= 1 - min_effect:
        return "slower", f"the whole interval is below 1 and B's median is {1 - ratio:.1%} lower (policy {policy})"
    if ci_low > 1 and ratio >= 1 + min_effect:
        return "faster", f"the whole interval is above 1 and B's median is {ratio - 1:.1%} higher (policy {policy})"
    if 1 - min_effect <= ci_low and ci_high <= 1 + min_effect:
        return "no change", f"the whole interval is within ±{policy}"
    if ci_low <= 1 <= ci_high:
        return "inconclusive", f"the interval contains 1 and reaches beyond ±{policy}: too noisy to decide"
    return "inconclusive", f"the interval excludes 1 but reaches into ±{policy}: a change not shown to exceed it"
