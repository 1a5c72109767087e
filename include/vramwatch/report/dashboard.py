"""What the page shows, read from the warehouse: the latest night, open incidents, the seed table, memory and energy
history and two builds compared. It sits in the report stage, beside the report's own views, so the page, the CLI, the
pipeline and a static site can all build it.

Everything here is plain data for a template; its words and units come from vramwatch.rows. Imports pandas
(through the report's tables): the page loads this module on the first request, not at import. Every read is
bounded, whatever the warehouse holds: the charts read one row per config for each of the newest HISTORY_RUNS runs
(aggregated in SQL), the comparison one row per config and build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vramwatch.records import Incident, RunRecord, config_name
from vramwatch.report.compare import BuildComparison, compare_builds, config_order
from vramwatch.report.history_chart import (
    HISTORY_RUNS,
    ConfigChart,
    RunPoint,
    config_chart,
    config_label,
    energy_chart,
)
from vramwatch.report.tables import (  # the report's: both say it
    SEED_HEADER,
    SeedRow,
    Table,
    gpu_tables,
    seed_table_rows,
)
from vramwatch.rows import ENERGY_LINES, number

if TYPE_CHECKING:
    import pandas as pd

    from vramwatch.warehouse.store import Warehouse


@dataclass(frozen=True)
class Dashboard:
    newest: RunRecord | None = None  # the newest run, whatever its state (it may still be running)
    latest: RunRecord | None = None  # the newest run that stored results: what the tables show
    incidents: list[Incident] = field(default_factory=list)
    seed_tables: dict[str, list[SeedRow]] = field(default_factory=dict)  # model -> the seed table's rows
    charts: dict[str, list[ConfigChart]] = field(default_factory=dict)  # model -> one chart per config and environment
    energy_charts: dict[str, list[ConfigChart]] = field(default_factory=dict)  # model -> J/token, as `charts`
    energy_not_measured: list[str] = field(default_factory=list)  # configs without energy in any run, and why
    comparison: BuildComparison | None = None  # two builds side by side (None until the warehouse holds a build)
    history_runs: int = HISTORY_RUNS  # how many of the newest runs the charts show
    seed_header: tuple[str, ...] = tuple(SEED_HEADER[:-1])  # the report's columns but N (the page shows no reps)
    gpu_tables: list[Table] = field(default_factory=list)  # each config on several GPUs: its buffers per GPU, summed

    @property
    def empty(self) -> bool:
        return self.latest is None


def _by_model(rows: list[SeedRow]) -> dict[str, list[SeedRow]]:
    tables: dict[str, list[SeedRow]] = {}
    for row in rows:
        tables.setdefault(row.model, []).append(row)
    return tables


def _groups(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Warehouse.memory_points by config and environment (GPU and CPU hosts never share a line), in the seed
    table's order: (config_id, its rows oldest first)."""
    groups = sorted(points.groupby(["config_id", "environment_id"], sort=False),
                    key=lambda item: (config_order(item[1].iloc[-1]), item[0][1]))
    return [(config_id, rows) for (config_id, _env), rows in groups]


def _where(last: pd.Series, gpu: str, host: str) -> str:
    return f"{gpu} on {last['gpu_name']}" if last["gpu_name"] else f"no GPU: {host} ({last['cpu_model']})"


def _runs(rows: pd.DataFrame, column: str) -> list[RunPoint]:
    return [RunPoint(night=row.night, run_id=row.run_id, status=row.status, value=number(getattr(row, column)),
                     build=(row.llama_cpp_commit or row.build_version)[:9]) for row in rows.itertuples()]


def memory_charts(points: pd.DataFrame, flagged_configs: set[str]) -> dict[str, list[ConfigChart]]:
    """One chart per config and environment, grouped by model, from Warehouse.memory_points (one row per config
    and run, oldest first)."""
    charts: dict[str, list[ConfigChart]] = {}
    for config_id, rows in [] if points.empty else _groups(points):
        last = rows.iloc[-1]
        chart = config_chart(config_label(config_id), _where(last, "VRAM", "host RAM"), _runs(rows, "mib"),
                             flagged=config_id in flagged_configs)
        charts.setdefault(last["model"], []).append(chart)
    return charts


def energy_charts(points: pd.DataFrame, flagged_configs: set[str]) -> tuple[dict[str, list[ConfigChart]],
                                                                               list[str]]:
    """(one J/token chart per config and environment that measured energy in any run, grouped by model; a line
    for each that never did, with the newest run's reason), from Warehouse.memory_points."""
    charts: dict[str, list[ConfigChart]] = {}
    not_measured: list[str] = []
    for config_id, rows in [] if points.empty else _groups(points):
        last = rows.iloc[-1]
        lines = {name: [number(v) for v in rows[name]] for pair in ENERGY_LINES.values() for name in pair}
        if all(v is None for values in lines.values() for v in values):
            not_measured.append(f"{config_name(config_id)}: energy not measured ({last['energy_note'] or last['status']})")
            continue
        chart = energy_chart(config_label(config_id), _where(last, "GPU energy (NVML)", "host"), _runs(rows, "mib"),
                             lines, flagged=config_id in flagged_configs)
        charts.setdefault(last["model"], []).append(chart)
    return charts, not_measured


def load_dashboard(warehouse: Warehouse, runs: int = HISTORY_RUNS, build_a: str | None = None,
                   build_b: str | None = None, changed_only: bool = False) -> Dashboard:
    """The page's data; build_a and build_b pick the builds to compare (by id, as the page's form sends them; None:
    the last two), changed_only keeps the comparison to the configs that changed."""
    newest = next(iter(warehouse.runs(limit=1)), None)
    latest = warehouse.latest_run()
    if latest is None:
        return Dashboard(newest=newest)
    incidents = warehouse.open_incidents()
    flagged = {config for incident in incidents for config in incident.configs}
    points = warehouse.memory_points(runs)
    energy, energy_not_measured = energy_charts(points, flagged)
    results = warehouse.results_for_run(latest.run_id)
    return Dashboard(
        newest=newest, latest=latest, incidents=incidents,
        seed_tables=_by_model(seed_table_rows(results)), gpu_tables=gpu_tables(results),
        charts=memory_charts(points, flagged), energy_charts=energy, energy_not_measured=energy_not_measured,
        comparison=compare_builds(warehouse, build_a, build_b, changed_only), history_runs=runs,
    )
