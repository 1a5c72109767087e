"""The nightly's stages as plain functions: JSON-able in, JSON-able out.

This is the one adapter between the library and a scheduler. Airflow tasks (dags/llamacpp_nightly.py) and the CLI
(`vramwatch nightly`) call these; each turns dicts back into records, calls its stage, and hands a dict on. No
Airflow import here: the library runs without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vramwatch.config import Matrix, Paths, Policy, load_matrix
from vramwatch.errors import UserError
from vramwatch.progress import for_stage
from vramwatch.records import (
    ABRun,
    BenchConfig,
    BenchResult,
    BisectResult,
    BuildCheck,
    BuildRecord,
    IncidentKind,
    MeasuredNight,
    NightSummary,
    NightVerdicts,
    PruneResult,
    RunRecord,
    ValidatedNight,
)

if TYPE_CHECKING:
    from vramwatch.alerts.delivery import AlertChannels
    from vramwatch.regress.detect import ABRunner
    from vramwatch.warehouse.store import Warehouse


class BuildFailed(RuntimeError):
    """The build under test did not build: the night stops here, loudly, and stores no results."""


_say = for_stage("vramwatch")


def _open(warehouse: Warehouse | None) -> Warehouse:
    """The caller's warehouse, or one opened now: a task opens its own, a whole night shares one."""
    if warehouse is not None:
        return warehouse
    from vramwatch.warehouse.store import Warehouse

    return Warehouse()


def detect_build(matrix: Matrix, force: bool = False, warehouse: Warehouse | None = None, lane: str = "") -> BuildCheck:
    """`lane`: the GPU worker's label (config.GpuWorker): each worker benchmarks each new build once."""
    from vramwatch.builds.detect import check_for_new_build

    last = _open(warehouse).last_benchmarked_version(matrix.build.source, lane)
    check = check_for_new_build(matrix.build, last, force=force)
    verdict = "new build" if check.is_new else ("forced run" if check.forced else "no new build: skipping the night")
    _say(f"detect_build: latest {check.latest}, last benchmarked {check.last_benchmarked or 'none'} -> {verdict}")
    return check


def build_engine(matrix: Matrix, version: str, record_build: bool = True) -> BuildRecord:
    """Build (or reuse) the engine. Every attempt is recorded, failures too, unless the caller has no warehouse
    (a GPU worker running `vramwatch measure`: ingest records the build later)."""
    from vramwatch.builds.engine import build_engine as build

    record = build(matrix.build, version, Paths())
    if record_build:
        _open(None).store_build(record)
    if not record.ok:
        raise BuildFailed(f"build {record.request.key} failed: {record.error}")
    return record


def prepare_models(matrix: Matrix, build: BuildRecord) -> list[BenchConfig]:
    from vramwatch.models.prepare import prepare_models as prepare

    configs = [config for entry, model in prepare(matrix, build, Paths())
               for config in matrix.bench_configs(model, entry)]
    _say(f"prepare_models: {len(configs)} bench configs")
    return configs


def bench(config: BenchConfig, build: BuildRecord) -> BenchResult:
    from vramwatch.bench.runner import run_config

    result = run_config(config, build)
    _say(f"bench {config.config_id}: {result.status}" + (f" ({result.error})" if result.error else ""))
    return result


def validate(results: list[BenchResult], night: str, build: BuildRecord, lane: str = "") -> ValidatedNight:
    from vramwatch.report.write import DATA_DOCS_INDEX, save_validation
    from vramwatch.validate.gate import validate_night

    reports = Paths().reports / lane
    data_docs = (reports / night / DATA_DOCS_INDEX).parent
    validated = validate_night(results, data_docs_dir=data_docs, build_backend=build.request.backend)
    save_validation(reports, night, validated.expectations)  # the report, another task, shows them
    _say(f"validate: {len(validated.accepted)} accepted, {len(validated.quarantined)} quarantined")
    return validated


