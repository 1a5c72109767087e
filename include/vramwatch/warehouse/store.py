"""The warehouse: where every night's builds, results, quarantined rows and incidents are kept.

Records in, records (or a DataFrame of flat rows) out; ORM rows never leave this module. Opening a Warehouse brings
its database to the newest schema (Alembic, see migrate.py), so an empty database just works.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, delete, event, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from vramwatch.errors import UserError
from vramwatch.records import (
    ACCEPTED,
    CLOSED_STATES,
    RESOLVED,
    BenchResult,
    BuildRecord,
    Incident,
    NightVerdicts,
    QuarantinedResult,
    RunRecord,
    ValidatedNight,
)
from vramwatch.rows import FIELD_NAMES, HISTORY_COLUMNS, flatten
from vramwatch.warehouse import migrate
from vramwatch.warehouse.models import (
    BuildRow,
    EnvironmentRow,
    IncidentRow,
    QuarantineRow,
    ResultRow,
    RunRow,
    VerdictRow,
)
from vramwatch.warehouse.url import resolve_url

RUNNING, FAILED = "running", "failed"
# history()'s first columns (vramwatch.rows.RUN_COLUMNS), then the flat row, then the machine in words.
_RUN_COLUMNS = (RunRow.night, RunRow.run_id, RunRow.trigger, RunRow.status, BuildRow.version,
                BuildRow.llama_cpp_python_version, BuildRow.llama_cpp_commit)


def _history_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(HISTORY_COLUMNS))
    frame["night"] = frame["night"].map(date.isoformat)
    return frame


class WarehouseError(UserError):
    """The warehouse cannot do what was asked (unreachable, or a run that was never started)."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _night(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise WarehouseError(f"night {value!r} is not a date", "pass the night as YYYY-MM-DD (Airflow's ds)") from None


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # One shared connection for an in-memory database, or each connection would see an empty one.
        extra: dict[str, Any] = {"poolclass": StaticPool} if ":memory:" in url or url == "sqlite://" else {}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **extra)

        @event.listens_for(engine, "connect")
        def _foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:  # as PostgreSQL always does
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Warehouse:
    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine = _create_engine(self.url)
        try:
            migrate.upgrade(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            shown = self.engine.url.render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise WarehouseError(f"cannot open the warehouse at {shown}: {reason}",
                                 "start the database, or point VRAMWATCH_WAREHOUSE_URL at a reachable one") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ builds, runs

    def store_build(self, build: BuildRecord) -> int:
        """Insert or update one build; a venv reused on a later night keeps the row (and status) of its build."""
        request = build.request
        fields = dict(
            source=request.source, location=request.location, version=request.version,
            llama_cpp_python_version=build.llama_cpp_python_version, llama_cpp_commit=build.llama_cpp_commit,
            backend=request.backend, cuda_architectures=request.cuda_architectures, flags=request.cmake_args,
            status=build.status, duration_s=build.duration_s, artifact_bytes=build.artifact_bytes,
            log_tail=build.log_tail, error=build.error,
        )
        with self._sessions.begin() as session:
            row = session.scalar(select(BuildRow).filter_by(key=request.key, built_at=build.built_at))
            if row is None:
                row = BuildRow(key=request.key, built_at=build.built_at, **fields)
                session.add(row)
            else:
                if build.status == "reused":
                    fields.pop("status")
                for name, value in fields.items():
                    setattr(row, name, value)
            session.flush()
            return row.id

    def start_run(self, run_id: str, night: str | date, build: BuildRecord, trigger: str) -> None:
        """Record that a run began; starting the same run_id again restarts it (same row)."""
        build_id = self.store_build(build)
        with self._sessions.begin() as session:
            run = session.get(RunRow, run_id) or RunRow(run_id=run_id)
            run.night, run.build_id, run.trigger = _night(night), build_id, trigger
            run.started, run.ended, run.status = _utcnow(), None, RUNNING
            session.add(run)

    def finish_run(self, run_id: str, status: str) -> None:
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            run.status, run.ended = status, _utcnow()

    def store_night(self, run_id: str, validated: ValidatedNight) -> int:
        """Store a run's accepted and quarantined results, replacing whatever that run stored before.

        Returns the number of accepted rows stored. Idempotent: a retried store task never duplicates rows.
        """
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            session.execute(delete(ResultRow).where(ResultRow.run_id == run_id))
            session.execute(delete(QuarantineRow).where(QuarantineRow.run_id == run_id))
            for result in validated.accepted:
                self._upsert_environment(session, result, run.night)
            session.flush()
            if validated.accepted:
                rows = [{**flatten(r), "run_id": run_id, "record": r.to_dict()} for r in validated.accepted]
                session.execute(insert(ResultRow), rows)
            if validated.quarantined:
                session.execute(insert(QuarantineRow), [
                    {"run_id": run_id, "config_id": q.result.config.config_id,
                     "failed_expectations": list(q.failed_expectations), "record": q.result.to_dict()}
                    for q in validated.quarantined
                ])
        return len(validated.accepted)

    @staticmethod
    def _upsert_environment(session: Session, result: BenchResult, night: date) -> None:
        fingerprint = result.fingerprint
        env = session.get(EnvironmentRow, fingerprint.environment_id)
        if env is None:
            env = EnvironmentRow(environment_id=fingerprint.environment_id)
            session.add(env)
        for name in ("gpu_name", "gpu_count", "gpu_driver", "cuda_version", "compute_capability", "cpu_model",
                     "cpu_cores", "ram_gib", "backend"):
            setattr(env, name, getattr(fingerprint, name))
        env.last_night = max(env.last_night or night, night)

    @staticmethod
    def _run(session: Session, run_id: str) -> RunRow:
        run = session.get(RunRow, run_id)
        if run is None:
            raise WarehouseError(f"run {run_id!r} is not in the warehouse", "call start_run before storing results")
        return run

    def _run_records(self, *conditions: Any, limit: int | None = None) -> list[RunRecord]:
        """Runs matching the conditions, newest first, with their build and how many rows they stored and
        quarantined."""
        n_results = select(func.count(ResultRow.id)).where(ResultRow.run_id == RunRow.run_id).scalar_subquery()
        n_quarantined = (select(func.count(QuarantineRow.id)).where(QuarantineRow.run_id == RunRow.run_id)
                         .scalar_subquery())
        query = (select(RunRow, BuildRow, n_results, n_quarantined).join(BuildRow, RunRow.build_id == BuildRow.id)
                 .where(*conditions).order_by(RunRow.night.desc(), RunRow.started.desc()).limit(limit))
        with self._sessions() as session:
            return [
                RunRecord(
                    run_id=run.run_id, night=run.night.isoformat(), trigger=run.trigger, status=run.status,
                    started=_iso(run.started), ended=_iso(run.ended), build_version=build.version,
                    llama_cpp_python_version=build.llama_cpp_python_version,
                    llama_cpp_commit=build.llama_cpp_commit, backend=build.backend,
                    n_results=results, n_quarantined=quarantined,
                )
                for run, build, results, quarantined in session.execute(query)
            ]

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        """Every run (or the newest `limit`), newest first."""
        return self._run_records(limit=limit)

    def run(self, run_id: str) -> RunRecord:
        """One run; a WarehouseError naming the fix if it is not there."""
        found = self._run_records(RunRow.run_id == run_id)
        if not found:
            raise WarehouseError(f"run {run_id!r} is not in the warehouse",
                                 "pick a run the warehouse has: `vramwatch report --night DATE` takes a night's latest")
        return found[0]

    def latest_run(self, night: str | date | None = None) -> RunRecord | None:
        """The newest run that stored results (on `night`, if given), or None."""
        has_results = select(ResultRow.id).where(ResultRow.run_id == RunRow.run_id).exists()
        conditions = [has_results] + ([RunRow.night == _night(night)] if night is not None else [])
        found = self._run_records(*conditions, limit=1)
        return found[0] if found else None

    def previous_run(self, run_id: str) -> RunRecord | None:
        """The latest run before this one (by night, then start) that stored results, or None for the first."""
        run = self.run(run_id)
        night, started = _night(run.night), datetime.fromisoformat(run.started)
        earlier = (RunRow.night < night) | ((RunRow.night == night) & (RunRow.started < started))
        has_results = select(ResultRow.id).where(ResultRow.run_id == RunRow.run_id).exists()
        found = self._run_records(earlier, has_results, limit=1)
        return found[0] if found else None

    def run_environments(self, run_id: str) -> list[str]:
        """The environments a run's stored results were measured in."""
        with self._sessions() as session:
            return sorted(session.scalars(select(ResultRow.environment_id).where(ResultRow.run_id == run_id)
                                          .distinct()))

    def last_benchmarked_version(self, source: str) -> str | None:
        """The build version (PyPI version or git ref) of the latest finished run built from this source."""
        with self._sessions() as session:
            return session.scalar(
                select(BuildRow.version).join(RunRow, RunRow.build_id == BuildRow.id)
                .where(BuildRow.source == source, RunRow.status.not_in((RUNNING, FAILED)))
                .order_by(RunRow.night.desc(), RunRow.started.desc()).limit(1)
            )

    # ------------------------------------------------------------------------------------------------ results

    def results_for_run(self, run_id: str) -> list[BenchResult]:
        with self._sessions() as session:
            records = session.scalars(select(ResultRow.record).where(ResultRow.run_id == run_id).order_by(ResultRow.id))
            return [BenchResult.from_dict(r) for r in records]

    def quarantined_for_run(self, run_id: str) -> list[QuarantinedResult]:
        with self._sessions() as session:
            rows = session.execute(select(QuarantineRow.record, QuarantineRow.failed_expectations)
                                   .where(QuarantineRow.run_id == run_id).order_by(QuarantineRow.id))
            return [QuarantinedResult(BenchResult.from_dict(record), list(failed)) for record, failed in rows]

    def history(self, config_ids: Iterable[str] | None = None, environment_ids: Iterable[str] | None = None,
                limit: int | None = None, config_names: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per stored result (rows.HISTORY_COLUMNS), oldest night first, of the given configs (by id or by
        name) and environments (None: all), filtered in SQL; `limit` keeps the most recent rows."""
        query = (
            select(*_RUN_COLUMNS, *(ResultRow.__table__.c[name] for name in FIELD_NAMES),
                   EnvironmentRow.gpu_name, EnvironmentRow.cpu_model)
            .join(RunRow, ResultRow.run_id == RunRow.run_id)
            .join(BuildRow, RunRow.build_id == BuildRow.id)
            .join(EnvironmentRow, ResultRow.environment_id == EnvironmentRow.environment_id)
            .order_by(RunRow.night.desc(), RunRow.started.desc(), ResultRow.id.desc())
        )
        if config_ids is not None:
            query = query.where(ResultRow.config_id.in_(list(config_ids)))
        if config_names is not None:
            query = query.where(ResultRow.__table__.c.config_name.in_(list(config_names)))
        if environment_ids is not None:
            query = query.where(ResultRow.environment_id.in_(list(environment_ids)))
        if limit is not None:
            query = query.limit(limit)
        with self._sessions() as session:
            rows = [tuple(row) for row in session.execute(query)][::-1]
        return _history_frame(rows)

    def quarantined_history(self, run_id: str) -> pd.DataFrame:
        """A run's quarantined results as history() rows, with status "quarantined" and an error naming the
        expectations each failed: so the regress stage tells a config that ran badly from one that did not run."""
        query = (select(*_RUN_COLUMNS, QuarantineRow.record, QuarantineRow.failed_expectations)
                 .join(RunRow, QuarantineRow.run_id == RunRow.run_id).join(BuildRow, RunRow.build_id == BuildRow.id)
                 .where(QuarantineRow.run_id == run_id).order_by(QuarantineRow.id))
        rows = []
        with self._sessions() as session:
            for *run, record, failed in session.execute(query):
                result = BenchResult.from_dict(record)
                flat = {**flatten(result), "status": "quarantined", "error": f"failed {', '.join(failed)}"}
                rows.append((*run, *(flat[name] for name in FIELD_NAMES), result.fingerprint.gpu_name,
                             result.fingerprint.cpu_model))
        return _history_frame(rows)

    # ------------------------------------------------------------------------------------------------ verdicts

    def save_verdicts(self, run_id: str, verdicts: NightVerdicts) -> None:
        """A night's verdicts, replacing what that run stored before."""
        with self._sessions.begin() as session:
            self._run(session, run_id)
            row = session.get(VerdictRow, run_id) or VerdictRow(run_id=run_id)
            row.record = verdicts.to_dict()
            session.add(row)

    def verdicts(self, run_id: str) -> NightVerdicts | None:
        with self._sessions() as session:
            row = session.get(VerdictRow, run_id)
            return None if row is None else NightVerdicts.from_dict(row.record)

    # ------------------------------------------------------------------------------------------------ incidents

    def incidents(self, environment_id: str | None = None, include_resolved: bool = True) -> list[Incident]:
        query = select(IncidentRow).order_by(IncidentRow.id)
        if environment_id is not None:
            query = query.where(IncidentRow.environment_id == environment_id)
        if not include_resolved:
            query = query.where(IncidentRow.state.not_in(CLOSED_STATES))
        with self._sessions() as session:
            return [self._incident(row, night=None) for row in session.scalars(query)]

    def open_incidents(self, environment_id: str | None = None) -> list[Incident]:
        """Incidents not resolved yet (open or acknowledged), oldest first."""
        return self.incidents(environment_id, include_resolved=False)

    def save_incident(self, incident: Incident, environment_id: str, night: str | date) -> Incident:
        """Insert a new incident (incident_id None) or update an existing one; returns it as stored.

        is_new in the result is true exactly when the incident was opened on `night`.
        """
        night = _night(night)
        fields = dict(
            kind=incident.kind, metric=incident.metric, state=incident.state, configs=list(incident.configs),
            summary=incident.summary, delta_mib=incident.delta_mib, delta_pct=incident.delta_pct,
            build_before=incident.build_before, build_after=incident.build_after, updated_night=night,
            changes=list(incident.changes),
        )
        with self._sessions.begin() as session:
            if incident.incident_id is None:
                opened = _night(incident.opened_night) if incident.opened_night else night
                row = IncidentRow(environment_id=environment_id, opened_night=opened, **fields)
                session.add(row)
            else:
                row = self._incident_row(session, incident.incident_id)
                for name, value in fields.items():
                    setattr(row, name, value)
            row.resolved_night = night if incident.state == RESOLVED else None
            if incident.escalated:
                row.escalated_night = night
            session.flush()
            return self._incident(row, night)

    def resolve_incident(self, incident_id: int, night: str | date) -> None:
        self._close_incident(incident_id, night, RESOLVED)

    def accept_incident(self, incident_id: int, night: str | date) -> Incident:
        """Close an open incident as intended: detection takes its new level as the reference (regress.incidents)."""
        return self._close_incident(incident_id, night, ACCEPTED)

    def _close_incident(self, incident_id: int, night: str | date, state: str) -> Incident:
        with self._sessions.begin() as session:
            row = self._incident_row(session, incident_id)
            if row.state in CLOSED_STATES:
                raise WarehouseError(f"incident {incident_id} is already {row.state}",
                                     "pick an open one: `vramwatch regress --dry-run` lists them")
            row.state, row.updated_night, row.resolved_night = state, _night(night), _night(night)
            session.flush()
            return self._incident(row, night=None)

    @staticmethod
    def _incident_row(session: Session, incident_id: int) -> IncidentRow:
        row = session.get(IncidentRow, incident_id)
        if row is None:
            raise WarehouseError(f"incident {incident_id} is not in the warehouse", "use an id from open_incidents()")
        return row

    @staticmethod
    def _incident(row: IncidentRow, night: date | None) -> Incident:
        return Incident(
            incident_id=row.id, kind=row.kind, metric=row.metric, state=row.state, configs=list(row.configs),
            summary=row.summary, delta_mib=row.delta_mib, delta_pct=row.delta_pct, build_before=row.build_before,
            build_after=row.build_after, opened_night=row.opened_night.isoformat(),
            is_new=night is not None and row.opened_night == night,
            escalated=night is not None and row.escalated_night == night and row.opened_night != night,
            changes=list(row.changes or []),
        )
