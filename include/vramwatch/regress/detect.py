"""The regress stage: tonight's run against its history -> the night's verdicts. Pure core first, the warehouse at
the edge (detect_for_run).

Which nights a check compares with: VRAM per GPU model (llama.cpp's buffers do not depend on the driver or the
host), throughput drift per machine (environment), status and presence per config on any machine. A new machine is a
finding of its own (environment_findings), and a GPU matrix that ran without its GPU pages.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from vramwatch.config import VRAM_COMPONENTS, Policy, ThroughputPolicy
from vramwatch.records import (
    ACCEPTED,
    IDENTITY_KNOBS,
    MACHINE_FIELDS,
    NOTE_KINDS,
    ABComparison,
    ABRun,
    BenchConfig,
    BenchResult,
    Fingerprint,
    Incident,
    NightVerdicts,
    builds_changed,
)
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.ab import Ask, compare, leaning_slower, min_effect_of, screened, sequential_night, sides
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.incidents import cutoffs_for, forget_before_accepted, reconcile
from vramwatch.regress.throughput import (
    METRICS,
    NOISE_MIN_NIGHTS,
    Baseline,
    Slowdown,
    suspected_slowdown,
    throughput_findings,
)
from vramwatch.regress.vram import (
    Cutoffs,
    gpu_lost_finding,
    memory_and_status_findings,
    vanished_findings,
)
from vramwatch.rows import AB_JUDGED, BY_NAME, Field, number, oriented, split_tonight

if TYPE_CHECKING:
    from vramwatch.warehouse.store import Warehouse

# Runs tonight's config on a previous build's engine (by its llama.cpp commit) and on tonight's, interleaved
# (bench.ab.run_ab): `processes` more a side after those of the A/B so far (None at first). Returns the grown A/B, or
# why it could not run (that engine is gone from the worker).
ABRunner = Callable[[BenchConfig, str, int, "ABRun | None"], "ABRun | str"]
# The machine changes ("gpu_driver a -> b", ...) between the night before the given night and tonight.
MachineChanges = Callable[[str], list[str]]


@dataclass(frozen=True)
class Detection:
    """A night's findings, the throughput drifts seen once (judged tomorrow), and what ran."""

    night: str
    findings: list[Finding]
    suspects: list[Suspect]
    tonight_status: dict[str, str]  # config_id -> status, for every config that ran tonight
    build: str = ""  # tonight's llama.cpp commit: what an incident that ends tonight resolved under
    drift_tests: int = 0  # series (config, machine, metric) the drift check judged tonight: tests of the night


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


# The history columns the checks of detect_split read (with the metrics of accepted incidents): about a third of a
# result's. Every filter and group of a night's detection copies each column it is handed, so narrowing first makes
# detection about a fifth cheaper and changes no finding.
DETECTION_COLUMNS = frozenset({
    "run_id", "night", "config_id", "config_name", "environment_id", "model", "quant", "mode", "status", "error",
    "llama_cpp_commit", "gpu_name", "cpu_model", "gpu_total_mib", "needed_card_mib", "n_overridden_tensors",
    "buffers_mib", *VRAM_COMPONENTS, *METRICS, *IDENTITY_KNOBS})


def detect_split(tonight: pd.DataFrame, before: pd.DataFrame, open_incidents: Sequence[Incident] = (),
                 policy: Policy = Policy(), accepted: Sequence[Incident] = ()) -> Detection:
    """detect() over history already split into tonight's rows and the runs before (rows.split_tonight)."""
    read = DETECTION_COLUMNS | {i.metric for i in accepted}
    tonight, before = (_one_block(rows[[c for c in rows.columns if c in read]]) for rows in (tonight, before))
    before = forget_before_accepted(before, accepted)
    cutoffs = cutoffs_for(open_incidents)
    findings = (memory_and_status_findings(tonight, before, cutoffs, policy.vram)
                + vanished_findings(tonight, before, cutoffs) + _gpu_lost_findings(tonight, before, cutoffs))
    drift, suspects, drift_tests = throughput_findings(tonight, before, cutoffs, policy.throughput)
    return Detection(night=str(tonight["night"].iloc[0]), findings=findings + drift, suspects=suspects,
                     tonight_status=dict(zip(tonight["config_id"], tonight["status"])),
                     build=str(tonight["llama_cpp_commit"].iloc[0]), drift_tests=drift_tests)


