"""One BenchResult as one results row, and back: each figure is kept once.

The flat columns (vramwatch.rows.FIELDS) are a result's truth: history, regressions and the page read them in SQL.
The JSON `record` keeps only what no column holds (the buffers' source lines, the fingerprint's driver and host, the
generation test's prompt, the sub-records that are absent, ...). A BenchResult read back is its record with every
column put back at its place, so a column and a copy of it in the record can never disagree: there is no copy.

A column holds a record field when its rows.Field source is a path of record fields (config.model.quant); a derived
column (config_id, vram_gib, needed_mib, a computed source) is stored for SQL and rebuilt from the record's fields.
A migration that adds a column for a field the stored records already hold moves each value out of the record into
the column (as 0007 does); a column for a new field reads None on older rows: not measured then.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from vramwatch.records import BenchResult
from vramwatch.rows import FIELDS, flatten


def _record_path(source: object) -> tuple[str, ...] | None:
    """The path of record fields a flat-row source reads (None: it computes its value, or reads a property)."""
    if not isinstance(source, str):
        return None
    record_type: Any = BenchResult
    parts = tuple(source.split("."))
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(record_type) or part not in {f.name for f in dataclasses.fields(record_type)}:
            return None
        if depth < len(parts) - 1:
            hint = typing.get_type_hints(record_type)[part]
            if typing.get_origin(hint) in (typing.Union, types.UnionType):  # an optional sub-record
                (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            record_type = hint
    return parts


# column name -> the record path its value lives at: these leave the JSON record
COLUMN_PATHS: dict[str, tuple[str, ...]] = {
    field.name: path for field in FIELDS if (path := _record_path(field.source)) is not None}


def _parent(record: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The dict that holds the path's last part; None when a sub-record on the way is absent (pp of a config whose
    pp test did not run: its columns are None too)."""
    for part in path[:-1]:
        record = record.get(part)  # type: ignore[assignment]
        if record is None:
            return None
    return record


def to_row(result: BenchResult) -> dict[str, Any]:
    """The results row of a result (without run_id): its flat columns, and its record less what they hold."""
    record = result.to_dict()
    for path in COLUMN_PATHS.values():
        parent = _parent(record, path)
        if parent is not None:
            del parent[path[-1]]
    return {**flatten(result), "record": record}


# the same by the sub-record that holds them, so a row walks to each sub-record once
_BY_PARENT: dict[tuple[str, ...], list[tuple[str, str]]] = {}
for _name, _path in COLUMN_PATHS.items():
    _BY_PARENT.setdefault(_path[:-1], []).append((_name, _path[-1]))


def result_dict(columns: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A stored result as BenchResult.to_dict() gave it: its record (taken over, not copied) with the columns of
    COLUMN_PATHS put back. Not revived: a publisher writes it out as it is, years of rows in seconds."""
    for parent_path, names in _BY_PARENT.items():
        parent = _parent(record, (*parent_path, ""))
        if parent is not None:
            for name, key in names:
                parent[key] = columns[name]
    return record


def from_row(columns: Mapping[str, Any], record: dict[str, Any]) -> BenchResult:
    """A stored result: its record (taken over, not copied) with the columns of COLUMN_PATHS put back."""
    return BenchResult.from_dict(result_dict(columns, record))
