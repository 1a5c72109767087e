"""Throughput change points: a robust step test per config, with a persistence rule and a confirming rerun.

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
2. A night is *beyond* the baseline when it is below it by more than `z_suspect` (3.5) sigmas AND by at least
   `min_effect` (3 %): the z-score keeps false alarms rare, the effect floor keeps statistically-real-but-irrelevant
   drops quiet.
3. Persistence (as PyTorch HUD's two consecutive bad points, or asv's "lasting 2 commits"): one night beyond the
   baseline is only a Suspect. It becomes a regression when it repeats: in a same-night rerun of that config
   (`confirm(suspects, rerun_fn)`, the DAG reruns the bench), or on the next night without a rerun. Simulated on
   gaussian noise, two measurements both beyond 3.5 sigmas of a 20-30 night baseline happen by chance 2e-5 to 2e-4
   of the time (the sigma estimate's own error dominates); a real -10 % step on a config with 1.5 % noise
   (6.7 sigma) is caught the night it lands 99 % of the time. With 3 % noise the same step is 3.3 sigma: no
   single-night method separates it from noise reliably, and it is caught over the following nights instead.
4. Once an incident is open, the baseline stays the nights before it opened, and the incident resolves only when a
   night comes back within `z_resolve` (2) sigmas: the gap between 3.5 and 2 (hysteresis) keeps a real regression
   from flapping open/resolved on noise, which would page again every time it reopened.

Only drops are regressions: a faster build is good news and needs nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vramwatch.records import BenchResult
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.vram import Cutoffs

METRICS = ("tg_avg_ts", "pp_avg_ts")
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class ThroughputParams:
    window: int = 30
    min_history: int = 20
    z_suspect: float = 3.5
    z_resolve: float = 2.0
    min_effect: float = 0.03
    sigma_floor: float = 0.005


@dataclass(frozen=True)
class Baseline:
    median: float
    sigma: float

    @classmethod
    def of(cls, values: np.ndarray, params: ThroughputParams) -> Baseline:
        median = float(np.median(values))
        robust_sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
        kept = values[np.abs(values - median) <= 3 * robust_sigma]
        spread = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
        return cls(median, max(spread, params.sigma_floor * abs(median)))

    def z(self, value: float) -> float:
        return (value - self.median) / self.sigma

    def beyond(self, value: float, params: ThroughputParams) -> bool:
        """Lower than the baseline by more than z_suspect sigmas and by at least min_effect."""
        return self.z(value) <= -params.z_suspect and value <= self.median * (1 - params.min_effect)


def _finding(row: pd.Series, metric: str, baseline: Baseline, value: float, build_before: str) -> Finding:
    return Finding(kind=Kind.THROUGHPUT, metric=metric, config_id=row["config_id"],
                   environment_id=row["environment_id"], model=row["model"], quant=row["quant"], mode=row["mode"],
                   before=baseline.median, after=value, delta_pct=100.0 * (value - baseline.median) / baseline.median,
                   build_before=build_before, build_after=str(row["llama_cpp_commit"]))


def _check(row: pd.Series, series: pd.DataFrame, metric: str, cutoff: str | None,
           params: ThroughputParams) -> Finding | Suspect | None:
    """One config and metric tonight. `series` = its earlier good rows with a value, oldest first."""
    value = float(row[metric])
    if cutoff is not None:  # an open incident: still regressed unless back within z_resolve of the old baseline
        base_rows = series[series["night"] < cutoff].tail(params.window)
        if len(base_rows) < params.min_history:
            return None
        baseline = Baseline.of(base_rows[metric].to_numpy(float), params)
        build = str(base_rows["llama_cpp_commit"].iloc[-1])
        return _finding(row, metric, baseline, value, build) if baseline.z(value) < -params.z_resolve else None
    # Baseline without last night, so that a drop landing last night is judged against the same reference twice.
    base_rows, last = series.iloc[:-1].tail(params.window), series.iloc[-1:] if len(series) else series
    if len(base_rows) < params.min_history:
        return None
    baseline = Baseline.of(base_rows[metric].to_numpy(float), params)
    if not baseline.beyond(value, params):
        return None
    last_night_beyond = not last.empty and baseline.beyond(float(last[metric].iloc[0]), params)
    build = str((base_rows if last_night_beyond else last)["llama_cpp_commit"].iloc[-1])
    finding = _finding(row, metric, baseline, value, build)
    if last_night_beyond:
        return finding  # persisted across two nights
    return Suspect(row["config_id"], row["environment_id"], metric, baseline.median, baseline.sigma, finding)


def throughput_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {},
                        params: ThroughputParams = ThroughputParams()) -> tuple[list[Finding], list[Suspect]]:
    """(confirmed findings, suspects awaiting a rerun) for tonight's good rows of one environment."""
    good_before = before[before["status"] == "ok"]
    past_by_config = dict(tuple(good_before.groupby("config_id", sort=False)))
    findings: list[Finding] = []
    suspects: list[Suspect] = []
    for _, row in tonight[tonight["status"] == "ok"].iterrows():
        past = past_by_config.get(row["config_id"])
        for metric in METRICS:
            if past is None or pd.isna(row[metric]):
                continue
            verdict = _check(row, past[past[metric].notna()], metric, cutoffs.get((row["config_id"], metric)), params)
            if isinstance(verdict, Suspect):
                suspects.append(verdict)
            elif verdict is not None:
                findings.append(verdict)
    return findings, suspects


def _measured(result: BenchResult, metric: str) -> float | None:
    test = result.tg if metric == "tg_avg_ts" else result.pp
    return test.avg_ts if result.ok and test is not None else None


def confirm(suspects: Iterable[Suspect], rerun_fn: Callable[[str], BenchResult],
            params: ThroughputParams = ThroughputParams()) -> list[Finding]:
    """Keep the suspects that a same-night rerun repeats; each config is rerun once, whatever its suspect metrics.

    rerun_fn(config_id) benches that config again and returns its result (the DAG passes a real bench run).
    A rerun that fails confirms nothing: tonight's point then waits for tomorrow's persistence check.
    """
    reruns: dict[str, BenchResult] = {}
    confirmed = []
    for suspect in suspects:
        if suspect.config_id not in reruns:
            reruns[suspect.config_id] = rerun_fn(suspect.config_id)
        value = _measured(reruns[suspect.config_id], suspect.metric)
        baseline = Baseline(suspect.baseline_median, suspect.baseline_sigma)
        if value is not None and baseline.beyond(value, params):
            first = suspect.finding
            mean = (first.after + value) / 2 if first.after is not None else value
            confirmed.append(Finding(**{**first.__dict__, "after": mean,
                                        "delta_pct": 100.0 * (mean - baseline.median) / baseline.median,
                                        "detail": f"confirmed by a rerun: {value:.2f} tok/s"}))
    return confirmed
