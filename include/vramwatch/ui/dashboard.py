"""What the page shows, read from the warehouse: the latest night, open incidents, the seed table, memory history.

Everything here is plain data for the template; formatting stays in the template. Imports pandas (through the
report's tables): app.py loads this module on the first request, not at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vramwatch.records import MODES, Incident, RunRecord
from vramwatch.report.tables import SeedRow, seed_table_rows  # the report's seed table, so both say the same
from vramwatch.ui.chart import Chart, Night, history_chart

if TYPE_CHECKING:
    import pandas as pd

    from vramwatch.warehouse.store import Warehouse

HISTORY_NIGHTS = 60  # nights per chart: two months of nightlies


@dataclass(frozen=True)
class Dashboard:
    newest: RunRecord | None = None  # the newest run, whatever its state (it may still be running)
    latest: RunRecord | None = None  # the newest run that stored results: what the tables show
    incidents: list[Incident] = field(default_factory=list)
    seed_tables: dict[str, list[SeedRow]] = field(default_factory=dict)  # model -> the seed table's rows
    charts: dict[str, list[Chart]] = field(default_factory=dict)  # model -> one chart per config and environment

    @property
    def empty(self) -> bool:
        return self.latest is None


def _by_model(rows: list[SeedRow]) -> dict[str, list[SeedRow]]:
    tables: dict[str, list[SeedRow]] = {}
    for row in rows:
        tables.setdefault(row.model, []).append(row)
    return tables


def _memory_mib(frame: pd.DataFrame) -> pd.Series:
    """VRAM (CUDA0 model + KV + compute) on GPU hosts; without a GPU, the same buffers in host RAM. None if not ok."""
    gpu = frame["gpu_model_mib"] + frame["gpu_kv_mib"] + frame["gpu_compute_mib"]
    host = frame["host_model_mib"] + frame["host_kv_mib"] + frame["host_compute_mib"]
    on_gpu = frame["gpu_name"].fillna("") != ""
    return gpu.where(on_gpu, host).where(frame["status"] == "ok")


def _config_order(row: pd.Series) -> tuple:
    mode = row["mode"]
    return (row["model"], row["quant"], MODES.index(mode) if mode in MODES else len(MODES), row["n_cpu_moe"])


def memory_charts(frame: pd.DataFrame, flagged_configs: set[str],
                  nights: int = HISTORY_NIGHTS) -> dict[str, list[Chart]]:
    """One chart per config and environment (GPU and CPU hosts never share a line), grouped by model."""
    if frame.empty:
        return {}
    kept = sorted(frame["night"].unique())[-nights:]
    frame = frame[frame["night"].isin(kept)].assign(mib=_memory_mib)
    charts: dict[str, list[Chart]] = {}
    groups = sorted(frame.groupby(["config_id", "environment_id"], sort=False),
                    key=lambda item: (_config_order(item[1].iloc[-1]), item[0][1]))
    for (config_id, _env), rows in groups:
        last = rows.iloc[-1]
        mode = f"partial {last['n_cpu_moe']}" if last["mode"] == "partial" else last["mode"]
        where = f"VRAM on {last['gpu_name']}" if last["gpu_name"] else f"no GPU: host RAM ({last['cpu_model']})"
        history = [
            Night(night=row.night, status=row.status, mib=None if math.isnan(row.mib) else float(row.mib),
                  build=(row.llama_cpp_commit or row.build_version)[:9])
            for row in rows.itertuples()
        ]
        chart = history_chart(f"{last['quant']} · {mode}", where, history, flagged=config_id in flagged_configs)
        charts.setdefault(last["model"], []).append(chart)
    return charts


def load_dashboard(warehouse: Warehouse, nights: int = HISTORY_NIGHTS) -> Dashboard:
    newest = next(iter(warehouse.runs(limit=1)), None)
    latest = warehouse.latest_run()
    if latest is None:
        return Dashboard(newest=newest)
    incidents = warehouse.open_incidents()
    flagged = {config for incident in incidents for config in incident.configs}
    return Dashboard(
        newest=newest, latest=latest, incidents=incidents,
        seed_tables=_by_model(seed_table_rows(warehouse.results_for_run(latest.run_id))),
        charts=memory_charts(warehouse.history(), flagged, nights),
    )