def _one_block(rows: pd.DataFrame) -> pd.DataFrame:
    """rows with its text columns as objects: pandas keeps each text column in a block of its own and copies every
    block at every filter, and the checks filter each config's history several times per metric."""
    text = {column: object for column, dtype in rows.dtypes.items() if isinstance(dtype, pd.StringDtype)}
    return rows.astype(text).copy() if text else rows  # the copy puts the object columns into one block


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
    findings = [*detection.findings, *more_findings]
    return attributed(reconcile(findings, open_incidents, detection.night, detection.tonight_status, policy,
                                detection.build), findings, detection.night)


def _machine(results: Sequence[BenchResult]) -> Fingerprint | None:
    """The machine most of a run's results were measured on (a timeout's parent-made fingerprint may lack bits)."""
    prints = [r.fingerprint for r in results if r.ok]
    return Counter(prints).most_common(1)[0][0] if prints else None


def _differences(before: Fingerprint, after: Fingerprint) -> list[str]:
    return [f"{name} {getattr(before, name) or '-'} -> {getattr(after, name) or '-'}" for name in MACHINE_FIELDS
            if getattr(before, name) != getattr(after, name)]


def environment_findings(previous: Sequence[BenchResult], tonight: Sequence[BenchResult]) -> list[Finding]:
    """A note when tonight's machine differs from the previous run's, naming what changed."""
    before, after = _machine(previous), _machine(tonight)
    if before is None or after is None:
        return []
    changed = _differences(before, after)
    if not changed:
        return []
    return [Finding(kind=Kind.ENVIRONMENT_CHANGED, metric="machine", config_id="", environment_id=after.environment_id,
                    model="", quant="", mode="", build_before=before.llama_cpp_commit,
                    build_after=after.llama_cpp_commit, detail=", ".join(changed))]


def _moved(field: Field, row: pd.Series, series: pd.DataFrame, policy: ThroughputPolicy) -> Slowdown | None:
    """suspected_slowdown of a figure the A/B judges, oriented (lower is worse: J/token as tokens per joule) and
    against what its own policy pages."""
    column = field.name
    past = series[pd.to_numeric(series[column], errors="coerce") > 0]  # 0 or none: nothing to compare on a log scale
    judged = policy.model_copy(update={"page_pct": 100 * min_effect_of(field.judged.name, policy)})
    return suspected_slowdown(pd.Series({**row, column: oriented(field, float(row[column]))}),
                              past.assign(**{column: oriented(field, past[column].astype(float))}), column, judged)


def ab_asks(tonight: pd.DataFrame, before: pd.DataFrame, policy: ThroughputPolicy,
            earlier: Sequence[ABComparison] = ()) -> list[Ask]:
    """The A/Bs tonight needs, most suspicious first. First those the last night left open leaning slower
    (regress.ab.leaning_slower; `earlier` = its A/Bs): the config is A/B'd again against the same reference and the
    two nights' samples are pooled, so a slowdown one night's budget could not show is shown over two, whether or
    not tonight's single figure dropped again; an A/B goes on once (two nights at most: a real change just at the
    policy would otherwise be rerun every night). Then tonight's configs whose tok/s is below their recent level
    (regress.throughput.suspected_slowdown; or J/token above it) on a build that changed since the last night at that level, on the same
    machine. Each asks about every metric that dropped, against the reference from before the earliest drop."""
    good = before[before["status"] == "ok"]
    past_by_series = dict(tuple(good.groupby(["config_id", "environment_id"], sort=False)))
    builds = dict(zip(tonight["config_id"], tonight["llama_cpp_commit"].astype(str)))
    ok_tonight = set(tonight.loc[tonight["status"] == "ok", "config_id"])
    carried: dict[str, Ask] = {}
    for comparison in earlier:
        run = comparison.run
        metrics = tuple(v.metric for v in comparison.verdicts  # not pooled already: its samples are all its own
                        if leaning_slower(v) and v.n_a == len(run.samples_ts[v.metric]["A"]))
        if metrics and run.config_id in ok_tonight and builds[run.config_id] != run.llama_cpp_commit_a:
            noise = {m: n for m in metrics if (n := _noise_of(good, run.config_id, m, policy.window))}
            carried[run.config_id] = Ask(run.config_id, run.llama_cpp_commit_a, metrics, noise, prior=run)
    asks = []
    for _, row in tonight[tonight["status"] == "ok"].iterrows():
        series = past_by_series.get((row["config_id"], row["environment_id"]))
        if series is None:
            continue
        drops = [drop for field in AB_JUDGED.values() if (number(row[field.name]) or 0) > 0
                 and (drop := _moved(field, row, series, policy)) is not None]
        if row["config_id"] in carried:
            ask = carried[row["config_id"]]
            more = tuple(name for d in drops if (name := BY_NAME[d.metric].judged.name) not in ask.metrics)
            carried[row["config_id"]] = dataclasses.replace(ask, metrics=ask.metrics + more, noise={
                **{BY_NAME[d.metric].judged.name: d.noise for d in drops if d.noise}, **ask.noise})
        elif drops:
            # every metric that dropped, against the reference from before the earliest drop began: a build at
            # the level of each of them (the worst's own reference could already carry the other's change)
            earliest = min(drops, key=lambda d: d.since)
            asks.append((min(d.z for d in drops), Ask(earliest.config_id, earliest.reference_commit,
                                                      tuple(BY_NAME[d.metric].judged.name for d in drops),
                                                      {BY_NAME[d.metric].judged.name: d.noise for d in drops
                                                       if d.noise})))
    return [*carried.values(), *(ask for _z, ask in sorted(asks, key=lambda pair: pair[0]))]


