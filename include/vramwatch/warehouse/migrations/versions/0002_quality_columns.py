"""Quality figures of real-weight configs: perplexity, tokens scored, greedy continuation hash.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 07:55:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot alter tables in place for every operation; on PostgreSQL these are plain ALTERs
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('perplexity', sa.Float(), nullable=True))
        batch.add_column(sa.Column('quality_tokens', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('greedy_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.drop_column('greedy_sha256')
        batch.drop_column('quality_tokens')
        batch.drop_column('perplexity')
