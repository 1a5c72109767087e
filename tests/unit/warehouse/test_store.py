"""The warehouse on SQLite and PostgreSQL: schema from migrations, idempotent store, history, runs, incidents.

Every test taking `url` runs once per backend (conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from support.samples import CPU_HOST, bisection, night, replace, result
from support.warehouses import empty_rows

import vramwatch
from vramwatch import pipeline
from vramwatch.cli import night as night_command
from vramwatch.cli.main import main
from vramwatch.records import (
    BuildCheck,
    BuildRecord,
    BuildRequest,
    ExpectationOutcome,
    Incident,
    MeasuredNight,
    NightVerdicts,
    QualityResult,
    QuarantinedResult,
    ValidatedNight,
)
from vramwatch.rows import HISTORY_COLUMNS
from vramwatch.warehouse import migrate
from vramwatch.warehouse.models import Base
from vramwatch.warehouse.store import STORE_LOCK_TIMEOUT_MS, BadCursor, HistoryCursor, Warehouse, WarehouseError
from vramwatch.warehouse.tempdb import temporary_database
from vramwatch.warehouse.url import WarehouseConfigError, url_from_airflow_connection

INCLUDE = Path(vramwatch.__file__).resolve().parents[1]  # the code under test, for the processes a test starts


@pytest.fixture
def warehouse(url):
    wh = Warehouse(url)
    yield wh
    wh.close()


@pytest.fixture
def own_warehouse(empty_url):
    """A warehouse in a database of the test's own, for tests that migrate it down and up."""
    wh = Warehouse(empty_url)
    yield wh
    wh.close()


def config_id(name: str) -> str:
    """The id a sample config of this name has (its name plus the hash of its settings)."""
    return next(r.config.config_id for r in night() if r.config.config_name == name)


def build(version: str = "0.3.36", status: str = "ok", source: str = "pypi", built_at: str = "") -> BuildRecord:
    return BuildRecord(
        request=BuildRequest(version=version, source=source, backend="cuda", cuda_architectures="90"),
        status=status, python="/builds/venv/bin/python", source_dir="/builds/src",
        llama_cpp_python_version=version, llama_cpp_commit=f"c0ffee{version.replace('.', '')}", duration_s=317.0,
        artifact_bytes=266_000_000, log_tail="Successfully built llama_cpp_python",
        built_at=built_at or "2026-01-01T01:00:00+00:00",
    )


def store(wh: Warehouse, run_id: str, night_: str, results, version: str = "0.3.36", quarantined=()) -> None:
    wh.store_run(run_id, night_, build(version), ValidatedNight(accepted=list(results), quarantined=list(quarantined)),
                 "scheduled")


# ------------------------------------------------------------------------------------------------ schema


def test_opening_an_empty_database_creates_the_schema_of_the_models(empty_url):
    Warehouse(empty_url).close()

    engine = sa.create_engine(empty_url)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"version_table": migrate.VERSION_TABLE})
        diffs = compare_metadata(context, Base.metadata)
        version = connection.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).scalar_one()
    engine.dispose()
    assert {"builds", "runs", "environments", "results", "quarantine", "incidents"} <= tables
    assert "alembic_version" not in tables  # Airflow's name stays free when both share a database
    assert diffs == []  # migrations and models describe the same schema
    assert version == "0011"


def test_a_database_at_the_first_schema_gains_the_quality_columns(empty_url):
    engine = sa.create_engine(empty_url)
    migrate.upgrade(engine, "0001")
    assert "perplexity" not in {c["name"] for c in sa.inspect(engine).get_columns("results")}

    Warehouse(empty_url).close()  # opening upgrades to the newest schema

    columns = {c["name"] for c in sa.inspect(engine).get_columns("results")}
    assert {"perplexity", "quality_tokens", "greedy_sha256"} <= columns
    migrate.downgrade(engine, "0001")  # and 0002 goes back cleanly
    assert "greedy_sha256" not in {c["name"] for c in sa.inspect(engine).get_columns("results")}
    engine.dispose()


def test_stored_history_takes_the_settings_into_its_config_ids_on_upgrade(empty_url):
    rows = night(quants=("Q2_K",))
    warehouse = Warehouse(empty_url)
    store(warehouse, "n1", "2026-01-01", rows[1:], quarantined=[QuarantinedResult(rows[0], ["vram_non_negative"])])
    incident = warehouse.save_incident(
        Incident(incident_id=None, kind="vram", metric="gpu_kv_mib", state="open", configs=[rows[1].config.config_id],
                 summary="s", opened_night="2026-01-01"), rows[1].fingerprint.environment_id, "2026-01-01")
    warehouse.close()
    engine = sa.create_engine(empty_url)

    def ids(table: str) -> list[str]:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(f"SELECT config_id FROM {table} ORDER BY id")).scalars())

    migrate.downgrade(engine, "0002")  # the schema before identity: config_id was model/quant/mode
    assert ids("results") == [r.config.config_name for r in rows[1:]]
    migrate.upgrade(engine, "head")

    assert ids("results") == [r.config.config_id for r in rows[1:]]
    assert ids("quarantine") == [rows[0].config.config_id]
    warehouse = Warehouse(empty_url)
    (back,) = warehouse.incidents()
    assert back.incident_id == incident.incident_id and back.configs == [rows[1].config.config_id]
    history = warehouse.history()
    assert list(history["config_name"]) == [r.config.config_name for r in rows[1:]]
    assert list(history["needed_mib"]) == [r.memory.needed_mib for r in rows[1:]]
    warehouse.close()
    engine.dispose()


def test_an_unreachable_database_is_one_clear_error():
    with pytest.raises(WarehouseError, match="cannot open the warehouse at postgresql") as info:
        Warehouse("postgresql+psycopg2://postgres:secret@127.0.0.1:1/none")
    assert "secret" not in str(info.value) and "VRAMWATCH_WAREHOUSE_URL" in info.value.fix


# ------------------------------------------------------------------------------------------------ store


def test_storing_a_night_twice_replaces_it(warehouse):
    results = night(n_cpu_moe_sweep=(4,))
    bad = QuarantinedResult(result("phi-3.5-moe", "Q8_0"), ["buffers_within_nvml_process"])
    store(warehouse, "scheduled__2026-01-02", "2026-01-02", results, quarantined=[bad])

    # the store task retried with one row fewer: the run holds exactly the second attempt
    store(warehouse, "scheduled__2026-01-02", "2026-01-02", results[1:], quarantined=[bad])

    assert warehouse.results_for_run("scheduled__2026-01-02") == results[1:]
    assert warehouse.quarantined_for_run("scheduled__2026-01-02") == [bad]
    (run,) = warehouse.runs()
    assert (run.n_results, run.n_quarantined, run.status) == (len(results) - 1, 1, "stored")
    assert len(warehouse.history()) == len(results) - 1


