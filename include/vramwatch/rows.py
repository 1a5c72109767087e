"""The flat result row: one BenchResult as one row, declared once.

`FIELDS` is the single field list (as llama-bench has one): the warehouse's results columns, the history frame, the
validation frame and the report all derive from it. Names follow llama-bench where it has one (n_prompt, n_gen,
avg_ts, stddev_ts, samples_ts, n_threads, ...), with a pp_/tg_ prefix for its two tests. A measurement that is missing
stays None, never 0, so "not measured" is not a number.

Below the field list sit the helpers every reader of history shares: the history frame's columns, splitting a frame
into tonight and the nights before, and reading a cell as a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vramwatch.errors import UserError
from vramwatch.records import MODEL_NAME_MAX, BenchResult

# Column kinds: the warehouse maps each to a SQL type, the frames to a pandas dtype.
TEXT, STRING, INT, BIGINT, FLOAT, BOOL, JSON = "text", "string", "int", "bigint", "float", "bool", "json"


@dataclass(frozen=True)
class Field:
    """One column of the flat row: its name, kind, and where its value comes from in a BenchResult."""

    name: str
    kind: str
    source: str | Callable[[BenchResult], Any]  # a dotted attribute path, or a function of the result
    length: int = 0  # STRING columns: the most characters the warehouse keeps
    optional: bool = False  # None allowed: a measurement that may be absent (no GPU, test not run, ...)
    index: bool = False

    def value(self, result: BenchResult) -> Any:
        if callable(self.source):
            return self.source(result)
        value: Any = result
        for part in self.source.split("."):
            value = getattr(value, part)
            if value is None:
                return None
        return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _test_fields(test: str) -> tuple[Field, ...]:
    """llama-bench's fields of one of its tests (pp or tg), each None when the test did not run."""
    return (
        Field(f"{test}_n_prompt", INT, f"{test}.n_prompt", optional=True),
        Field(f"{test}_n_gen", INT, f"{test}.n_gen", optional=True),
        Field(f"{test}_avg_ts", FLOAT, f"{test}.avg_ts", optional=True),
        Field(f"{test}_stddev_ts", FLOAT, f"{test}.stddev_ts", optional=True),
        Field(f"{test}_samples_ts", JSON, f"{test}.samples_ts", optional=True),
    )


def _optional_floats(group: str, *names: str) -> tuple[Field, ...]:
    return tuple(Field(name, FLOAT, f"{group}.{name}", optional=True) for name in names)


FIELDS: tuple[Field, ...] = (
    Field("environment_id", STRING, "fingerprint.environment_id", length=16, index=True),
    Field("config_id", STRING, "config.config_id", length=200, index=True),
    Field("config_name", STRING, "config.config_name", length=200),
    Field("model", STRING, "config.model.model", length=MODEL_NAME_MAX),
    Field("quant", STRING, "config.model.quant", length=32),
    Field("mode", STRING, "config.mode", length=16),
    Field("n_cpu_moe", INT, "config.n_cpu_moe"),
    Field("status", STRING, "status", length=32),
    Field("error", TEXT, "error"),
    # the model file
    Field("arch", STRING, "config.model.arch", length=40),
    Field("n_expert", INT, "config.model.n_expert"),
    Field("synthetic", BOOL, "config.model.synthetic"),
    Field("file_bytes", BIGINT, "config.model.file_bytes"),
    Field("file_sha256", STRING, "config.model.sha256", length=64),
    # knobs that change the numbers (with the generation test, config_id hashes them: records.IDENTITY_KNOBS)
    Field("reps", INT, "config.reps"),
    Field("n_prompt", INT, "config.n_prompt"),
    Field("n_gen", INT, "config.n_gen"),
    Field("n_ctx", INT, "config.n_ctx"),
    Field("n_batch", INT, "config.n_batch"),
    Field("n_ubatch", INT, "config.n_ubatch"),
    Field("n_threads", INT, "n_threads"),  # what the child used (the config's 0 means "physical cores")
    Field("flash_attn", STRING, lambda r: r.flash_attn or r.config.flash_attn, length=8),
    Field("use_mmap", BOOL, "config.use_mmap"),
    Field("n_gpu_layers", INT, "config.n_gpu_layers"),
    Field("type_k", STRING, "config.type_k", length=8),
    Field("type_v", STRING, "config.type_v", length=8),
    # llama-bench's pp and tg tests
    *_test_fields("pp"),
    *_test_fields("tg"),
    # the seed's generation test
    Field("gen_tokens", INT, "generation.tokens", optional=True),
    Field("gen_tokens_per_s", FLOAT, "generation.tokens_per_s", optional=True),
    Field("gen_text_sha256", STRING, "generation.text_sha256", length=64, optional=True),
    # output quality on real weights: None unless the matrix entry asked for it (migration 0002)
    Field("perplexity", FLOAT, "quality.perplexity", optional=True),
    Field("quality_tokens", INT, "quality.n_tokens", optional=True),
    Field("greedy_sha256", STRING, "quality.greedy_sha256", length=64, optional=True),
    # memory: llama.cpp buffers (MiB), the seed's VRAM (GiB), NVML beside them (None without a GPU)
    Field("buffers_mib", JSON, "memory.buffers_mib"),
    *(Field(name, FLOAT, f"memory.{name}") for name in (
        "gpu_model_mib", "gpu_kv_mib", "gpu_compute_mib", "gpu_output_mib", "host_model_mib", "host_kv_mib",
        "host_compute_mib")),
    *_optional_floats("memory", "gpu_total_mib", "nvml_device_used_before_mib", "nvml_device_used_after_mib",
                      "nvml_process_mib", "nvml_peak_device_mib", "cuda_context_mib"),
    Field("host_rss_peak_mib", FLOAT, "memory.host_rss_peak_mib"),
    Field("vram_gib", FLOAT, "memory.vram_gib", optional=True),
    Field("needed_mib", FLOAT, "memory.needed_mib", optional=True),
    Field("n_overridden_tensors", INT, "n_overridden_tensors"),
    # roofline
    *(Field(name, BIGINT, f"roofline.{name}") for name in (
        "active_bytes_per_token", "gpu_bytes_per_token", "host_bytes_per_token")),
    *_optional_floats("roofline", "gpu_bandwidth_gbs", "host_bandwidth_gbs", "bound_tg_ts", "fraction_of_bound"),
    # when and how long
    Field("started_at", STRING, "started_at", length=40),
    Field("duration_s", FLOAT, "duration_s"),
    Field("load_s", FLOAT, "load_s"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def flatten(result: BenchResult) -> dict[str, Any]:
    """One result as one flat row, in FIELDS order."""
    return {f.name: f.value(result) for f in FIELDS}


# ------------------------------------------------------------------------------------------------ history frame

# What the warehouse's history() returns for each stored result: the run and build it came from, the flat row, and
# the machine in words.
RUN_COLUMNS = ("night", "run_id", "trigger", "run_status", "build_version", "llama_cpp_python_version",
               "llama_cpp_commit")
HISTORY_COLUMNS: tuple[str, ...] = (*RUN_COLUMNS, *FIELD_NAMES, "gpu_name", "cpu_model")
# The columns the detectors and the report cannot do without.
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
