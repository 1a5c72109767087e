"""The warehouse schema as typed SQLAlchemy models. Alembic migrations (migrations/versions) create it; these
models are what the code reads and writes, and a test checks the two never drift apart.

Records stay plain data: `Warehouse` maps records to these rows and back, nothing outside this package sees a row.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, DateTime, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so migrations name them the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, int: Integer}


class BuildRow(Base):
    """One build attempt of llama-cpp-python (a reused venv maps to the row of the build that made it)."""

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("key", "built_at", name="uq_builds_key_built_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[str] = mapped_column(String(80))  # what was asked for: PyPI version or git ref
    llama_cpp_python_version: Mapped[str] = mapped_column(String(40), default="")
    llama_cpp_commit: Mapped[str] = mapped_column(String(64), default="")
    backend: Mapped[str] = mapped_column(String(16))
    cuda_architectures: Mapped[str] = mapped_column(String(64), default="")
    flags: Mapped[str] = mapped_column(Text, default="")  # extra CMAKE_ARGS
    status: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    artifact_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    built_at: Mapped[str] = mapped_column(String(40), default="")


class RunRow(Base):
    """One nightly run (an Airflow DAG run, a CLI run or a test run)."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    night: Mapped[date] = mapped_column(Date, index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"))
    trigger: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))


class EnvironmentRow(Base):
    """Where results were measured, keyed by Fingerprint.environment_id; the latest fingerprint seen wins."""

    __tablename__ = "environments"

    environment_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_name: Mapped[str] = mapped_column(String(120), default="")
    gpu_count: Mapped[int] = mapped_column(default=0)
    gpu_driver: Mapped[str] = mapped_column(String(40), default="")
    cuda_version: Mapped[str] = mapped_column(String(40), default="")
    compute_capability: Mapped[str] = mapped_column(String(16), default="")
    cpu_model: Mapped[str] = mapped_column(String(200), default="")
    cpu_cores: Mapped[int] = mapped_column(default=0)
    ram_gib: Mapped[float] = mapped_column(Float, default=0.0)
    backend: Mapped[str] = mapped_column(String(16), default="")
    last_night: Mapped[date] = mapped_column(Date)


class ResultRow(Base):
    """One config of one run, every measured field a column (see flatten.py), plus the whole record as JSON."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("run_id", "config_id", name="uq_results_run_id_config_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[str] = mapped_column(ForeignKey("environments.environment_id"), index=True)
    config_id: Mapped[str] = mapped_column(String(200), index=True)
    model: Mapped[str] = mapped_column(String(120))
    quant: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    n_cpu_moe: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    # the model file
    arch: Mapped[str] = mapped_column(String(40), default="")
    n_expert: Mapped[int] = mapped_column(default=0)
    synthetic: Mapped[bool] = mapped_column(default=False)
    file_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_sha256: Mapped[str] = mapped_column(String(64), default="")
    # knobs that change the numbers
    reps: Mapped[int] = mapped_column(default=0)
    n_ctx: Mapped[int] = mapped_column(default=0)
    n_batch: Mapped[int] = mapped_column(default=0)
    n_ubatch: Mapped[int] = mapped_column(default=0)
    n_threads: Mapped[int] = mapped_column(default=0)
    flash_attn: Mapped[str] = mapped_column(String(8), default="")
    use_mmap: Mapped[bool] = mapped_column(default=True)
    # llama-bench's pp and tg tests
    pp_n_prompt: Mapped[int | None]
    pp_n_gen: Mapped[int | None]
    pp_avg_ts: Mapped[float | None] = mapped_column(Float)
    pp_stddev_ts: Mapped[float | None] = mapped_column(Float)
    pp_samples_ts: Mapped[list[Any] | None]
    tg_n_prompt: Mapped[int | None]
    tg_n_gen: Mapped[int | None]
    tg_avg_ts: Mapped[float | None] = mapped_column(Float)
    tg_stddev_ts: Mapped[float | None] = mapped_column(Float)
    tg_samples_ts: Mapped[list[Any] | None]
    # the seed's generation test
    gen_tokens: Mapped[int | None]
    gen_tokens_per_s: Mapped[float | None] = mapped_column(Float)
    gen_text_sha256: Mapped[str | None] = mapped_column(String(64))
    # output quality on real weights: None unless the matrix entry asked for it (migration 0002)
    perplexity: Mapped[float | None] = mapped_column(Float)
    quality_tokens: Mapped[int | None]
    greedy_sha256: Mapped[str | None] = mapped_column(String(64))
    # memory: llama.cpp buffers (MiB), the seed's VRAM (GiB), NVML beside them (None without a GPU)
    buffers_mib: Mapped[dict[str, Any]]
    gpu_model_mib: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_kv_mib: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_compute_mib: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_output_mib: Mapped[float] = mapped_column(Float, default=0.0)
    host_model_mib: Mapped[float] = mapped_column(Float, default=0.0)
    host_kv_mib: Mapped[float] = mapped_column(Float, default=0.0)
    host_compute_mib: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_total_mib: Mapped[float | None] = mapped_column(Float)
    nvml_device_used_before_mib: Mapped[float | None] = mapped_column(Float)
    nvml_device_used_after_mib: Mapped[float | None] = mapped_column(Float)
    nvml_process_mib: Mapped[float | None] = mapped_column(Float)
    nvml_peak_device_mib: Mapped[float | None] = mapped_column(Float)
    cuda_context_mib: Mapped[float | None] = mapped_column(Float)
    host_rss_peak_mib: Mapped[float] = mapped_column(Float, default=0.0)
    vram_gib: Mapped[float | None] = mapped_column(Float)
    n_overridden_tensors: Mapped[int] = mapped_column(default=0)
    # roofline
    active_bytes_per_token: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_bytes_per_token: Mapped[int] = mapped_column(BigInteger, default=0)
    host_bytes_per_token: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_bandwidth_gbs: Mapped[float | None] = mapped_column(Float)
    host_bandwidth_gbs: Mapped[float | None] = mapped_column(Float)
    bound_tg_ts: Mapped[float | None] = mapped_column(Float)
    fraction_of_bound: Mapped[float | None] = mapped_column(Float)
    # when and how long
    started_at: Mapped[str] = mapped_column(String(40), default="")
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    load_s: Mapped[float] = mapped_column(Float, default=0.0)
    record: Mapped[dict[str, Any]]  # the full BenchResult, for anything not flattened above


class QuarantineRow(Base):
    """A result the validation gate kept out of history, with the expectations it failed."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    config_id: Mapped[str] = mapped_column(String(200))
    failed_expectations: Mapped[list[Any]]
    record: Mapped[dict[str, Any]]


class IncidentRow(Base):
    """A regression that persists across nights, for one environment; see vramwatch.records.Incident."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    configs: Mapped[list[Any]]
    summary: Mapped[str] = mapped_column(Text)
    delta_mib: Mapped[float | None] = mapped_column(Float)
    delta_pct: Mapped[float | None] = mapped_column(Float)
    build_before: Mapped[str] = mapped_column(String(80), default="")
    build_after: Mapped[str] = mapped_column(String(80), default="")
    opened_night: Mapped[date] = mapped_column(Date)
    updated_night: Mapped[date] = mapped_column(Date)
    resolved_night: Mapped[date | None] = mapped_column(Date)