def _noise_of(good: pd.DataFrame, config_id: str, metric: str, window: int) -> float | None:
    """The config's relative night-to-night noise of an A/B-judged figure ("tg", "tg_j_per_tok"), oriented as the
    A/B compares it, from its recent good nights (None: too few)."""
    field = AB_JUDGED[metric]
    values = good.loc[good["config_id"] == config_id, field.name].dropna().to_numpy(float)
    values = oriented(field, values[values > 0])
    return Baseline.of(values[-window:]).relative_sigma if len(values) >= NOISE_MIN_NIGHTS else None


def ab_findings(comparison: ABComparison, config: BenchConfig, environment_id: str) -> list[Finding]:
    """A confirmed slowdown (or rise of J/token) beyond the policy (the verdict's rule) is a finding that pages: of
    throughput, or of energy."""
    run, findings = comparison.run, []
    for v in comparison.verdicts:
        if v.verdict != "slower":
            continue
        field = AB_JUDGED[v.metric]
        findings.append(Finding(
            kind=field.judged.kind, metric=field.name, config_id=run.config_id, environment_id=environment_id,
            model=config.model.model, quant=config.model.quant, mode=config.mode, before=v.median_a,
            after=v.median_b, delta_pct=100.0 * (v.ratio - 1), build_before=run.llama_cpp_commit_a,
            build_after=run.llama_cpp_commit_b, detail=f"same-night A/B: {v.describe()}",
            change=f"{config.config_name}: {field.words} {field.number(v.median_a)} -> {field.text(v.median_b)} "
                   f"({100.0 * (v.ratio - 1):+.1f}%, same-night A/B {v.ratio:.2f}x [{v.ci_low:.2f}, {v.ci_high:.2f}])"))
    return findings


@dataclass(frozen=True)
class OpenAB:
    """An A/B metric the night left open that may still be a slowdown beyond the policy (regress.ab.leaning_slower):
    watched when its p-value of "slower at all" passes the night's screen (judge_night), else left open."""

    p_any: float  # of tonight's processes alone: a carried A/B's earlier ones were kept because they leaned slower
    watching: str  # its line, if watched
    name: str  # config and figure, if only left open


@dataclass(frozen=True)
class NightABs:
    """What the night's A/Bs say: their comparisons, the slowdowns they confirmed, the builds they cleared (per
    config and metric column, with the evidence), the metrics left open that may still be beyond the policy, the
    p-values of "slower at all" of the others (tests of the night's screen, regress.ab.screened), how many metrics
    the night asked about, and those that could not run."""

    comparisons: list[ABComparison]
    findings: list[Finding]
    cleared: dict[tuple[str, str], str]
    not_judged: list[str]
    no_slowdown: set[tuple[str, str]]  # (config, metric column): the A/B cleared the build or saw no slowdown
    ratios: dict[tuple[str, str], float]  # (config, metric column): what the A/B measured of the build alone
    open: list[OpenAB]
    settled_p: list[float]  # "slower at all" of the A/B metrics not left open
    asked: int  # metrics the night's A/Bs were asked about, run or not: tests of the night


