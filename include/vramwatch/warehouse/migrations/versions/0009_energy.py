"""Energy per token (issue 27): each result's GPU joules per token, power and the host's share, as columns.

Results stored before have no energy: their new columns read NULL (not measured then) and energy_note "". A record
that holds energy (one that went down to 0007 and is coming back) has its figures moved out into the columns, and the
derived columns computed as records.Energy does; downgrade puts the moved figures back into the record.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

FLOAT_COLUMNS = ('pp_j_per_tok', 'pp_power_avg_w', 'pp_host_j_per_tok', 'tg_j_per_tok', 'tg_power_avg_w',
                 'tg_host_j_per_tok', 'gpu_power_peak_w', 'gpu_idle_w', 'gpu_power_limit_w', 'energy_agreement_pct')
# Frozen copy of warehouse.result_row.COLUMN_PATHS for this revision's columns that hold a record field.
COLUMN_PATHS = {'pp_power_avg_w': 'energy.pp.power_avg_w', 'tg_power_avg_w': 'energy.tg.power_avg_w',
                'gpu_idle_w': 'energy.idle_w', 'gpu_power_limit_w': 'energy.power_limit_w'}


def _results():
    return sa.table('results', sa.column('id'), sa.column('record', sa.JSON),
                    *(sa.column(name) for name in (*FLOAT_COLUMNS, 'energy_note')))


def _per_token(joules, tokens):
    return None if joules is None or not tokens else round(joules / tokens, 6)


def _agreement(test):
    counter, sampled = test.get('counter_j'), test.get('sampled_j')
    return None if counter is None or sampled is None or not counter else round(abs(sampled - counter) / counter * 100, 2)


def _columns(energy):
    """The columns of a record's energy, as records.Energy derives them at this revision (frozen copy)."""
    tests = {name: energy.get(name) for name in ('pp', 'tg')}
    columns = {'gpu_idle_w': energy.get('idle_w'), 'gpu_power_limit_w': energy.get('power_limit_w')}
    for name, test in tests.items():
        test = test or {}
        columns[f'{name}_j_per_tok'] = _per_token(test.get('counter_j'), test.get('tokens'))
        columns[f'{name}_host_j_per_tok'] = _per_token(test.get('host_j'), test.get('tokens'))
        columns[f'{name}_power_avg_w'] = test.get('power_avg_w')
    peaks = [t['power_peak_w'] for t in tests.values() if t and t.get('power_peak_w') is not None]
    columns['gpu_power_peak_w'] = max(peaks) if peaks else None
    agreements = [a for t in tests.values() if t and (a := _agreement(t)) is not None]
    columns['energy_agreement_pct'] = max(agreements) if agreements else None
    flags = [f'{name}: {flag}' for name, t in tests.items() if t for flag in t.get('flags', [])]
    columns['energy_note'] = '; '.join(x for x in (energy.get('gpu_reason', ''), *flags, energy.get('host_reason', ''))
                                       if x)
    return columns


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        for name in FLOAT_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column('energy_note', sa.Text(), nullable=False, server_default=''))
    connection = op.get_bind()
    results = _results()
    statement = results.update().where(results.c.id == sa.bindparam('row_id'))
    for row in connection.execute(sa.select(results.c.id, results.c.record)).all():
        record = json.loads(row.record) if isinstance(row.record, str) else row.record
        energy = record.get('energy')
        if not energy:
            continue
        columns = _columns(energy)
        for path in COLUMN_PATHS.values():  # each figure a column holds leaves the record
            parent = energy
            for part in path.split('.')[1:-1]:
                parent = parent.get(part) if parent is not None else None
            if parent is not None:
                parent.pop(path.rsplit('.', 1)[-1], None)
        connection.execute(statement, {'row_id': row.id, 'record': record, **columns})


def downgrade() -> None:
    connection = op.get_bind()
    results = _results()
    statement = results.update().where(results.c.id == sa.bindparam('row_id'))
    for row in connection.execute(sa.select(results)).all():
        record = json.loads(row.record) if isinstance(row.record, str) else row.record
        changed = False
        for name, path in COLUMN_PATHS.items():
            parent = record
            for part in path.split('.')[:-1]:
                parent = parent.get(part) if parent is not None else None
            if parent is not None:
                parent[path.rsplit('.', 1)[-1]] = row._mapping[name]
                changed = True
        if changed:
            connection.execute(statement, {'row_id': row.id, 'record': record})
    with op.batch_alter_table('results') as batch:
        batch.drop_column('energy_note')
        for name in reversed(FLOAT_COLUMNS):
            batch.drop_column(name)
