"""Indexes for the history reads that must stay fast on years of nights (issue 17: reads that scale).

- ix_results_series: results by (config_id, environment_id, status, run_id), what the windowed history ranks
  (Warehouse.recent_history: a config's newest good rows per machine) without touching the wide rows.
- ix_runs_night_started: runs in history order (night, then start), for the newest runs the page charts.
- ix_runs_build_id: a build's runs, for the page's build comparison.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 22:30:00
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_results_series', 'results', ['config_id', 'environment_id', 'status', 'run_id'], unique=False)
    op.create_index('ix_runs_night_started', 'runs', ['night', 'started'], unique=False)
    op.create_index(op.f('ix_runs_build_id'), 'runs', ['build_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_runs_build_id'), table_name='runs')
    op.drop_index('ix_runs_night_started', table_name='runs')
    op.drop_index('ix_results_series', table_name='results')