def test_results_come_back_as_the_records_that_went_in_with_or_without_a_gpu(warehouse):
    gpu_results = night(quants=("Q2_K",)) + [result(status="oom")]
    cpu_results = night(gpu=False, quants=("Q2_K",))
    store(warehouse, "gpu", "2026-01-02", gpu_results)
    store(warehouse, "cpu", "2026-01-02", cpu_results)

    assert warehouse.results_for_run("gpu") == gpu_results
    assert warehouse.results_for_run("cpu") == cpu_results
    frame = warehouse.history()
    cpu = frame[frame["environment_id"] == CPU_HOST.environment_id]
    assert len(cpu) == 4 and cpu["vram_gib"].isna().all() and cpu["gpu_total_mib"].isna().all()
    oom = frame[frame["status"] == "oom"].iloc[0]
    assert oom["error"] == "CUDA error: out of memory" and oom["tg_samples_ts"] is None


def test_quality_figures_round_trip_and_reach_history(warehouse):
    plain, asked = result("deepseek-moe-16b", "Q2_K"), result("phi-3.5-moe", "Q4_K_M")
    real = dataclasses.replace(
        asked, config=dataclasses.replace(asked.config, quality=True),
        quality=QualityResult(perplexity=25.123, n_tokens=327, greedy_sha256="f2" * 32, greedy_tokens=32),
    )
    store(warehouse, "night", "2026-01-02", [plain, real])

    assert warehouse.results_for_run("night") == [plain, real]
    frame = warehouse.history().set_index("model")
    assert frame.loc["phi-3.5-moe", ["perplexity", "quality_tokens", "greedy_sha256"]].tolist() == [
        25.123, 327, "f2" * 32]
    assert frame.loc["deepseek-moe-16b", ["perplexity", "quality_tokens", "greedy_sha256"]].isna().all()


def test_a_results_figures_are_kept_once_in_its_columns_and_read_back_from_them(warehouse):
    """Fault: each figure was kept twice, as a column and in the JSON record, and the two could disagree (a column
    backfilled by a migration, a row fixed in SQL): history read one, the report and regressions the other."""
    stored = result("deepseek-moe-16b", "Q2_K")
    store(warehouse, "n1", "2026-01-01", [stored])
    engine = sa.create_engine(warehouse.url)
    with engine.begin() as connection:
        record = connection.execute(sa.text("SELECT record FROM results")).scalar_one()
        connection.execute(sa.text("UPDATE results SET gpu_compute_mib = 300.5, tg_avg_ts = 41.0"))
    engine.dispose()

    (back,) = warehouse.results_for_run("n1")

    record = json.loads(record) if isinstance(record, str) else record
    assert "gpu_compute_mib" not in record["memory"] and "avg_ts" not in record["tg"]
    assert record["memory"]["source_lines"] == stored.memory.source_lines  # what no column holds stays in it
    assert (back.memory.gpu_compute_mib, back.tg.avg_ts) == (300.5, 41.0)  # what history reads, too
    assert replace(back, memory__gpu_compute_mib=stored.memory.gpu_compute_mib, tg__avg_ts=stored.tg.avg_ts) == stored


def test_verdicts_of_a_run_not_stored_name_the_fix(warehouse):
    with pytest.raises(WarehouseError, match="'nope' is not in the warehouse") as info:
        warehouse.save_verdicts("nope", NightVerdicts(incidents=[]))
    assert "vramwatch ingest" in info.value.fix


def test_a_reused_build_keeps_the_row_and_status_of_the_build_that_made_it(warehouse):
    first = warehouse.store_build(build())
    again = warehouse.store_build(dataclasses.replace(build(), status="reused", duration_s=0.0))
    rebuilt = warehouse.store_build(build(built_at="2026-02-01T00:00:00+00:00"))

    assert first == again != rebuilt
    with sa.create_engine(warehouse.url).connect() as connection:
        status = connection.execute(sa.text("SELECT status FROM builds WHERE id = :id"), {"id": first}).scalar_one()
    assert status == "ok"


# ------------------------------------------------------------------------------------------------ history


def test_history_is_ordered_by_night_and_carries_the_build(warehouse):
    rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    # stored out of order: a backfill of night 2 after night 3
    for run_id, night_, version in [("n1", "2026-01-01", "0.3.34"), ("n3", "2026-01-03", "0.3.36"),
                                    ("n2", "2026-01-02", "0.3.35")]:
        store(warehouse, run_id, night_, rows, version=version)

    frame = warehouse.history()

    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert list(frame["night"]) == ["2026-01-01"] * 2 + ["2026-01-02"] * 2 + ["2026-01-03"] * 2
    assert list(frame["build_version"].unique()) == ["0.3.34", "0.3.35", "0.3.36"]
    assert list(frame["llama_cpp_commit"].unique()) == ["c0ffee0334", "c0ffee0335", "c0ffee0336"]
    assert frame["pp_samples_ts"].iloc[0] == rows[0].pp.samples_ts
    assert frame["gpu_name"].iloc[0] == "NVIDIA H100 80GB HBM3"

    offload = warehouse.history(config_ids=[config_id("deepseek-moe-16b/Q4_K_M/offload")], limit=2)
    assert list(offload["night"]) == ["2026-01-02", "2026-01-03"]  # the most recent two, oldest first
    assert set(offload["mode"]) == {"offload"}


def test_history_keeps_environments_apart(warehouse):
    store(warehouse, "gpu", "2026-01-01", night(quants=("Q2_K",)))
    store(warehouse, "cpu", "2026-01-02", night(gpu=False, quants=("Q2_K",)))

    cpu = warehouse.history(environment_ids=[CPU_HOST.environment_id])

    assert set(cpu["run_id"]) == {"cpu"} and set(cpu["cpu_model"]) == {CPU_HOST.cpu_model}
    assert warehouse.history(config_ids=["no/such/config"]).empty
    both = warehouse.history(config_ids=[config_id("deepseek-moe-16b/Q2_K/baseline"),
                                         config_id("phi-3.5-moe/Q2_K/offload")])
    assert sorted(both["config_name"]) == ["deepseek-moe-16b/Q2_K/baseline"] * 2 + ["phi-3.5-moe/Q2_K/offload"] * 2
    assert warehouse.run_environments("cpu") == [CPU_HOST.environment_id]


def test_history_pages_by_cursor_hold_every_row_once_while_new_nights_arrive(warehouse):
    """Fault: /api/history could page only by offset, which costs a read of every row it skips (1 s at 100k rows)
    and shifts when a night is stored between two pages (rows read twice). Pages of 5 rows by cursor, through two
    runs of one night (one page ends inside a run), with a new night stored after the first page: every row of the
    history as it was, once, in order, and nothing of the new night."""
    store(warehouse, "a", "2026-01-01", night(quants=("Q2_K",)))
    store(warehouse, "b", "2026-01-02", night(quants=("Q2_K",)))
    store(warehouse, "b-again", "2026-01-02", night(quants=("Q2_K",)))  # a second run of the night, started later
    before = warehouse.history()
    pages = [warehouse.history_page(limit=5)]
    store(warehouse, "c", "2026-01-03", night(quants=("Q2_K",)))
    while pages[-1].next is not None:
        cursor = HistoryCursor.parse(pages[-1].next.token())  # as a client hands it back
        pages.append(warehouse.history_page(limit=5, after=cursor))

    walked = pd.concat([page.frame for page in reversed(pages)], ignore_index=True)  # each page oldest first
    assert [len(page.frame) for page in pages] == [5, 5, 2]
    assert walked.equals(before)
    assert list(walked.columns) == list(HISTORY_COLUMNS)
    with pytest.raises(BadCursor, match="not a history cursor"):
        HistoryCursor.parse("bm90IGEgY3Vyc29y")