def store(run_id: str, night: str, build: BuildRecord, validated: ValidatedNight, trigger: str,
          warehouse: Warehouse | None = None, night_key: str | None = None) -> str:
    """Store the night in one transaction; returns the run it is stored under (with a night_key, the run that already
    holds that measured night, if one does)."""
    stored_as = _open(warehouse).store_run(run_id, night, build, validated, trigger, night_key)
    again = (f" (this measured night was stored before: its rows replaced in run {stored_as})"
             if stored_as != run_id else "")
    _say(f"store: {len(validated.accepted)} rows for run {run_id}{again}")
    return stored_as


def same_night_ab(build: BuildRecord) -> ABRunner:
    """The A/B runner detection uses: tonight's config on a previous build's engine (found on this worker by its
    llama.cpp commit) against tonight's build, interleaved; each call adds `processes` child processes a side to the
    A/B so far (regress.ab grows it while its answer is open)."""
    from vramwatch.bench.ab import run_ab
    from vramwatch.builds.engine import list_builds

    def run(config: BenchConfig, previous_commit: str, processes: int, earlier: ABRun | None) -> ABRun | str:
        engines = [b for b in list_builds(Paths()) if b.ok and b.llama_cpp_commit == previous_commit
                   and b.request.backend == build.request.backend and Path(b.python).exists()]
        if not engines:
            return (f"the previous build's engine (llama.cpp {previous_commit[:8]}, {build.request.backend}) is not on "
                    f"this worker")
        _say(f"same-night A/B {config.config_name}: llama.cpp {previous_commit[:8]} (A) against "
             f"{build.llama_cpp_commit[:8]} (B), {processes} more processes each")
        return run_ab((config, engines[0]), (config, build), processes, earlier)

    return run


def detect_regressions(run_id: str, policy: Policy, warehouse: Warehouse | None = None, save: bool = True,
                       build: BuildRecord | None = None, ab: ABRunner | None = None) -> NightVerdicts:
    """Tonight's verdicts for a stored run. With tonight's build (on the worker that has the engines), a build change
    in tok/s is rerun A/B (or with `ab`, an A/B runner of the caller's); save False stores nothing."""
    from vramwatch.regress.detect import detect_for_run

    if ab is None and build is not None:
        ab = same_night_ab(build)
    verdicts = detect_for_run(_open(warehouse), run_id, policy, ab=ab, save=save)
    incidents = verdicts.incidents
    _say(f"detect_regressions: {sum(i.pages for i in incidents)} paging, "
         f"{sum(not i.is_closed for i in incidents)} open, {len(verdicts.ab)} A/B, "
         f"{len(verdicts.not_judged)} check(s) not judged")
    return verdicts


def report(run_id: str, verdicts: NightVerdicts, warehouse: Warehouse | None = None, lane: str = "",
           smtp_connection: Any = None, refresh_latest: bool = True) -> NightSummary:
    """Write the night's report; it says at the top when its regressions would page no one (alerting_notices).
    `lane`: a GPU worker's label; its reports go under the reports folder's `<lane>/` (the first worker's: "").
    refresh_latest False: reports/latest.* stay as they are (the night is not the newest)."""
    from vramwatch.report.write import report_for_run

    summary = report_for_run(_open(warehouse), run_id, verdicts, Paths().reports / lane,
                             notices=alerting_notices(smtp_connection), refresh_latest=refresh_latest)
    _say(f"report: {summary.report_md}")
    return summary


def alert_channels(smtp_connection: Any = None) -> AlertChannels:
    """The alert channels: the environment's, with the SMTP server of an Airflow connection when the DAG passes one
    (any object with host, port, login, password and extra_dejson: this module imports no Airflow)."""
    from vramwatch.alerts.delivery import AlertChannels, SmtpSettings

    smtp = SmtpSettings.from_connection(smtp_connection) if smtp_connection is not None else None
    return AlertChannels.from_env(smtp)


def alerting_notices(smtp_connection: Any = None) -> list[str]:
    """What the report must say first about alerting: that no channel is configured, or that the settings are
    unusable (their one-line error, which never holds a secret); nothing when channels are on."""
    from vramwatch.alerts.delivery import NO_CHANNEL

    try:
        channels = alert_channels(smtp_connection)
    except UserError as error:
        return [f"Alerts cannot be sent: {error.message} (fix: {error.fix})."]
    return [] if channels.names else [f"Alerts are off: {NO_CHANNEL}."]


