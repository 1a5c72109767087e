"""The warehouse: where every night's builds, results, quarantined rows and incidents are kept.

Records in, records (or a DataFrame of flat rows) out; ORM rows never leave this module. Opening a Warehouse brings
its database to the newest schema (Alembic, see migrate.py), so an empty database just works.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd
from sqlalchemy import Engine, case, create_engine, delete, event, false, func, insert, select, tuple_, union
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from vramwatch.errors import UserError
from vramwatch.records import (
    ACCEPTED,
    CLOSED_STATES,
    ENVIRONMENT_FIELDS,
    RESOLVED,
    BenchResult,
    BisectResult,
    BuildRecord,
    BuildRequest,
    ExpectationOutcome,
    Incident,
    NightVerdicts,
    QuarantinedResult,
    RunRecord,
    ValidatedNight,
)
from vramwatch.rows import ENERGY_POINTS, FIELD_NAMES, HISTORY_COLUMNS, REQUIRED_COLUMNS, RUN_COLUMNS, flatten
from vramwatch.warehouse import migrate, result_row
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

# A run is stored whole or marked failed (store_run); `running` is only in warehouses written by older versions,
# which started a run before storing it.
RUNNING, STORED, FAILED = "running", "stored", "failed"
# Every session gives up rather than waits (PostgreSQL): on a lock another session holds (a stuck transaction, a
# migration) after STORE_LOCK_TIMEOUT_MS, on any one statement after STORE_STATEMENT_TIMEOUT_MS. A night (~100 rows)
# stores in well under a second (benchmarks/bench_store.py) and the slowest history read of 3 years takes under 2 s, so
# both leave ample room, and a stuck warehouse fails the task (store, detect_build, detect_regressions, the UI) in
# seconds. Migrations may rewrite years of rows: they keep the lock timeout only.
STORE_LOCK_TIMEOUT_MS = 5_000
STORE_STATEMENT_TIMEOUT_MS = 60_000
# SQLite has one writer at a time: how long a store waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 5.0
# history()'s first columns (vramwatch.rows.RUN_COLUMNS), then the flat row, then the machine in words.
_RUN_COLUMNS = (RunRow.night, RunRow.run_id, RunRow.trigger, RunRow.status, BuildRow.version,
                BuildRow.llama_cpp_python_version, BuildRow.llama_cpp_commit)


# History order, and its reverse for "the newest N".
_OLDEST_FIRST = (RunRow.night, RunRow.started, ResultRow.id)
_NEWEST_FIRST = (RunRow.night.desc(), RunRow.started.desc(), ResultRow.id.desc())
# A history page's cursor (HistoryCursor) is its last row's place in that order: selected after the frame's columns.
_CURSOR_COLUMNS = _OLDEST_FIRST
# recent_history keeps each config's newest rows of every status too: tonight's and the previous run's.
LATEST_ANY = 2


def _recent_ids(config_ids: list[str], window: int, *conditions: Any) -> Any:
    """The ids of recent_history's rows for these configs, among the runs that meet the conditions: one window
    function over the narrow series index (ix_results_series) and the runs, never the wide rows. Ranked per config,
    machine and status, so the newest LATEST_ANY rows of each status stand in for "the newest whatever the status"
    (a superset: one sort instead of two)."""
    results = ResultRow.__table__.c
    rank = func.row_number().over(partition_by=(results.config_id, results.environment_id, results.status),
                                  order_by=_NEWEST_FIRST).label("rank")
    ranked = (select(ResultRow.id, results.status, rank).join(RunRow, ResultRow.run_id == RunRow.run_id)
              .where(results.config_id.in_(config_ids), *conditions).subquery())
    return select(ranked.c.id).where(((ranked.c.status == "ok") & (ranked.c.rank <= window))
                                     | (ranked.c.rank <= LATEST_ANY))


def _history_frame(rows: list[tuple], columns: Sequence[str] = HISTORY_COLUMNS) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(columns))
    frame["night"] = frame["night"].map(date.isoformat)
    return frame


def _take_turns(session: Session, key: str) -> None:
    """Until this transaction ends, other transactions that take turns on `key` wait here, so each reads what the
    one before it wrote. PostgreSQL: a transaction-level advisory lock (it gives up after STORE_LOCK_TIMEOUT_MS, as
    any lock). SQLite has one writer at a time: a write now (one that changes nothing) takes that lock at once,
    instead of at the first insert, after the reads."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
    else:
        session.execute(delete(IncidentRow).where(false()))