# ------------------------------------------------------------------------------------------------ reads that scale

BASELINE, OFFLOAD = "deepseek-moe-16b/Q4_K_M/baseline", "deepseek-moe-16b/Q4_K_M/offload"


def six_nights(warehouse: Warehouse) -> None:
    """n1..n6 on 2026-01-01..06 of one model x quant (baseline, offload); the baseline ran out of memory on n2."""
    rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    oom = [result(mode="baseline", status="oom"), rows[1]]
    for day in range(1, 7):
        store(warehouse, f"n{day}", f"2026-01-0{day}", oom if day == 2 else rows, version=f"0.3.3{day}")


def nights_of(frame, name: str) -> list[str]:
    return [n[-2:] for n in frame.loc[frame["config_name"] == name, "night"]]


def test_recent_history_keeps_each_configs_newest_good_rows_and_its_last_other_statuses(warehouse):
    """Fault: every history reader read all of it (110k rows for 3 years x 100 configs): 5 s and up, every night."""
    six_nights(warehouse)
    ids = [config_id(BASELINE), config_id(OFFLOAD)]

    recent = warehouse.recent_history(ids, window=2)

    assert list(recent.columns) == list(HISTORY_COLUMNS)
    assert nights_of(recent, BASELINE) == ["02", "05", "06"]  # the two newest ok nights, and the last oom
    assert nights_of(recent, OFFLOAD) == ["05", "06"]
    full = warehouse.history(config_ids=ids)  # the same rows as all of history holds, oldest first
    expected = full[full["night"].isin(["2026-01-05", "2026-01-06"]) | (full["status"] == "oom")]
    assert recent.reset_index(drop=True).equals(expected.reset_index(drop=True))
    assert warehouse.recent_history([], window=2).empty


def test_recent_history_stops_at_the_run_judged_and_reaches_back_before_an_incident(warehouse):
    six_nights(warehouse)
    ids = [config_id(BASELINE), config_id(OFFLOAD)]

    as_of_n4 = warehouse.recent_history(ids, window=2, until_run="n4")
    opened_n4 = warehouse.recent_history(ids, window=2, before=[(config_id(OFFLOAD), "2026-01-04")])
    narrow = warehouse.recent_history(ids, window=2, fields=["tg_avg_ts"])

    assert nights_of(as_of_n4, BASELINE) == ["02", "03", "04"] and nights_of(as_of_n4, OFFLOAD) == ["03", "04"]
    # the newest two, and the newest two before the incident opened; the baseline had no incident
    assert nights_of(opened_n4, OFFLOAD) == ["02", "03", "05", "06"]
    assert nights_of(opened_n4, BASELINE) == ["02", "05", "06"]
    assert "tg_avg_ts" in narrow.columns and "buffers_mib" not in narrow.columns and "status" in narrow.columns
    with pytest.raises(WarehouseError, match="not in the warehouse"):
        warehouse.recent_history(ids, window=2, until_run="no-such-run")


def test_memory_points_are_one_per_config_and_run_for_the_newest_runs(warehouse):
    """Fault: the page read all of history (6 s a load on 3 years x 100 configs) and plotted one point per date."""
    six_nights(warehouse)
    store(warehouse, "n6-rerun", "2026-01-06", night(models=("deepseek-moe-16b",), quants=("Q4_K_M",)))
    store(warehouse, "cpu", "2026-01-07", night(gpu=False, models=("deepseek-moe-16b",), quants=("Q4_K_M",)))

    points = warehouse.memory_points(runs=3)

    assert list(points["run_id"].drop_duplicates()) == ["n6", "n6-rerun", "cpu"]  # two runs of one night: both
    assert list(points["night"]) == ["2026-01-06"] * 4 + ["2026-01-07"] * 2
    gpu = points[(points["run_id"] == "n6") & (points["mode"] == "baseline")].iloc[0]
    assert gpu["mib"] == pytest.approx(10_010.0 + 1_024.0 + 204.5)  # model + KV + compute on the GPU
    host = points[(points["run_id"] == "cpu") & (points["mode"] == "baseline")].iloc[0]
    assert host["mib"] == pytest.approx(10_010.0 + 1_024.0 + 300.0) and host["gpu_name"] == ""  # in host RAM
    oom = warehouse.memory_points(runs=5)
    assert oom.loc[oom["run_id"] == "n2", "mib"].isna().all()  # not measured: no value, never 0


def test_a_builds_figures_are_each_configs_newest_ok_result_on_it(warehouse):
    rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    grown = [replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + 64) for r in rows]
    store(warehouse, "n1", "2026-01-01", rows, version="0.3.35")
    store(warehouse, "n2", "2026-01-02", grown, version="0.3.35")
    store(warehouse, "n3", "2026-01-03", [result(mode="baseline", status="oom"), rows[1]], version="0.3.35")
    store(warehouse, "n4", "2026-01-04", rows, version="0.3.36")

    builds = warehouse.builds_with_results()
    figures = warehouse.build_figures(int(builds["build_id"].iloc[1]), ["gpu_model_mib", "tg_avg_ts"])

    assert list(builds["version"]) == ["0.3.36", "0.3.35"]  # newest first
    assert list(builds["runs"]) == [1, 3] and builds["first_night"].iloc[1] == "2026-01-01"
    by_name = figures.set_index("config_name")
    assert by_name.loc[BASELINE, "status"] == "ok" and by_name.loc[BASELINE, "night"] == "2026-01-02"
    assert by_name.loc[BASELINE, "gpu_model_mib"] == 10_010.0 + 64  # its newest ok result, not n3's oom
    assert by_name.loc[OFFLOAD, "night"] == "2026-01-03"


def test_a_warehouse_at_0004_gains_the_read_indexes_and_loses_them_on_downgrade(empty_url):
    engine = sa.create_engine(empty_url)
    migrate.upgrade(engine, "0004")

    def indexes() -> set[str]:
        inspector = sa.inspect(engine)
        return {i["name"] for table in ("results", "runs") for i in inspector.get_indexes(table)}

    assert "ix_results_series" not in indexes()
    Warehouse(empty_url).close()
    assert {"ix_results_series", "ix_runs_night_started", "ix_runs_build_id"} <= indexes()
    migrate.downgrade(engine, "0004")
    assert not {"ix_results_series", "ix_runs_night_started", "ix_runs_build_id"} & indexes()
    engine.dispose()


