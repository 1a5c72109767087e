"""VRAM and status checks: near-deterministic numbers, compared exactly against recent good nights.

llama.cpp's buffer sizes are a function of the model, the context and the build: the same config on the same
machine gives the same MiB every night. So no statistics here: a component is compared with its lowest value in the
config's last `window` good (status ok) rows on the same environment, and anything beyond max(32 MiB, 1 %) is a
regression (the 32 MiB floor absorbs allocator rounding and NVML's context jitter; the 1 % keeps large models from
paging on alignment changes). The lowest rather than the last value catches a creep: builds that each add less than
the tolerance page once their sum exceeds it within the window. A sudden step compares with the last good row, as
that is the lowest too. While an incident is open for a config and metric, the window ends before the night the
incident opened, so a regression keeps its incident until the number is back within tolerance (not just until it
is old).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from vramwatch.records import OFFLOAD_MODES
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding
from vramwatch.rows import number

COMPONENTS = ("gpu_model_mib", "gpu_kv_mib", "gpu_compute_mib", "nvml_process_mib")
# (config_id, metric) -> night an open incident began: references must come from before it.
Cutoffs = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class VramTolerance:
    abs_mib: float = 32.0
    rel: float = 0.01
    window: int = 30  # good runs the reference is the lowest of: a creep of limit/window MiB a night still pages

    def limit(self, before: float) -> float:
        return max(self.abs_mib, self.rel * abs(before))


@dataclass(frozen=True)
class Tolerances:
    """Default tolerance, and per-config ones keyed by fnmatch patterns on config_id (first match wins)."""

    default: VramTolerance = VramTolerance()
    per_config: dict[str, VramTolerance] = field(default_factory=dict)

    def for_config(self, config_id: str) -> VramTolerance:
        for pattern, tolerance in self.per_config.items():
            if fnmatch.fnmatchcase(config_id, pattern):
                return tolerance
        return self.default


def _before(rows: pd.DataFrame, cutoff: str | None) -> pd.DataFrame:
    """The rows a reference may come from: all, or those before the night an open incident began."""
    return rows if cutoff is None else rows[rows["night"] < cutoff]


def _reference(past: pd.DataFrame, cutoff: str | None) -> pd.Series | None:
    rows = _before(past, cutoff)
    return None if rows.empty else rows.iloc[-1]


def _finding(kind: str, metric: str, row: pd.Series, ref: pd.Series | None, **values: object) -> Finding:
    return Finding(kind=kind, metric=metric, config_id=row["config_id"], environment_id=row["environment_id"],
                   model=row["model"], quant=row["quant"], mode=row["mode"],
                   build_before="" if ref is None else str(ref["llama_cpp_commit"]),
                   build_after=str(row["llama_cpp_commit"]), **values)  # type: ignore[arg-type]


def _status_finding(row: pd.Series, past: pd.DataFrame, cutoffs: Cutoffs) -> Finding | None:
    """ok -> oom is a config that stopped fitting; ok -> quarantined one whose row failed validation (its error
    names the expectations); ok -> timeout/crashed/... a config that started failing."""
    kind = {"oom": Kind.STOPPED_FITTING, "quarantined": Kind.QUARANTINED}.get(row["status"], Kind.FAILING)
    ref = _reference(past, cutoffs.get((row["config_id"], "status")))
    if ref is None or ref["status"] != "ok":
        return None
    detail = f"ok -> {row['status']}" + (f": {row['error']}" if kind == Kind.QUARANTINED and row["error"] else "")
    return _finding(kind, "status", row, ref, detail=detail)


def _offload_finding(row: pd.Series, good: pd.DataFrame, cutoffs: Cutoffs) -> Finding | None:
    """An offload run whose override matched nothing: experts silently back on the GPU."""
    metric = "n_overridden_tensors"
    ref = _reference(good, cutoffs.get((row["config_id"], metric)))
    if row["mode"] not in OFFLOAD_MODES or ref is None or not ref[metric] or row[metric]:
        return None
    return _finding(Kind.OFFLOAD_STOPPED, metric, row, ref, before=float(ref[metric]), after=0.0,
                    detail=f"{int(ref[metric])} -> 0 tensors in CPU memory")


def _lowest_recent(good: pd.DataFrame, metric: str, cutoff: str | None, window: int) -> pd.Series | None:
    """The row with the metric's lowest value among the last `window` good rows (before the cutoff); the latest
    such row on a tie, so the reference names the newest build at that level."""
    rows = _before(good, cutoff).tail(window)
    values = rows[metric].map(number).dropna()
    return None if values.empty else rows.loc[values[::-1].idxmin()]


def _vram_findings(row: pd.Series, good: pd.DataFrame, cutoffs: Cutoffs, tolerance: VramTolerance) -> list[Finding]:
    findings = []
    for metric in COMPONENTS:
        after = number(row[metric])
        ref = _lowest_recent(good, metric, cutoffs.get((row["config_id"], metric)), tolerance.window)
        before = None if ref is None else number(ref[metric])
        if after is None or before is None:
            continue
        delta = after - before
        if abs(delta) <= tolerance.limit(before):
            continue
        pct = 100.0 * delta / before if before else None
        last = number(good.iloc[-1][metric])
        creep = delta > 0 and last is not None and after - last <= tolerance.limit(before)  # tonight's step is small
        findings.append(_finding(Kind.VRAM if delta > 0 else Kind.VRAM_IMPROVED, metric, row, ref, before=before,
                                 after=after, delta_mib=delta, delta_pct=pct,
                                 detail=f"crept up since {ref['night']}" if creep else ""))
    return findings


def memory_and_status_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {},
                               tolerances: Tolerances = Tolerances()) -> list[Finding]:
    """VRAM per component, ok -> failure, and offload that stopped moving tensors, for each of tonight's configs.

    `tonight` and `before` are history rows of one environment; `before` holds earlier runs, oldest first.
    """
    past_by_config = dict(tuple(before.groupby("config_id", sort=False)))
    findings: list[Finding] = []
    for _, row in tonight.iterrows():
        past = past_by_config.get(row["config_id"])
        if past is None:
            continue  # a new config: nothing to compare with yet
        if row["status"] != "ok":
            findings += filter(None, [_status_finding(row, past, cutoffs)])
            continue
        good = past[past["status"] == "ok"]
        findings += filter(None, [_offload_finding(row, good, cutoffs)])
        if number(row["gpu_total_mib"]) is not None:  # no GPU tonight: no VRAM to compare
            measured = good[good["gpu_total_mib"].notna()]
            findings += _vram_findings(row, measured, cutoffs, tolerances.for_config(row["config_id"]))
    return findings


def vanished_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {}) -> list[Finding]:
    """Configs of the previous run (or of an open 'vanished' incident) with no row tonight."""
    if before.empty:
        return []
    previous = before[before["run_id"] == before["run_id"].iloc[-1]]
    still_open = {config for config, metric in cutoffs if metric == "config"}
    present = set(tonight["config_id"])
    last_seen = before.drop_duplicates("config_id", keep="last").set_index("config_id")
    wanted = (set(previous["config_id"]) | still_open) - present
    after = tonight["llama_cpp_commit"].iloc[0] if not tonight.empty else ""
    findings = []
    for config_id in sorted(wanted & set(last_seen.index)):
        row = last_seen.loc[config_id].copy()
        row["config_id"], row["llama_cpp_commit"] = config_id, after
        ref = last_seen.loc[config_id]
        findings.append(_finding(Kind.VANISHED, "config", row, ref, detail=f"last seen {ref['night']}"))
    return findings
