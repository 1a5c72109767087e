"""The regress stage: tonight's run against its history -> the night's verdicts. Pure core first, the warehouse at
the edge (detect_for_run).

Which nights a check compares with: VRAM per GPU model (llama.cpp's buffers do not depend on the driver or the
host), throughput drift per machine (environment), status and presence per config on any machine. A new machine is a
finding of its own (environment_findings), and a GPU matrix that ran without its GPU pages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from vramwatch.config import Policy, ThroughputPolicy
from vramwatch.records import (
    AB_METRICS,
    ACCEPTED,
    MACHINE_FIELDS,
    ABComparison,
    ABRun,
    BenchConfig,
    BenchResult,
    Fingerprint,
    Incident,
    NightVerdicts,
)
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.ab import compare, needs_ab
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.incidents import cutoffs_for, forget_before_accepted, reconcile
from vramwatch.regress.throughput import relative_noise, throughput_findings
from vramwatch.regress.vram import (
    Cutoffs,
    gpu_lost_finding,
    memory_and_status_findings,
    vanished_findings,
)
from vramwatch.rows import number, split_tonight

if TYPE_CHECKING:
    from vramwatch.warehouse.store import Warehouse

# Runs tonight's config on the previous build's engine and on tonight's, interleaved (bench.ab.run_ab); given the
# previous build's llama.cpp commit. Returns the A/B, or why it could not run (that engine is gone from the worker).
ABRunner = Callable[[BenchConfig, str], "ABRun | str"]


@dataclass(frozen=True)
class Detection:
    """A night's findings, the throughput drifts seen once (judged tomorrow), and what ran."""

    night: str
    findings: list[Finding]
    suspects: list[Suspect]
    tonight_status: dict[str, str]  # config_id -> status, for every config that ran tonight
    build: str = ""  # tonight's llama.cpp commit: what an incident that ends tonight resolved under


def _gpu_lost_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs) -> list[Finding]:
    """Configs measured on a GPU before and ok without one tonight (a night not validated against its build; a
    validated one quarantines such rows, and the status check says the same of them)."""
    past_by_config = dict(tuple(before.groupby("config_id", sort=False)))
    without_gpu = tonight[(tonight["status"] == "ok") & tonight["gpu_total_mib"].map(number).isna()]
    found = [gpu_lost_finding(row, past_by_config[row["config_id"]], cutoffs)
             for _, row in without_gpu.iterrows() if row["config_id"] in past_by_config]
    return [finding for finding in found if finding is not None]


def detect(history: pd.DataFrame, run_id: str, open_incidents: Sequence[Incident] = (), policy: Policy = Policy(),
           accepted: Sequence[Incident] = ()) -> Detection:
    """Every check over the history of tonight's configs (Warehouse.history(), any machine) for run `run_id`.

    open_incidents (open or acknowledged) keep their configs' references from before they opened; accepted ones
    make their level the reference since they opened.
    """
    return detect_split(*split_tonight(history, run_id), open_incidents, policy, accepted)


def detect_split(tonight: pd.DataFrame, before: pd.DataFrame, open_incidents: Sequence[Incident] = (),
                 policy: Policy = Policy(), accepted: Sequence[Incident] = ()) -> Detection:
    """detect() over history already split into tonight's rows and the runs before (rows.split_tonight)."""
    before = forget_before_accepted(before, accepted)
    cutoffs = cutoffs_for(open_incidents)
    findings = (memory_and_status_findings(tonight, before, cutoffs, policy.vram)
                + vanished_findings(tonight, before, cutoffs) + _gpu_lost_findings(tonight, before, cutoffs))
    drift, suspects = throughput_findings(tonight, before, cutoffs, policy.throughput)
    return Detection(night=str(tonight["night"].iloc[0]), findings=findings + drift, suspects=suspects,
                     tonight_status=dict(zip(tonight["config_id"], tonight["status"])),
                     build=str(tonight["llama_cpp_commit"].iloc[0]))


def history_window(policy: Policy) -> int:
    """How many good rows per config and machine detection reads (Warehouse.recent_history): tonight's, the
    throughput baseline's `window` nights plus the night before tonight it leaves out, and the VRAM reference's
    `window` nights (`creep_window` where a creep is traced back)."""
    return 1 + max(policy.vram.window, policy.vram.creep_window, policy.throughput.window + 1)


