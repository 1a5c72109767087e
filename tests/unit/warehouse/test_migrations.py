"""Migrations carry a warehouse written by older code over: a copy made the way 0006-era code stored its nights
(lane-prefixed run ids, incidents copied into the verdicts, each result as flat columns and again as a whole JSON
record) reads back right at the newest schema, on SQLite and PostgreSQL, and goes back to 0006 as it was; so does one
made the way 0009-era code stored the split knobs (in the record only), back to 0009."""

from __future__ import annotations

import importlib
import json
from datetime import date, datetime, timezone

import sqlalchemy as sa
from support.samples import bisection, night, replace, result
from support.two_gpu import two_gpu_result

from vramwatch.records import BenchResult, Energy, Incident, NightVerdicts
from vramwatch.rows import flatten, number
from vramwatch.warehouse import migrate
from vramwatch.warehouse.result_row import to_row
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


def store_environments(connection: sa.Connection, table: dict[str, sa.Table], results: list[BenchResult]) -> None:
    for environment_id, fingerprint in {r.fingerprint.environment_id: r.fingerprint for r in results}.items():
        connection.execute(table["environments"].insert().values(
            environment_id=environment_id, last_night=date.fromisoformat(SECOND),
            **{name: getattr(fingerprint, name) for name in (
                "gpu_name", "gpu_count", "gpu_driver", "cuda_version", "compute_capability", "cpu_model",
                "cpu_cores", "ram_gib", "backend")}))


def store_build_and_run(connection: sa.Connection, table: dict[str, sa.Table], run_id: str, night_: str,
                        version: str, hour: int) -> None:
    """A run of `night_` on a PyPI build of `version`, stored at the hour given, as every schema since 0007 has them."""
    build_id = connection.execute(table["builds"].insert().values(
        key=f"pypi-{version}-cuda-{hour}", source="pypi", location="", version=version,
        llama_cpp_python_version=version, llama_cpp_commit=f"c0ffee{version.replace('.', '')}",
        backend="cuda", cuda_architectures="90", flags="", status="ok", duration_s=317.0, artifact_bytes=1,
        log_tail="", error="", built_at=f"{night_}T0{hour}:00:00+00:00")).inserted_primary_key[0]
    started = datetime(2026, 1, int(night_[-2:]), hour, tzinfo=timezone.utc)
    connection.execute(table["runs"].insert().values(
        run_id=run_id, night=date.fromisoformat(night_), build_id=build_id, trigger="scheduled",
        started=started, ended=started, status="stored", night_key=None, error=""))


def store_as_0006(engine: sa.Engine) -> Incident:
    """RUNS and an incident opened on the second night (in its verdicts), inserted as 0006-era code stored them.
    Returns the incident as that night's verdicts held it."""
    table = tables(engine)
    with engine.begin() as connection:
        store_environments(connection, table, GPU_NIGHT + CPU_NIGHT)
        for hour, (run_id, (night_, version, results)) in enumerate(RUNS.items()):
            store_build_and_run(connection, table, run_id, night_, version, hour)
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


# 0009-era results, whose split knobs (issue 29) lived in the stored record only: a row split with its shares, a layer
# split, one GPU; the last row's record was stored before the knobs existed and holds none of them
SPLIT_KNOBS = ("gpus", "split_mode", "tensor_split")
SPLIT_NIGHT = [two_gpu_result("phi-3.5-moe-Q8_0-2gpu-row", split_mode="row", tensor_split="3,1"),
               two_gpu_result("deepseek-moe-16b-Q4_K_M-2gpu-layer", "deepseek-moe-16b", "Q4_K_M"),
               *night(models=("deepseek-moe-16b",), quants=("Q2_K",))]
SPLIT_RUN = f"scheduled__{FIRST}"


