"""The nightly's stages as plain functions: records in, records out; the one place that strings stages together.

Airflow tasks (dags/) and the CLI (`vramwatch nightly`) call these. A scheduler's task calls a stage through
`run_task`, which turns the task's JSON (XComs, params) into the records the stage's signature names and its result
back into JSON. No Airflow import here: the library runs without it. `lane` is the GPU worker's lane whose night it is
(config.Lane; a DAG passes its config.GpuWorker): Lane() for the first worker.
"""

from __future__ import annotations

import inspect
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vramwatch.config import Lane, Matrix, Paths, Policy, Prices
from vramwatch.errors import UserError
from vramwatch.progress import for_stage
from vramwatch.records import (
    ABRun,
    BenchConfig,
    BenchResult,
    BisectRequest,
    BisectResult,
    BuildCheck,
    BuildRecord,
    MeasuredNight,
    NightSummary,
    NightVerdicts,
    PruneResult,
    RunRecord,
    ValidatedNight,
    error_line,
    jsonable,
    revive,
)

if TYPE_CHECKING:
    from vramwatch.alerts.delivery import AlertChannels, Connections
    from vramwatch.regress.detect import ABRunner
    from vramwatch.report.site import PublishResult
    from vramwatch.warehouse.store import Warehouse

FIRST_LANE = Lane()


class BuildFailed(RuntimeError):
    """The build under test did not build: the night stops here, loudly, and stores no results."""


_say = for_stage("vramwatch")


def _open(warehouse: Warehouse | None) -> Warehouse:
    """The caller's warehouse, or one opened now: a task opens its own, a whole night shares one."""
    if warehouse is not None:
        return warehouse
    from vramwatch.warehouse.store import Warehouse

    return Warehouse()


def detect_build(matrix: Matrix, force: bool = False, warehouse: Warehouse | None = None,
                 lane: Lane = FIRST_LANE) -> BuildCheck:
    """Whether there is a build to bench: each GPU worker's lane benchmarks each new build once."""
    from vramwatch.builds.detect import check_for_new_build

    last = _open(warehouse).last_benchmarked_version(matrix.build.source, lane.label)
    check = check_for_new_build(matrix.build, last, force=force)
    verdict = "new build" if check.is_new else ("forced run" if check.forced else "no new build: skipping the night")
    _say(f"detect_build: latest {check.latest}, last benchmarked {check.last_benchmarked or 'none'} -> {verdict}")
    return check


def build_to_bench(matrix: Matrix, force: bool = False, lane: Lane = FIRST_LANE) -> BuildCheck | None:
    """detect_build's check when the night runs on it (a new build, or forced); None: the night is skipped."""
    check = detect_build(matrix, force, lane=lane)
    return check if check.should_run else None


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


def validate(results: list[BenchResult], night: str, build: BuildRecord, lane: Lane = FIRST_LANE,
             run_id: str = "") -> ValidatedNight:
    """Data Docs go to the run's report folder (without a run id: the night's, as before runs had folders)."""
    from vramwatch.report.write import DATA_DOCS_INDEX, run_folder
    from vramwatch.validate.gate import validate_night

    reports = lane.reports(Paths())
    data_docs = (run_folder(reports, night, run_id) if run_id else reports / night) / Path(DATA_DOCS_INDEX).parent
    validated = validate_night(results, data_docs_dir=data_docs, build_backend=build.request.backend)
    _say(f"validate: {len(validated.accepted)} accepted, {len(validated.quarantined)} quarantined")
    return validated


def store(run_id: str, night: str, build: BuildRecord, validated: ValidatedNight, trigger: str,
          warehouse: Warehouse | None = None, night_key: str | None = None, move_night: bool = False) -> str:
    """Store the night in one transaction; returns the run it is stored under (with a night_key, the run that already
    holds that measured night, if one does: under its night, or moved to this one with move_night)."""
    stored_as = _open(warehouse).store_run(run_id, night, build, validated, trigger, night_key,
                                           move_night=move_night)
    again = (f" (this measured night was stored before: its rows replaced in run {stored_as})"
             if stored_as != run_id else "")
    _say(f"store: {len(validated.accepted)} rows for run {run_id}{again}")
    return stored_as


