"""Throughput over history: slow drift, judged per config on one machine with a robust step test and a persistence
rule. A build change is judged the night it lands by the same-night A/B instead (regress.ab): history needs
`min_history` nights of a config before it says anything.

Why this method. Nightly tok/s on a shared box is noisy (a few % night to night, with the odd outlier from a busy
host or a throttled GPU), and what matters is a *step* that stays: a build that made decode slower. So, per config,
environment and metric (tg_avg_ts, pp_avg_ts):

1. Baseline = the config's last `window` good nights (30: a month, enough for a stable estimate, short enough to
   follow slow drifts of the machine). Its centre is the median; its spread is the standard deviation of the nights
   within 3 MAD-sigmas of the median (1.4826 * MAD): outlier nights (a busy host, a throttled GPU) are trimmed, so
   one of them neither moves the baseline nor widens the threshold, while the rest are used at full efficiency
   (MAD alone is only 37 % efficient: from 20-30 nights it underestimates sigma often enough to page on noise).
   The threshold is thus calibrated on that config's *own* noise: a jittery CPU offload config needs a bigger drop
   than a steady GPU baseline. sigma has a floor of 0.5 % of the median, so a config that measured identical
   numbers for a month does not page on 0.1 %. Fewer than `min_history` (20) good nights: no verdict yet.
2. A night is *beyond* the baseline when it is below it by more than Z_SUSPECT (3.5) sigmas AND by at least the
   policy's page_pct (5 %): the z-score keeps false alarms rare, the effect floor keeps statistically real but
   irrelevant drops quiet.
3. Persistence (as PyTorch HUD's two consecutive bad points, or asv's "lasting 2 commits"): one night beyond the
   baseline is only a Suspect, said in the report as not yet judged. It becomes a regression when the next night
   repeats it. Simulated on gaussian noise, two measurements both beyond 3.5 sigmas of a 20-30 night baseline
   happen by chance 2e-5 to 2e-4 of the time (the sigma estimate's own error dominates); a real -10 % step on a
   config with 1.5 % noise (6.7 sigma) is caught the night it lands 99 % of the time. With 3 % noise the same step
   is 3.3 sigma: no single-night method separates it from noise reliably, and it is caught over the following
   nights instead.
4. The build range of a drift starts before the first night of the change: walking back from tonight over the nights
   below the baseline's median, the range begins at the build of the last night at or above it (`change_start`),
   so a noisy night inside a step (not beyond the threshold, but still low) does not cut the culprit out.
5. Once an incident is open, the baseline stays the nights before it opened, and the incident resolves only when the
   config is back within the policy of that level: the mean of tonight and the night before at least
   1 - page_pct / 2 of the old median. A new build that merely matches the slow one does not close it, and the
   half-policy margin with two nights' mean keeps a real regression from flapping open/resolved on noise.

The same-night A/B's trigger lives here too (`suspected_slowdown`): tonight, or tonight and last night together,
below the config's recent level by more than `ab_trigger_z` of its own night noise and by at least half the policy,
on a build that changed since the last night at that level (the A/B's reference build, by the same walk back as the
drift's range).

Only drops are regressions: a faster build is good news and needs nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vramwatch.config import ThroughputPolicy
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.vram import Cutoffs

METRICS = ("tg_avg_ts", "pp_avg_ts")
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
Z_SUSPECT = 3.5
SIGMA_FLOOR = 0.005  # relative: a config that measured identical numbers for a month does not page on 0.1 %
NOISE_MIN_NIGHTS = 5  # good nights before a config's night-to-night noise is known


@dataclass(frozen=True)
class Baseline:
    median: float
    sigma: float

    @classmethod
    def of(cls, values: np.ndarray) -> Baseline:
        median = float(np.median(values))
        robust_sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
        kept = values[np.abs(values - median) <= 3 * robust_sigma]
        spread = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
        return cls(median, max(spread, SIGMA_FLOOR * abs(median)))

    def z(self, value: float) -> float:
        return (value - self.median) / self.sigma

    @property
    def relative_sigma(self) -> float | None:
        """The night-to-night noise as a fraction of the level (None for a level of 0)."""
        return self.sigma / self.median if self.median else None

    def beyond(self, value: float, policy: ThroughputPolicy) -> bool:
        """Lower than the baseline by more than Z_SUSPECT sigmas and by at least the policy's page_pct."""
        return self.z(value) <= -Z_SUSPECT and value <= self.median * (1 - policy.page_pct / 100)