def store_as_0009(engine: sa.Engine) -> list[dict]:
    """SPLIT_NIGHT as 0009-era code stored it: its flat columns, and a record that holds the split knobs besides what
    no column holds. Returns the stored records."""
    table = tables(engine)
    rows = []
    for r in SPLIT_NIGHT:
        columns = to_row(r)
        record = columns.pop("record")
        record["config"].update({name: columns.pop(name) for name in SPLIT_KNOBS})
        rows.append({**columns, "run_id": SPLIT_RUN, "record": record})
    for name in SPLIT_KNOBS:
        del rows[-1]["record"]["config"][name]
    with engine.begin() as connection:
        store_environments(connection, table, SPLIT_NIGHT)
        store_build_and_run(connection, table, SPLIT_RUN, FIRST, "0.3.36", 0)
        connection.execute(table["results"].insert(), rows)
    return [row["record"] for row in rows]


def test_a_warehouse_stored_by_0009_code_gains_the_split_columns_from_each_record_and_goes_back(empty_url):
    url = empty_url
    engine = sa.create_engine(url)
    migrate.upgrade(engine, "0009")
    stored = store_as_0009(engine)
    warehouse = Warehouse(url)  # opening upgrades to the newest schema

    assert [tuple(row) for row in raw(engine, "SELECT gpus, split_mode, tensor_split FROM results ORDER BY id")] == [
        (2, "row", "3,1"), (2, "layer", ""), (1, "layer", ""), (1, "layer", "")]  # the last: BenchKnobs' defaults
    # 0011: each card's need, from the columns and the record, as the code computes it (a split's is its fuller card's)
    assert list(raw(engine, "SELECT needed_card_mib FROM results ORDER BY id")) == [
        r.memory.needed_card_mib for r in SPLIT_NIGHT]
    assert SPLIT_NIGHT[0].memory.needed_card_mib < SPLIT_NIGHT[0].memory.needed_mib / 1.8
    records = [as_dict(r) for r in raw(engine, "SELECT record FROM results ORDER BY id")]
    assert not any(set(SPLIT_KNOBS) & set(record["config"]) for record in records)  # each value once: its column
    assert warehouse.results_for_run(SPLIT_RUN) == SPLIT_NIGHT
    history = warehouse.history().set_index("config_name")
    assert history.loc["phi-3.5-moe/Q8_0/baseline-2gpu-row", list(SPLIT_KNOBS)].tolist() == [2, "row", "3,1"]
    warehouse.close()

    # and back: 0009's records, the knob-less one with the defaults it was read back with
    migrate.downgrade(engine, "0009")
    stored[-1]["config"].update(gpus=1, split_mode="layer", tensor_split="")
    assert [canonical(as_dict(r)) for r in raw(engine, "SELECT record FROM results ORDER BY id")] == [
        canonical(record) for record in stored]
    assert not set(SPLIT_KNOBS) & {c["name"] for c in sa.inspect(engine).get_columns("results")}
    engine.dispose()


def test_0011s_frozen_need_per_card_agrees_with_the_code_on_every_kind_of_row():
    """The migration computes needed_card_mib with its own frozen copy of Memory.needed_card_mib: they agree on one
    GPU, no GPU, layer and row splits with NVML on each card, and both splits without it (each card's buffers; a row
    split's share unknown)."""
    migration = importlib.import_module("vramwatch.warehouse.migrations.versions.0011_needed_per_card")
    without_nvml = {"memory__nvml_process_by_device_mib": {}, "memory__nvml_process_mib": None}
    rows = [result("phi-3.5-moe", "Q8_0"), result(gpu=False), *SPLIT_NIGHT[:2],
            *(replace(r, **without_nvml) for r in SPLIT_NIGHT[:2])]
    expected = [r.memory.needed_card_mib for r in rows]
    assert expected[1] is None and expected[4] is None and len({*expected[2:4], expected[5]}) == 3
    assert [migration.needed_card_mib(r.memory.needed_mib, r.memory.buffers_mib, r.memory.nvml_process_by_device_mib)
            for r in rows] == expected