def regressions(history: pd.DataFrame, run_id: str, open_incidents: Sequence[Incident] = (),
                policy: Policy = Policy(), accepted: Sequence[Incident] = (),
                more_findings: Sequence[Finding] = ()) -> list[Incident]:
    """detect -> incidents. more_findings are tonight's findings from outside the history (the machine, A/B)."""
    detection = detect(history, run_id, open_incidents, policy, accepted)
    return reconcile([*detection.findings, *more_findings], open_incidents, detection.night,
                     detection.tonight_status, policy, detection.build)


def _machine(results: Sequence[BenchResult]) -> Fingerprint | None:
    """The machine most of a run's results were measured on (a timeout's parent-made fingerprint may lack bits)."""
    prints = [r.fingerprint for r in results if r.ok]
    return Counter(prints).most_common(1)[0][0] if prints else None


def environment_findings(previous: Sequence[BenchResult], tonight: Sequence[BenchResult]) -> list[Finding]:
    """A note when tonight's machine differs from the previous run's, naming what changed."""
    before, after = _machine(previous), _machine(tonight)
    if before is None or after is None:
        return []
    changed = [f"{name} {getattr(before, name) or '-'} -> {getattr(after, name) or '-'}" for name in MACHINE_FIELDS
               if getattr(before, name) != getattr(after, name)]
    if not changed:
        return []
    return [Finding(kind=Kind.ENVIRONMENT_CHANGED, metric="machine", config_id="", environment_id=after.environment_id,
                    model="", quant="", mode="", build_before=before.llama_cpp_commit,
                    build_after=after.llama_cpp_commit, detail=", ".join(changed))]


def ab_candidates(tonight: pd.DataFrame, before: pd.DataFrame, policy: ThroughputPolicy) -> dict[str, str]:
    """config_id -> the previous build's commit, for tonight's configs whose build changed and whose tok/s moved from
    that build's last result by more than the config's noise (regress.ab.needs_ab; over the nights in `before`,
    the recent window detect_for_run reads), on the same machine."""
    good = before[before["status"] == "ok"]
    wanted = {}
    for _, row in tonight[tonight["status"] == "ok"].iterrows():
        series = good[(good["config_id"] == row["config_id"]) & (good["environment_id"] == row["environment_id"])]
        if series.empty or series.iloc[-1]["llama_cpp_commit"] == row["llama_cpp_commit"]:
            continue
        last = series.iloc[-1]
        for test in AB_METRICS:
            column = f"{test}_avg_ts"
            values = series[column].dropna().to_numpy(float)
            if pd.notna(row[column]) and pd.notna(last[column]) and needs_ab(
                    float(last[column]), float(row[column]), relative_noise(values), policy.page_pct / 100):
                wanted[row["config_id"]] = str(last["llama_cpp_commit"])
    return wanted


def ab_findings(comparison: ABComparison, config: BenchConfig, environment_id: str) -> list[Finding]:
    """A confirmed slowdown beyond the policy (the verdict's rule) is a throughput finding that pages."""
    run = comparison.run
    return [Finding(kind=Kind.THROUGHPUT, metric=f"{v.metric}_avg_ts", config_id=run.config_id,
                    environment_id=environment_id, model=config.model.model, quant=config.model.quant,
                    mode=config.mode, before=v.median_a, after=v.median_b, delta_pct=100.0 * (v.ratio - 1),
                    build_before=run.llama_cpp_commit_a, build_after=run.llama_cpp_commit_b,
                    detail=f"same-night A/B: {v.describe()}",
                    change=f"{config.config_name}: {v.metric} {v.median_a:.1f} -> {v.median_b:.1f} t/s "
                           f"({100.0 * (v.ratio - 1):+.1f}%, same-night A/B {v.ratio:.2f}x "
                           f"[{v.ci_low:.2f}, {v.ci_high:.2f}])")
            for v in comparison.verdicts if v.verdict == "slower"]


