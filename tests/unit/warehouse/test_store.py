"""The warehouse on SQLite and PostgreSQL: schema from migrations, idempotent store, history, runs, incidents.

Every test taking `url` runs once per backend. PostgreSQL tests use a throwaway database created for the session
(dropped at the end) and are skipped, with the reason, when the server at PG_SERVER is unreachable.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from support.samples import CPU_HOST, night, replace, result

from vramwatch.records import BuildRecord, BuildRequest, Incident, QualityResult, QuarantinedResult, ValidatedNight
from vramwatch.rows import HISTORY_COLUMNS
from vramwatch.warehouse import migrate
from vramwatch.warehouse.models import Base
from vramwatch.warehouse.store import Warehouse, WarehouseError
from vramwatch.warehouse.tempdb import temporary_database
from vramwatch.warehouse.url import WarehouseConfigError, url_from_airflow_connection

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_database():
    try:
        sa.create_engine(PG_SERVER).connect().close()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {str(exc.orig).strip().splitlines()[0]}")
    with temporary_database(PG_SERVER) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    database = request.getfixturevalue("postgres_database")
    yield database
    engine = sa.create_engine(database)  # leave the shared database empty for the next test
    migrate.downgrade(engine, "base")
    engine.dispose()


@pytest.fixture
def warehouse(url):
    wh = Warehouse(url)
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


def store(wh: Warehouse, run_id: str, night_: str, results, version: str = "0.3.36", quarantined=(),
          status: str = "stored") -> None:
    wh.start_run(run_id, night_, build(version), "scheduled")
    wh.store_night(run_id, ValidatedNight(accepted=list(results), quarantined=list(quarantined)))
    wh.finish_run(run_id, status)


# ------------------------------------------------------------------------------------------------ schema


def test_opening_an_empty_database_creates_the_schema_of_the_models(url):
    Warehouse(url).close()

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"version_table": migrate.VERSION_TABLE})
        diffs = compare_metadata(context, Base.metadata)
        version = connection.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).scalar_one()
    engine.dispose()
    assert {"builds", "runs", "environments", "results", "quarantine", "incidents"} <= tables
    assert "alembic_version" not in tables  # Airflow's name stays free when both share a database
    assert diffs == []  # migrations and models describe the same schema
    assert version == "0003"


def test_a_database_at_the_first_schema_gains_the_quality_columns(url):
    engine = sa.create_engine(url)
    migrate.upgrade(engine, "0001")
    assert "perplexity" not in {c["name"] for c in sa.inspect(engine).get_columns("results")}

    Warehouse(url).close()  # opening upgrades to the newest schema

    columns = {c["name"] for c in sa.inspect(engine).get_columns("results")}
    assert {"perplexity", "quality_tokens", "greedy_sha256"} <= columns
    migrate.downgrade(engine, "0001")  # and 0002 goes back cleanly
    assert "greedy_sha256" not in {c["name"] for c in sa.inspect(engine).get_columns("results")}
    engine.dispose()


def test_stored_history_takes_the_settings_into_its_config_ids_on_upgrade(url):
    rows = night(quants=("Q2_K",))
    warehouse = Warehouse(url)
    store(warehouse, "n1", "2026-01-01", rows[1:], quarantined=[QuarantinedResult(rows[0], ["vram_non_negative"])])
    incident = warehouse.save_incident(
        Incident(incident_id=None, kind="vram", metric="gpu_kv_mib", state="open", configs=[rows[1].config.config_id],
                 summary="s", opened_night="2026-01-01"), rows[1].fingerprint.environment_id, "2026-01-01")
    warehouse.close()
    engine = sa.create_engine(url)

    def ids(table: str) -> list[str]:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(f"SELECT config_id FROM {table} ORDER BY id")).scalars())

    migrate.downgrade(engine, "0002")  # the schema before identity: config_id was model/quant/mode
    assert ids("results") == [r.config.config_name for r in rows[1:]]
    migrate.upgrade(engine, "head")

    assert ids("results") == [r.config.config_id for r in rows[1:]]
    assert ids("quarantine") == [rows[0].config.config_id]
    warehouse = Warehouse(url)
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


def test_storing_before_the_run_started_names_the_fix(warehouse):
    with pytest.raises(WarehouseError, match="'nope' is not in the warehouse") as info:
        warehouse.store_night("nope", ValidatedNight(accepted=night(quants=("Q2_K",)), quarantined=[]))
    assert "start_run" in info.value.fix


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


def test_runs_are_found_by_id_night_or_as_the_latest_with_results(warehouse):
    rows = night(quants=("Q2_K",))
    store(warehouse, "n1", "2026-01-01", rows, version="0.3.34")
    store(warehouse, "n2", "2026-01-02", rows, version="0.3.35", status="failed")
    store(warehouse, "n2b", "2026-01-02", [], version="0.3.35")  # a later run of that night that stored nothing
    warehouse.start_run("n3", "2026-01-03", build("0.3.36"), "manual")  # still running, nothing stored

    assert (warehouse.run("n2").status, warehouse.run("n2").n_results) == ("failed", len(rows))
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
    store(warehouse, "n2", "2026-01-02", rows, version="0.3.35", status="failed")
    warehouse.start_run("n3", "2026-01-03", build("0.3.36"), "manual")  # still running

    assert warehouse.last_benchmarked_version("pypi") == "0.3.34"
    assert warehouse.last_benchmarked_version("git") is None
    warehouse.finish_run("n3", "stored")
    assert warehouse.last_benchmarked_version("pypi") == "0.3.36"


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
