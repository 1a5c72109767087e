"""An incident keeps the size it paged with, the build that resolved it, and whether its cause is separable.

- incidents.paged_delta_mib, paged_delta_pct: its size when it last paged (opened or escalated); delta_mib and
  delta_pct now follow its current size, so the report can say "grew from A to B" while it is open, and escalation
  is judged against what was paged. NULL for incidents stored before: their delta is what they paged with.
- incidents.resolved_by: the llama.cpp commit of the night it resolved ("" while open or for older rows).
- incidents.separable: false while its change came with a GPU swap on a build-change night (build or GPU: not
  separable); true for every older row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('paged_delta_mib', sa.Float(), nullable=True))
        batch.add_column(sa.Column('paged_delta_pct', sa.Float(), nullable=True))
        batch.add_column(sa.Column('resolved_by', sa.String(length=80), nullable=False, server_default=''))
        batch.add_column(sa.Column('separable', sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.drop_column('separable')
        batch.drop_column('resolved_by')
        batch.drop_column('paged_delta_pct')
        batch.drop_column('paged_delta_mib')