def test_runs_are_found_by_id_night_or_as_the_latest_with_results(warehouse):
    rows = night(quants=("Q2_K",))
    store(warehouse, "n1", "2026-01-01", rows, version="0.3.34")
    store(warehouse, "n2", "2026-01-02", rows, version="0.3.35")
    store(warehouse, "n2b", "2026-01-02", [], version="0.3.35")  # a later run of that night that stored nothing
    assert warehouse.mark_failed("n3", "2026-01-03", build("0.3.36"), "manual", "validation crashed")

    assert (warehouse.run("n3").status, warehouse.run("n3").n_results) == ("failed", 0)
    with pytest.raises(WarehouseError, match="run 'n9' is not in the warehouse"):
        warehouse.run("n9")
    assert warehouse.latest_run().run_id == "n2"
    assert warehouse.latest_run("2026-01-01").run_id == "n1"
    assert warehouse.latest_run("2026-01-03") is None
    assert [r.run_id for r in warehouse.runs()] == ["n3", "n2b", "n2", "n1"]
    assert [r.run_id for r in warehouse.runs(limit=1)] == ["n3"]


def test_last_version_skips_runs_that_did_not_finish(warehouse):
    rows = night(quants=("Q2_K",))
    store(warehouse, "n1", "2026-01-01", rows, version="0.3.34")
    warehouse.mark_failed("n2", "2026-01-02", build("0.3.35"), "scheduled", "validation crashed")

    assert warehouse.last_benchmarked_version("pypi") == "0.3.34"
    assert warehouse.last_benchmarked_version("git") is None
    store(warehouse, "n2", "2026-01-02", rows, version="0.3.35")  # the night stored on a later try
    assert warehouse.last_benchmarked_version("pypi") == "0.3.35"


def test_each_gpu_workers_lane_has_its_own_last_version(warehouse):
    """Fault: with two GPU workers, the first one's night made the second skip the build as benchmarked."""
    rows = night(quants=("Q2_K",))
    store(warehouse, "scheduled__2026-01-01", "2026-01-01", rows, version="0.3.36")
    store(warehouse, "gpu-1/scheduled__2026-01-01", "2026-01-01", rows, version="0.3.35")

    assert warehouse.last_benchmarked_version("pypi") == "0.3.36"
    assert warehouse.last_benchmarked_version("pypi", lane="gpu-1") == "0.3.35"
    assert warehouse.last_benchmarked_version("pypi", lane="gpu-2") is None


def test_a_runs_lane_is_a_column_given_or_read_from_its_run_id_and_each_lane_has_its_own_runs(warehouse):
    rows = night(quants=("Q2_K",))
    store(warehouse, "n1", "2026-01-01", rows)
    store(warehouse, "gpu-1/n1", "2026-01-01", rows)  # a lane-prefixed run id, as the DAG passes them
    warehouse.store_run("other-n2", "2026-01-02", build(), ValidatedNight(accepted=rows, quarantined=[]),
                        "scheduled", lane="gpu-1")
    store(warehouse, "n2", "2026-01-02", rows)
    warehouse.mark_failed("gpu-1/n3", "2026-01-03", build(), "scheduled", "validation crashed")

    with sa.create_engine(warehouse.url).connect() as connection:
        lanes = dict(connection.execute(sa.text("SELECT run_id, lane FROM runs")).all())
    assert lanes == {"n1": "", "gpu-1/n1": "gpu-1", "other-n2": "gpu-1", "n2": "", "gpu-1/n3": "gpu-1"}
    assert warehouse.latest_run(lane="gpu-1").run_id == "other-n2" and warehouse.latest_run(lane="").run_id == "n2"
    assert warehouse.latest_run().run_id == "n2"  # no lane asked: any
    assert warehouse.previous_run("other-n2").run_id == "gpu-1/n1"  # its own lane's, not the first worker's n1
    assert warehouse.previous_run("n2").run_id == "n1"


# ------------------------------------------------------------------------------------------------ incidents


def test_incident_lifecycle_open_update_resolve(warehouse):
    env = result().fingerprint.environment_id
    opened = warehouse.save_incident(
        Incident(incident_id=None, kind="vram", metric="gpu_compute_mib", state="open",
                 configs=["deepseek-moe-16b/Q4_K_M/baseline"], summary="compute buffer +256 MiB", delta_mib=256.0,
                 build_before="0.3.35", build_after="0.3.36"),
        env, "2026-01-03")

    assert opened.incident_id is not None and opened.is_new and opened.opened_night == "2026-01-03"
    assert warehouse.open_incidents(env) == [dataclasses.replace(opened, is_new=False)]
    assert warehouse.open_incidents("another-env") == []

    # the next night it still holds, on one more config: same incident, no longer new
    updated = warehouse.save_incident(
        replace(opened, configs=[*opened.configs, "deepseek-moe-16b/Q8_0/baseline"], state="acknowledged"),
        env, "2026-01-04")
    assert (updated.incident_id, updated.opened_night, updated.is_new) == (opened.incident_id, "2026-01-03", False)
    assert warehouse.open_incidents()[0].configs == updated.configs

    warehouse.resolve_incident(opened.incident_id, "2026-01-05")
    assert warehouse.open_incidents() == []
    (resolved,) = warehouse.incidents()
    assert resolved.state == "resolved" and resolved.delta_mib == 256.0

    with pytest.raises(WarehouseError, match="incident 999"):
        warehouse.resolve_incident(999, "2026-01-05")


def test_verdicts_keep_their_incidents_by_id_and_read_them_as_they_are_now(warehouse):
    """Fault: the verdicts kept a copy of each incident, so a bisection (or any update) stored after the night was
    missing from them, and the report patched every incident into the stale copy."""
    store(warehouse, "n3", "2026-01-03", night(quants=("Q2_K",)))
    store(warehouse, "n4", "2026-01-04", night(quants=("Q2_K",)))
    env = result().fingerprint.environment_id
    opened = warehouse.save_incident(
        Incident(incident_id=None, kind="vram", metric="gpu_compute_mib", state="open",
                 configs=["deepseek-moe-16b/Q4_K_M/baseline"], summary="compute buffer +24 MiB"), env, "2026-01-03")
    warehouse.save_verdicts("n3", NightVerdicts([opened], not_judged=["tg: judged tomorrow"]))
    grown = warehouse.save_incident(replace(opened, summary="compute buffer +64 MiB", escalated=True), env,
                                    "2026-01-04")
    warehouse.save_verdicts("n4", NightVerdicts([grown]))
    found = bisection()
    warehouse.save_bisection(opened.incident_id, found)

    third, fourth = warehouse.verdicts("n3"), warehouse.verdicts("n4")

    assert third.not_judged == ["tg: judged tomorrow"]
    (as_of_third,), (as_of_fourth,) = third.incidents, fourth.incidents
    assert as_of_third == replace(grown, bisection=found, is_new=True, escalated=False)  # new that night, not grown
    assert as_of_fourth == replace(grown, bisection=found) and as_of_fourth.escalated and not as_of_fourth.is_new
    with pytest.raises(WarehouseError, match="never saved") as info:
        warehouse.save_verdicts("n4", NightVerdicts([replace(opened, incident_id=None)]))
    assert "save_incident" in info.value.fix


