"""Each fact once (issue 23): the lane is a column, validation outcomes are kept with their run, verdicts name their
incidents by id, and a result's figures are kept in its columns only.

- runs.lane: the GPU worker's label (config.GpuWorker), until now the `<lane>/` prefix of the run id; backfilled from
  it ("" for a run id without '/', the first worker's). ix_runs_lane_night_started: a lane's newest runs.
- runs.expectations: how each expectation of the night's validation suite came out (records.ExpectationOutcome, as
  JSON). NULL for runs stored before: their outcomes were in reports/<night>/validation.json, which is not read in.
- verdicts.record: its incidents become references, {"incident_id", "escalated"} (whether it paged again that
  night: the incident row keeps only its last such night); everything else is read from the incident's row.
- results.record: keeps only what no flat column holds; each value a column holds leaves the record. Where an old
  record and its column differ, the record's value (what results_for_run returned) goes into the column.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 14:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Frozen copy of warehouse.result_row.COLUMN_PATHS: the record path of each column's value at this revision.
COLUMN_PATHS = {
    "model": "config.model.model", "quant": "config.model.quant", "mode": "config.mode",
    "n_cpu_moe": "config.n_cpu_moe", "status": "status", "error": "error", "arch": "config.model.arch",
    "n_expert": "config.model.n_expert", "synthetic": "config.model.synthetic",
    "file_bytes": "config.model.file_bytes", "file_sha256": "config.model.sha256", "reps": "config.reps",
    "n_prompt": "config.n_prompt", "n_gen": "config.n_gen", "n_ctx": "config.n_ctx", "n_batch": "config.n_batch",
    "n_ubatch": "config.n_ubatch", "n_threads": "n_threads", "use_mmap": "config.use_mmap",
    "n_gpu_layers": "config.n_gpu_layers", "type_k": "config.type_k", "type_v": "config.type_v",
    "pp_n_prompt": "pp.n_prompt", "pp_n_gen": "pp.n_gen", "pp_avg_ts": "pp.avg_ts", "pp_stddev_ts": "pp.stddev_ts",
    "pp_samples_ts": "pp.samples_ts", "tg_n_prompt": "tg.n_prompt", "tg_n_gen": "tg.n_gen", "tg_avg_ts": "tg.avg_ts",
    "tg_stddev_ts": "tg.stddev_ts", "tg_samples_ts": "tg.samples_ts", "gen_tokens": "generation.tokens",
    "gen_tokens_per_s": "generation.tokens_per_s", "gen_text_sha256": "generation.text_sha256",
    "perplexity": "quality.perplexity", "quality_tokens": "quality.n_tokens",
    "greedy_sha256": "quality.greedy_sha256", "buffers_mib": "memory.buffers_mib",
    "gpu_model_mib": "memory.gpu_model_mib", "gpu_kv_mib": "memory.gpu_kv_mib",
    "gpu_compute_mib": "memory.gpu_compute_mib", "gpu_output_mib": "memory.gpu_output_mib",
    "host_model_mib": "memory.host_model_mib", "host_kv_mib": "memory.host_kv_mib",
    "host_compute_mib": "memory.host_compute_mib", "gpu_total_mib": "memory.gpu_total_mib",
    "nvml_device_used_before_mib": "memory.nvml_device_used_before_mib",
    "nvml_device_used_after_mib": "memory.nvml_device_used_after_mib", "nvml_process_mib": "memory.nvml_process_mib",
    "nvml_peak_device_mib": "memory.nvml_peak_device_mib", "cuda_context_mib": "memory.cuda_context_mib",
    "host_rss_peak_mib": "memory.host_rss_peak_mib", "n_overridden_tensors": "n_overridden_tensors",
    "active_bytes_per_token": "roofline.active_bytes_per_token",
    "gpu_bytes_per_token": "roofline.gpu_bytes_per_token", "host_bytes_per_token": "roofline.host_bytes_per_token",
    "gpu_bandwidth_gbs": "roofline.gpu_bandwidth_gbs", "host_bandwidth_gbs": "roofline.host_bandwidth_gbs",
    "bound_tg_ts": "roofline.bound_tg_ts", "fraction_of_bound": "roofline.fraction_of_bound",
    "started_at": "started_at", "duration_s": "duration_s", "load_s": "load_s",
}
# Columns whose values SQLite returns untyped unless told (JSON text, 0/1): typed, so a value keeps its JSON form.
TYPED_COLUMNS = {'buffers_mib': sa.JSON, 'pp_samples_ts': sa.JSON, 'tg_samples_ts': sa.JSON, 'synthetic': sa.Boolean,
                 'use_mmap': sa.Boolean}
BATCH = 1000  # rows per executemany


def _as_dict(value):
    return json.loads(value) if isinstance(value, str) else value


def _parent(record, path):
    """The dict holding the path's last part, None where a sub-record on the way is absent (pp not run)."""
    for part in path.split('.')[:-1]:
        record = record.get(part)
        if record is None:
            return None
    return record