def same_night_ab(build: BuildRecord) -> ABRunner:
    """The A/B runner detection uses: tonight's config on a previous build's engine (found on this worker by its
    llama.cpp commit) against tonight's build, interleaved; each call adds `processes` child processes a side to the
    A/B so far (regress.ab grows it while its answer is open)."""
    from vramwatch.bench.ab import run_ab
    from vramwatch.builds.engine import engine_of_commit

    def run(config: BenchConfig, previous_commit: str, processes: int, earlier: ABRun | None) -> ABRun | str:
        engine = engine_of_commit(Paths(), previous_commit, build.request.backend)
        if engine is None:
            return (f"the previous build's engine (llama.cpp {previous_commit[:8]}, {build.request.backend}) is not on "
                    f"this worker")
        _say(f"same-night A/B {config.config_name}: llama.cpp {previous_commit[:8]} (A) against "
             f"{build.llama_cpp_commit[:8]} (B), {processes} more processes each")
        return run_ab((config, engine), (config, build), processes, earlier)

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


def report(run_id: str, verdicts: NightVerdicts, warehouse: Warehouse | None = None, lane: Lane = FIRST_LANE,
           connections: Connections | None = None, refresh_latest: bool = True, prices: Prices = Prices()
           ) -> NightSummary:
    """Write the night's report, in its lane's reports folder; it says at the top when its regressions would page no
    one (alerting_notices). refresh_latest False: reports/latest.* stay as they are (the night is not the newest).
    prices: the matrix's, for the cost per million tokens."""
    from vramwatch.report.write import report_for_run

    summary = report_for_run(_open(warehouse), run_id, verdicts, lane.reports(Paths()),
                             notices=alerting_notices(connections), refresh_latest=refresh_latest,
                             prices=prices)
    _say(f"report: {summary.report_md}")
    return summary


def publish(out: str | None = None, warehouse: Warehouse | None = None) -> PublishResult:
    """Bring the static site (vramwatch.report.site) up to date with the warehouse: every lane's nights in one site,
    under the reports folder's site/ unless `out` names another folder."""
    from vramwatch.report.site import publish as publish_site

    result = publish_site(_open(warehouse), Path(out) if out else site_folder())
    _say(f"publish: {result.line()}")
    return result


def site_folder(reports: Path | None = None) -> Path:
    """Where the nightly publishes the site, and the Airflow plugin serves it from: <reports>/site."""
    return (reports or Paths().reports) / "site"


def alert_channels(connections: Connections | None = None) -> AlertChannels:
    """The alert channels: the environment's, each replaced by its connection where the DAG passes one (the Airflow
    connections plugins/alert_connections.py reads in the task: this module imports no Airflow)."""
    from vramwatch.alerts.delivery import AlertChannels, Connections

    return AlertChannels.from_env(connections or Connections())


def alerting_notices(connections: Connections | None = None) -> list[str]:
    """What the report must say first about alerting: that no channel is configured, or that the settings are
    unusable (their one-line error, which never holds a secret); nothing when channels are on."""
    from vramwatch.alerts.delivery import NO_CHANNEL

    try:
        channels = alert_channels(connections)
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