def change_start(series: pd.DataFrame, metric: str, median: float) -> int:
    """Index (in `series`, the earlier nights, oldest first) of the first night of tonight's run of nights below
    `median`: len(series) when last night was at or above it (the change is tonight's)."""
    start = len(series)
    while start > 0 and float(series[metric].iloc[start - 1]) < median:
        start -= 1
    return start


def _range(row: pd.Series, series: pd.DataFrame, metric: str, median: float) -> tuple[str, str]:
    """(the build before the change, the change's first night) for tonight's drop below `median`."""
    start = change_start(series, metric, median)
    first = str(row["night"]) if start == len(series) else str(series["night"].iloc[start])
    return ("" if start == 0 else str(series["llama_cpp_commit"].iloc[start - 1])), first


def _finding(row: pd.Series, metric: str, baseline: Baseline, value: float, build_before: str,
             first_night: str = "") -> Finding:
    return Finding(kind=Kind.THROUGHPUT, metric=metric, config_id=row["config_id"],
                   environment_id=row["environment_id"], model=row["model"], quant=row["quant"], mode=row["mode"],
                   before=baseline.median, after=value, delta_pct=100.0 * (value - baseline.median) / baseline.median,
                   build_before=build_before, build_after=str(row["llama_cpp_commit"]),
                   detail="drift against the config's recent nights", first_night=first_night)


def _still_regressed(row: pd.Series, series: pd.DataFrame, metric: str, cutoff: str,
                     policy: ThroughputPolicy) -> Finding | None:
    """An open incident: a finding (it stays open) unless tonight and the night before average back within half the
    policy of the level before it opened."""
    base_rows = series[series["night"] < cutoff].tail(policy.window)
    if base_rows.empty:
        return None
    baseline = Baseline.of(base_rows[metric].to_numpy(float))
    since = series[series["night"] >= cutoff]
    recent = [float(row[metric])] + ([float(since[metric].iloc[-1])] if not since.empty else [])
    if float(np.mean(recent)) >= baseline.median * (1 - policy.page_pct / 200):
        return None
    return _finding(row, metric, baseline, float(row[metric]), str(base_rows["llama_cpp_commit"].iloc[-1]))


def _drift_base(series: pd.DataFrame, policy: ThroughputPolicy) -> pd.DataFrame | None:
    """The nights the drift check's baseline is made of: the last `window` before last night, so that a drop landing
    last night is judged against the same reference twice; None under min_history of them (nothing to judge)."""
    base_rows = series.iloc[:-1].tail(policy.window)
    return base_rows if len(base_rows) >= policy.min_history else None


def _check(row: pd.Series, series: pd.DataFrame, metric: str, cutoff: str | None,
           policy: ThroughputPolicy) -> Finding | Suspect | None:
    """One config and metric tonight. `series` = its earlier good rows with a value on this machine, oldest first."""
    value = float(row[metric])
    if cutoff is not None:
        return _still_regressed(row, series, metric, cutoff, policy)
    base_rows, last = _drift_base(series, policy), series.iloc[-1:]
    if base_rows is None:
        return None
    baseline = Baseline.of(base_rows[metric].to_numpy(float))
    if not baseline.beyond(value, policy):
        return None
    last_night_beyond = not last.empty and baseline.beyond(float(last[metric].iloc[0]), policy)
    finding = _finding(row, metric, baseline, value, *_range(row, series, metric, baseline.median))
    if last_night_beyond:
        return finding  # persisted across two nights
    return Suspect(row["config_id"], row["environment_id"], metric, baseline.median, baseline.sigma, finding,
                   one_night_p(value, base_rows[metric].to_numpy(float)))


