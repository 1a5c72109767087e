"""The CPU half of a night (pipeline.ingest: validate, store, detect, report, alert) on a real SQLite warehouse."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from support.receivers import HttpReceiver, serving, stop
from support.samples import bisection, night, replace

from vramwatch import pipeline
from vramwatch.config import BuildSource, GpuWorker, Lane, load_matrix
from vramwatch.records import (
    ENERGY_PREDATES_WORKER,
    BisectRequest,
    BisectResult,
    BuildRecord,
    BuildRequest,
    IncidentKind,
    MeasuredNight,
    NightVerdicts,
)
from vramwatch.warehouse.store import Warehouse

BASELINE = "deepseek-moe-16b/Q4_K_M/baseline"
# What an older worker stored once llama.cpp reworded its buffer lines: nothing parsed, every figure 0, ok status.
UNPARSED = dict(memory__buffers_mib={}, memory__source_lines={}, memory__gpu_model_mib=0.0, memory__gpu_kv_mib=0.0,
                memory__gpu_compute_mib=0.0, memory__gpu_output_mib=0.0, memory__host_model_mib=0.0,
                memory__host_kv_mib=0.0, memory__host_compute_mib=0.0)


@pytest.fixture
def warehouse_url(sqlite_warehouse_url, tmp_path, monkeypatch) -> str:
    url = sqlite_warehouse_url
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    for channel in ("WEBHOOK", "SMTP", "EMAIL_TO", "SLACK_WEBHOOK"):
        monkeypatch.delenv(f"VRAMWATCH_ALERT_{channel}", raising=False)
    return url


def _measured(commit: str, built_at: str, unparsed_baseline: bool, tmp_path: Path) -> MeasuredNight:
    """A CUDA night of DeepSeek Q4_K_M (baseline + offload), through the JSON file `vramwatch ingest` reads."""
    build = BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="", source_dir="",
                        llama_cpp_python_version="0.3.36", llama_cpp_commit=commit, built_at=built_at)
    results = [replace(r, **UNPARSED) if unparsed_baseline and r.config.config_name == BASELINE else r
               for r in night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))]
    path = tmp_path / f"{commit}.json"
    path.write_text(MeasuredNight(build=build, results=results).to_json())
    return MeasuredNight.from_json(path.read_text())


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_night_whose_buffers_did_not_parse_is_quarantined_never_a_vram_change(warehouse_url, tmp_path):
    first = _measured("e3a74b29", "2026-01-01T01:00:00+00:00", unparsed_baseline=False, tmp_path=tmp_path)
    second = _measured("0c1e57098", "2026-01-02T01:00:00+00:00", unparsed_baseline=True, tmp_path=tmp_path)

    pipeline.ingest(first, "run1", "2026-01-01", trigger="test")
    summary = pipeline.ingest(second, "run2", "2026-01-02", trigger="test")

    warehouse = Warehouse(warehouse_url)
    try:
        (quarantined,) = warehouse.quarantined_for_run("run2")
        stored = warehouse.history()
        outcomes = {outcome.name: outcome.success for outcome in warehouse.expectations("run2")}
    finally:
        warehouse.close()
    assert outcomes["buffers_parsed"] is False and outcomes["config_unique"] is True  # kept with the run
    assert quarantined.result.config.config_name == BASELINE
    assert {"buffers_parsed", "gpu_model_buffer_measured"} <= set(quarantined.failed_expectations)
    tonight = stored[stored["run_id"] == "run2"]
    assert list(tonight["config_name"]) == ["deepseek-moe-16b/Q4_K_M/offload"]  # the zeros never stored as ok
    assert summary.n_quarantined == 1
    # the zeros are no "VRAM improved -100%" (nor its reverse the night after): the row is reported as quarantined
    assert IncidentKind.VRAM_IMPROVED not in {i.kind for i in summary.incidents}
    assert not any("VRAM improved" in i.summary for i in summary.incidents)
    assert "VRAM improved" not in Path(summary.report_md).read_text()
    (flagged,) = [i for i in summary.incidents if i.kind == IncidentKind.QUARANTINED]
    assert flagged.configs == [quarantined.result.config.config_id] and "buffers_parsed" in flagged.summary

    # the parser fixed, the next night measures the baseline again: no zero reference, so no +10 GiB page
    third = _measured("b7a3f21c0", "2026-01-03T01:00:00+00:00", unparsed_baseline=False, tmp_path=tmp_path)
    after_fix = pipeline.ingest(third, "run3", "2026-01-03", trigger="test")
    assert not {IncidentKind.VRAM, IncidentKind.VRAM_IMPROVED} & {i.kind for i in after_fix.incidents}


def test_a_gpu_night_measured_before_energy_readings_ingests_whole_and_says_why_it_has_no_energy(warehouse_url):
    """A GPU worker upgrades later than the ingest side: its nights carry no energy at all. They are measurements
    all the same (no row quarantined for energy), and each row says why its energy is absent."""
    raw = Path(__file__).resolve().parents[2] / "docs" / "results" / "raw" / "2026-11-29-h200-two-releases"
    measured = MeasuredNight.from_json((raw / "measure-0.3.36.json").read_text())
    assert all(r.energy.gpu_reason == ENERGY_PREDATES_WORKER for r in measured.results)

    summary = pipeline.ingest(measured, "run1", "2026-01-01", trigger="test")

    warehouse = Warehouse(warehouse_url)
    try:
        stored = warehouse.history()
    finally:
        warehouse.close()
    assert summary.n_quarantined == 0 and len(stored) == sum(r.ok for r in measured.results) > 0
    assert stored["pp_j_per_tok"].isna().all() and (stored["energy_note"] == ENERGY_PREDATES_WORKER).all()


def test_a_night_whose_validation_crashes_is_on_record_as_failed_with_its_build(warehouse_url, tmp_path, monkeypatch):
    """Fault: validation itself crashes (here the reports folder is a file, so Data Docs cannot be written). The
    build is stored once, inside the night's store, which never ran: the run is still recorded with its build and
    the reason, as failed, so the next night benches that build again instead of taking it as done."""
    measured = _measured("e3a74b29", "2026-01-01T01:00:00+00:00", unparsed_baseline=False, tmp_path=tmp_path)
    not_a_folder = tmp_path / "reports-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(not_a_folder))

    with pytest.raises(NotADirectoryError):
        pipeline.ingest(measured, "run1", "2026-01-01", trigger="test")

    warehouse = Warehouse(warehouse_url)
    try:
        run = warehouse.run("run1")
        assert warehouse.last_benchmarked_version("pypi") is None
    finally:
        warehouse.close()
    assert (run.status, run.n_results, run.llama_cpp_commit) == ("failed", 0, "e3a74b29")
    assert run.error.startswith("validation failed: NotADirectoryError") and "\n" not in run.error


def _release_night(version: str, commit: str, compute_growth: float) -> MeasuredNight:
    build = BuildRecord(request=BuildRequest(version=version, backend="cuda"), status="ok", python="", source_dir="",
                        llama_cpp_python_version=version, llama_cpp_commit=commit, built_at=f"{commit}-built")
    results = [replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + compute_growth,
                       fingerprint__llama_cpp_commit=commit) if r.config.config_name == BASELINE else r
               for r in night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))]
    return MeasuredNight(build=build, results=results)


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_new_vram_incident_asks_for_a_release_bisection_between_its_two_builds(warehouse_url, tmp_path):
    pipeline.ingest(_release_night("0.3.30", "a" * 40, 0.0), "run1", "2026-01-01", trigger="test")
    summary = pipeline.ingest(_release_night("0.3.36", "f" * 40, 24.13), "run2", "2026-01-02", trigger="test")
    (incident,) = [i for i in summary.incidents if i.kind == IncidentKind.VRAM]
    verdicts = Warehouse(warehouse_url).verdicts("run2")

    requests = pipeline.bisections_to_start(verdicts, load_matrix("seed"), "run2")

    assert requests == [BisectRequest(config=incident.configs[0], good="0.3.30", bad="0.3.36", level="release",
                                      metric="gpu_compute_mib", incident_id=incident.incident_id, run_id="run2")]
    git = load_matrix("seed").model_copy(update={"build": BuildSource(source="git", location="/mirror/llama.cpp")})
    (by_commit,) = pipeline.bisections_to_start(verdicts, git, "run2")
    assert (by_commit.good, by_commit.bad, by_commit.level) == ("a" * 40, "f" * 40, "commit")
    seen_before = NightVerdicts([replace(incident, is_new=False)])  # the next night: it was asked for already
    assert pipeline.bisections_to_start(seen_before, load_matrix("seed"), "run3") == []


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_task_passes_json_and_gets_json_the_stage_records_between(warehouse_url, tmp_path):
    """The scheduler's one adapter: a verdicts XCom becomes NightVerdicts (the stage's type hint), the requests it
    returns are the conf the bisect DAG is triggered with, and that conf is the request its bisect task revives."""
    pipeline.ingest(_release_night("0.3.30", "a" * 40, 0.0), "run1", "2026-01-01", trigger="test")
    pipeline.ingest(_release_night("0.3.36", "f" * 40, 24.13), "run2", "2026-01-02", trigger="test")
    verdicts = Warehouse(warehouse_url).verdicts("run2")

    (conf,) = pipeline.run_task(pipeline.bisections_to_start, verdicts.to_dict(), load_matrix("seed"), "run2")

    assert conf == pipeline.bisections_to_start(verdicts, load_matrix("seed"), "run2")[0].to_dict()
    assert json.loads(json.dumps(conf)) == conf  # what an XCom or a DAG run's conf carries
    assert pipeline.run_task(_config_of, conf, "seed") == [conf["config"], "seed"]  # a tuple travels as a list


def _config_of(request: BisectRequest, matrix_name: str) -> tuple[str, str]:
    """A stage as the adapter sees one: a record's field read (a dict has none), a plain value passed as it came."""
    return request.config, matrix_name


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_stored_bisection_lands_on_its_incident_in_a_json_file_and_the_report(warehouse_url, tmp_path):
    """Fault: the culprit reached the incident and the alert, but the report of the night that opened the incident
    showed it only when someone wrote that report again."""
    pipeline.ingest(_release_night("0.3.30", "a" * 40, 0.0), "run1", "2026-01-01", trigger="test")
    summary = pipeline.ingest(_release_night("0.3.36", "f" * 40, 24.13), "run2", "2026-01-02", trigger="test")
    (incident,) = [i for i in summary.incidents if i.kind == IncidentKind.VRAM]

    out = pipeline.store_bisection(bisection(), _request_of(incident.incident_id, "run2"))

    assert BisectResult.from_json(Path(out).read_text()) == bisection()
    (stored,) = [i for i in Warehouse(warehouse_url).incidents() if i.incident_id == incident.incident_id]
    assert stored.bisection == bisection()
    culprit = "release 0.3.33: llama-cpp-python 0.3.33"
    for written in (summary.report_md, Path(summary.report_md).parents[2] / "latest.md"):
        assert culprit in Path(written).read_text()


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_bisection_stored_after_a_later_night_leaves_that_nights_report_the_latest(warehouse_url, tmp_path):
    pipeline.ingest(_release_night("0.3.30", "a" * 40, 0.0), "run1", "2026-01-01", trigger="test")
    opened = pipeline.ingest(_release_night("0.3.36", "f" * 40, 24.13), "run2", "2026-01-02", trigger="test")
    later = pipeline.ingest(_release_night("0.3.37", "e" * 40, 24.13), "run3", "2026-01-03", trigger="test")
    (incident,) = [i for i in opened.incidents if i.kind == IncidentKind.VRAM]
    latest = Path(later.report_md).parents[2] / "latest.md"
    before = latest.read_text()

    pipeline.store_bisection(bisection(), _request_of(incident.incident_id, "run2"))

    assert "release 0.3.33: llama-cpp-python 0.3.33" in Path(opened.report_md).read_text()
    assert latest.read_text() == before and "2026-01-03" in before  # the newer night's report stays the latest

