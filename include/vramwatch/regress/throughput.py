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
4. Once an incident is open, the baseline stays the nights before it opened, and the incident resolves only when a
   night comes back within Z_RESOLVE (2) sigmas: the gap between 3.5 and 2 (hysteresis) keeps a real regression
   from flapping open/resolved on noise, which would page again every time it reopened.

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
Z_SUSPECT, Z_RESOLVE = 3.5, 2.0
SIGMA_FLOOR = 0.005  # relative: a config that measured identical numbers for a month does not page on 0.1 %


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

    def beyond(self, value: float, policy: ThroughputPolicy) -> bool:
        """Lower than the baseline by more than Z_SUSPECT sigmas and by at least the policy's page_pct."""
        return self.z(value) <= -Z_SUSPECT and value <= self.median * (1 - policy.page_pct / 100)


def relative_noise(values: np.ndarray) -> float | None:
    """A config's night-to-night noise as a fraction of its level (None under 5 nights: unknown)."""
    if len(values) < 5:
        return None
    baseline = Baseline.of(values)
    return baseline.sigma / baseline.median if baseline.median else None


def _finding(row: pd.Series, metric: str, baseline: Baseline, value: float, build_before: str) -> Finding:
    return Finding(kind=Kind.THROUGHPUT, metric=metric, config_id=row["config_id"],
                   environment_id=row["environment_id"], model=row["model"], quant=row["quant"], mode=row["mode"],
                   before=baseline.median, after=value, delta_pct=100.0 * (value - baseline.median) / baseline.median,
                   build_before=build_before, build_after=str(row["llama_cpp_commit"]),
                   detail="drift against the config's recent nights")


def _check(row: pd.Series, series: pd.DataFrame, metric: str, cutoff: str | None,
           policy: ThroughputPolicy) -> Finding | Suspect | None:
    """One config and metric tonight. `series` = its earlier good rows with a value on this machine, oldest first."""
    value = float(row[metric])
    if cutoff is not None:  # an open incident: still regressed unless back within Z_RESOLVE of the old baseline
        base_rows = series[series["night"] < cutoff].tail(policy.window)
        if len(base_rows) < policy.min_history:
            return None
        baseline = Baseline.of(base_rows[metric].to_numpy(float))
        build = str(base_rows["llama_cpp_commit"].iloc[-1])
        return _finding(row, metric, baseline, value, build) if baseline.z(value) < -Z_RESOLVE else None
    # Baseline without last night, so that a drop landing last night is judged against the same reference twice.
    base_rows, last = series.iloc[:-1].tail(policy.window), series.iloc[-1:] if len(series) else series
    if len(base_rows) < policy.min_history:
        return None
    baseline = Baseline.of(base_rows[metric].to_numpy(float))
    if not baseline.beyond(value, policy):
        return None
    last_night_beyond = not last.empty and baseline.beyond(float(last[metric].iloc[0]), policy)
    build = str((base_rows if last_night_beyond else last)["llama_cpp_commit"].iloc[-1])
    finding = _finding(row, metric, baseline, value, build)
    if last_night_beyond:
        return finding  # persisted across two nights
    return Suspect(row["config_id"], row["environment_id"], metric, baseline.median, baseline.sigma, finding)


def throughput_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {},
                        policy: ThroughputPolicy = ThroughputPolicy()) -> tuple[list[Finding], list[Suspect]]:
    """(findings, suspects that wait for tomorrow) for tonight's good rows, each against its own machine's nights."""
    good_before = before[before["status"] == "ok"]
    past_by_series = dict(tuple(good_before.groupby(["config_id", "environment_id"], sort=False)))
    findings: list[Finding] = []
    suspects: list[Suspect] = []
    for _, row in tonight[tonight["status"] == "ok"].iterrows():
        past = past_by_series.get((row["config_id"], row["environment_id"]))
        for metric in METRICS:
            if past is None or pd.isna(row[metric]):
                continue
            verdict = _check(row, past[past[metric].notna()], metric, cutoffs.get((row["config_id"], metric)), policy)
            if isinstance(verdict, Suspect):
                suspects.append(verdict)
            elif verdict is not None:
                findings.append(verdict)
    return findings, suspects
