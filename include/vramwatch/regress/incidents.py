"""From per-config findings to incidents: one per cause, opened once, kept while it lasts, resolved when it ends.

Grouping. A build that grows every Q4_K_M model buffer by 2 %, or every offload compute buffer by 64 MiB, is one
cause showing in many configs: one page, not ten. Findings of one night are grouped when they have the same kind and
metric, the same direction and a similar size: within 1.5x either in MiB (a fixed allocation that moved) or in %
(a proportional growth). The incident's summary names what the configs share (a quant across models, offload only,
one model), so the reader sees the likely cause. Status findings (stopped fitting, failing, quarantined, vanished,
offload stopped) group by kind alone.

Life cycle. A finding that matches an open (or acknowledged) incident - same kind, metric and config - keeps it
going with is_new false at tonight's size, saying how far it grew from the size it paged with: no second alert, unless
it grew beyond the policy since that page (a +200 MiB incident followed by a +3000 MiB step): then it pages again
(escalated) at the new size. A change that came with a GPU swap on a build-change night is not separable (build or
GPU): it opens without paging and pages the first later night that keeps it on the new GPU. An open incident resolves
only when every one of its configs was measured clean tonight (status ok, no finding): a config that crashed or was
absent tonight keeps it open; it names the build it resolved under (Incident.resolution: a blip or a fix).
Everything else opens a new incident (is_new true). Notes (records.NOTE_KINDS: an improvement, a changed
environment, a matrix edit) are opened and resolved at once and never page. People may accept an incident
(`vramwatch regress --accept ID`) when its new level is intended: it closes, and from the night it opened that level
is the reference, so the same change never pages again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from vramwatch.config import Policy
from vramwatch.records import NOTE_KINDS, OFFLOAD_MODES, OPEN, RESOLVED, Incident, builds_changed, config_name
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding
from vramwatch.rows import words_of

SIMILAR = 1.5  # two deltas within this ratio are "similar"
STATUS_KINDS = {Kind.STOPPED_FITTING: "stopped fitting (ok -> oom)", Kind.FAILING: "started failing",
                Kind.VANISHED: "vanished from the night", Kind.OFFLOAD_STOPPED: "offload stopped moving tensors",
                Kind.QUARANTINED: "failed validation (quarantined)", Kind.GPU_LOST: "ran without its GPU",
                Kind.ENVIRONMENT_CHANGED: "ran on a changed machine",
                Kind.SERIES_CHANGED: "new series: the matrix changed its settings"}
SIZED_KINDS = {Kind.VRAM: "VRAM", Kind.VRAM_IMPROVED: "VRAM improved", Kind.THROUGHPUT: "throughput",
               Kind.ENERGY: "energy per token:",
               Kind.NO_LONGER_FITS: "no longer fits"}


def _similar(a: float | None, b: float | None) -> bool:
    if a is None or b is None or a == 0 or b == 0 or (a > 0) != (b > 0):
        return False
    return max(abs(a), abs(b)) / min(abs(a), abs(b)) <= SIMILAR


def _related(a: Finding, b: Finding) -> bool:
    if (a.kind, a.metric, a.separable) != (b.kind, b.metric, b.separable):
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
        size.append(f"{delta_mib:+.2f} MiB")
    if delta_pct is not None:
        size.append(f"{delta_pct:+.1f}%")
    return f"{SIZED_KINDS[kind]} {words_of(metric)} {' / '.join(size)}"  # the field's words, never its name


def _summary(group: Sequence[Finding], delta_mib: float | None, delta_pct: float | None, before: str,
             after: str, configs: Iterable[str] = ()) -> str:
    """configs: the incident's configs, where they are more than the group's (an open one seen again tonight)."""
    first = group[0]
    names = sorted({config_name(c) for c in configs} | {config_name(f.config_id) for f in group})
    cause = shared_cause(group)
    details = {f.detail for f in group if f.detail}
    detail = f" [{details.pop()}]" if len(details) == 1 else ""
    return (f"{_describe(first.kind, first.metric, delta_mib, delta_pct)}{detail} on {len(names)} config(s)"
            f"{f' ({cause})' if cause else ''}: {', '.join(names)}; {builds_changed(before, after)}")


def _changes(group: Sequence[Finding]) -> list[str]:
    """One line per config: the exact change where the detector wrote one, else the summary's terms."""
    return [f.change or f"{config_name(f.config_id)}: {_describe(f.kind, f.metric, f.delta_mib, f.delta_pct)}"
            + (f" ({f.detail})" if f.detail and not f.change else "") for f in group]


def incident_for_group(group: Sequence[Finding], night: str) -> Incident:
    first = group[0]
    delta_mib, delta_pct = _median(f.delta_mib for f in group), _median(f.delta_pct for f in group)
    before = Counter(f.build_before for f in group).most_common(1)[0][0]
    after = Counter(f.build_after for f in group).most_common(1)[0][0]
    return Incident(incident_id=None, kind=first.kind, metric=first.metric,
                    state=RESOLVED if first.kind in NOTE_KINDS else OPEN, configs=sorted({f.config_id for f in group}),
                    summary=_summary(group, delta_mib, delta_pct, before, after), delta_mib=delta_mib,
                    delta_pct=delta_pct, build_before=before, build_after=after, opened_night=night, is_new=True,
                    changes=_changes(group), paged_delta_mib=delta_mib, paged_delta_pct=delta_pct,
                    separable=first.separable)


