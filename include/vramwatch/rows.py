"""The flat result row: one BenchResult as one row, declared once.

`FIELDS` is the single field list (as llama-bench has one): the warehouse's results columns, the history frame, the
validation frame and every printer (report, page, CLI) derive from it: each field carries the words and the unit a
printer shows it with, so a printer lists field names, never its own labels. Names follow llama-bench where it has one (n_prompt, n_gen,
avg_ts, stddev_ts, samples_ts, n_threads, ...), with a pp_/tg_ prefix for its two tests. A measurement that is missing
stays None, never 0, so "not measured" is not a number.

Below the field list sit the helpers every reader of history shares: the history frame's columns, splitting a frame
into tonight and the nights before, and reading a cell as a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vramwatch.errors import UserError
from vramwatch.records import MIB, MODEL_NAME_MAX, TENSOR_SPLIT_MAX, BenchResult, IncidentKind

if TYPE_CHECKING:  # the history frame's type: a GPU worker's bench (bench.ab reads the fields) runs without pandas
    import pandas as pd

# Column kinds: the warehouse maps each to a SQL type, the frames to a pandas dtype.
TEXT, STRING, INT, BIGINT, FLOAT, BOOL, JSON = "text", "string", "int", "bigint", "float", "bool", "json"
MISSING = "–"  # what every printer shows for a figure that was not measured: never a 0
BYTES = "B"  # a size in bytes: printed in binary units (MiB, GiB)


def binary_size(mib: float) -> str:
    """A size given in MiB as people read it: MiB below 1 GiB, GiB from there (binary units: 1 GiB = 1024 MiB)."""
    return f"{mib / 1024:.2f} GiB" if abs(mib) >= 1024 else f"{mib:.0f} MiB"


@dataclass(frozen=True)
class Judged:
    """How the same-night A/B judges a field (regress.ab): under which name, by which of the throughput policy's
    percentages, and which way is worse. The A/B works on figures where lower is worse: one where higher is worse
    (J/token) is judged as its reciprocal (`oriented`)."""

    name: str  # the A/B's name for the metric: its key in ABRun.samples_ts and ABVerdict.metric
    page_pct: str  # the ThroughputPolicy field that says what change pages
    kind: IncidentKind  # the incident a confirmed change opens
    higher_is_worse: bool = False


@dataclass(frozen=True)
class Field:
    """One column of the flat row: its name, kind, and where its value comes from in a BenchResult."""

    name: str
    kind: str
    source: str | Callable[[BenchResult], Any]  # a dotted attribute path, or a function of the result
    length: int = 0  # STRING columns: the most characters the warehouse keeps
    optional: bool = False  # None allowed: a measurement that may be absent (no GPU, test not run, ...)
    index: bool = False
    label: str = ""  # what printers call it ("GPU KV"); the name when empty
    unit: str = ""  # of the stored value: "MiB", "GiB" (binary), "tok/s", "s", BYTES...; "" for a count or a word
    format: str = ""  # format spec of the number ("" = str()), e.g. ".2f"
    compared: bool = False  # a figure runs and builds are compared on: the change table, the build compare, the CLI
    judged: Judged | None = None  # the same-night A/B judges it (None: it does not)

    @property
    def words(self) -> str:
        return self.label or self.name

    @property
    def title(self) -> str:
        """The words with the unit, for a column header or an axis: "GPU KV (MiB)"."""
        return f"{self.words} ({self.unit})" if self.unit and self.unit != BYTES else self.words

    def number(self, value: Any, sign: bool = False) -> str:
        """The value in its unit, without the unit (a column whose header says it); MISSING when not measured."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        spec = ("+" if sign else "") + self.format
        return format(value, spec) if spec else str(value)

    def text(self, value: Any) -> str:
        """The value with its unit ("1024.00 MiB", "8.50 GiB" for a size in bytes); MISSING when not measured."""
        if self.unit == BYTES and number(value) is not None:
            return binary_size(value / MIB)
        shown = self.number(value)
        return f"{shown} {self.unit}" if self.unit and shown != MISSING and self.unit != BYTES else shown

    def value(self, result: BenchResult) -> Any:
        if callable(self.source):
            return self.source(result)
        value: Any = result
        for part in self.source.split("."):
            value = getattr(value, part)
            if value is None:
                return None
        return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