def stored_run(warehouse: Warehouse, run_id: str | None = None, night: str | None = None) -> RunRecord:
    """The run a command asked for (by id, or a night's latest), else the latest that stored results."""
    run = warehouse.run(run_id) if run_id else warehouse.latest_run(night)
    if run is None or not run.n_results:
        wanted = f"run {run_id}" if run_id else f"night {night}" if night else "any run"
        raise UserError(f"the warehouse holds no results for {wanted}", "run the nightly first, or pick another run")
    return run


def report_again(run_id: str | None = None, night: str | None = None) -> NightSummary:
    """Write a stored run's report again (its night's latest run, or the latest run with results), with the verdicts
    the night stored (an older run without them is judged again, storing nothing)."""
    warehouse = _open(None)
    run = stored_run(warehouse, run_id, night)
    verdicts = warehouse.verdicts(run.run_id) or detect_regressions(run.run_id, Policy(), warehouse, save=False)
    return report(run.run_id, verdicts, warehouse)


def measure(matrix: Matrix, version: str, models: list[str] | None = None) -> MeasuredNight:
    """The GPU half of a night in one process: build, prepare models, bench every config; timed per stage."""
    if models:
        unknown = set(models) - {m.name for m in matrix.models}
        if unknown:
            raise UserError(f"not in matrix {matrix.name}: {sorted(unknown)}",
                            f"choose from {[m.name for m in matrix.models]}")
        matrix = matrix.model_copy(update={"models": [m for m in matrix.models if m.name in models]})
    stage_seconds: dict[str, float] = {}
    with _timed(stage_seconds, "build_engine"):
        build = build_engine(matrix, version, record_build=False)
    with _timed(stage_seconds, "prepare_models"):
        configs = prepare_models(matrix, build)
    with _timed(stage_seconds, "bench"):
        results = [bench(config, build) for config in configs]
    return MeasuredNight(build=build, results=results, stage_seconds=stage_seconds)


def ingest(measured: MeasuredNight, run_id: str, night: str, trigger: str, policy: Policy = Policy(),
           stage_seconds: dict[str, float] | None = None, ab: ABRunner | None = None) -> NightSummary:
    """The CPU half of a night: what the DAG does after the bench tasks. Each stage's wall time is said and, when the
    caller passes a dict, recorded in it (measure records the GPU half's in MeasuredNight.stage_seconds)."""
    seconds = {} if stage_seconds is None else stage_seconds
    warehouse = _open(None)
    with _timed(seconds, "validate"):
        try:
            validated = validate(measured.results, night, measured.build)
        except Exception as exc:  # the night stays on record, with its build, as failed: store_run never ran
            warehouse.mark_failed(run_id, night, measured.build, trigger, f"validation failed: {type(exc).__name__}: "
                                                                           f"{' '.join(str(exc).split())[:300]}")
            raise
    with _timed(seconds, "store"):
        run_id = store(run_id, night, measured.build, validated, trigger, warehouse, night_key=measured.night_key())
    with _timed(seconds, "detect_regressions"):
        verdicts = detect_regressions(run_id, policy, warehouse, build=measured.build, ab=ab)
    with _timed(seconds, "report"):
        summary = report(run_id, verdicts, warehouse)
    with _timed(seconds, "alert"):
        alert(summary)
    return summary


def one_line(summary: NightSummary) -> str:
    new = sum(i.is_new for i in summary.incidents)
    return (f"night {summary.night}: {summary.n_results} results, {summary.n_quarantined} quarantined, "
            f"{new} new incident(s) -> {summary.report_md}")


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    seconds[stage] = round(time.monotonic() - start, 1)
    _say(f"{stage}: {seconds[stage]:.1f} s")


def alert(summary: NightSummary, lane: str = "", smtp_connection: Any = None) -> int:
    """Page on the night's new incidents; a retry pages only the channels that have not taken the alert yet. With no
    channel configured it logs a WARNING (and the night's delivery log records it for the UI's page)."""
    from vramwatch.alerts.delivery import DeliveryLog, send_alerts

    sent = send_alerts(summary, alert_channels(smtp_connection),
                       DeliveryLog.for_night(Paths().reports / lane, summary.night))
    _say(f"alert: {sent} alert(s) sent")
    return sent