def same_night_abs(asks: Sequence[Ask], configs: Mapping[str, BenchConfig], environments: Mapping[str, str],
                   ab: ABRunner | None, policy: ThroughputPolicy) -> NightABs:
    """Run the night's A/Bs as one sequential design (regress.ab.sequential_night) and read their verdicts."""
    def grow(ask: Ask, more: int, earlier: ABRun | None) -> ABRun | str:
        if ab is None:
            return "no A/B runner here (the nightly's detect_regressions runs one on the GPU worker)"
        return ab(configs[ask.config_id], ask.reference_commit, more, earlier)

    out = NightABs([], [], {}, [], set(), {}, [], [], sum(len(ask.metrics) for ask in asks))
    for ended in sequential_night(asks, grow, policy):
        config = configs[ended.ask.config_id]
        name = config.config_name
        if ended.run is None:
            asked = [AB_JUDGED[m] for m in ended.ask.metrics]
            kinds = " and ".join(dict.fromkeys(str(f.judged.kind) for f in asked))
            moved = ", ".join(f"{f.words} {'above' if f.judged.higher_is_worse else 'below'}" for f in asked)
            out.not_judged.append(f"{name} {kinds} ({moved} its recent level): no same-night A/B: {ended.why_not}")
            continue
        comparison = ABComparison(run=ended.run, verdicts=ended.verdicts)
        out.comparisons.append(comparison)
        out.findings.extend(ab_findings(comparison, config, environments[ended.ask.config_id]))
        builds = builds_changed(ended.run.llama_cpp_commit_a, ended.run.llama_cpp_commit_b)
        for v in ended.verdicts:
            field, effect = AB_JUDGED[v.metric], min_effect_of(v.metric, policy)
            key, ratio = (config.config_id, field.name), None if v.ratio is None else oriented(field, v.ratio)
            if v.ratio is not None:
                out.ratios[key] = v.ratio
            if v.verdict in ("no change", "not slower", "faster"):
                out.cleared[key] = f"{builds}: same-night A/B {v.describe()}"
            if v.verdict != "slower" and ratio is not None and ratio >= 1 - effect / 2:
                out.no_slowdown.add(key)
            if v.p_any is None:
                continue
            if not leaning_slower(v):  # settled, or a slowdown shown to stay within the policy: nobody's watch
                out.settled_p.append(v.p_any)
                continue
            p_any = v.p_any if ended.ask.prior is None else compare(
                v.metric, *sides(ended.run, v.metric), effect, noise=ended.ask.noise.get(v.metric)).p_any
            out.open.append(OpenAB(1.0 if p_any is None else p_any, (
                f"{name} {field.words}: suspected, being confirmed (A/B stopped: {ended.stopped}; "
                f"{'higher' if v.higher_is_worse else 'slower'} than the reference beyond chance over the night's "
                f"tests, not yet shown beyond the policy): {v.describe()}"), f"{name} {field.words}"))
    return out


def _ab_measured(comparisons: Sequence[ABComparison]) -> str:
    verdicts = [v for c in comparisons for v in c.verdicts]
    if not verdicts:
        return "no same-night A/B needed"
    speeds = [v for v in verdicts if not v.higher_is_worse]
    slower = sum(v.verdict == "slower" for v in speeds)
    detectable = [v.min_detectable for v in speeds if v.min_detectable is not None and v.verdict != "slower"]
    could = (f"; the others could detect -{min(detectable):.1%} to -{max(detectable):.1%}" if detectable else "")
    energy = [v for v in verdicts if v.higher_is_worse]
    higher = (f"; energy per token judged {len(energy)} time(s), {sum(v.verdict == 'slower' for v in energy)} higher "
              "beyond the policy" if energy else "")
    processes = sum(c.run.processes for c in comparisons)
    return (f"{len(comparisons)} same-night A/B(s) ({processes} processes a side), {slower} slower beyond the "
            f"policy{could}{higher}")