@dataclasses.dataclass(frozen=True)
class HistoryCursor:
    """Where a page of history ended: its oldest row's place in the history order (run night, run start, result
    id). The next page is the rows older than it. Passed on as an opaque token (`token`, `parse`)."""

    night: date
    started: datetime
    result_id: int

    def older(self) -> tuple[Any, ...]:
        """The conditions "older than this row" in the history order: the first one alone narrows the runs by their
        night-and-start index (ix_runs_night_started); the second settles the row's own run by result id."""
        place = tuple_(RunRow.night, RunRow.started)
        mine = (self.night, self.started)
        return place <= mine, (place < mine) | (ResultRow.id < self.result_id)

    def token(self) -> str:
        text = json.dumps([self.night.isoformat(), self.started.isoformat(), self.result_id])
        return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")

    @classmethod
    def parse(cls, token: str) -> HistoryCursor:
        """The cursor a token names; BadCursor if it names none."""
        try:
            night, started, result_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(date.fromisoformat(night), datetime.fromisoformat(started), int(result_id))
        except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
            raise BadCursor(f"not a history cursor: {token[:40]!r} ({exc})",
                            "pass the X-Next-Cursor of the page before, as it came") from None


@dataclasses.dataclass(frozen=True)
class HistoryPage:
    """A page of history (its frame, oldest first) and the cursor of the page after it (None: it was the last)."""

    frame: pd.DataFrame
    next: HistoryCursor | None


class WarehouseError(UserError):
    """The warehouse cannot do what was asked (unreachable, or a run that was never started)."""


class BadCursor(WarehouseError):
    """A history cursor this warehouse did not hand out."""


