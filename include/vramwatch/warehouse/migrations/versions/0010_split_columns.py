"""The split over several GPUs (issue 29) as columns: each result's gpus, split_mode and tensor_split.

Until now they lived in the stored record only, so the flat row (history, the published site's bench command, the
downloads) could not tell a two-GPU row from its one-GPU twin. Each stored record's values move out into the columns;
a record stored before the knobs existed holds none and reads as BenchKnobs' defaults (one GPU, layer, no shares), as
the old code read it back. Downgrade puts the values back into the record.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# Frozen copy of the new columns: their record key under `config` and records.BenchKnobs' default at this revision.
DEFAULTS = {'gpus': 1, 'split_mode': 'layer', 'tensor_split': ''}
BATCH = 1000  # rows per executemany


def _results():
    return sa.table('results', sa.column('id'), sa.column('record', sa.JSON), *(sa.column(name) for name in DEFAULTS))


def _rewrite(connection, rows):
    results = _results()
    statement = results.update().where(results.c.id == sa.bindparam('row_id'))
    for start in range(0, len(rows), BATCH):
        connection.execute(statement, rows[start:start + BATCH])


def _as_dict(value):
    return json.loads(value) if isinstance(value, str) else value  # SQLite's JSON comes back as text


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('gpus', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('split_mode', sa.String(length=8), nullable=False, server_default='layer'))
        batch.add_column(sa.Column('tensor_split', sa.String(length=64), nullable=False, server_default=''))
    connection = op.get_bind()
    results = _results()
    rows = []
    for row in connection.execute(sa.select(results.c.id, results.c.record)):
        record = _as_dict(row.record)
        config = record.get('config', {})
        rows.append({'row_id': row.id, 'record': record,
                     **{name: config.pop(name, default) for name, default in DEFAULTS.items()}})
    _rewrite(connection, rows)


def downgrade() -> None:
    connection = op.get_bind()
    results = _results()
    rows = []
    for row in connection.execute(sa.select(results)):
        record = _as_dict(row.record)
        record.setdefault('config', {}).update({name: row._mapping[name] for name in DEFAULTS})
        rows.append({'row_id': row.id, 'record': record})
    _rewrite(connection, rows)
    with op.batch_alter_table('results') as batch:
        for name in reversed(DEFAULTS):
            batch.drop_column(name)