def attribute(incident: Incident, findings: Sequence[Finding], night: str, machine_changes: MachineChanges,
              cleared: Mapping[tuple[str, str], str], ratios: Mapping[tuple[str, str], float] = {}) -> Incident:
    """The candidate causes that changed between the night before the incident's change began and tonight (the
    build, the driver, CUDA, the GPU, the host, the matrix), and those the evidence clears: a same-night A/B that
    showed no slowdown clears the build (the blame moves to what else changed, with how much came with it: the
    whole change less the A/B's `ratios` of the build); one that confirmed a slowdown on one machine clears the
    machine. An unchanged build is never a cause."""
    mine = [f for f in findings if (f.kind, f.metric) == (incident.kind, incident.metric)
            and f.config_id in incident.configs]
    first = min((f.first_night for f in mine if f.first_night), default=night)
    causes = [] if incident.build_before == incident.build_after or not incident.build_before else [
        builds_changed(incident.build_before, incident.build_after)]
    machine = machine_changes(first)
    causes += machine
    if any(f.kind == Kind.SERIES_CHANGED for f in findings if f.config_id in incident.configs):
        causes.append("matrix: the config's settings changed")
    builds = [c for c in causes if c.startswith("llama.cpp")]
    said = [cleared[(c, incident.metric)] + _came_with(incident, ratios.get((c, incident.metric)), machine)
            for c in incident.configs if builds and (c, incident.metric) in cleared]
    confirmed = [f.detail for f in mine if f.detail.startswith("same-night A/B")]
    if confirmed and machine:
        said += [f"{change}: {confirmed[0]} on one machine" for change in machine]
    return dataclasses.replace(incident, causes=causes, cleared=said)


def _came_with(incident: Incident, build_ratio: float | None, machine: Sequence[str]) -> str:
    """How much of a throughput change came with the machine change: the whole change (the incident's, against the
    nights before it) divided by what the same-night A/B measured of the build alone."""
    if incident.kind != Kind.THROUGHPUT or not machine or not build_ratio or incident.delta_pct is None:
        return ""
    whole = 1 + incident.delta_pct / 100
    return f"; of {whole - 1:+.1%} in all, {whole / build_ratio - 1:+.1%} came with {', '.join(machine)}"


def _not_judged(tonight: pd.DataFrame) -> list[str]:
    """Checks that should have run tonight and could not, with why (the A/Bs add theirs)."""
    lines = [f"{name}: not measured ({status}), so not judged"
             for name, status in zip(tonight["config_name"], tonight["status"]) if status not in ("ok", "quarantined")]
    ok = tonight[tonight["status"] == "ok"]
    if not ok.empty and ok["gpu_total_mib"].isna().all():
        lines.append("VRAM: no GPU tonight, so no VRAM was judged")
    return lines


def _suspected(suspects: Sequence[Suspect]) -> list[str]:
    return [f"{s.finding.model}/{s.finding.quant}/{s.finding.mode} {s.metric.removesuffix('_avg_ts')}: "
            f"suspected, being confirmed: {s.finding.delta_pct:+.1f}% against its recent nights tonight, judged if "
            "tomorrow repeats it" for s in suspects if s.finding.delta_pct is not None]


def _measured(tonight: pd.DataFrame, comparisons: Sequence[ABComparison]) -> str:
    ok = tonight[tonight["status"] == "ok"]
    on_gpu = int(ok["gpu_total_mib"].notna().sum())
    vram = f"VRAM of {on_gpu} compared exactly" if on_gpu else "no VRAM (no GPU)"
    return f"{len(ok)} config(s) measured: {vram}, tok/s against their recent nights; {_ab_measured(comparisons)}"