def one_night_p(value: float, nights: np.ndarray) -> float:
    """The one-sided p-value of a night at `value` or lower, were it one more of `nights`: the prediction interval of
    their mean and standard deviation (Student's t, n - 1 degrees of freedom), exact for gaussian nights. Baseline's
    trimmed sigma is not: it suits the persistence rule, but its z has two to three times the tails of this t at
    3.5-5 sigmas, and with two hundred series a night those tails are what a screen over the night reads."""
    from scipy.stats import t as student  # a second to import: only when a drift is suspected

    n, spread = len(nights), float(np.std(nights, ddof=1))
    if not spread:
        return 0.0 if value < float(np.mean(nights)) else 1.0
    return float(student.cdf((value - float(np.mean(nights))) / (spread * np.sqrt(1 + 1 / n)), n - 1))


@dataclass(frozen=True)
class Slowdown:
    """Tonight's tok/s low enough to be worth a same-night A/B, and against which build."""

    config_id: str
    metric: str  # tg_avg_ts | pp_avg_ts
    z: float  # tonight against the config's recent nights, in its own night-noise sigmas
    reference_commit: str  # the build of the last night at the config's level: the A/B's side A
    since: str  # the first night of the drop (tonight's when last night was at the level)
    noise: float | None  # the config's relative night-to-night noise (None: under 5 nights, unknown)


def suspected_slowdown(row: pd.Series, series: pd.DataFrame, metric: str,
                       policy: ThroughputPolicy) -> Slowdown | None:
    """Whether tonight's `metric`, or the mean of tonight and last night, is below the config's recent level by more
    than ab_trigger_z of its noise (of one night, or of a two-night mean: sigma / sqrt 2) and by half the policy, on
    a build that changed since the last night at that level. `series` = its earlier good rows with a value on this
    machine, oldest first. With under 5 nights (noise unknown) the last night is the level.

    Why two nights: at 7 % night noise a real -12 % step is 1.7 sigma, and one night's figure misses the trigger a
    third of the time; two nights' mean makes it 2.4 sigma, so a step the first night missed is rarely missed again."""
    value, values = float(row[metric]), series[metric].to_numpy(float)[-policy.window:]
    if not len(values):
        return None
    noise_known = len(values) >= NOISE_MIN_NIGHTS
    baseline = Baseline.of(values) if noise_known else Baseline(float(values[-1]), SIGMA_FLOOR * float(values[-1]))
    low, z = value, baseline.z(value) if noise_known else -float("inf")
    if noise_known:
        two_nights = (value + float(values[-1])) / 2
        z_two = (two_nights - baseline.median) / (baseline.sigma / np.sqrt(2))
        if z_two < z:
            low, z = two_nights, float(z_two)
    if z > -policy.ab_trigger_z or low > baseline.median * (1 - policy.page_pct / 200):
        return None
    reference, first = _range(row, series, metric, baseline.median) if noise_known else (
        str(series["llama_cpp_commit"].iloc[-1]), str(row["night"]))
    if not reference or reference == str(row["llama_cpp_commit"]):
        return None  # the same build as at the config's level: a same-night A/B has nothing to compare
    return Slowdown(str(row["config_id"]), metric, z, reference, first,
                    baseline.relative_sigma if noise_known else None)


def throughput_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {},
                        policy: ThroughputPolicy = ThroughputPolicy()) -> tuple[list[Finding], list[Suspect], int]:
    """(findings, suspects that wait for tomorrow, how many series history judged tonight: those with a baseline)
    for tonight's good rows, each against its own machine's nights."""
    good_before = before[before["status"] == "ok"]
    past_by_series = dict(tuple(good_before.groupby(["config_id", "environment_id"], sort=False)))
    findings: list[Finding] = []
    suspects: list[Suspect] = []
    judged = 0
    for _, row in tonight[tonight["status"] == "ok"].iterrows():
        past = past_by_series.get((row["config_id"], row["environment_id"]))
        for metric in METRICS:
            if past is None or pd.isna(row[metric]):
                continue
            series, cutoff = past[past[metric].notna()], cutoffs.get((row["config_id"], metric))
            judged += cutoff is None and _drift_base(series, policy) is not None
            verdict = _check(row, series, metric, cutoff, policy)
            if isinstance(verdict, Suspect):
                suspects.append(verdict)
            elif verdict is not None:
                findings.append(verdict)
    return findings, suspects, judged