TOK_S, MIB_UNIT, GIB_UNIT, SECONDS = "tok/s", "MiB", "GiB", "s"
J_PER_TOK, WATTS = "J/tok", "W"


def _test_fields(test: str) -> tuple[Field, ...]:
    """llama-bench's fields of one of its tests (pp or tg), each None when the test did not run."""
    return (
        Field(f"{test}_n_prompt", INT, f"{test}.n_prompt", optional=True, label=f"{test} prompt tokens"),
        Field(f"{test}_n_gen", INT, f"{test}.n_gen", optional=True, label=f"{test} generated tokens"),
        Field(f"{test}_avg_ts", FLOAT, f"{test}.avg_ts", optional=True, label=test, unit=TOK_S, format=".1f",
              compared=True, judged=Judged(test, "page_pct", IncidentKind.THROUGHPUT)),
        Field(f"{test}_stddev_ts", FLOAT, f"{test}.stddev_ts", optional=True, label=f"{test} stddev", unit=TOK_S,
              format=".2f"),
        Field(f"{test}_samples_ts", JSON, f"{test}.samples_ts", optional=True, label=f"{test} samples", unit=TOK_S),
    )


def _energy_fields(test: str) -> tuple[Field, ...]:
    """The energy of one of llama-bench's tests: GPU joules per token, average power, the host's joules per token."""
    return (
        Field(f"{test}_j_per_tok", FLOAT, f"energy.{test}.j_per_tok", optional=True, label=f"{test} energy",
              unit=J_PER_TOK, format=".4f", compared=True,
              judged=Judged(f"{test}_j_per_tok", "energy_page_pct", IncidentKind.ENERGY, higher_is_worse=True)),
        Field(f"{test}_power_avg_w", FLOAT, f"energy.{test}.power_avg_w", optional=True, label=f"{test} GPU power",
              unit=WATTS, format=".0f"),
        Field(f"{test}_host_j_per_tok", FLOAT, f"energy.{test}.host_j_per_tok", optional=True,
              label=f"{test} host energy", unit=J_PER_TOK, format=".4f"),
    )


def _mib(group: str, name: str, label: str, optional: bool = False, compared: bool = False) -> Field:
    return Field(name, FLOAT, f"{group}.{name}", optional=optional, label=label, unit=MIB_UNIT, format=".2f",
                 compared=compared)


def _buffer(name: str, label: str) -> Field:
    """A llama.cpp buffer as it reports it (MiB, per device kind): exact, so builds are compared on it."""
    return _mib("memory", name, label, compared=True)


