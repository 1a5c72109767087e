"""A run knows which measured night it holds and why it failed.

- runs.night_key: the content hash of the measured night a run stored (unique), so ingesting the same night again
  replaces that run's rows instead of adding a second copy. Empty (NULL) for runs stored without one (the DAG).
- runs.error: why a store failed, on a run marked failed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('night_key', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('error', sa.Text(), nullable=False, server_default=''))
        batch.create_unique_constraint(op.f('uq_runs_night_key'), ['night_key'])


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('uq_runs_night_key'), type_='unique')
        batch.drop_column('error')
        batch.drop_column('night_key')