def _rewrite(connection, table, rows):
    """UPDATE each row (a dict with its `id` as `row_id`), BATCH at a time."""
    statement = table.update().where(table.c.id == sa.bindparam('row_id'))
    for start in range(0, len(rows), BATCH):
        connection.execute(statement, rows[start:start + BATCH])


def _results():
    return sa.table('results', sa.column('id'), sa.column('record', sa.JSON),
                    *(sa.column(name, TYPED_COLUMNS.get(name)) for name in COLUMN_PATHS))


def _runs():
    return sa.table('runs', sa.column('run_id'), sa.column('night', sa.Date), sa.column('lane'))


def _verdicts():
    return sa.table('verdicts', sa.column('run_id'), sa.column('record', sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('lane', sa.String(length=63), nullable=False, server_default=''))
        batch.add_column(sa.Column('expectations', sa.JSON(), nullable=True))
    op.create_index('ix_runs_lane_night_started', 'runs', ['lane', 'night', 'started'], unique=False)
    connection = op.get_bind()

    runs = _runs()
    for (run_id,) in connection.execute(sa.select(runs.c.run_id).where(runs.c.run_id.like('%/%'))):
        connection.execute(runs.update().where(runs.c.run_id == run_id).values(lane=run_id.split('/', 1)[0]))

    verdicts = _verdicts()
    for run_id, record in connection.execute(sa.select(verdicts.c.run_id, verdicts.c.record)):
        record = _as_dict(record)
        record['incidents'] = [{'incident_id': i['incident_id'], 'escalated': bool(i.get('escalated'))}
                               for i in record.get('incidents', []) if i.get('incident_id') is not None]
        connection.execute(verdicts.update().where(verdicts.c.run_id == run_id).values(record=record))

    results = _results()
    rows = []
    for row in connection.execute(sa.select(results)):
        values, record = dict(row._mapping), _as_dict(row.record)
        for name, path in COLUMN_PATHS.items():
            parent = _parent(record, path)
            leaf = path.rsplit('.', 1)[-1]
            if parent is not None and leaf in parent:
                values[name] = parent.pop(leaf)
        values['row_id'] = values.pop('id')
        rows.append({**values, 'record': record})
    _rewrite(connection, results, rows)


def downgrade() -> None:
    connection = op.get_bind()
    results = _results()
    rows = []
    for row in connection.execute(sa.select(results)):
        record = _as_dict(row.record)
        for name, path in COLUMN_PATHS.items():
            parent = _parent(record, path)
            if parent is not None:
                parent[path.rsplit('.', 1)[-1]] = row._mapping[name]
        rows.append({'row_id': row.id, 'record': record})
    _rewrite(connection, results, rows)

    # verdicts take a copy of each incident again, as its row reads now, new and escalated as of the run's night
    incidents = sa.table('incidents', *(sa.column(name) for name in (
        'id', 'kind', 'metric', 'state', 'summary', 'delta_mib', 'delta_pct', 'build_before', 'build_after',
        'opened_night')), sa.column('configs', sa.JSON), sa.column('changes', sa.JSON), sa.column('bisection', sa.JSON))
    by_id = {row.id: row for row in connection.execute(sa.select(incidents))}
    runs, verdicts = _runs(), _verdicts()
    for run_id, night, record in connection.execute(
            sa.select(verdicts.c.run_id, runs.c.night, verdicts.c.record).join(runs, runs.c.run_id == verdicts.c.run_id)):
        record = _as_dict(record)
        copies = []
        for reference in record.get('incidents', []):
            row = by_id.get(reference['incident_id'])
            if row is not None:
                copies.append({
                    'incident_id': row.id, 'kind': row.kind, 'metric': row.metric, 'state': row.state,
                    'configs': _as_dict(row.configs), 'summary': row.summary, 'delta_mib': row.delta_mib,
                    'delta_pct': row.delta_pct, 'build_before': row.build_before, 'build_after': row.build_after,
                    'opened_night': str(row.opened_night)[:10], 'is_new': str(row.opened_night)[:10] == str(night)[:10],
                    'escalated': reference.get('escalated', False), 'changes': _as_dict(row.changes) or [],
                    'bisection': _as_dict(row.bisection)})
        connection.execute(verdicts.update().where(verdicts.c.run_id == run_id)
                           .values(record={**record, 'incidents': copies}))

    op.drop_index('ix_runs_lane_night_started', table_name='runs')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('expectations')
        batch.drop_column('lane')
