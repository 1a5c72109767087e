"""Migrations carry a warehouse written by older code over: a copy made the way 0006-era code stored its nights
(lane-prefixed run ids, incidents copied into the verdicts, each result as flat columns and again as a whole JSON
record) reads back right at the newest schema, on SQLite and PostgreSQL, and goes back to 0006 as it was."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import sqlalchemy as sa
from support.samples import bisection, night, replace, result

from vramwatch.records import BenchResult, Energy, Incident, NightVerdicts
from vramwatch.rows import flatten, number
from vramwatch.warehouse import migrate
from vramwatch.warehouse.store import Warehouse

FIRST, SECOND = "2026-01-01", "2026-01-02"
# 0006-era results: no energy yet (0008)
GPU_NIGHT = [replace(r, energy=Energy()) for r in (*night(quants=("Q2_K",)), result(status="oom"))]  # oom: no pp,
# tg or generation sub-records
CPU_NIGHT = [replace(r, energy=Energy()) for r in night(gpu=False, quants=("Q2_K",))]
# run id (the second GPU worker's prefixed with its lane, as config.GpuWorker.run_id made them) -> night, version, rows
RUNS = {
    f"scheduled__{FIRST}": (FIRST, "0.3.35", GPU_NIGHT),
    f"gpu-1/scheduled__{FIRST}": (FIRST, "0.3.35", CPU_NIGHT),
    f"scheduled__{SECOND}": (SECOND, "0.3.36", GPU_NIGHT),
    f"gpu-1/scheduled__{SECOND}": (SECOND, "0.3.34", CPU_NIGHT),
}
ENVIRONMENT = GPU_NIGHT[0].fingerprint.environment_id


def canonical(value: object) -> str:
    """JSON as one string, so 1 and True (or 317 and 317.0) differ as they do in a record's identity hash."""
    return json.dumps(value, sort_keys=True)


def tables(engine: sa.Engine) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(engine)
    return metadata.tables


def store_as_0006(engine: sa.Engine) -> Incident:
    """RUNS and an incident opened on the second night (in its verdicts), inserted as 0006-era code stored them.
    Returns the incident as that night's verdicts held it."""
    table = tables(engine)
    with engine.begin() as connection:
        for environment_id, fingerprint in {r.fingerprint.environment_id: r.fingerprint
                                            for r in GPU_NIGHT + CPU_NIGHT}.items():
            connection.execute(table["environments"].insert().values(
                environment_id=environment_id, last_night=date.fromisoformat(SECOND),
                **{name: getattr(fingerprint, name) for name in (
                    "gpu_name", "gpu_count", "gpu_driver", "cuda_version", "compute_capability", "cpu_model",
                    "cpu_cores", "ram_gib", "backend")}))
        for hour, (run_id, (night_, version, results)) in enumerate(RUNS.items()):
            build_id = connection.execute(table["builds"].insert().values(
                key=f"pypi-{version}-cuda-{hour}", source="pypi", location="", version=version,
                llama_cpp_python_version=version, llama_cpp_commit=f"c0ffee{version.replace('.', '')}",
                backend="cuda", cuda_architectures="90", flags="", status="ok", duration_s=317.0, artifact_bytes=1,
                log_tail="", error="", built_at=f"{night_}T0{hour}:00:00+00:00")).inserted_primary_key[0]
            started = datetime(2026, 1, int(night_[-2:]), hour, tzinfo=timezone.utc)
            connection.execute(table["runs"].insert().values(
                run_id=run_id, night=date.fromisoformat(night_), build_id=build_id, trigger="scheduled",
                started=started, ended=started, status="stored", night_key=None, error=""))
            connection.execute(table["results"].insert(), [
                {**flatten(r), "run_id": run_id, "record": r.to_dict()} for r in results])
        incident_id = connection.execute(table["incidents"].insert().values(
            environment_id=ENVIRONMENT, kind="vram", metric="gpu_compute_mib", state="open",
            configs=[GPU_NIGHT[0].config.config_id], summary="compute buffer +24 MiB", delta_mib=24.0, delta_pct=11.0,
            build_before="c0ffee0335", build_after="c0ffee0336", opened_night=date.fromisoformat(SECOND),
            updated_night=date.fromisoformat(SECOND), resolved_night=None, changes=["CUDA0/compute +24 MiB"],
            escalated_night=None, bisection=None)).inserted_primary_key[0]
        incident = Incident(incident_id=incident_id, kind="vram", metric="gpu_compute_mib", state="open",
                            configs=[GPU_NIGHT[0].config.config_id], summary="compute buffer +24 MiB",
                            delta_mib=24.0, delta_pct=11.0, build_before="c0ffee0335", build_after="c0ffee0336",
                            opened_night=SECOND, is_new=True, changes=["CUDA0/compute +24 MiB"])
        connection.execute(table["verdicts"].insert().values(
            run_id=f"scheduled__{SECOND}", record=NightVerdicts(
                incidents=[incident], not_judged=["VRAM: judged on one GPU only"]).to_dict()))
    return incident