def _request_of(incident_id: int | None, run_id: str) -> BisectRequest:
    """The request the sample bisection answers, stored on an incident and in the report of the night that opened it."""
    result = bisection()
    return BisectRequest(result.config_id, result.good, result.bad, incident_id=incident_id, run_id=run_id)


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_second_gpu_workers_lane_keeps_its_reports_in_its_own_folder(warehouse_url, tmp_path):
    """The lane is one value passed whole (a DAG passes its GpuWorker): its reports folder and its warehouse label
    come from it, so a second worker's report, alert log and pruning stay under reports/<label>/."""
    worker = GpuWorker(label="gpu-1", queue="gpu-1", pool="gpu-1")
    measured = _release_night("0.3.30", "a" * 40, 0.0)
    summary = pipeline.ingest(measured, "run1", "2026-01-01", trigger="test")

    pipeline.run_task(pipeline.validate, measured.to_dict()["results"], "2026-01-01", measured.build.to_dict(),
                      worker)
    again = pipeline.run_task(pipeline.report, "run1", Warehouse(warehouse_url).verdicts("run1").to_dict(),
                              lane=worker)

    reports = tmp_path / "reports"
    assert Path(summary.report_md).parent == reports / "2026-01-01" / "run1"  # the run's folder in its night's
    assert Path(again["report_md"]).parent == reports / "gpu-1" / "2026-01-01" / "run1"
    assert pipeline.prune_reports(load_matrix("seed"), dry_run=True, lane=worker).kept == ["2026-01-01"]
    assert pipeline.prune_reports(load_matrix("seed"), dry_run=True, lane=Lane("gpu-2")).kept == []
