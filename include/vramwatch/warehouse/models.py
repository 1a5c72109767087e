"""The warehouse schema as typed SQLAlchemy models. Alembic migrations (migrations/versions) create it; these
models are what the code reads and writes, and a test checks the two never drift apart.

Records stay plain data: `Warehouse` maps records to these rows and back, nothing outside this package sees a row.
The results table is derived from the flat row's field list (vramwatch.rows.FIELDS); migrations stay explicit.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vramwatch import rows

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
    __table_args__ = (Index("ix_runs_night_started", "night", "started"),  # history order (0005)
                      Index("ix_runs_lane_night_started", "lane", "night", "started"))  # a lane's newest (0007)

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    night: Mapped[date] = mapped_column(Date, index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)  # a build's runs (0005)
    trigger: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    # the content hash of the measured night it holds: one run per measured night (0004)
    night_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    error: Mapped[str] = mapped_column(Text, default="")  # why its store failed (0004)
    # the GPU worker's label (config.GpuWorker) whose night it is: "" for the first worker's (0007)
    lane: Mapped[str] = mapped_column(String(63), default="")
    # the night's validation outcomes, records.ExpectationOutcome as JSON; None: stored before they were kept (0007)
    expectations: Mapped[list[Any] | None] = mapped_column(JSON)


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


SQL_TYPES = {rows.TEXT: Text, rows.INT: Integer, rows.BIGINT: BigInteger, rows.FLOAT: Float, rows.BOOL: Boolean,
             rows.JSON: JSON}
# Defaults of the flat row's non-optional columns, by kind (what an ORM insert without the value would write).
DEFAULTS = {rows.TEXT: "", rows.STRING: "", rows.INT: 0, rows.BIGINT: 0, rows.FLOAT: 0.0, rows.BOOL: False}
FOREIGN_KEYS = {"environment_id": "environments.environment_id"}


def result_column(field: rows.Field) -> Column[Any]:
    """A results column from the flat row's field list (vramwatch.rows.FIELDS)."""
    sql_type = String(field.length) if field.kind == rows.STRING else SQL_TYPES[field.kind]
    keys = [ForeignKey(FOREIGN_KEYS[field.name])] if field.name in FOREIGN_KEYS else []
    default = None if field.optional else DEFAULTS.get(field.kind)
    return Column(field.name, sql_type, *keys, nullable=field.optional, index=field.index, default=default)


class ResultRow(Base):
    """One config of one run: every field of the flat row (vramwatch.rows.FIELDS) a column, and as JSON the rest of
    its record, what no column holds (result_row.py maps a BenchResult to both and back: each figure kept once)."""

    __table__ = Table(
        "results", Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("run_id", String(250), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False, index=True),
        *(result_column(field) for field in rows.FIELDS),
        Column("record", JSON, nullable=False),
        UniqueConstraint("run_id", "config_id", name="uq_results_run_id_config_id"),
        # what the windowed history ranks, without reading the wide rows (0005)
        Index("ix_results_series", "config_id", "environment_id", "status", "run_id"),
    )


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
    changes: Mapped[list[Any]] = mapped_column(default=list)  # one line per config: what changed, exactly (0003)
    escalated_night: Mapped[date | None] = mapped_column(Date)  # the last night it grew and paged again (0003)
    bisection: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # its culprit search, a BisectResult (0006)
    paged_delta_mib: Mapped[float | None] = mapped_column(Float)  # its size when it last paged (0008)
    paged_delta_pct: Mapped[float | None] = mapped_column(Float)
    resolved_by: Mapped[str] = mapped_column(String(80), default="")  # llama.cpp commit it resolved under (0008)
    separable: Mapped[bool] = mapped_column(Boolean, default=True)  # false: build or GPU, not told apart yet (0008)


class VerdictRow(Base):
    """A night's verdicts (0003): same-night A/B comparisons, what could not be judged, and its incidents by reference
    ({"incident_id", "escalated"}, 0007): they are read from their rows, as they are now."""

    __tablename__ = "verdicts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    record: Mapped[dict[str, Any]]
