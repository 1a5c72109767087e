"""Initial schema: builds, runs, environments, results, quarantine, incidents.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27 06:43:44.897828
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('builds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('location', sa.Text(), nullable=False),
    sa.Column('version', sa.String(length=80), nullable=False),
    sa.Column('llama_cpp_python_version', sa.String(length=40), nullable=False),
    sa.Column('llama_cpp_commit', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('cuda_architectures', sa.String(length=64), nullable=False),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('artifact_bytes', sa.BigInteger(), nullable=False),
    sa.Column('log_tail', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('built_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_builds')),
    sa.UniqueConstraint('key', 'built_at', name='uq_builds_key_built_at')
    )
    op.create_table('environments',
    sa.Column('environment_id', sa.String(length=16), nullable=False),
    sa.Column('gpu_name', sa.String(length=120), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('gpu_driver', sa.String(length=40), nullable=False),
    sa.Column('cuda_version', sa.String(length=40), nullable=False),
    sa.Column('compute_capability', sa.String(length=16), nullable=False),
    sa.Column('cpu_model', sa.String(length=200), nullable=False),
    sa.Column('cpu_cores', sa.Integer(), nullable=False),
    sa.Column('ram_gib', sa.Float(), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('last_night', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('environment_id', name=op.f('pk_environments'))
    )
    op.create_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('configs', sa.JSON(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('delta_mib', sa.Float(), nullable=True),
    sa.Column('delta_pct', sa.Float(), nullable=True),
    sa.Column('build_before', sa.String(length=80), nullable=False),
    sa.Column('build_after', sa.String(length=80), nullable=False),
    sa.Column('opened_night', sa.Date(), nullable=False),
    sa.Column('updated_night', sa.Date(), nullable=False),
    sa.Column('resolved_night', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    op.create_index(op.f('ix_incidents_environment_id'), 'incidents', ['environment_id'], unique=False)
    op.create_index(op.f('ix_incidents_state'), 'incidents', ['state'], unique=False)
    op.create_table('runs',
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('night', sa.Date(), nullable=False),
    sa.Column('build_id', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['build_id'], ['builds.id'], name=op.f('fk_runs_build_id_builds')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_runs'))
    )
    op.create_index(op.f('ix_runs_night'), 'runs', ['night'], unique=False)
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('config_id', sa.String(length=200), nullable=False),
    sa.Column('failed_expectations', sa.JSON(), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_quarantine_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine'))
    )
    op.create_index(op.f('ix_quarantine_run_id'), 'quarantine', ['run_id'], unique=False)
    op.create_table('results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('environment_id', sa.String(length=16), nullable=False),
    sa.Column('config_id', sa.String(length=200), nullable=False),
    sa.Column('model', sa.String(length=120), nullable=False),
    sa.Column('quant', sa.String(length=32), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('n_cpu_moe', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('arch', sa.String(length=40), nullable=False),
    sa.Column('n_expert', sa.Integer(), nullable=False),
    sa.Column('synthetic', sa.Boolean(), nullable=False),
    sa.Column('file_bytes', sa.BigInteger(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('reps', sa.Integer(), nullable=False),
    sa.Column('n_ctx', sa.Integer(), nullable=False),
    sa.Column('n_batch', sa.Integer(), nullable=False),
    sa.Column('n_ubatch', sa.Integer(), nullable=False),
    sa.Column('n_threads', sa.Integer(), nullable=False),
    sa.Column('flash_attn', sa.String(length=8), nullable=False),
    sa.Column('use_mmap', sa.Boolean(), nullable=False),
    sa.Column('pp_n_prompt', sa.Integer(), nullable=True),
    sa.Column('pp_n_gen', sa.Integer(), nullable=True),
    sa.Column('pp_avg_ts', sa.Float(), nullable=True),
    sa.Column('pp_stddev_ts', sa.Float(), nullable=True),
    sa.Column('pp_samples_ts', sa.JSON(), nullable=True),
    sa.Column('tg_n_prompt', sa.Integer(), nullable=True),
    sa.Column('tg_n_gen', sa.Integer(), nullable=True),
    sa.Column('tg_avg_ts', sa.Float(), nullable=True),
    sa.Column('tg_stddev_ts', sa.Float(), nullable=True),
    sa.Column('tg_samples_ts', sa.JSON(), nullable=True),
    sa.Column('gen_tokens', sa.Integer(), nullable=True),
    sa.Column('gen_tokens_per_s', sa.Float(), nullable=True),
    sa.Column('gen_text_sha256', sa.String(length=64), nullable=True),
    sa.Column('buffers_mib', sa.JSON(), nullable=False),
    sa.Column('gpu_model_mib', sa.Float(), nullable=False),
    sa.Column('gpu_kv_mib', sa.Float(), nullable=False),
    sa.Column('gpu_compute_mib', sa.Float(), nullable=False),
    sa.Column('gpu_output_mib', sa.Float(), nullable=False),
    sa.Column('host_model_mib', sa.Float(), nullable=False),
    sa.Column('host_kv_mib', sa.Float(), nullable=False),
    sa.Column('host_compute_mib', sa.Float(), nullable=False),
    sa.Column('gpu_total_mib', sa.Float(), nullable=True),
    sa.Column('nvml_device_used_before_mib', sa.Float(), nullable=True),
    sa.Column('nvml_device_used_after_mib', sa.Float(), nullable=True),
    sa.Column('nvml_process_mib', sa.Float(), nullable=True),
    sa.Column('nvml_peak_device_mib', sa.Float(), nullable=True),
    sa.Column('cuda_context_mib', sa.Float(), nullable=True),
    sa.Column('host_rss_peak_mib', sa.Float(), nullable=False),
    sa.Column('vram_gib', sa.Float(), nullable=True),
    sa.Column('n_overridden_tensors', sa.Integer(), nullable=False),
    sa.Column('active_bytes_per_token', sa.BigInteger(), nullable=False),
    sa.Column('gpu_bytes_per_token', sa.BigInteger(), nullable=False),
    sa.Column('host_bytes_per_token', sa.BigInteger(), nullable=False),
    sa.Column('gpu_bandwidth_gbs', sa.Float(), nullable=True),
    sa.Column('host_bandwidth_gbs', sa.Float(), nullable=True),
    sa.Column('bound_tg_ts', sa.Float(), nullable=True),
    sa.Column('fraction_of_bound', sa.Float(), nullable=True),
    sa.Column('started_at', sa.String(length=40), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('load_s', sa.Float(), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.environment_id'],
                            name=op.f('fk_results_environment_id_environments')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_results_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_results')),
    sa.UniqueConstraint('run_id', 'config_id', name='uq_results_run_id_config_id')
    )
    op.create_index(op.f('ix_results_config_id'), 'results', ['config_id'], unique=False)
    op.create_index(op.f('ix_results_environment_id'), 'results', ['environment_id'], unique=False)
    op.create_index(op.f('ix_results_run_id'), 'results', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_table('results')
    op.drop_table('quarantine')
    op.drop_table('runs')
    op.drop_table('incidents')
    op.drop_table('environments')
    op.drop_table('builds')