def _measured_again(measured: MeasuredNight) -> MeasuredNight:
    """The same night benched a second time: the same figures, another start, so another measured night."""
    return dataclasses.replace(measured, results=[replace(r, started_at="2026-01-02T05:00:00+00:00")
                                                  for r in measured.results])


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_night_measured_again_pages_its_incident_once(warehouse_url, monkeypatch):
    """Fault: a second measurement of a night found the incident the first opened, as new that night, and paged it
    again: delivery was remembered per run. Now it is per incident change and channel."""
    webhook = serving(HttpReceiver())
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", webhook.url)
    regressed = _release_night("0.3.36", "f" * 40, 24.13)
    try:
        pipeline.ingest(_release_night("0.3.30", "a" * 40, 0.0), "run1", "2026-01-01", trigger="test")
        first = pipeline.ingest(regressed, "run2", "2026-01-02", trigger="test")
        again = pipeline.ingest(_measured_again(regressed), "run2b", "2026-01-02", trigger="test")
    finally:
        stop(webhook)

    (paged,) = [i for i in first.incidents if i.pages]
    assert [i.incident_id for i in again.incidents if i.pages] == [paged.incident_id]  # found again, as new tonight
    assert [body["run_id"] for body in webhook.bodies] == ["run2"]


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_two_runs_of_one_night_keep_their_own_report_and_data_docs_and_the_night_shows_the_newest(
        warehouse_url, tmp_path):
    """Fault: two runs of one night shared reports/<night>/: the second overwrote the first's report and Data Docs."""
    measured = _measured("e3a74b29", "2026-01-01T01:00:00+00:00", unparsed_baseline=False, tmp_path=tmp_path)
    first = pipeline.ingest(measured, "run1", "2026-01-02", trigger="test")
    second = pipeline.ingest(_measured_again(measured), "run2", "2026-01-02", trigger="test")
    reports = Path(second.report_md).parents[2]
    assert "(run run2)" in (reports / "latest.md").read_text()
    pipeline.report_again(run_id="run1")  # an older run written again: the night's newest stays the night's latest

    assert Path(first.report_md).parent != Path(second.report_md).parent
    for summary in (first, second):
        folder = Path(summary.report_md).parent
        assert f"(run {summary.run_id})" in Path(summary.report_md).read_text()
        assert (folder / "data_docs" / "index.html").is_file()
        assert "(data_docs/index.html)" in (folder / "summary.md").read_text()
    assert "(run run2)" in (reports / "2026-01-02" / "summary.md").read_text()