class NightHeldElsewhere(WarehouseError):
    """A measured night stored under one night, ingested again under another: its night is fixed once stored."""

    def __init__(self, run_id: str, held_night: str, asked_night: str) -> None:
        super().__init__(f"this measured night is stored as night {held_night} (run {run_id}), not {asked_night}",
                         f"ingest it with --night {held_night}, or pass --move-night to move it to {asked_night}")
        self.run_id, self.held_night, self.asked_night = run_id, held_night, asked_night


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _night(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise WarehouseError(f"night {value!r} is not a date", "pass the night as YYYY-MM-DD (Airflow's ds)") from None


def _first_line(exc: DBAPIError) -> str:
    """The database's own reason, without SQLAlchemy's statement and parameters."""
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__


def _insert(session: Session, model: type) -> Any:
    """The dialect's INSERT, which has ON CONFLICT: an upsert is one statement, so concurrent stores cannot both see
    a row missing and both insert it."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def _has_results() -> Any:
    """Whether a run stored any result: the runs `latest_run` and `previous_run` consider."""
    return select(ResultRow.id).where(ResultRow.run_id == RunRow.run_id).exists()


def lane_of(run_id: str) -> str:
    """The lane a run id names (config.GpuWorker.run_id: `<lane>/<run id>`; the first worker's, lane "", has no '/'):
    what store_run takes while its callers pass lane-prefixed run ids."""
    return run_id.split("/", 1)[0] if "/" in run_id else ""


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _create_engine(url: str, statement_timeout_ms: int = STORE_STATEMENT_TIMEOUT_MS) -> Engine:
    """The warehouse's engine; on PostgreSQL every connection it opens has the lock and statement timeouts (0: none).
    """
    if url.startswith("sqlite"):
        # One shared connection for an in-memory database, or each connection would see an empty one.
        extra: dict[str, Any] = {"poolclass": StaticPool} if ":memory:" in url or url == "sqlite://" else {}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
                               **extra)

        @event.listens_for(engine, "connect")
        def _foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:  # as PostgreSQL always does
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        return engine
    if make_url(url).get_backend_name() == "postgresql":
        options = f"-c lock_timeout={STORE_LOCK_TIMEOUT_MS} -c statement_timeout={statement_timeout_ms}"
        return create_engine(url, pool_pre_ping=True, connect_args={"options": options})
    return create_engine(url, pool_pre_ping=True)


class Warehouse:
    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine = _create_engine(self.url)
        migrating = _create_engine(self.url, statement_timeout_ms=0)
        try:
            migrate.upgrade(migrating)
        except OperationalError as exc:
            self.engine.dispose()
            shown = self.engine.url.render_as_string(hide_password=True)
            raise WarehouseError(f"cannot open the warehouse at {shown}: {_first_line(exc)}",
                                 "start the database, or point VRAMWATCH_WAREHOUSE_URL at a reachable one") from None
        finally:
            migrating.dispose()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ builds, runs

    @contextmanager
    def _store_transaction(self) -> Iterator[Session]:
        """A write transaction that gives up on a held lock or a stuck statement instead of waiting (PostgreSQL: the
        timeouts every connection of the engine has, _create_engine; SQLite waits SQLITE_BUSY_TIMEOUT_S for its one
        writer)."""
        with self._sessions.begin() as session:
            yield session

    def store_build(self, build: BuildRecord) -> int:
        """Insert or update one build; a venv reused on a later night keeps the row (and status) of its build."""
        with self._store_transaction() as session:
            return self._upsert_build(session, build)

    @staticmethod
    def _upsert_build(session: Session, build: BuildRecord) -> int:
        request = build.request
        fields = dict(
            source=request.source, location=request.location, version=request.version,
            llama_cpp_python_version=build.llama_cpp_python_version, llama_cpp_commit=build.llama_cpp_commit,
            backend=request.backend, cuda_architectures=request.cuda_architectures, flags=request.cmake_args,
            status=build.status, duration_s=build.duration_s, artifact_bytes=build.artifact_bytes,
            log_tail=build.log_tail, error=build.error,
        )
        statement = _insert(session, BuildRow).values(key=request.key, built_at=build.built_at, **fields)
        updated = [name for name in fields if not (name == "status" and build.status == "reused")]
        statement = statement.on_conflict_do_update(index_elements=["key", "built_at"],
                                                    set_={name: statement.excluded[name] for name in updated})
        return session.scalar(statement.returning(BuildRow.id))

    def store_run(self, run_id: str, night: str | date, build: BuildRecord, validated: ValidatedNight, trigger: str,
                  night_key: str | None = None, lane: str | None = None, move_night: bool = False) -> str:
        """Store a whole night in one transaction: its build, the run (status stored, its lane, its validation
        outcomes), its environments and rows. `lane`: the GPU worker's label (config.GpuWorker); None: the run id's
        `<lane>/` prefix (lane_of).

        All or nothing: a store that fails leaves what was there before (a run stored before stands as it was; a new
        one is marked failed with the reason, never `running`), and raises one WarehouseError line. Storing a run
        again replaces its rows. `night_key` names the measured night (a content hash): a night another run already
        holds is stored into that run, never twice, and keeps its night unless `move_night` (NightHeldElsewhere).
        Returns the id of the run the night is stored under.
        """
        lane = lane_of(run_id) if lane is None else lane
        try:
            return self._store_run(run_id, night, build, validated, trigger, night_key, lane, move_night)
        except DBAPIError as exc:
            reason = _first_line(exc)
            now = self.mark_failed(run_id, night, build, trigger, reason, lane)
            kept = {STORED: f"run {run_id} stands as it was stored before",
                    FAILED: "nothing of it was stored"}.get(now or "", "nothing of it was stored (the run could not "
                                                                         "even be marked failed)")
            raise WarehouseError(f"storing run {run_id} failed, {kept}: {reason}",
                                 "make the warehouse reachable and free of long-held locks, then store the night "
                                 "again") from None

    def held_night(self, night_key: str) -> tuple[str, str] | None:
        """The run that holds this measured night (MeasuredNight.night_key) and its night (YYYY-MM-DD), if one does.
        It reads the runs table alone: a store holding the results table does not make it wait."""
        with self._sessions() as session:
            held = session.execute(select(RunRow.run_id, RunRow.night).where(RunRow.night_key == night_key)).first()
        return (held.run_id, held.night.isoformat()) if held is not None else None

    def _store_run(self, run_id: str, night: str | date, build: BuildRecord, validated: ValidatedNight, trigger: str,
                   night_key: str | None, lane: str, move_night: bool) -> str:
        with self._store_transaction() as session:
            # the build's upsert locks its row until commit, so stores of one measured night (one build) take turns:
            # the second finds the first's night_key (and uq_runs_night_key refuses a second copy in any case)
            build_id = self._upsert_build(session, build)
            if night_key is not None:
                held = session.execute(select(RunRow.run_id, RunRow.night).where(RunRow.night_key == night_key)).first()
                if held is not None and held.night != _night(night) and not move_night:
                    raise NightHeldElsewhere(held.run_id, held.night.isoformat(), _night(night).isoformat())
                run_id = held.run_id if held is not None else run_id
            run = session.get(RunRow, run_id) or RunRow(run_id=run_id)
            if run.status != STORED:  # a stored run keeps its start: readers order the night's runs by it
                run.started = _utcnow()
            run.night, run.build_id, run.trigger, run.night_key = _night(night), build_id, trigger, night_key
            run.ended, run.status, run.error, run.lane = _utcnow(), STORED, "", lane
            run.expectations = [outcome.to_dict() for outcome in validated.expectations]
            session.add(run)
            session.flush()
            self._replace_rows(session, run, validated)
        return run_id

    def mark_failed(self, run_id: str, night: str | date, build: BuildRecord, trigger: str, reason: str,
                    lane: str | None = None) -> str | None:
        """Record a run that could not be stored (its store or its validation failed) with its build and the reason,
        in its own short transaction. A run stored before stands as it was: a failed later attempt never downgrades
        it. Returns the run's status now (failed, or stored when an earlier store stands), None when the warehouse
        cannot take even that. `lane` as for store_run."""
        try:
            with self._store_transaction() as session:
                run = session.get(RunRow, run_id) or RunRow(run_id=run_id, started=_utcnow())
                if run.status == STORED:
                    return STORED
                run.night, run.build_id, run.trigger = _night(night), self._upsert_build(session, build), trigger
                run.lane = lane_of(run_id) if lane is None else lane
                run.ended, run.status, run.error = _utcnow(), FAILED, reason
                session.add(run)
            return FAILED
        except DBAPIError:
            return None

    def _replace_rows(self, session: Session, run: RunRow, validated: ValidatedNight) -> None:
        session.execute(delete(ResultRow).where(ResultRow.run_id == run.run_id))
        session.execute(delete(QuarantineRow).where(QuarantineRow.run_id == run.run_id))
        self._upsert_environments(session, validated.accepted, run.night)
        if validated.accepted:
            rows = [{**result_row.to_row(r), "run_id": run.run_id} for r in validated.accepted]
            session.execute(insert(ResultRow), rows)
        if validated.quarantined:
            session.execute(insert(QuarantineRow), [
                {"run_id": run.run_id, "config_id": q.result.config.config_id,
                 "failed_expectations": list(q.failed_expectations), "record": q.result.to_dict()}
                for q in validated.quarantined
            ])

    @staticmethod
    def _upsert_environments(session: Session, results: list[BenchResult], night: date) -> None:
        """The latest fingerprint of each environment wins; last_night only moves forward."""
        fingerprints = {result.fingerprint.environment_id: result.fingerprint for result in results}
        for environment_id in sorted(fingerprints):  # one order in every store: concurrent stores cannot deadlock
            values = {name: getattr(fingerprints[environment_id], name) for name in ENVIRONMENT_FIELDS}
            statement = _insert(session, EnvironmentRow).values(environment_id=environment_id, last_night=night,
                                                                **values)
            later = statement.excluded.last_night > EnvironmentRow.last_night
            session.execute(statement.on_conflict_do_update(index_elements=["environment_id"], set_={
                **{name: statement.excluded[name] for name in values},
                "last_night": case((later, statement.excluded.last_night), else_=EnvironmentRow.last_night)}))

    @staticmethod
    def _run(session: Session, run_id: str) -> RunRow:
        run = session.get(RunRow, run_id)
        if run is None:
            raise WarehouseError(f"run {run_id!r} is not in the warehouse", "store the night first (vramwatch ingest)")
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
                    n_results=results, n_quarantined=quarantined, error=run.error,
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

    def latest_run(self, night: str | date | None = None, lane: str | None = None) -> RunRecord | None:
        """The newest run that stored results (on `night`, if given; of one GPU worker's lane, if given), or None."""
        conditions = [_has_results()] + ([RunRow.night == _night(night)] if night is not None else [])
        conditions += [RunRow.lane == lane] if lane is not None else []
        found = self._run_records(*conditions, limit=1)
        return found[0] if found else None

    def lane(self, run_id: str) -> str:
        """The GPU worker's lane a run belongs to ("" for the first worker's)."""
        with self._sessions() as session:
            return self._run(session, run_id).lane

    def previous_run(self, run_id: str) -> RunRecord | None:
        """The latest run of the same lane before this one (by night, then start) that stored results, or None for
        the first."""
        with self._sessions() as session:
            run = self._run(session, run_id)
            night, started, lane = run.night, run.started, run.lane
        earlier = (RunRow.night < night) | ((RunRow.night == night) & (RunRow.started < started))
        found = self._run_records(earlier, _has_results(), RunRow.lane == lane, limit=1)
        return found[0] if found else None

    def run_environments(self, run_id: str) -> list[str]:
        """The environments a run's stored results were measured in."""
        with self._sessions() as session:
            return sorted(session.scalars(select(ResultRow.environment_id).where(ResultRow.run_id == run_id)
                                          .distinct()))

    def last_benchmarked_version(self, source: str, lane: str = "") -> str | None:
        """The build version (PyPI version or git ref) of the latest finished run built from this source, by one GPU
        worker's lane."""
        with self._sessions() as session:
            return session.scalar(
                select(BuildRow.version).join(RunRow, RunRow.build_id == BuildRow.id)
                .where(BuildRow.source == source, RunRow.status.not_in((RUNNING, FAILED)), RunRow.lane == lane)
                .order_by(RunRow.night.desc(), RunRow.started.desc()).limit(1)
            )

    # ------------------------------------------------------------------------------------------------ results

    def results_for_run(self, run_id: str) -> list[BenchResult]:
        columns = [ResultRow.__table__.c[name] for name in result_row.COLUMN_PATHS]
        query = select(*columns, ResultRow.record).where(ResultRow.run_id == run_id).order_by(ResultRow.id)
        with self._sessions() as session:
            return [result_row.from_row(row._mapping, row.record) for row in session.execute(query)]

    def expectations(self, run_id: str) -> list[ExpectationOutcome]:
        """How each expectation of the run's validation suite came out (none for a run stored before they were
        kept)."""
        with self._sessions() as session:
            outcomes = self._run(session, run_id).expectations or []
        return [ExpectationOutcome.from_dict(outcome) for outcome in outcomes]

    def quarantined_for_run(self, run_id: str) -> list[QuarantinedResult]:
        with self._sessions() as session:
            rows = session.execute(select(QuarantineRow.record, QuarantineRow.failed_expectations)
                                   .where(QuarantineRow.run_id == run_id).order_by(QuarantineRow.id))
            return [QuarantinedResult(BenchResult.from_dict(record), list(failed)) for record, failed in rows]

    @staticmethod
    def _history_select(fields: Sequence[str] = FIELD_NAMES) -> Any:
        """history()'s columns (with only these flat-row fields) and joins."""
        return (
            select(*_RUN_COLUMNS, *(ResultRow.__table__.c[name] for name in fields),
                   EnvironmentRow.gpu_name, EnvironmentRow.cpu_model)
            .join(RunRow, ResultRow.run_id == RunRow.run_id)
            .join(BuildRow, RunRow.build_id == BuildRow.id)
            .join(EnvironmentRow, ResultRow.environment_id == EnvironmentRow.environment_id)
        )

    def _read_history(self, query: Any, columns: Sequence[str] = HISTORY_COLUMNS) -> pd.DataFrame:
        """A history query's rows as the history frame."""
        with self._sessions() as session:
            return _history_frame([tuple(row) for row in session.execute(query)], columns)

    def history(self, config_ids: Iterable[str] | None = None, environment_ids: Iterable[str] | None = None,
                limit: int | None = None, config_names: Iterable[str] | None = None, offset: int = 0) -> pd.DataFrame:
        """One row per stored result (rows.HISTORY_COLUMNS), oldest night first, of the given configs (by id or by
        name) and environments (None: all), filtered in SQL; `limit` keeps the most recent rows after skipping the
        `offset` most recent. All of it without a limit: readers that judge or draw take recent_history()."""
        return self.history_page(config_ids, environment_ids, limit, config_names, offset=offset).frame

    def history_page(self, config_ids: Iterable[str] | None = None, environment_ids: Iterable[str] | None = None,
                     limit: int | None = None, config_names: Iterable[str] | None = None, offset: int = 0,
                     after: HistoryCursor | None = None) -> HistoryPage:
        """history()'s rows, paged: the `limit` most recent of those older than `after` (a page's `next`) or after
        skipping the `offset` most recent. A cursor costs the same at any depth (the runs' night-and-start index
        finds where it is); an offset reads and drops every row it skips."""
        query = self._history_select().add_columns(*_CURSOR_COLUMNS).order_by(*_NEWEST_FIRST)
        if config_ids is not None:
            query = query.where(ResultRow.config_id.in_(list(config_ids)))
        if config_names is not None:
            query = query.where(ResultRow.__table__.c.config_name.in_(list(config_names)))
        if environment_ids is not None:
            query = query.where(ResultRow.environment_id.in_(list(environment_ids)))
        if after is not None:
            query = query.where(*after.older())
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self._sessions() as session:
            rows = [tuple(row) for row in session.execute(query)]
        more = limit is not None and len(rows) == limit
        following = HistoryCursor(*rows[-1][-len(_CURSOR_COLUMNS):]) if rows and more else None
        return HistoryPage(_history_frame([row[:-len(_CURSOR_COLUMNS)] for row in reversed(rows)]), following)

    def recent_history(self, config_ids: Iterable[str], window: int, until_run: str | None = None,
                       before: Iterable[tuple[str, str]] = (), fields: Iterable[str] | None = None) -> pd.DataFrame:
        """history() of the given configs cut to what a reader of the recent nights needs, ranked and filtered in
        SQL: per config and environment its `window` newest good (ok) rows, and its LATEST_ANY newest rows of every
        other status (so the previous run and the last status are there). Only runs up to `until_run` count (itself
        included; None: every run). Each (config_id, night) in `before` (an open incident's config and the night it
        opened) adds the same from the nights before that night, where the incident's reference lies. `fields`
        narrows the flat row to those fields (plus rows.REQUIRED_COLUMNS and config_name), for readers that need
        only a few."""
        configs = sorted(set(config_ids))
        wanted_fields = FIELD_NAMES if fields is None else [
            name for name in FIELD_NAMES if name in {*fields, *REQUIRED_COLUMNS, "config_name"}]
        columns = [*RUN_COLUMNS, *wanted_fields, "gpu_name", "cpu_model"]
        if not configs:
            return _history_frame([], columns)
        bound = [] if until_run is None else [self._up_to(until_run)]
        ranked = [_recent_ids(configs, window, *bound)]
        cutoffs: dict[str, set[str]] = {}
        for config_id, night in before:
            if config_id in configs:
                cutoffs.setdefault(night, set()).add(config_id)
        ranked += [_recent_ids(sorted(ids), window, *bound, RunRow.night < _night(night))
                   for night, ids in sorted(cutoffs.items())]
        wanted = union(*ranked) if len(ranked) > 1 else ranked[0]
        query = self._history_select(wanted_fields).where(ResultRow.id.in_(wanted)).order_by(*_OLDEST_FIRST)
        return self._read_history(query, columns)

    def _read_frame(self, query: Any, dates: Iterable[str] = ("night",)) -> pd.DataFrame:
        """A query's rows as a frame with its column labels, the `dates` columns as YYYY-MM-DD."""
        with self._sessions() as session:
            result = session.execute(query)
            frame = pd.DataFrame.from_records([tuple(row) for row in result], columns=list(result.keys()))
        for column in dates:
            frame[column] = frame[column].map(lambda night: _night(night).isoformat())
        return frame

    def _up_to(self, run_id: str) -> Any:
        """The condition "a run no later than this one" (by night, then start)."""
        with self._sessions() as session:
            run = self._run(session, run_id)
            night, started = run.night, run.started
        return (RunRow.night < night) | ((RunRow.night == night) & (RunRow.started <= started))

    def memory_points(self, runs: int) -> pd.DataFrame:
        """What the page charts, computed in SQL: one row per config and run, for the newest `runs` runs that stored
        results, oldest first. Columns: the run (night, run_id), its build (build_version, llama_cpp_commit), the
        config (config_id, environment_id, model, quant, mode, n_cpu_moe, status), the machine (gpu_name, cpu_model)
        and `mib`: llama.cpp's model + KV + compute buffers on the GPU, or in host RAM on a machine without one;
        None when the config was not measured (not ok); and its energy (ENERGY_POINTS: J/token, the reasons)."""
        newest = (select(RunRow.run_id).where(_has_results()).order_by(RunRow.night.desc(), RunRow.started.desc())
                  .limit(runs).subquery())
        results = ResultRow.__table__.c
        on_gpu = func.coalesce(EnvironmentRow.gpu_name, "") != ""
        mib = case((results.status != "ok", None),
                   (on_gpu, results.gpu_model_mib + results.gpu_kv_mib + results.gpu_compute_mib),
                   else_=results.host_model_mib + results.host_kv_mib + results.host_compute_mib)
        columns = (RunRow.night, RunRow.run_id, BuildRow.version.label("build_version"), BuildRow.llama_cpp_commit,
                   results.config_id, results.environment_id, results.model, results.quant, results.mode,
                   results.n_cpu_moe, results.status, EnvironmentRow.gpu_name, EnvironmentRow.cpu_model,
                   mib.label("mib"), *(results[name] for name in ENERGY_POINTS))
        return self._read_frame(
            select(*columns).join(newest, ResultRow.run_id == newest.c.run_id)
            .join(RunRow, ResultRow.run_id == RunRow.run_id).join(BuildRow, RunRow.build_id == BuildRow.id)
            .join(EnvironmentRow, ResultRow.environment_id == EnvironmentRow.environment_id)
            .order_by(*_OLDEST_FIRST))

    def builds_with_results(self) -> pd.DataFrame:
        """The builds whose runs stored results, newest first (by their last run): build_id, version,
        llama_cpp_commit, backend, built_at, first_night, last_night, runs."""
        columns = (BuildRow.id.label("build_id"), BuildRow.version, BuildRow.llama_cpp_commit, BuildRow.backend,
                   BuildRow.built_at, func.min(RunRow.night).label("first_night"),
                   func.max(RunRow.night).label("last_night"), func.count(RunRow.run_id).label("runs"))
        return self._read_frame(
            select(*columns).join(RunRow, RunRow.build_id == BuildRow.id).where(_has_results())
            .group_by(BuildRow.id).order_by(func.max(RunRow.night).desc(), func.max(RunRow.started).desc(),
                                            BuildRow.id.desc()), dates=("first_night", "last_night"))

    def lanes(self) -> list[str]:
        """The GPU workers' lanes that stored results ("" is the first worker's)."""
        with self._sessions() as session:
            return sorted(session.scalars(select(RunRow.lane).where(_has_results()).distinct()))

    def run_index(self) -> pd.DataFrame:
        """Every run that stored results, oldest first, with what tells whether it changed since it was last read:
        run_id, night, lane, build_id, status, started, ended, n_results (a re-stored night ends anew)."""
        n_results = select(func.count(ResultRow.id)).where(ResultRow.run_id == RunRow.run_id).scalar_subquery()
        columns = (RunRow.run_id, RunRow.night, RunRow.lane, RunRow.build_id, RunRow.status,
                   RunRow.started, RunRow.ended, n_results.label("n_results"))
        frame = self._read_frame(select(*columns).where(_has_results()).order_by(RunRow.night, RunRow.started))
        for column in ("started", "ended"):
            frame[column] = frame[column].map(_iso)
        return frame

    def build_records(self) -> dict[int, BuildRecord]:
        """Every build by id, as a record (the venv's python and source dir are the building machine's: empty)."""
        with self._sessions() as session:
            return {row.id: BuildRecord(
                request=BuildRequest(version=row.version, source=row.source, location=row.location,
                                     backend=row.backend, cuda_architectures=row.cuda_architectures,
                                     cmake_args=row.flags),
                status=row.status, python="", source_dir="", llama_cpp_python_version=row.llama_cpp_python_version,
                llama_cpp_commit=row.llama_cpp_commit, duration_s=row.duration_s, artifact_bytes=row.artifact_bytes,
                log_tail=row.log_tail, error=row.error, built_at=row.built_at)
                for row in session.scalars(select(BuildRow))}

    def stored_results(self, run_ids: Iterable[str], batch: int = 200
                       ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Each stored result of these runs, run by run in store order: (run id, its flat row (rows.FIELDS), the
        BenchResult as a dict, not revived: result_row.result_dict). Read `batch` runs at a time."""
        wanted = sorted(set(run_ids))
        columns = [ResultRow.__table__.c[name] for name in FIELD_NAMES]
        for start in range(0, len(wanted), batch):
            query = (select(ResultRow.run_id, *columns, ResultRow.record)
                     .where(ResultRow.run_id.in_(wanted[start:start + batch]))
                     .order_by(ResultRow.run_id, ResultRow.id))
            with self.engine.connect() as connection:  # Core rows: no ORM on ~100k wide rows
                for run_id, *values, record in connection.execute(query):
                    flat = dict(zip(FIELD_NAMES, values))
                    yield run_id, flat, result_row.result_dict(flat, record)

    def build_figures(self, build_id: int, columns: Iterable[str]) -> pd.DataFrame:
        """Per config, its newest result on this build (its newest ok one when it has one), ranked in SQL: config_id,
        config_name, model, quant, mode, n_cpu_moe, status, gpu_name, night and the given flat-row columns."""
        results = ResultRow.__table__.c
        failed_last = case((results.status == "ok", 0), else_=1)
        rank = func.row_number().over(partition_by=results.config_id,
                                      order_by=(failed_last, *_NEWEST_FIRST)).label("rank")
        wanted = [results[name] for name in ("config_id", "config_name", "model", "quant", "mode", "n_cpu_moe",
                                               "status", *columns)]
        ranked = (select(*wanted, EnvironmentRow.gpu_name, RunRow.night, rank)
                  .join(RunRow, ResultRow.run_id == RunRow.run_id)
                  .join(EnvironmentRow, ResultRow.environment_id == EnvironmentRow.environment_id)
                  .where(RunRow.build_id == build_id).subquery())
        return self._read_frame(select(*(c for c in ranked.c if c.key != "rank")).where(ranked.c.rank == 1))

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
        """A night's verdicts, replacing what that run stored before. Its incidents are kept by id, with what belongs
        to that night alone (whether each paged again, the causes that changed and those the evidence cleared): save
        them first (save_incident)."""
        unsaved = [incident.summary for incident in verdicts.incidents if incident.incident_id is None]
        if unsaved:
            raise WarehouseError(f"verdicts of run {run_id} name incidents that were never saved: {unsaved}",
                                 "save each incident (save_incident) and keep the incident it returns")
        record = {**verdicts.to_dict(), "incidents": [
            {"incident_id": incident.incident_id, "escalated": incident.escalated, "causes": incident.causes,
             "cleared": incident.cleared} for incident in verdicts.incidents]}
        with self._sessions.begin() as session:
            self._run(session, run_id)
            # an upsert: two ingests of one night judging it at once each save, neither fails on the other's row
            statement = _insert(session, VerdictRow).values(run_id=run_id, record=record)
            session.execute(statement.on_conflict_do_update(index_elements=["run_id"],
                                                            set_={"record": statement.excluded.record}))

    def verdicts(self, run_id: str) -> NightVerdicts | None:
        """A night's stored verdicts, its incidents as their rows are now (a bisection stored since included), new
        and escalated as of that night."""
        with self._sessions() as session:
            row = session.get(VerdictRow, run_id)
            if row is None:
                return None
            night = self._run(session, run_id).night
            references = row.record.get("incidents", [])
            wanted = [reference["incident_id"] for reference in references]
            found = {incident.id: incident
                     for incident in session.scalars(select(IncidentRow).where(IncidentRow.id.in_(wanted)))}
            incidents = [dataclasses.replace(self._incident(found[reference["incident_id"]], night),
                                             escalated=reference["escalated"], causes=reference.get("causes", []),
                                             cleared=reference.get("cleared", []))
                         for reference in references if reference["incident_id"] in found]
            return dataclasses.replace(NightVerdicts.from_dict({**row.record, "incidents": []}), incidents=incidents)

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
        (saved,) = self.save_incidents([incident], environment_id, night)
        return saved

    def save_incidents(self, incidents: Sequence[Incident], environment_id: str, night: str | date) -> list[Incident]:
        """A night's incidents in one transaction, as save_incident each. A new one that the environment already
        holds (the same kind, metric and configs, opened the same night: a retried task, or the same night detected
        at once by another worker) updates that row instead of adding a twin. Detections of one environment and
        night take turns here (_take_turns), so the second finds the first's rows."""
        night = _night(night)
        with self._sessions.begin() as session:
            _take_turns(session, f"incidents {environment_id} {night.isoformat()}")
            return [self._incident(self._save_incident(session, incident, environment_id, night), night)
                    for incident in incidents]

    def _save_incident(self, session: Session, incident: Incident, environment_id: str, night: date) -> IncidentRow:
        fields = dict(
            kind=incident.kind, metric=incident.metric, state=incident.state, configs=list(incident.configs),
            summary=incident.summary, delta_mib=incident.delta_mib, delta_pct=incident.delta_pct,
            build_before=incident.build_before, build_after=incident.build_after, updated_night=night,
            changes=list(incident.changes), paged_delta_mib=incident.paged_delta_mib,
            paged_delta_pct=incident.paged_delta_pct, resolved_by=incident.resolved_by, separable=incident.separable,
        )
        opened = _night(incident.opened_night) if incident.opened_night else night
        row = (self._incident_row(session, incident.incident_id) if incident.incident_id is not None
               else self._twin(session, environment_id, opened, incident))
        if row is None:
            row = IncidentRow(environment_id=environment_id, opened_night=opened, **fields)
            session.add(row)
        else:
            for name, value in fields.items():
                setattr(row, name, value)
        row.resolved_night = night if incident.state == RESOLVED else None
        if incident.escalated:
            row.escalated_night = night
        session.flush()
        return row

    @staticmethod
    def _twin(session: Session, environment_id: str, opened: date, incident: Incident) -> IncidentRow | None:
        """The stored incident a new one repeats: same environment, night opened, kind, metric and configs."""
        candidates = session.scalars(select(IncidentRow).where(
            IncidentRow.environment_id == environment_id, IncidentRow.opened_night == opened,
            IncidentRow.kind == incident.kind, IncidentRow.metric == incident.metric).order_by(IncidentRow.id))
        return next((row for row in candidates if sorted(row.configs) == sorted(incident.configs)), None)

    def save_bisection(self, incident_id: int, result: BisectResult) -> Incident:
        """Attach a bisection's result to an incident (replacing an earlier one's)."""
        with self._sessions.begin() as session:
            row = self._incident_row(session, incident_id)
            row.bisection = result.to_dict()
            session.flush()
            return self._incident(row, night=None)

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
            bisection=BisectResult.from_dict(row.bisection) if row.bisection else None,
            paged_delta_mib=row.paged_delta_mib, paged_delta_pct=row.paged_delta_pct, resolved_by=row.resolved_by or "",
            separable=row.separable is not False,
        )