def test_a_runs_validation_outcomes_are_stored_with_it_and_replaced_with_it(warehouse):
    passed = ExpectationOutcome("status_known", "expect_column_values_to_be_in_set", ["status"], True, 0)
    failed = ExpectationOutcome("pp_measured", "expect_column_values_to_not_be_null", ["pp_avg_ts"], False, 1,
                                ["deepseek-moe-16b/Q2_K/baseline"])
    rows = night(quants=("Q2_K",))

    warehouse.store_run("n1", "2026-01-01", build(), ValidatedNight(rows, [], expectations=[passed, failed]), "test")
    assert warehouse.expectations("n1") == [passed, failed]
    warehouse.store_run("n1", "2026-01-01", build(), ValidatedNight(rows, [], expectations=[passed]), "test")
    assert warehouse.expectations("n1") == [passed]
    with pytest.raises(WarehouseError, match="'n9' is not in the warehouse"):
        warehouse.expectations("n9")


def test_a_bisection_rides_on_its_incident_and_outlives_the_next_nights_update(warehouse):
    env = result().fingerprint.environment_id
    opened = warehouse.save_incident(
        Incident(incident_id=None, kind="vram", metric="gpu_compute_mib", state="open",
                 configs=["deepseek-moe-16b/Q4_K_M/baseline"], summary="compute buffer +24 MiB"), env, "2026-01-03")
    found = bisection()

    assert warehouse.save_bisection(opened.incident_id, found).bisection == found
    warehouse.save_incident(replace(opened, summary="still +24 MiB"), env, "2026-01-04")  # the nightly's update
    (stored,) = warehouse.incidents()
    assert stored.bisection == found and stored.summary == "still +24 MiB"
    with pytest.raises(WarehouseError, match="incident 999"):
        warehouse.save_bisection(999, found)


# ------------------------------------------------------------------------------------------------ which database


def _as_airflow_connection(url: str) -> str:
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "sqlite":
        return "sqlite://" + quote(parsed.database, safe="")  # Airflow keeps the SQLite path in the host
    return f"postgres://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database}"


def test_the_airflow_connection_is_used_unless_a_warehouse_url_is_set(url, monkeypatch, tmp_path):
    monkeypatch.delenv("VRAMWATCH_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_VRAMWATCH_WAREHOUSE", _as_airflow_connection(url))
    through_airflow = Warehouse()
    store(through_airflow, "through-airflow", "2026-01-02", night(quants=("Q2_K",)))
    through_airflow.close()

    direct = Warehouse(url)
    assert [r.run_id for r in direct.runs()] == ["through-airflow"]
    direct.close()

    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert Warehouse().runs() == []


def test_airflow_connections_in_uri_and_json_form_become_sqlalchemy_urls():
    assert (url_from_airflow_connection("postgres://wh%40ops:p%2Fw%3Ad@db.internal:6543/warehouse?sslmode=require")
            == "postgresql+psycopg2://wh%40ops:p%2Fw%3Ad@db.internal:6543/warehouse")
    as_json = '{"conn_type": "postgres", "login": "wh", "password": "pw", "host": "db", "port": 5432, "schema": "w"}'
    assert url_from_airflow_connection(as_json) == "postgresql+psycopg2://wh:pw@db:5432/w"
    with pytest.raises(WarehouseConfigError, match="connection type 'mysql'"):
        url_from_airflow_connection("mysql://u@h/db")


# ------------------------------------------------------------------------------------------------ faults
# A night is stored exactly once, or not at all (issue 17): real PostgreSQL, real threads, real kills, real files.


@pytest.fixture
def postgres(postgres_database):
    """The session's PostgreSQL database, at the newest schema, left empty for the next test even if this one fails."""
    yield postgres_database
    empty_rows(postgres_database)


@pytest.fixture
def ingest_env(tmp_path, monkeypatch):
    """`vramwatch ingest`'s surroundings in tmp_path: reports, data/measured, no alert channels."""
    monkeypatch.setenv("VRAMWATCH_HOME", str(tmp_path))
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    for channel in ("WEBHOOK", "SMTP", "EMAIL_TO", "SLACK_WEBHOOK"):
        monkeypatch.delenv(f"VRAMWATCH_ALERT_{channel}", raising=False)
    return tmp_path


def measured_night(tmp_path) -> tuple[MeasuredNight, str]:
    """A CUDA night of DeepSeek Q4_K_M, and the JSON file `vramwatch ingest` reads it from."""
    measured = MeasuredNight(build=build(), results=night(models=("deepseek-moe-16b",), quants=("Q4_K_M",)))
    path = tmp_path / "measured.json"
    path.write_text(measured.to_json())
    return measured, str(path)


def table_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        counts = {table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in ("results", "quarantine", "environments")}
    engine.dispose()
    return counts


def stored_run(url: str, run_id: str):
    warehouse = Warehouse(url)
    try:
        return warehouse.run(run_id)
    finally:
        warehouse.close()


def run_in_thread(command: list[str]) -> tuple[threading.Thread, dict]:
    """`vramwatch COMMAND` in a thread; what it returned (or raised) lands in the dict."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["rc"] = main(command)
        except BaseException as exc:  # noqa: BLE001 - today's failure is a raw exception: the test reports it
            outcome["raised"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def backend_waiting_on_a_lock(admin: sa.Connection, within_s: float = 30.0) -> int:
    """The pid of the session that waits for the lock the test holds, once it does."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        admin.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # a transaction sees one snapshot of the activity
        pid = admin.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).scalar()
        if pid is not None:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no session waited for the lock within {within_s} s")


def assert_one_error_line(stderr: str, *expected: str) -> None:
    """After the progress lines: one error line (with the expected texts) and its fix, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and all(text in lines[errors[0]] for text in expected), lines
    assert [line for line in lines[errors[0] + 1:] if not line.startswith("  fix: ")] == [], lines


def test_run_ids_started_in_the_same_second_are_unique():
    """Fault: CLI run ids were the time to the second, so two `vramwatch nightly` started together shared one and
    the second store replaced the first night's rows."""
    start = threading.Barrier(8)
    ids: list[str] = []

    def new_id() -> None:
        start.wait()
        ids.append(night_command._night_ids(None)[1])

    threads = [threading.Thread(target=new_id) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 8, ids


def test_a_store_killed_mid_way_leaves_no_running_run_and_no_rows_and_says_one_line(
        postgres, ingest_env, monkeypatch, capsys):
    """Fault: a store whose connection was killed (pg_terminate_backend) left its run `running` forever and printed a
    raw traceback: the store was three transactions."""
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", postgres)
    _, path = measured_night(ingest_env)
    admin = sa.create_engine(postgres).connect()
    try:
        admin.execute(sa.text("LOCK TABLE results IN ACCESS EXCLUSIVE MODE"))  # holds the store mid-way
        thread, outcome = run_in_thread(["ingest", path, "--run-id", "killed", "--night", "2026-01-02"])
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_waiting_on_a_lock(admin)})
        admin.rollback()
        thread.join(timeout=30)
    finally:
        admin.close()

    assert outcome.get("rc") == 2, outcome
    assert_one_error_line(capsys.readouterr().err, "storing run killed failed", "connection")
    run = stored_run(postgres, "killed")
    assert (run.status, run.n_results) == ("failed", 0) and "connection" in run.error
    assert table_counts(postgres) == {"results": 0, "quarantine": 0, "environments": 0}