def _grew(incident: Incident, findings: Sequence[Finding], policy: Policy) -> bool:
    """Whether tonight's findings on an open incident go beyond its recorded magnitude by what pages."""
    if incident.kind in (Kind.THROUGHPUT, Kind.ENERGY):
        old, new = abs(_paged(incident)[1] or 0.0), max(abs(f.delta_pct or 0.0) for f in findings)
        pct = policy.throughput.page_pct if incident.kind == Kind.THROUGHPUT else policy.throughput.energy_page_pct
        return new - old >= pct
    if incident.kind in (Kind.VRAM, Kind.NO_LONGER_FITS):
        old = _paged(incident)[0] or 0.0
        grown = [f for f in findings if f.delta_mib is not None and f.before is not None
                 and policy.vram.rule(f.metric).pages(f.before + old, f.delta_mib - old)]
        return bool(grown)
    return False


def _paged(incident: Incident) -> tuple[float | None, float | None]:
    """The size an incident last paged with (MiB, %): stored since 0007; before, its size never moved from it."""
    if incident.paged_delta_mib is None and incident.paged_delta_pct is None:
        return incident.delta_mib, incident.delta_pct
    return incident.paged_delta_mib, incident.paged_delta_pct


def _escalated(incident: Incident, findings: Sequence[Finding]) -> Incident:
    delta_mib, delta_pct = _median(f.delta_mib for f in findings), _median(f.delta_pct for f in findings)
    return dataclasses.replace(
        incident, delta_mib=delta_mib, delta_pct=delta_pct, changes=_carried_changes(incident, findings), is_new=False,
        escalated=True, paged_delta_mib=delta_mib, paged_delta_pct=delta_pct, build_after=findings[0].build_after,
        summary=_summary(findings, delta_mib, delta_pct, incident.build_before, findings[0].build_after,
                         incident.configs))


def _carried_changes(incident: Incident, findings: Sequence[Finding]) -> list[str]:
    """Tonight's exact line for each config found tonight, the last known one for the others."""
    found = {config_name(f.config_id) for f in findings}
    return _changes(findings) + [line for line in incident.changes if line.split(":", 1)[0] not in found]


def _carried(incident: Incident, findings: Sequence[Finding]) -> Incident:
    """An open sized incident seen again tonight, below what pages again: it takes tonight's size and exact lines
    (still against the reference from before it opened) and says how far it moved from what it paged with; its
    builds stay those of the change."""
    if incident.kind not in SIZED_KINDS:
        return dataclasses.replace(incident, is_new=False, escalated=False)
    paged_mib, paged_pct = _paged(incident)
    delta_mib, delta_pct = _median(f.delta_mib for f in findings), _median(f.delta_pct for f in findings)
    carried = dataclasses.replace(incident, delta_mib=delta_mib, delta_pct=delta_pct, paged_delta_mib=paged_mib,
                                  paged_delta_pct=paged_pct, changes=_carried_changes(incident, findings),
                                  is_new=False, escalated=False)
    growth = carried.growth()
    summary = _summary(findings, delta_mib, delta_pct, incident.build_before, incident.build_after, incident.configs)
    return dataclasses.replace(carried, summary=f"{summary}; {growth}" if growth else summary)


def _kept_on_the_new_gpu(incident: Incident, findings: Sequence[Finding]) -> Incident:
    """A change that came with a GPU swap, kept by a later night on the new GPU: it pages now, at tonight's size,
    naming the builds of the swap night."""
    kept = _carried(incident, findings)
    return dataclasses.replace(kept, separable=True, escalated=True, paged_delta_mib=kept.delta_mib,
                               paged_delta_pct=kept.delta_pct)


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


def _measured_clean(incident: Incident, tonight_status: Mapping[str, str]) -> bool:
    """Every config of the incident ran tonight with status ok (and, as the caller checks, without a finding)."""
    return all(tonight_status.get(c) == "ok" for c in incident.configs)


def reconcile(findings: Sequence[Finding], open_incidents: Sequence[Incident], night: str,
              tonight_status: Mapping[str, str], policy: Policy = Policy(), tonight_build: str = "") -> list[Incident]:
    """Tonight's incidents: open ones carried on (at tonight's size), escalated or resolved (under tonight_build, the
    llama.cpp commit that ran tonight), and new ones for findings no open incident covers. tonight_status maps each
    config that ran tonight to its status."""
    covered: set[int] = set()
    result = []
    for incident in open_incidents:
        at = [i for i, f in enumerate(findings)
              if (f.kind, f.metric) == (incident.kind, incident.metric) and f.config_id in incident.configs]
        covered.update(at)
        mine = [findings[i] for i in at]
        if mine and not incident.separable and all(f.separable for f in mine):
            result.append(_kept_on_the_new_gpu(incident, mine))
        elif mine:
            result.append(_escalated(incident, mine) if _grew(incident, mine, policy) else _carried(incident, mine))
        elif _measured_clean(incident, tonight_status):
            result.append(dataclasses.replace(incident, state=RESOLVED, resolved_by=tonight_build, is_new=False,
                                              escalated=False))
        else:
            result.append(dataclasses.replace(incident, is_new=False, escalated=False))
    fresh = [f for i, f in enumerate(findings) if i not in covered]
    return result + [incident_for_group(group, night) for group in group_findings(fresh)]