def report_again(run_id: str | None = None, night: str | None = None, matrix: Matrix | None = None) -> NightSummary:
    """Write a stored run's report again (its night's latest run, or the latest run with results), with the verdicts
    the night stored (an older run without them is judged again by the matrix's policy, storing nothing), and the
    matrix's prices for the cost sections (none without a matrix)."""
    warehouse = _open(None)
    run = stored_run(warehouse, run_id, night)
    policy, prices = (matrix.policy, matrix.prices) if matrix else (Policy(), Prices())
    verdicts = warehouse.verdicts(run.run_id) or detect_regressions(run.run_id, policy, warehouse, save=False)
    return report(run.run_id, verdicts, warehouse, prices=prices)


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
           stage_seconds: dict[str, float] | None = None, ab: ABRunner | None = None,
           move_night: bool = False, prices: Prices = Prices()) -> NightSummary:
    """The CPU half of a night: what the DAG does after the bench tasks. Each stage's wall time is said and, when the
    caller passes a dict, recorded in it (measure records the GPU half's in MeasuredNight.stage_seconds). policy and
    prices: the matrix's, to judge the night and price its tokens.

    A measured night stored before keeps its run, and its night: another `night` is refused (NightHeldElsewhere)
    unless move_night, which moves it and removes its report from the old night's folder."""
    from vramwatch.warehouse.store import NightHeldElsewhere

    seconds = {} if stage_seconds is None else stage_seconds
    warehouse = _open(None)
    night_key = measured.night_key()
    held_by, held_night = warehouse.held_night(night_key) or (run_id, None)
    moved_from = held_night if held_night not in (None, night[:10]) else None
    if moved_from and not move_night:  # refused before validation writes Data Docs under the wrong night
        raise NightHeldElsewhere(held_by, moved_from, night[:10])
    validated_as = held_by  # whose folder the night's Data Docs go to: the run that holds the night, else this one
    with _timed(seconds, "validate"):
        try:
            validated = validate(measured.results, night, measured.build, run_id=validated_as)
        except Exception as exc:  # the night stays on record, with its build, as failed: store_run never ran
            warehouse.mark_failed(run_id, night, measured.build, trigger,
                                  error_line(f"validation failed: {type(exc).__name__}: {exc}"))
            raise
    with _timed(seconds, "store"):
        run_id = store(run_id, night, measured.build, validated, trigger, warehouse, night_key, move_night)
    if run_id != validated_as:  # an ingest of this night beside ours stored it first: its folder has the Data Docs
        _remove_report_folder(night, validated_as)
    if moved_from:
        _say(f"store: night moved from {moved_from} to {night[:10]} (run {run_id}, --move-night)")
        _leave_night(warehouse, moved_from, run_id)
    with _timed(seconds, "detect_regressions"):
        verdicts = detect_regressions(run_id, policy, warehouse, build=measured.build, ab=ab)
    with _timed(seconds, "report"):
        summary = report(run_id, verdicts, warehouse, prices=prices)
    with _timed(seconds, "alert"):
        alert(summary)
    return summary


def _remove_report_folder(night: str, run_id: str) -> None:
    from vramwatch.report.write import run_folder

    shutil.rmtree(run_folder(Paths().reports, night, run_id), ignore_errors=True)


def _leave_night(warehouse: Warehouse, night: str, run_id: str) -> None:
    """A run moved off `night`: its report folder there goes; the night's latest becomes its newest remaining run's
    report, or the night's folder goes with its last run."""
    remaining = warehouse.latest_run(night, lane="")
    if remaining is None:
        shutil.rmtree(Paths().reports / night, ignore_errors=True)
        _say(f"store: removed the report folder of night {night}, which holds no run now")
        return
    _remove_report_folder(night, run_id)
    verdicts = warehouse.verdicts(remaining.run_id) or detect_regressions(remaining.run_id, Policy(), warehouse,
                                                                          save=False)
    report(remaining.run_id, verdicts, warehouse, refresh_latest=False)
    _say(f"store: removed run {run_id}'s report from night {night}, whose latest is run {remaining.run_id} now")


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


def alert(summary: NightSummary, lane: Lane = FIRST_LANE, connections: Connections | None = None) -> int:
    """Page on the night's new incidents; a retry pages only the channels that have not taken the alert yet. With no
    channel configured it logs a WARNING (and the night's delivery log records it for the UI's page).
    connections: the Airflow connections the DAG read in the task (never an XCom: they hold secrets)."""
    from vramwatch.alerts.delivery import DeliveryLog, send_alerts

    sent = send_alerts(summary, alert_channels(connections),
                       DeliveryLog.for_night(lane.reports(Paths()), summary.night))
    _say(f"alert: {sent} alert(s) sent")
    return sent


def failure_alert(context: dict[str, Any], lane: Lane = FIRST_LANE, connections: Connections | None = None) -> int:
    """A DAG's failure callback: a night that did not finish alerts where regressions do."""
    from vramwatch.alerts.delivery import DeliveryLog, deliver
    from vramwatch.alerts.messages import failure_from_context

    failure = failure_from_context(context)
    log = DeliveryLog.for_night(lane.reports(Paths()), failure.payload["night"])
    return deliver(failure, alert_channels(connections), log)