@pytest.mark.slow  # waits out a lock timeout or runs real processes: make test runs it, test-unit not
def test_a_held_exclusive_lock_makes_the_store_give_up_within_the_lock_timeout(
        postgres, ingest_env, monkeypatch, capsys):
    """Fault: with no lock timeout, a store behind an exclusive lock waited as long as the lock was held (45 s
    measured, forever in principle)."""
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", postgres)
    _, path = measured_night(ingest_env)
    give_up_within_s = STORE_LOCK_TIMEOUT_MS / 1000 + 3
    admin = sa.create_engine(postgres).connect()
    try:
        admin.execute(sa.text("LOCK TABLE results IN ACCESS EXCLUSIVE MODE"))
        thread, outcome = run_in_thread(["ingest", path, "--run-id", "locked-out", "--night", "2026-01-02"])
        backend_waiting_on_a_lock(admin)
        waiting_since = time.monotonic()
        thread.join(timeout=give_up_within_s)
        waited_s = time.monotonic() - waiting_since
    finally:
        admin.rollback()  # lets today's store go on, so the test ends either way
        admin.close()
        thread.join(timeout=30)

    assert waited_s < give_up_within_s and outcome.get("rc") == 2, (waited_s, outcome)
    assert_one_error_line(capsys.readouterr().err, "storing run locked-out failed", "lock timeout")
    run = stored_run(postgres, "locked-out")
    assert (run.status, run.n_results) == ("failed", 0) and "lock timeout" in run.error
    assert table_counts(postgres)["results"] == 0


