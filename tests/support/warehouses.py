"""Warehouses filled through the Warehouse API.

- `store_nights`: nights of results as runs run000, run001, ... on consecutive nights, each on its own commit
  (`store_validated_night` stores one validated night so).
- `three_nights`: two nights on an old build and one on a new build whose DeepSeek Q4_K_M baseline grew and whose
  Phi Q4_K_M baseline no longer fits. The UI tests read it, and the browser test serves it.
"""

from __future__ import annotations

from datetime import date, timedelta
from multiprocessing.synchronize import Barrier

import sqlalchemy as sa
from support.samples import night, replace, result

from vramwatch.records import BenchResult, BuildRecord, BuildRequest, Incident, ValidatedNight
from vramwatch.warehouse import migrate
from vramwatch.warehouse.store import Warehouse

START = date(2026, 1, 1)


def night_of(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


def commit_of(i: int) -> str:
    return f"b{5000 + i}"


def store_validated_night(warehouse: Warehouse, i: int, validated: ValidatedNight) -> str:
    """Store run{i:03d} on night_of(i), built from commit_of(i), as the pipeline stores a night; returns its run id."""
    build = BuildRecord(request=BuildRequest(version="0.3.36"), status="ok", python="", source_dir="",
                        llama_cpp_python_version="0.3.36", llama_cpp_commit=commit_of(i),
                        built_at=f"{night_of(i)}T01:00:00+00:00")
    return warehouse.store_run(f"run{i:03d}", night_of(i), build, validated, "test")


def store_nights(warehouse: Warehouse, nights: list[list[BenchResult]], first: int = 0) -> None:
    for i, results in enumerate(nights, start=first):
        store_validated_night(warehouse, i, ValidatedNight(accepted=results, quarantined=[]))


NIGHTS = ("2026-01-01", "2026-01-02", "2026-01-03")
OLD_BUILD, NEW_BUILD = "0c1e57098", "b7a3f21c0"
REGRESSED = "deepseek-moe-16b/Q4_K_M/baseline"
OOM = "phi-3.5-moe/Q4_K_M/baseline"
GROWTH_MIB = 310.0


def build_record(commit: str) -> BuildRecord:
    return BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok",
                       python="/builds/cuda/bin/python", source_dir="/builds/cuda/src",
                       llama_cpp_python_version="0.3.36", llama_cpp_commit=commit, built_at=f"{commit}-built")


def _third_night() -> list:
    """The new build: DeepSeek Q4_K_M baseline grew by GROWTH_MIB, Phi Q4_K_M baseline no longer fits."""
    results = []
    for r in night():
        if r.config.config_name == REGRESSED:
            r = replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + GROWTH_MIB)
        elif r.config.config_name == OOM:
            r = result("phi-3.5-moe", "Q4_K_M", "baseline", status="oom")
        results.append(r)
    return results


def store_three_nights(warehouse: Warehouse) -> str:
    """three_nights' runs alone, nothing detected yet; returns the third night's run id."""
    for i, day in enumerate(NIGHTS):
        last = i == len(NIGHTS) - 1
        warehouse.store_run(f"scheduled__{day}", day, build_record(NEW_BUILD if last else OLD_BUILD),
                            ValidatedNight(accepted=_third_night() if last else night(), quarantined=[]), "scheduled")
    return f"scheduled__{NIGHTS[-1]}"


def detect_when_all_are_ready(url: str, run_id: str, ready: Barrier) -> None:
    """One detection process of several at once (multiprocessing's target): each opens its warehouse, waits for the
    others, then detects and stores the night."""
    from vramwatch.regress.detect import detect_for_run

    warehouse = Warehouse(url)
    ready.wait(timeout=120)
    detect_for_run(warehouse, run_id)
    warehouse.close()


def three_nights(url: str) -> Incident:
    """Three stored nights (two on the old build, one on the new) and the open VRAM incident of the third."""
    warehouse = Warehouse(url)
    try:
        store_three_nights(warehouse)
        before = result().memory.gpu_model_mib
        regressed = next(r.config.config_id for r in night() if r.config.config_name == REGRESSED)
        incident = Incident(incident_id=None, kind="vram", metric="gpu_model_mib", state="open", configs=[regressed],
                            summary=f"{REGRESSED}: CUDA0 model buffer +{GROWTH_MIB:.0f} MiB",
                            delta_mib=GROWTH_MIB, delta_pct=100 * GROWTH_MIB / before,
                            build_before=OLD_BUILD, build_after=NEW_BUILD, opened_night=NIGHTS[-1])
        environment = night()[0].fingerprint.environment_id
        return warehouse.save_incident(incident, environment, NIGHTS[-1])
    finally:
        warehouse.close()


def published_history(url: str, nights: int = 12) -> Incident:
    """What the published site is tested and pictured on: `nights` nights on three builds (the first third on one,
    then one more, the last night on NEW_BUILD with three_nights' regression and OOM), the open VRAM incident of the
    last night with its culprit search, and that night's verdicts, which page it."""
    from support.samples import bisection

    from vramwatch.records import NightVerdicts

    warehouse = Warehouse(url)
    try:
        for i in range(nights):
            last = i == nights - 1
            commit = NEW_BUILD if last else OLD_BUILD if i < nights // 3 else "5e2d8a441"
            warehouse.store_run(f"scheduled__{night_of(i)}", night_of(i), build_record(commit),
                                ValidatedNight(accepted=_third_night() if last else night(), quarantined=[]),
                                "scheduled")
        regressed = next(r.config.config_id for r in night() if r.config.config_name == REGRESSED)
        incident = Incident(incident_id=None, kind="vram", metric="gpu_model_mib", state="open", configs=[regressed],
                            summary=f"{REGRESSED}: CUDA0 model buffer +{GROWTH_MIB:.0f} MiB",
                            delta_mib=GROWTH_MIB, delta_pct=100 * GROWTH_MIB / result().memory.gpu_model_mib,
                            build_before="5e2d8a441", build_after=NEW_BUILD, opened_night=night_of(nights - 1),
                            changes=[f"{REGRESSED}: GPU model +{GROWTH_MIB:.2f} MiB"])
        environment = night()[0].fingerprint.environment_id
        incident = warehouse.save_incident(incident, environment, night_of(nights - 1))
        incident = warehouse.save_bisection(incident.incident_id, bisection())
        warehouse.save_verdicts(f"scheduled__{night_of(nights - 1)}", NightVerdicts(incidents=[incident]))
        return incident
    finally:
        warehouse.close()


def empty_rows(url: str) -> None:
    """Delete every row and restart the ids, keeping the schema: as fresh as migrating down to nothing and up again,
    which cost about a second of PostgreSQL per test."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        tables = [f'"{t}"' for t in sa.inspect(connection).get_table_names() if t != migrate.VERSION_TABLE]
        connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