def prune(matrix: Matrix, dry_run: bool = False) -> PruneResult:
    """Remove what builds used before the last keep_builds left on this worker's disk: engines, wheels, models."""
    from vramwatch.prune import prune as prune_disk

    return prune_disk(Paths(), matrix.keep_builds, dry_run=dry_run)


def prune_reports(matrix: Matrix, dry_run: bool = False, lane: str = "") -> PruneResult:
    """Remove GX Data Docs of nights before the newest keep_data_docs from the reports folder; summaries stay."""
    from vramwatch.prune import prune_data_docs

    return prune_data_docs(Paths().reports / lane, matrix.keep_data_docs, dry_run=dry_run)


# The incidents a bisection can explain: a buffer or a speed that changed between two builds.
BISECTABLE = (IncidentKind.VRAM, IncidentKind.THROUGHPUT)


def bisections_to_start(verdicts: NightVerdicts, matrix: Matrix, run_id: str, warehouse: Warehouse | None = None
                        ) -> list[dict[str, Any]]:
    """The llamacpp_bisect DAG's conf for each incident opened tonight (run `run_id`) that a bisection can explain:
    its first config, between the builds the incident names (their releases, or their llama.cpp commits for a git
    source), and the run whose report shows the result once it is stored."""
    level = "commit" if matrix.build.source == "git" else "release"
    releases = {run.llama_cpp_commit: run.build_version for run in _open(warehouse).runs()}
    confs = []
    for incident in verdicts.incidents:
        if not (incident.is_new and incident.pages and incident.kind in BISECTABLE and incident.incident_id):
            continue
        ends = (incident.build_before, incident.build_after)
        good, bad = ends if level == "commit" else (releases.get(ends[0]), releases.get(ends[1]))
        if not (good and bad) or good == bad:
            _say(f"bisect: incident #{incident.incident_id} lies between no two known {level}s ({good} -> {bad}): "
                 "not bisected")
            continue
        confs.append({"incident_id": incident.incident_id, "config": incident.configs[0], "good": good, "bad": bad,
                      "level": level, "metric": incident.metric, "run_id": run_id})
    _say(f"bisect: {len(confs)} new incident(s) to bisect")
    return confs


def bisect(matrix: Matrix, config: str, good: str, bad: str, level: str = "release", metric: str = "gpu_compute_mib",
           repository: str = "") -> BisectResult:
    """The bisection stage (vramwatch.bisect.run): on the worker that builds and benches."""
    from vramwatch.bisect.run import run_bisect

    return run_bisect(matrix, config, good, bad, level=level, metric=metric,  # type: ignore[arg-type]
                      repository=repository)


def store_bisection(result: BisectResult, incident_id: int | None, warehouse: Warehouse | None = None,
                    lane: str = "", smtp_connection: Any = None, run_id: str = "") -> str:
    """Keep a bisection's result: as JSON under reports/bisect/ (a GPU worker's lane: reports/<lane>/bisect/), on its
    incident (when it has one), and in an alert (the regression alert's follow-up). `run_id`: the night that opened
    the incident, whose report is written again with the result (reports/latest.* too, while that night is still the
    lane's newest). Returns the JSON's path."""
    from vramwatch.alerts.delivery import DeliveryLog, deliver
    from vramwatch.alerts.messages import bisection_alert

    reports = Paths().reports / lane
    name = f"{result.started_at.replace(':', '')}-{incident_id or 'manual'}.json"
    out = reports / "bisect" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.to_json(indent=2) + "\n")
    if incident_id is not None:
        warehouse = _open(warehouse)
        warehouse.save_bisection(incident_id, result)
        verdicts = warehouse.verdicts(run_id) if run_id else None
        if verdicts is not None:
            newest = warehouse.latest_run(lane=lane)
            report(run_id, verdicts, warehouse, lane, smtp_connection,
                   refresh_latest=newest is not None and newest.run_id == run_id)
    deliver(bisection_alert(result, incident_id), alert_channels(smtp_connection),
            DeliveryLog.for_night(reports, result.started_at[:10]))
    _say(f"bisect: {result.headline()} -> {out}")
    return str(out)