def test_concurrent_first_ingests_all_land(postgres):
    """Fault: two first ingests at once both found the environment missing and both inserted it; one died with
    UniqueViolation pk_environments and its night was lost."""
    nights = [f"2026-01-0{day}" for day in range(1, 7)]
    # one warehouse (engine, connections) each, as separate ingests have; opened here: Alembic is not thread-safe
    warehouses = [Warehouse(postgres) for _ in nights]
    start = threading.Barrier(len(nights))
    failures: list[BaseException] = []

    def ingest(day: str, warehouse: Warehouse) -> None:
        validated = ValidatedNight(accepted=night(quants=("Q2_K",)), quarantined=[])
        try:
            start.wait(timeout=30)
            pipeline.store(f"run-{day}", day, build(built_at=f"{day}T01:00:00+00:00"), validated, "ingest", warehouse)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)
        finally:
            warehouse.close()

    threads = [threading.Thread(target=ingest, args=pair) for pair in zip(nights, warehouses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    warehouse = Warehouse(postgres)
    assert sorted(r.run_id for r in warehouse.runs() if r.n_results) == [f"run-{day}" for day in nights]
    assert table_counts(postgres)["environments"] == 1
    warehouse.close()


def test_concurrent_ingests_of_the_same_night_store_it_once(postgres):
    """Fault: the same measured night ingested twice at once (a retried job beside the first) must not store it
    twice: the second store waits for the first and stores into its run."""
    measured = MeasuredNight(build=build(), results=night(quants=("Q2_K",)))
    warehouses = [Warehouse(postgres) for _ in range(4)]  # opened here: Alembic is not thread-safe
    start = threading.Barrier(len(warehouses))
    stored_as: list[str] = []

    def ingest(i: int, warehouse: Warehouse) -> None:
        start.wait(timeout=30)
        stored_as.append(pipeline.store(f"cli__{i}", "2026-01-02", measured.build, ValidatedNight(
            accepted=measured.results, quarantined=[]), "ingest", warehouse, night_key=measured.night_key()))
        warehouse.close()

    threads = [threading.Thread(target=ingest, args=pair) for pair in enumerate(warehouses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(stored_as) == 4 and len(set(stored_as)) == 1
    warehouse = Warehouse(postgres)
    assert [r.run_id for r in warehouse.runs()] == stored_as[:1]
    assert len(warehouse.history()) == len(measured.results)
    warehouse.close()


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_reingesting_a_night_under_a_new_run_id_does_not_double_its_rows(url, ingest_env, monkeypatch):
    """Fault: ingesting the same measured night again under a new run id stored every row a second time."""
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    measured, _ = measured_night(ingest_env)

    first = pipeline.ingest(measured, "cli__first", "2026-01-02", trigger="ingest")
    again = pipeline.ingest(MeasuredNight.from_json(measured.to_json()), "cli__again", "2026-01-02", trigger="ingest")

    warehouse = Warehouse(url)
    assert [r.run_id for r in warehouse.runs()] == ["cli__first"]
    assert len(warehouse.history()) == len(measured.results) == first.n_results == again.n_results
    warehouse.close()


def test_a_warehouse_lost_during_nightly_keeps_the_measured_night_and_ingest_finishes_it(
        ingest_env, postgres_server, monkeypatch, capsys):
    """Fault: a warehouse lost while `vramwatch nightly` benched lost every result: the CLI kept no measured file."""
    measured, _ = measured_night(ingest_env)
    with temporary_database(postgres_server) as lost:
        monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", lost)
        Warehouse(lost).close()
        database = sa.engine.make_url(lost).database
        admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")

        def measure_while_the_warehouse_goes(*_args, **_kwargs) -> MeasuredNight:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
            return measured

        monkeypatch.setattr(pipeline, "detect_build", lambda *_a, **_k: BuildCheck("0.3.36", None, is_new=True))
        monkeypatch.setattr(pipeline, "measure", measure_while_the_warehouse_goes)

        assert main(["nightly", "--run-id", "cli__lost"]) == 2
        stderr = capsys.readouterr().err
        kept = ingest_env / "data" / "measured" / "cli__lost.json"
        assert_one_error_line(stderr, "cannot open the warehouse", f"kept in {kept}")
        assert MeasuredNight.from_json(kept.read_text()) == measured
        assert [p.name for p in kept.parent.iterdir()] == ["cli__lost.json"]  # no temp file left behind

        with admin.connect() as connection:  # the warehouse is back, empty
            connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        finish = stderr.split("`")[1].split()
        assert finish[:5] == ["vramwatch", "ingest", str(kept), "--run-id", "cli__lost"]
        assert main(finish[1:]) == 0

        warehouse = Warehouse(lost)
        run = warehouse.run("cli__lost")
        assert (run.status, run.n_results, run.night) == ("stored", len(measured.results), finish[6])
        warehouse.close()


@pytest.mark.slow  # waits out a lock timeout or runs real processes: make test runs it, test-unit not
@pytest.mark.parametrize(("table", "read"), [
    ("runs", lambda warehouse: warehouse.last_benchmarked_version("pypi")),  # detect_build's
    ("verdicts", lambda warehouse: warehouse.verdicts("night-1")),  # detect_regressions'
])
def test_a_held_lock_makes_every_session_give_up_within_the_lock_timeout(postgres, table, read):
    """Fault: only the store had lock and statement timeouts; a held lock on `verdicts` kept detect_regressions
    waiting 38.9 s, one on `runs` kept detect_build 29 s (forever in principle). Every session now has them."""
    warehouse = Warehouse(postgres)
    give_up_within_s = STORE_LOCK_TIMEOUT_MS / 1000 + 3
    admin = sa.create_engine(postgres).connect()
    outcome: dict = {}

    def reader() -> None:
        try:
            outcome["value"] = read(warehouse)
        except sa.exc.OperationalError as exc:
            outcome["raised"] = exc

    try:
        admin.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        thread = threading.Thread(target=reader)
        thread.start()
        backend_waiting_on_a_lock(admin)
        waiting_since = time.monotonic()
        thread.join(timeout=give_up_within_s)
        waited_s = time.monotonic() - waiting_since
    finally:
        admin.rollback()
        admin.close()
        thread.join(timeout=30)
        warehouse.close()
    assert waited_s < give_up_within_s and "lock timeout" in str(outcome.get("raised")), (waited_s, outcome)


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql+psycopg2://wh:pw-s3cret@127.0.0.1:notaport/w", "not a SQLAlchemy URL"),
    ("postgresql+psycopg2://wh:pw-s3cret@127.0.0.1:99999/w", "port 99999"),
    ("postgres://wh:pw-s3cret@127.0.0.1:5432/w", "write postgresql+psycopg2://"),
    ("postgresql+nosuchdriver://wh:pw-s3cret@127.0.0.1/w", "'postgresql+nosuchdriver'"),
    ("oracle+nope://wh:pw-s3cret@db/w", "not installed"),
])
def test_a_malformed_warehouse_url_is_one_line_with_the_fix(url, says, monkeypatch, capsys):
    """Fault: a bad port, `postgres://` or an unknown driver gave SQLAlchemy's traceback."""
    with pytest.raises(WarehouseConfigError, match=re.escape(says)) as refused:
        Warehouse(url)
    assert "pw-s3cret" not in str(refused.value) and "\n" not in str(refused.value)
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, says)
    assert "pw-s3cret" not in err


def test_a_value_longer_than_its_column_quarantines_its_row_not_the_night(postgres, ingest_env, monkeypatch):
    """Fault: a 130-character model name (the column keeps 120) through `vramwatch ingest` failed the whole night's
    store on PostgreSQL. The gate quarantines that row (values_fit_columns); the night is stored."""
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", postgres)
    baseline, offload = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    long_named = dataclasses.replace(offload, config=dataclasses.replace(
        offload.config, model=dataclasses.replace(offload.config.model, model="m" * 130)))
    path = ingest_env / "measured.json"
    path.write_text(MeasuredNight(build=build(), results=[baseline, long_named]).to_json())

    assert main(["ingest", str(path), "--run-id", "long-name", "--night", "2026-01-02"]) == 0

    run = stored_run(postgres, "long-name")
    assert (run.status, run.n_results) == ("stored", 1)
    assert table_counts(postgres) == {"results": 1, "quarantine": 1, "environments": 1}
    warehouse = Warehouse(postgres)
    try:
        (quarantined,) = warehouse.quarantined_for_run("long-name")
    finally:
        warehouse.close()
    assert quarantined.result.config.model.model == "m" * 130 and "values_fit_columns" in quarantined.failed_expectations


# ------------------------------------------------------------------------------------------------ run identity
# A night's identity is fixed once stored (issue 26): real SQLite and PostgreSQL, real processes, real files.


def runs_of(url: str) -> list[tuple[str, str, int]]:
    warehouse = Warehouse(url)
    try:
        return [(run.run_id, run.night, run.n_results) for run in warehouse.runs()]
    finally:
        warehouse.close()


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_stored_night_ingested_under_another_night_is_refused_unless_moved_and_the_move_says_so(
        url, ingest_env, monkeypatch, capsys):
    """Fault: ingesting a measured night again with another --night silently moved the stored night, and its report
    stayed under the old night's folder."""
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    measured, path = measured_night(ingest_env)
    reports = ingest_env / "reports"
    assert main(["ingest", path, "--run-id", "first", "--night", "2026-01-02"]) == 0
    capsys.readouterr()

    assert main(["ingest", path, "--run-id", "again", "--night", "2026-01-05"]) == 2
    assert_one_error_line(capsys.readouterr().err, "stored as night 2026-01-02 (run first)", "not 2026-01-05")
    assert runs_of(url) == [("first", "2026-01-02", len(measured.results))]
    assert not (reports / "2026-01-05").exists()  # refused before anything was written under the other night

    assert main(["ingest", path, "--run-id", "again", "--night", "2026-01-05", "--move-night"]) == 0
    assert "night moved from 2026-01-02 to 2026-01-05 (run first, --move-night)" in capsys.readouterr().err
    assert runs_of(url) == [("first", "2026-01-05", len(measured.results))]
    assert not (reports / "2026-01-02").exists()  # its only run left: the old night's folder goes
    assert "2026-01-05" in (reports / "2026-01-05" / "first" / "summary.md").read_text()


def test_a_failed_restore_leaves_the_stored_run_as_it_was_and_says_so(postgres):
    """Fault: a re-store that failed (here its connection killed mid-way) flipped the run it replaced to `failed`,
    while that run's rows stayed."""
    warehouse = Warehouse(postgres)
    rows = night(quants=("Q2_K",))
    store(warehouse, "n1", "2026-01-02", rows)
    before = warehouse.run("n1")
    outcome: dict = {}

    def store_again() -> None:
        try:
            store(warehouse, "n1", "2026-01-02", rows[1:])
        except WarehouseError as exc:
            outcome["error"] = exc

    admin = sa.create_engine(postgres).connect()
    try:
        admin.execute(sa.text("LOCK TABLE results IN ACCESS EXCLUSIVE MODE"))  # holds the re-store mid-way
        thread = threading.Thread(target=store_again)
        thread.start()
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_waiting_on_a_lock(admin)})
        admin.rollback()
        thread.join(timeout=30)
    finally:
        admin.close()

    after = warehouse.run("n1")
    assert (after.status, after.error, after.n_results, after.started) == ("stored", "", len(rows), before.started)
    assert "storing run n1 failed, run n1 stands as it was stored before" in outcome["error"].message
    assert warehouse.results_for_run("n1") == rows
    warehouse.close()


