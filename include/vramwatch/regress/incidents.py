"""From per-config findings to incidents: one per cause, opened once, kept while it lasts, resolved when it ends.

Grouping. A build that grows every Q4_K_M model buffer by 2 %, or every offload compute buffer by 64 MiB, is one
cause showing in many configs: one page, not ten. Findings of one night are grouped when they have the same kind and
metric, the same direction and a similar size: within 1.5x either in MiB (a fixed allocation that moved) or in %
(a proportional growth). The incident's summary names what the configs share (a quant across models, offload only,
one model), so the reader sees the likely cause. Status findings (stopped fitting, failing, quarantined, vanished,
offload stopped) group by kind alone.

Life cycle. A finding that matches an open (or acknowledged) incident - same kind, metric and config - keeps it
going with is_new false: no second alert. An open incident none of whose configs has a finding tonight is resolved.
It resolves only on evidence: at least one of its configs ran tonight (ok, for a number to compare), so a config that
crashed tonight does not close its VRAM incident. Everything else opens a new incident (is_new true, the only ones
that page). An improvement (vram_improved) is a
note for the night it happens: it is opened and resolved at once and never pages. People may accept an incident
(`vramwatch regress --accept ID`) when its new level is intended: it closes, and from the night it opened that level
is the reference, so the same change never pages again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from vramwatch.records import OFFLOAD_MODES, OPEN, RESOLVED, Incident
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding

SIMILAR = 1.5  # two deltas within this ratio are "similar"
STATUS_KINDS = {Kind.STOPPED_FITTING: "stopped fitting (ok -> oom)", Kind.FAILING: "started failing",
                Kind.VANISHED: "vanished from the night", Kind.OFFLOAD_STOPPED: "offload stopped moving tensors",
                Kind.QUARANTINED: "failed validation (quarantined)"}


def _similar(a: float | None, b: float | None) -> bool:
    if a is None or b is None or a == 0 or b == 0 or (a > 0) != (b > 0):
        return False
    return max(abs(a), abs(b)) / min(abs(a), abs(b)) <= SIMILAR


def _related(a: Finding, b: Finding) -> bool:
    if (a.kind, a.metric) != (b.kind, b.metric):
        return False
    if a.kind in STATUS_KINDS:
        return True
    return _similar(a.delta_mib, b.delta_mib) or _similar(a.delta_pct, b.delta_pct)


def group_findings(findings: Sequence[Finding]) -> list[list[Finding]]:
    """Connected groups of related findings (union-find), in the order their first member appears."""
    parent = list(range(len(findings)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(findings)):
        for j in range(i):
            if _related(findings[i], findings[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[Finding]] = {}
    for i, finding in enumerate(findings):
        groups.setdefault(root(i), []).append(finding)
    return list(groups.values())


def shared_cause(group: Sequence[Finding]) -> str:
    """What the configs of a group have in common, in words ("" for a single config)."""
    if len(group) < 2:
        return ""
    models, quants, modes = ({getattr(f, name) for f in group} for name in ("model", "quant", "mode"))
    parts = []
    if len(quants) == 1:
        parts.append(f"{next(iter(quants))} across {len(models)} model(s)" if len(models) > 1
                     else next(iter(quants)))
    if modes <= set(OFFLOAD_MODES):
        parts.append("offload only")
    elif modes == {"baseline"}:
        parts.append("baseline only")
    if len(models) == 1:
        parts.append(next(iter(models)))
    return ", ".join(parts) or "same metric, similar delta"


def _median(values: Iterable[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def _describe(kind: str, metric: str, delta_mib: float | None, delta_pct: float | None) -> str:
    if kind in STATUS_KINDS:
        return STATUS_KINDS[kind]
    size = []
    if delta_mib is not None:
        size.append(f"{delta_mib:+.0f} MiB")
    if delta_pct is not None:
        size.append(f"{delta_pct:+.1f}%")
    what = {Kind.VRAM: "VRAM", Kind.VRAM_IMPROVED: "VRAM improved", Kind.THROUGHPUT: "throughput"}[kind]
    return f"{what} {metric} {' / '.join(size)}"


def incident_for_group(group: Sequence[Finding], night: str) -> Incident:
    first = group[0]
    delta_mib, delta_pct = _median(f.delta_mib for f in group), _median(f.delta_pct for f in group)
    configs = sorted({f.config_id for f in group})
    before = Counter(f.build_before for f in group).most_common(1)[0][0]
    after = Counter(f.build_after for f in group).most_common(1)[0][0]
    cause = shared_cause(group)
    details = {f.detail for f in group if f.detail}
    detail = f" [{details.pop()}]" if len(details) == 1 else ""
    summary = (f"{_describe(first.kind, first.metric, delta_mib, delta_pct)}{detail} on {len(configs)} config(s)"
               f"{f' ({cause})' if cause else ''}: {', '.join(configs)}; llama.cpp {before or '?'} -> {after or '?'}")
    return Incident(incident_id=None, kind=first.kind, metric=first.metric,
                    state=RESOLVED if first.kind == Kind.VRAM_IMPROVED else OPEN, configs=configs, summary=summary,
                    delta_mib=delta_mib, delta_pct=delta_pct, build_before=before, build_after=after,
                    opened_night=night, is_new=True)


def cutoffs_for(open_incidents: Iterable[Incident]) -> dict[tuple[str, str], str]:
    """(config_id, metric) -> night its open incident began: detectors keep their reference from before it."""
    cutoffs: dict[tuple[str, str], str] = {}
    for incident in open_incidents:
        for config_id in incident.configs:
            key = (config_id, incident.metric)
            cutoffs[key] = min(cutoffs.get(key, incident.opened_night), incident.opened_night)
    return cutoffs


def forget_before_accepted(before: pd.DataFrame, accepted: Sequence[Incident]) -> pd.DataFrame:
    """History with each accepted incident's metric blanked for its configs before the night it opened, so the level
    people accepted is the only reference for it (VRAM and throughput; a status change needs no reference: the
    rows since already hold the new status)."""
    masked = before.copy() if accepted else before
    for incident in accepted:
        if incident.metric in before.columns and pd.api.types.is_numeric_dtype(before[incident.metric]):
            earlier = before["config_id"].isin(incident.configs) & (before["night"] < incident.opened_night)
            masked.loc[earlier, incident.metric] = float("nan")
    return masked


def _evidence(incident: Incident, tonight_status: Mapping[str, str]) -> bool:
    """Whether tonight says anything about this incident's configs (else it carries on unchanged)."""
    if incident.kind in STATUS_KINDS:
        return any(c in tonight_status for c in incident.configs)
    return any(tonight_status.get(c) == "ok" for c in incident.configs)


def reconcile(findings: Sequence[Finding], open_incidents: Sequence[Incident], night: str,
              tonight_status: Mapping[str, str]) -> list[Incident]:
    """Tonight's incidents: open ones carried on or resolved, and new ones for findings no open incident covers.

    tonight_status maps each config that ran tonight to its status.
    """
    covered: set[int] = set()
    result = []
    for incident in open_incidents:
        mine = [i for i, f in enumerate(findings)
                if (f.kind, f.metric) == (incident.kind, incident.metric) and f.config_id in incident.configs]
        covered.update(mine)
        state = RESOLVED if not mine and _evidence(incident, tonight_status) else incident.state
        result.append(dataclasses.replace(incident, state=state, is_new=False))
    fresh = [f for i, f in enumerate(findings) if i not in covered]
    return result + [incident_for_group(group, night) for group in group_findings(fresh)]
