"""An incident carries the bisection that looked for its culprit.

- incidents.bisection: the BisectResult as JSON (culprit release or commit, figures, steps, or where it stopped);
  NULL until a bisection ran for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('bisection', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.drop_column('bisection')