FIELDS: tuple[Field, ...] = (
    Field("environment_id", STRING, "fingerprint.environment_id", length=16, index=True, label="environment"),
    Field("config_id", STRING, "config.config_id", length=200, index=True, label="config id"),
    Field("config_name", STRING, "config.config_name", length=200, label="config"),
    Field("model", STRING, "config.model.model", length=MODEL_NAME_MAX, label="model"),
    Field("quant", STRING, "config.model.quant", length=32, label="quantization"),
    Field("mode", STRING, "config.mode", length=16, label="mode"),
    Field("n_cpu_moe", INT, "config.n_cpu_moe", label="n_cpu_moe"),
    Field("status", STRING, "status", length=32, label="status"),
    Field("error", TEXT, "error", label="error"),
    # the model file
    Field("arch", STRING, "config.model.arch", length=40, label="architecture"),
    Field("n_expert", INT, "config.model.n_expert", label="experts"),
    Field("synthetic", BOOL, "config.model.synthetic", label="synthetic"),
    Field("file_bytes", BIGINT, "config.model.file_bytes", label="file size", unit=BYTES),
    Field("file_sha256", STRING, "config.model.sha256", length=64, label="file sha256"),
    # knobs that change the numbers (with the generation test, config_id hashes them: records.IDENTITY_KNOBS)
    Field("reps", INT, "config.reps", label="N"),
    Field("n_prompt", INT, "config.n_prompt", label="prompt tokens"),
    Field("n_gen", INT, "config.n_gen", label="generated tokens"),
    Field("n_ctx", INT, "config.n_ctx", label="context"),
    Field("n_batch", INT, "config.n_batch", label="batch"),
    Field("n_ubatch", INT, "config.n_ubatch", label="ubatch"),
    # what the child used (the config's 0 means "physical cores")
    Field("n_threads", INT, "n_threads", label="threads"),
    Field("flash_attn", STRING, lambda r: r.flash_attn or r.config.flash_attn, length=8, label="fa"),
    Field("use_mmap", BOOL, "config.use_mmap", label="mmap"),
    Field("n_gpu_layers", INT, "config.n_gpu_layers", label="GPU layers"),
    Field("type_k", STRING, "config.type_k", length=8, label="K cache type"),
    Field("type_v", STRING, "config.type_v", length=8, label="V cache type"),
    # the split over several GPUs (issue 29; migration 0010)
    Field("gpus", INT, "config.gpus", label="GPUs"),
    Field("split_mode", STRING, "config.split_mode", length=8, label="split mode"),
    Field("tensor_split", STRING, "config.tensor_split", length=TENSOR_SPLIT_MAX, label="tensor split"),
    # llama-bench's pp and tg tests
    *_test_fields("pp"),
    *_test_fields("tg"),
    # the seed's generation test
    Field("gen_tokens", INT, "generation.tokens", optional=True, label="generated tokens"),
    Field("gen_tokens_per_s", FLOAT, "generation.tokens_per_s", optional=True, label="generation", unit=TOK_S,
          format=".2f"),
    Field("gen_text_sha256", STRING, "generation.text_sha256", length=64, optional=True, label="generation sha256"),
    # output quality on real weights: None unless the matrix entry asked for it (migration 0002)
    Field("perplexity", FLOAT, "quality.perplexity", optional=True, label="perplexity", format=".2f"),
    Field("quality_tokens", INT, "quality.n_tokens", optional=True, label="perplexity tokens"),
    Field("greedy_sha256", STRING, "quality.greedy_sha256", length=64, optional=True, label="greedy hash"),
    # memory: llama.cpp buffers (MiB), the seed's VRAM (GiB), NVML beside them (None without a GPU)
    Field("buffers_mib", JSON, "memory.buffers_mib", label="buffers", unit=MIB_UNIT),
    _buffer("gpu_model_mib", "GPU model"), _buffer("gpu_kv_mib", "GPU KV"), _buffer("gpu_compute_mib", "GPU compute"),
    _buffer("gpu_output_mib", "GPU output"), _buffer("host_model_mib", "host model"),
    _buffer("host_kv_mib", "host KV"), _buffer("host_compute_mib", "host compute"),
    _mib("memory", "gpu_total_mib", "GPU total", optional=True),
    _mib("memory", "nvml_device_used_before_mib", "NVML device before", optional=True),
    _mib("memory", "nvml_device_used_after_mib", "NVML device after", optional=True),
    _mib("memory", "nvml_process_mib", "NVML process", optional=True),
    _mib("memory", "nvml_peak_device_mib", "NVML peak device", optional=True),
    _mib("memory", "cuda_context_mib", "CUDA context", optional=True),
    _mib("memory", "host_rss_peak_mib", "host RSS peak"),
    Field("vram_gib", FLOAT, "memory.vram_gib", optional=True, label="VRAM", unit=GIB_UNIT, format=".2f"),
    _mib("memory", "needed_mib", "GPU memory needed", optional=True),
    _mib("memory", "needed_card_mib", "GPU memory needed per card", optional=True),  # its fullest card (0011)
    Field("n_overridden_tensors", INT, "n_overridden_tensors", label="tensors on CPU"),
    # roofline
    Field("active_bytes_per_token", BIGINT, "roofline.active_bytes_per_token", label="active bytes per token",
          unit=BYTES),
    Field("gpu_bytes_per_token", BIGINT, "roofline.gpu_bytes_per_token", label="GPU bytes per token", unit=BYTES),
    Field("host_bytes_per_token", BIGINT, "roofline.host_bytes_per_token", label="host bytes per token", unit=BYTES),
    Field("gpu_bandwidth_gbs", FLOAT, "roofline.gpu_bandwidth_gbs", optional=True, label="GPU bandwidth",
          unit="GB/s", format=".0f"),
    Field("host_bandwidth_gbs", FLOAT, "roofline.host_bandwidth_gbs", optional=True, label="host bandwidth",
          unit="GB/s", format=".0f"),
    Field("bound_tg_ts", FLOAT, "roofline.bound_tg_ts", optional=True, label="tg bound", unit=TOK_S, format=".1f"),
    Field("fraction_of_bound", FLOAT, "roofline.fraction_of_bound", optional=True, label="tg reached",
          format=".1%"),
    # energy (issue 27): NVML's counter over each test's window, the host's RAPL share; None where not measured, and
    # energy_note says why (no GPU, no counter, "host energy not measured") and what was flagged
    *_energy_fields("pp"),
    *_energy_fields("tg"),
    Field("gpu_power_peak_w", FLOAT, "energy.power_peak_w", optional=True, label="GPU peak power", unit=WATTS,
          format=".0f"),
    Field("gpu_idle_w", FLOAT, "energy.idle_w", optional=True, label="GPU idle power", unit=WATTS, format=".0f"),
    Field("gpu_power_limit_w", FLOAT, "energy.power_limit_w", optional=True, label="GPU power limit", unit=WATTS,
          format=".0f"),
    Field("energy_agreement_pct", FLOAT, "energy.agreement_pct", optional=True, label="energy counter vs samples",
          unit="%", format=".1f"),
    Field("energy_note", TEXT, "energy.note", label="energy note"),
    # when and how long
    Field("started_at", STRING, "started_at", length=40, label="started"),
    Field("duration_s", FLOAT, "duration_s", label="duration", unit=SECONDS, format=".1f"),
    Field("load_s", FLOAT, "load_s", label="load", unit=SECONDS, format=".2f"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
COMPARED: tuple[Field, ...] = tuple(f for f in FIELDS if f.compared)  # in FIELDS order
AB_JUDGED: dict[str, Field] = {f.judged.name: f for f in FIELDS if f.judged}  # the A/B's metric name -> its field
# The energy history the page draws per config: each test's GPU and host J/token, and why a figure is absent
ENERGY_LINES: dict[str, tuple[str, str]] = {test: (f"{test}_j_per_tok", f"{test}_host_j_per_tok")
                                            for test in ("pp", "tg")}
ENERGY_POINTS: tuple[str, ...] = (*(name for lines in ENERGY_LINES.values() for name in lines), "energy_note")


def oriented(field: Field, values: Any) -> Any:
    """A figure (a number, an array, a column) so that lower is worse, as the A/B and the drift check read it: a
    figure where higher is worse (J/token) as its reciprocal (tokens per joule)."""
    return 1 / values if field.judged and field.judged.higher_is_worse else values


def words_of(name: str) -> str:
    """What printers call a metric: its field's words ("gpu_model_mib" -> "GPU model"); other names (a buffer such as
    "CUDA0/compute", a test such as "tg") as they are."""
    return BY_NAME[name].words if name in BY_NAME else name


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