def raw(engine: sa.Engine, query: str) -> list:
    with engine.connect() as connection:
        return [row if len(row) > 1 else row[0] for row in connection.execute(sa.text(query))]


def as_dict(value: object) -> dict:
    return json.loads(value) if isinstance(value, str) else value  # SQLite's JSON comes back as text


def test_a_warehouse_stored_by_0006_code_reads_back_its_lanes_verdicts_and_results_after_the_upgrade(empty_url):
    engine = sa.create_engine(empty_url)
    migrate.upgrade(engine, "0006")
    incident = store_as_0006(engine)
    warehouse = Warehouse(empty_url)  # opening upgrades to the newest schema

    # the lane: a column, filled from the run ids
    assert dict(raw(engine, "SELECT run_id, lane FROM runs")) == {run_id: run_id.partition("/")[0] if "/" in run_id
                                                                  else "" for run_id in RUNS}
    assert warehouse.latest_run(lane="").run_id == f"scheduled__{SECOND}"
    assert warehouse.latest_run(lane="gpu-1").run_id == f"gpu-1/scheduled__{SECOND}"
    assert warehouse.last_benchmarked_version("pypi", lane="gpu-1") == "0.3.34"
    assert warehouse.last_benchmarked_version("pypi") == "0.3.36"
    assert warehouse.previous_run(f"gpu-1/scheduled__{SECOND}").run_id == f"gpu-1/scheduled__{FIRST}"

    # results: the same records, to the JSON form; the stored record no longer repeats a column's figure
    for run_id, (_, _, results) in RUNS.items():
        assert [canonical(r.to_dict()) for r in warehouse.results_for_run(run_id)] == [
            canonical(r.to_dict()) for r in results]
    history = warehouse.history().set_index(["run_id", "config_id"])
    for r in GPU_NIGHT:
        stored, figures = history.loc[(f"scheduled__{FIRST}", r.config.config_id)], ("gpu_compute_mib", "vram_gib",
                                                                                      "needed_mib", "tg_avg_ts")
        assert stored["status"] == r.status
        assert [number(stored[name]) for name in figures] == [flatten(r)[name] for name in figures]
    record = as_dict(raw(engine, "SELECT record FROM results ORDER BY id")[0])
    assert "gpu_compute_mib" not in record["memory"] and "quant" not in record["config"]["model"]
    assert record["memory"]["source_lines"] == GPU_NIGHT[0].memory.source_lines  # what no column holds stays

    # verdicts: the incident by id, read from its row, so a bisection stored since shows
    verdicts = warehouse.verdicts(f"scheduled__{SECOND}")
    assert verdicts.incidents == [incident] and verdicts.not_judged == ["VRAM: judged on one GPU only"]
    found = bisection()
    warehouse.save_bisection(incident.incident_id, found)
    assert warehouse.verdicts(f"scheduled__{SECOND}").incidents[0].bisection == found
    assert warehouse.expectations(f"scheduled__{SECOND}") == []  # kept in a file back then: not read in
    warehouse.close()

    # and back: 0006's whole records and incident copies (now with its bisection)
    migrate.downgrade(engine, "0006")
    records = [as_dict(r) for r in raw(engine, "SELECT record FROM results ORDER BY id")]
    assert [canonical(r) for r in records] == [canonical(r.to_dict()) for _, _, rs in RUNS.values() for r in rs]
    assert [BenchResult.from_dict(r) for r in records[:len(GPU_NIGHT)]] == GPU_NIGHT
    (stored_verdicts,) = [as_dict(r) for r in raw(engine, "SELECT record FROM verdicts")]
    assert NightVerdicts.from_dict(stored_verdicts).incidents == [Incident(**{**incident.__dict__, "bisection": found})]
    assert "lane" not in {c["name"] for c in sa.inspect(engine).get_columns("runs")}
    engine.dispose()
