"""Small helpers over the warehouse's history frame (one row per stored result, Warehouse.history() columns)."""

from __future__ import annotations

import math

import pandas as pd

from vramwatch.errors import UserError

# Columns the detectors read; Warehouse.history() provides them (HISTORY_COLUMNS).
REQUIRED_COLUMNS = ("night", "run_id", "llama_cpp_commit", "config_id", "environment_id", "model", "quant", "mode",
                    "status", "gpu_total_mib", "n_overridden_tensors")


class HistoryError(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "pass Warehouse.history() (or a frame with its columns) and a run_id stored in it")


def split_tonight(history: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tonight's rows, rows of the runs before it), oldest first. Runs are ordered by night, then as given."""
    missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise HistoryError(f"history frame lacks columns {missing}")
    ordered = history.sort_values("night", kind="stable")
    run_order = {run: i for i, run in enumerate(ordered["run_id"].drop_duplicates())}
    if run_id not in run_order:
        raise HistoryError(f"run {run_id!r} has no rows in the history")
    position = ordered["run_id"].map(run_order)
    return ordered[position == run_order[run_id]], ordered[position < run_order[run_id]]


def number(value: object) -> float | None:
    """A measurement, or None where the cell is empty (None/NaN): never a zero that was not measured."""
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else value