@pytest.mark.slow  # waits out a lock timeout or runs real processes: make test runs it, test-unit not
def test_ten_concurrent_ingests_of_one_measured_night_all_exit_0_and_store_it_once(postgres, ingest_env):
    """Fault: of 10 concurrent `vramwatch ingest` of one measured night, some exited 2 ("has no rows in the history"):
    each re-store moved the run's start, so a reader judging the night up to that run lost it between two queries."""
    measured, path = measured_night(ingest_env)
    env = {**os.environ, "VRAMWATCH_WAREHOUSE_URL": postgres, "PYTHONPATH": str(INCLUDE)}
    ingests = [subprocess.Popen([sys.executable, "-m", "vramwatch.cli", "ingest", path, "--night", "2026-01-02"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(10)]
    outcomes = [(ingest.wait(timeout=900), ingest.stderr.read()) for ingest in ingests]
    for ingest in ingests:
        ingest.stdout.close()
        ingest.stderr.close()

    assert [rc for rc, _ in outcomes] == [0] * 10, [err.splitlines()[-2:] for rc, err in outcomes if rc]
    warehouse = Warehouse(postgres)
    (run,) = warehouse.runs()
    assert (run.status, run.n_results) == ("stored", len(measured.results))
    assert len(warehouse.history()) == len(measured.results)
    warehouse.close()
    (run_folder,) = [p for p in (ingest_env / "reports" / "2026-01-02").iterdir() if p.is_dir()]  # the losers' went
    assert (run_folder / "summary.md").is_file() and (run_folder / "data_docs" / "index.html").is_file()


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
def test_a_night_moved_off_a_night_with_another_run_leaves_that_run_the_nights_latest(ingest_env, monkeypatch):
    url = f"sqlite:///{ingest_env / 'warehouse.db'}"
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    measured, path = measured_night(ingest_env)
    other = ingest_env / "other.json"
    other.write_text(dataclasses.replace(measured, results=[dataclasses.replace(r, started_at="2026-01-02T05:00:00")
                                                            for r in measured.results]).to_json())
    night_folder = ingest_env / "reports" / "2026-01-02"
    assert main(["ingest", str(other), "--run-id", "other", "--night", "2026-01-02"]) == 0
    assert main(["ingest", path, "--run-id", "first", "--night", "2026-01-02"]) == 0
    assert "(run first)" in (night_folder / "summary.md").read_text()

    assert main(["ingest", path, "--night", "2026-01-05", "--move-night"]) == 0

    assert runs_of(url) == [("first", "2026-01-05", len(measured.results)),
                            ("other", "2026-01-02", len(measured.results))]
    assert sorted(p.name for p in night_folder.iterdir() if p.is_dir()) == ["other"]
    assert "(run other)" in (night_folder / "summary.md").read_text()


def test_store_run_itself_keeps_a_stored_nights_night_unless_told_to_move_it(warehouse):
    """The store refuses too (inside its transaction), so an ingest racing past the pipeline's check cannot move a
    night either."""
    rows = night(quants=("Q2_K",))
    validated = ValidatedNight(accepted=rows, quarantined=[])
    warehouse.store_run("first", "2026-01-02", build(), validated, "ingest", night_key="k" * 64)

    with pytest.raises(WarehouseError, match=r"stored as night 2026-01-02 \(run first\), not 2026-01-05") as refused:
        warehouse.store_run("again", "2026-01-05", build(), validated, "ingest", night_key="k" * 64)
    assert "--move-night" in refused.value.fix
    assert [(r.run_id, r.night) for r in warehouse.runs()] == [("first", "2026-01-02")]

    assert warehouse.store_run("again", "2026-01-05", build(), validated, "ingest", night_key="k" * 64,
                               move_night=True) == "first"
    assert [(r.run_id, r.night, r.n_results) for r in warehouse.runs()] == [("first", "2026-01-05", len(rows))]


def test_energy_figures_reach_history_and_survive_0008_down_and_up(own_warehouse):
    warehouse = own_warehouse
    """Energy (issue 27): its columns in history; a CPU row's absent figures NULL with their reason; a downgrade
    to 0007 puts the moved figures back into the record and the upgrade takes them out into the columns again."""
    gpu, cpu = result("deepseek-moe-16b", "Q2_K"), result("phi-3.5-moe", "Q2_K", gpu=False)
    store(warehouse, "n1", "2026-01-01", [gpu, cpu])
    frame = warehouse.history().set_index("model")
    stored = frame.loc["deepseek-moe-16b"]
    assert stored["tg_j_per_tok"] == pytest.approx(gpu.energy.tg.j_per_tok)
    assert (stored["tg_power_avg_w"], stored["gpu_idle_w"], stored["gpu_power_limit_w"]) == (310.0, 71.5, 700.0)
    assert frame.loc["phi-3.5-moe", ["pp_j_per_tok", "tg_j_per_tok", "gpu_idle_w"]].isna().all()
    assert frame.loc["phi-3.5-moe", "energy_note"].startswith("no GPU: GPU energy not measured; host energy not")

    engine = sa.create_engine(warehouse.url)
    migrate.downgrade(engine, "0007")
    with engine.connect() as connection:
        record = connection.execute(sa.text("SELECT record FROM results ORDER BY id")).scalars().first()
    record = json.loads(record) if isinstance(record, str) else record
    assert record["energy"]["tg"]["power_avg_w"] == 310.0 and record["energy"]["idle_w"] == 71.5
    migrate.upgrade(engine, "head")
    engine.dispose()
    assert warehouse.results_for_run("n1") == [gpu, cpu]
    again = warehouse.history().set_index("model")
    assert again.loc["deepseek-moe-16b", "tg_j_per_tok"] == pytest.approx(gpu.energy.tg.j_per_tok)
    assert again.loc["phi-3.5-moe", "energy_note"] == frame.loc["phi-3.5-moe", "energy_note"]


RAW = Path(__file__).resolve().parents[3] / "docs" / "results" / "raw"  # what `vramwatch measure` wrote


def test_measured_nights_of_older_formats_store_each_rows_split_in_its_columns(warehouse):
    """Issue 29: a format-2 night measured unpinned on two H200s (read as the layer split it was) and a one-GPU night
    written before format versions existed store with each row's gpus, split_mode and tensor_split in the flat row,
    and read back as they were read in."""
    nights = {"two-gpus": RAW / "2026-11-29-h200-bisect-attempt" / "measure-0.3.36-two-gpus.json",
              "one-gpu": RAW / "2026-11-29-h200-two-releases" / "measure-0.3.36.json"}
    measured = {run_id: MeasuredNight.from_json(path.read_text()) for run_id, path in nights.items()}
    for i, (run_id, night_) in enumerate(measured.items()):
        store(warehouse, run_id, f"2026-11-2{8 + i}", night_.results)
    split = {run_id: set(map(tuple, rows[["gpus", "split_mode", "tensor_split"]].values.tolist()))
             for run_id, rows in warehouse.history().groupby("run_id")}
    assert split == {"two-gpus": {(2, "layer", "")}, "one-gpu": {(1, "layer", "")}}
    assert all(warehouse.results_for_run(run_id) == night_.results for run_id, night_ in measured.items())