def prune(matrix: Matrix, dry_run: bool = False) -> PruneResult:
    """Remove what builds used before the last keep_builds left on this worker's disk: engines, wheels, models."""
    from vramwatch.prune import prune as prune_disk

    return prune_disk(Paths(), matrix.keep_builds, dry_run=dry_run)


def prune_reports(matrix: Matrix, dry_run: bool = False, lane: Lane = FIRST_LANE) -> PruneResult:
    """Remove GX Data Docs of nights before the newest keep_data_docs from the lane's reports; summaries stay."""
    from vramwatch.prune import prune_data_docs

    return prune_data_docs(lane.reports(Paths()), matrix.keep_data_docs, dry_run=dry_run)


def bisections_to_start(verdicts: NightVerdicts, matrix: Matrix, run_id: str, warehouse: Warehouse | None = None
                        ) -> list[BisectRequest]:
    """The llamacpp_bisect DAG's conf for each incident opened tonight (run `run_id`) that a bisection can explain
    (vramwatch.bisect.incidents says which, and between which builds)."""
    from vramwatch.bisect.incidents import bisections_to_start as requests_for

    releases = {run.llama_cpp_commit: run.build_version for run in _open(warehouse).runs()}
    return requests_for(verdicts, matrix, run_id, releases)


def bisect(matrix: Matrix, request: BisectRequest) -> BisectResult:
    """The bisection stage (vramwatch.bisect.run): on the worker that builds and benches."""
    from vramwatch.bisect.run import run_bisect

    return run_bisect(matrix, request)


def store_bisection(result: BisectResult, request: BisectRequest, warehouse: Warehouse | None = None,
                    lane: Lane = FIRST_LANE, connections: Connections | None = None) -> str:
    """Keep a bisection's result: as JSON under the lane's reports, in bisect/, on its incident (request.incident_id,
    when it has one), and in an alert (the regression alert's follow-up). request.run_id: the night that opened the
    incident, whose report is written again with the result (reports/latest.* too, while that night is still the
    lane's newest). Returns the JSON's path."""
    from vramwatch.alerts.delivery import DeliveryLog, deliver
    from vramwatch.alerts.messages import bisection_alert

    incident_id, run_id = request.incident_id, request.run_id
    reports = lane.reports(Paths())
    name = f"{result.started_at.replace(':', '')}-{incident_id or 'manual'}.json"
    out = reports / "bisect" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.to_json(indent=2) + "\n")
    if incident_id is not None:
        warehouse = _open(warehouse)
        warehouse.save_bisection(incident_id, result)
        verdicts = warehouse.verdicts(run_id) if run_id else None
        if verdicts is not None:
            newest = warehouse.latest_run(lane=lane.label)
            report(run_id, verdicts, warehouse, lane, connections,
                   refresh_latest=newest is not None and newest.run_id == run_id)
    deliver(bisection_alert(result, incident_id), alert_channels(connections),
            DeliveryLog.for_night(reports, result.started_at[:10]))
    _say(f"bisect: {result.headline()} -> {out}")
    return str(out)


# ------------------------------------------------------------------------- the scheduler's one adapter


def run_task(stage: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call a stage from a scheduler's task, which passes records as JSON (XComs, params, a DAG run's conf): each
    argument that arrives as a dict or a list becomes what the stage's type hint for it names (a record, a list of
    records), and the result goes back as JSON. Arguments that are already what the stage takes (a Matrix, a Lane,
    the alert connections, a run id) pass as they are."""
    signature = inspect.signature(stage)
    bound = signature.bind(*args, **kwargs)
    for name, value in bound.arguments.items():
        if isinstance(value, (dict, list)):
            bound.arguments[name] = revive(_hint(stage, signature.parameters[name]), value)
    return jsonable(stage(*bound.args, **bound.kwargs))


def _hint(stage: Callable[..., Any], parameter: inspect.Parameter) -> Any:
    """A parameter's type, its annotation evaluated where the stage was written. Only the parameters a task passes
    JSON to are evaluated: the others may name types imported for type checking alone (Warehouse)."""
    annotation = parameter.annotation
    return eval(annotation, stage.__globals__) if isinstance(annotation, str) else annotation


def config_name_of(config: dict[str, Any]) -> str:
    """What a scheduler calls a bench task: its config's name (model/quant/mode)."""
    return BenchConfig.from_dict(config).config_name