def judge_night(tonight: pd.DataFrame, before: pd.DataFrame, configs: Mapping[str, BenchConfig],
                environments: Mapping[str, str], open_incidents: Sequence[Incident] = (), policy: Policy = Policy(),
                accepted: Sequence[Incident] = (), ab: ABRunner | None = None, more_findings: Sequence[Finding] = (),
                machine_changes: MachineChanges = lambda night: [],
                earlier_ab: Sequence[ABComparison] = ()) -> NightVerdicts:
    """The whole night's verdicts, without storing them: every check (detect_split), the same-night A/Bs tonight's
    drops and the last night's open A/Bs (`earlier_ab`) ask for (run with `ab`; configs and environments:
    config_id -> tonight's BenchConfig and environment_id), their incidents (with more_findings, e.g. the machine's),
    each new one attributed to the causes that changed, and what the night is watching, could not judge, and
    measured."""
    detection = detect_split(tonight, before, open_incidents, policy, accepted)
    abs_ = same_night_abs(ab_asks(tonight, before, policy.throughput, earlier_ab), configs, environments, ab,
                          policy.throughput)
    findings = [*detection.findings, *abs_.findings, *more_findings]
    found = reconcile(findings, open_incidents, detection.night, detection.tonight_status, policy,
                      detection.build)
    found = attributed(found, findings, detection.night, machine_changes, abs_.cleared, abs_.ratios)
    # A drop seen once that tonight's A/B found no slowdown behind, on an unchanged machine, is the night's noise:
    # the drift check still judges it tomorrow, but nobody needs to watch it.
    machine_changed = any(f.kind == Kind.ENVIRONMENT_CHANGED for f in more_findings)
    suspects = [s for s in detection.suspects if machine_changed or (s.config_id, s.metric) not in abs_.no_slowdown]
    noise = len(detection.suspects) - len(suspects)
    # Watching: a suspicion beyond chance over every test the night made (Holm at the night's error rate over each
    # series the drift check judged and each metric an A/B was asked about): with a hundred configs some series is
    # below its usual spread and some A/B leans slower every night.
    tests = [*(s.p_value for s in suspects), *(o.p_any for o in abs_.open),
             *(s.p_value for s in detection.suspects if s not in suspects), *abs_.settled_p]
    shown = screened(tests, 1 - policy.throughput.ab_confidence, detection.drift_tests + abs_.asked)
    watched = [s for s, show in zip(suspects, shown) if show]
    opened = list(zip(abs_.open, shown[len(suspects):]))
    left_open = [o.name for o, show in opened if not show]
    within_chance = len(suspects) - len(watched)
    measured = _measured(tonight, abs_.comparisons) + (
        f"; {noise} one-night drop(s) with no slowdown behind them in the A/B" if noise else "") + (
        f"; {within_chance} one-night drop(s) within the night's chance, judged tomorrow" if within_chance else "") + (
        f"; {len(left_open)} A/B figure(s) left open, not slower beyond chance, go on tomorrow" if left_open else "")
    return NightVerdicts(incidents=found, ab=abs_.comparisons, not_judged=_not_judged(tonight) + abs_.not_judged,
                         watching=_suspected(watched) + [o.watching for o, show in opened if show], measured=measured)


def _machine_changes(warehouse: Warehouse, before: pd.DataFrame, tonight: Fingerprint | None) -> MachineChanges:
    """What changed on the machine between the night before a given night (its run's results) and tonight."""
    def changes(night: str) -> list[str]:
        earlier = before[before["night"] < night]
        if tonight is None or earlier.empty:
            return []
        then = _machine(warehouse.results_for_run(str(earlier["run_id"].iloc[-1])))
        return [] if then is None else _differences(then, tonight)

    return changes


def detect_for_run(warehouse: Warehouse, run_id: str, policy: Policy = Policy(), ab: ABRunner | None = None,
                   save: bool = True) -> NightVerdicts:
    """Detect over the warehouse for one run and store its incidents and verdicts (unless save is false).

    The run's quarantined rows join tonight with status "quarantined": a config whose row failed validation is
    reported as such (when it was ok before), not as vanished, and a night quarantined whole still gets detection.
    Configs whose tok/s dropped on a changed build are rerun A/B with `ab` (none: said not judged).
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
    earlier = warehouse.verdicts(previous.run_id) if previous else None  # its open A/Bs go on tonight
    verdicts = judge_night(tonight, before, {r.config.config_id: r.config for r in tonight_results},
                           {r.config.config_id: r.fingerprint.environment_id for r in tonight_results}, open_now,
                           policy, accepted, ab, environment_findings(previous_results, tonight_results),
                           _machine_changes(warehouse, before, _machine(tonight_results)),
                           earlier.ab if earlier else ())
    if save:
        night = str(tonight["night"].iloc[0])
        environment = next(iter(warehouse.run_environments(run_id)), "")
        # the warehouse keeps an incident's columns (a twin opened tonight is updated, not added); its attribution
        # travels with the night's verdicts
        saved = [dataclasses.replace(kept, causes=i.causes, cleared=i.cleared) for i, kept in zip(
            verdicts.incidents, warehouse.save_incidents(verdicts.incidents, environment, night), strict=True)]
        verdicts = dataclasses.replace(verdicts, incidents=saved)
        warehouse.save_verdicts(run_id, verdicts)
    return verdicts


def attributed(incidents: Sequence[Incident], findings: Sequence[Finding], night: str,
               machine_changes: MachineChanges = lambda night: [], cleared: Mapping[tuple[str, str], str] = {},
               ratios: Mapping[tuple[str, str], float] = {}) -> list[Incident]:
    """Tonight's incidents, those opened or grown tonight attributed (`attribute`); the others as they were."""
    return [attribute(i, findings, night, machine_changes, cleared, ratios)
            if i.kind not in NOTE_KINDS and (i.opened_night == night or i.escalated) else i for i in incidents]