# ------------------------------------------------------------------------- dict adapters for scheduler tasks
# Airflow passes XComs as JSON; these wrap the stages above with record <-> dict conversion and nothing else.
# `lane` is the GPU worker's label (config.GpuWorker) whose night it is: "" for the first worker.


def task_detect_build(matrix_name: str, force: bool, lane: str = "") -> dict[str, Any] | None:
    check = detect_build(load_matrix(matrix_name), force, lane=lane)
    return check.to_dict() if check.should_run else None


def task_build_engine(matrix_name: str, check: dict[str, Any]) -> dict[str, Any]:
    return build_engine(load_matrix(matrix_name), BuildCheck.from_dict(check).latest).to_dict()


def task_prepare_models(matrix_name: str, build: dict[str, Any]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in prepare_models(load_matrix(matrix_name), BuildRecord.from_dict(build))]


def config_name_of(config: dict[str, Any]) -> str:
    """What a scheduler calls a bench task: its config's name (model/quant/mode)."""
    return BenchConfig.from_dict(config).config_name


def task_bench(config: dict[str, Any], build: dict[str, Any]) -> dict[str, Any]:
    return bench(BenchConfig.from_dict(config), BuildRecord.from_dict(build)).to_dict()


def task_validate(results: list[dict[str, Any]], night: str, build: dict[str, Any], lane: str = "") -> dict[str, Any]:
    return validate([BenchResult.from_dict(r) for r in results], night, BuildRecord.from_dict(build), lane).to_dict()


def task_store(run_id: str, night: str, build: dict[str, Any], validated: dict[str, Any], trigger: str) -> int:
    """The DAG's store: its run id is the DAG run's, so a retried task replaces that run's rows (no night_key)."""
    validated_night = ValidatedNight.from_dict(validated)
    store(run_id, night, BuildRecord.from_dict(build), validated_night, trigger)
    return len(validated_night.accepted)


def task_detect_regressions(matrix_name: str, run_id: str, build: dict[str, Any]) -> dict[str, Any]:
    return detect_regressions(run_id, load_matrix(matrix_name).policy, build=BuildRecord.from_dict(build)).to_dict()


def task_report(run_id: str, verdicts: dict[str, Any], lane: str = "", smtp_connection: Any = None) -> dict[str, Any]:
    return report(run_id, NightVerdicts.from_dict(verdicts), lane=lane, smtp_connection=smtp_connection).to_dict()


def task_alert(summary: dict[str, Any], lane: str = "", smtp_connection: Any = None) -> int:
    """smtp_connection: the Airflow SMTP connection the DAG read in the task (never an XCom: it holds a password)."""
    return alert(NightSummary.from_dict(summary), lane, smtp_connection)


def task_failure_alert(context: dict[str, Any], lane: str = "", smtp_connection: Any = None) -> int:
    """The DAG's failure callback: a night that did not finish alerts where regressions do."""
    from vramwatch.alerts.delivery import DeliveryLog, deliver
    from vramwatch.alerts.messages import failure_from_context

    failure = failure_from_context(context)
    log = DeliveryLog.for_night(Paths().reports / lane, failure.payload["night"])
    return deliver(failure, alert_channels(smtp_connection), log)


def task_prune(matrix_name: str) -> dict[str, Any]:
    return prune(load_matrix(matrix_name)).to_dict()


def task_prune_reports(matrix_name: str, lane: str = "") -> dict[str, Any]:
    return prune_reports(load_matrix(matrix_name), lane=lane).to_dict()


def task_bisect(matrix_name: str, params: dict[str, Any]) -> dict[str, Any]:
    return bisect(load_matrix(matrix_name), params["config"], params["good"], params["bad"],
                  params.get("level") or "release", params.get("metric") or "gpu_compute_mib",
                  params.get("repository") or "").to_dict()


def task_store_bisection(result: dict[str, Any], incident_id: int | None, lane: str = "",
                         smtp_connection: Any = None, run_id: str = "") -> str:
    return store_bisection(BisectResult.from_dict(result), incident_id, lane=lane, smtp_connection=smtp_connection,
                           run_id=run_id)


def task_bisections_to_start(matrix_name: str, verdicts: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    return bisections_to_start(NightVerdicts.from_dict(verdicts), load_matrix(matrix_name), run_id)