def _same_night_ab(tonight_results: Sequence[BenchResult], wanted: dict[str, str], ab: ABRunner | None,
                   policy: ThroughputPolicy) -> tuple[list[ABComparison], list[Finding], list[str]]:
    """Run the A/Bs the night needs: (comparisons, findings, what could not be judged)."""
    comparisons, findings, not_judged = [], [], []
    for result in tonight_results:
        previous = wanted.get(result.config.config_id)
        if previous is None:
            continue
        name = result.config.config_name
        if ab is None:
            not_judged.append(f"{name} throughput: the build changed tok/s beyond its noise; no A/B was run here "
                              "(the nightly's detect_regressions runs one on the GPU worker)")
            continue
        run = ab(result.config, previous)
        if isinstance(run, str):
            not_judged.append(f"{name} throughput: no same-night A/B: {run}")
            continue
        verdicts = [compare(test, run.samples_ts[test]["A"], run.samples_ts[test]["B"], policy.page_pct / 100,
                            confidence=policy.ab_confidence) for test in AB_METRICS]
        comparison = ABComparison(run=run, verdicts=verdicts)
        comparisons.append(comparison)
        findings += ab_findings(comparison, result.config, result.fingerprint.environment_id)
        not_judged += [f"{name} {v.metric}: unconfirmed: {v.describe()}" for v in verdicts
                       if v.verdict == "inconclusive"]
    return comparisons, findings, not_judged


def _not_judged(detection_suspects: Sequence[Suspect], tonight: Sequence[BenchResult]) -> list[str]:
    lines = [f"{r.config.config_name}: not measured ({r.status}), so not judged" for r in tonight if not r.ok]
    if tonight and not any(r.memory.has_gpu for r in tonight if r.ok):
        lines.append("VRAM: no GPU tonight, so no VRAM was judged")
    lines += [f"{s.finding.model}/{s.finding.quant}/{s.finding.mode} {s.metric}: "
              f"{s.finding.delta_pct:+.1f}% against its recent nights tonight; judged if tomorrow repeats it"
              for s in detection_suspects if s.finding.delta_pct is not None]
    return lines


def detect_for_run(warehouse: Warehouse, run_id: str, policy: Policy = Policy(), ab: ABRunner | None = None,
                   save: bool = True) -> NightVerdicts:
    """Detect over the warehouse for one run and store its incidents and verdicts (unless save is false).

    The run's quarantined rows join tonight with status "quarantined": a config whose row failed validation is
    reported as such (when it was ok before), not as vanished, and a night quarantined whole still gets detection.
    A config whose build changed its tok/s beyond its noise is rerun A/B with `ab` (none: it is said not judged).
    Returns tonight's incidents (new, carried on, escalated, resolved tonight). Running it twice for a night stores
    nothing twice.
    """
    tonight_results = warehouse.results_for_run(run_id)
    previous = warehouse.previous_run(run_id)
    previous_results = warehouse.results_for_run(previous.run_id) if previous else []
    quarantined = warehouse.quarantined_history(run_id)  # tonight's rows that validation kept out of history
    stored = warehouse.incidents()
    open_now = [i for i in stored if not i.is_closed]
    accepted = [i for i in stored if i.state == ACCEPTED]
    configs = ({r.config.config_id for r in tonight_results + previous_results} | set(quarantined["config_id"])
               | {c for i in open_now for c in i.configs})
    # only the recent nights (and those before each open incident opened) are judged: read those, not years of them
    opened = {(config_id, night) for (config_id, _metric), night in cutoffs_for(open_now).items()}
    history = warehouse.recent_history(configs, history_window(policy), until_run=run_id, before=opened)
    if not quarantined.empty:
        history = pd.concat([history, quarantined], ignore_index=True)
    tonight, before = split_tonight(history, run_id)
    detection = detect_split(tonight, before, open_now, policy, accepted)
    comparisons, ab_found, unconfirmed = _same_night_ab(tonight_results, ab_candidates(tonight, before,
                                                                                       policy.throughput),
                                                        ab, policy.throughput)
    found = reconcile([*detection.findings, *ab_found, *environment_findings(previous_results, tonight_results)],
                      open_now, detection.night, detection.tonight_status, policy, detection.build)
    if save:
        environment = next(iter(warehouse.run_environments(run_id)), "")
        known = {_identity(i): i for i in stored if i.opened_night == detection.night}
        found = [warehouse.save_incident(_reuse(i, known), environment, detection.night) for i in found]
    verdicts = NightVerdicts(incidents=found, ab=comparisons,
                             not_judged=_not_judged(detection.suspects, tonight_results) + unconfirmed)
    if save:
        warehouse.save_verdicts(run_id, verdicts)
    return verdicts


def _identity(incident: Incident) -> tuple:
    return incident.kind, incident.metric, tuple(incident.configs), incident.opened_night


def _reuse(incident: Incident, known: dict[tuple, Incident]) -> Incident:
    """A new incident already stored tonight (a retried task) updates that row instead of adding a twin."""
    twin = known.get(_identity(incident)) if incident.incident_id is None else None
    return incident if twin is None else Incident(**{**incident.__dict__, "incident_id": twin.incident_id})
