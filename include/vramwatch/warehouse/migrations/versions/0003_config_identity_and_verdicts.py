"""Config identity includes every setting that changes the figures; incidents keep per-config changes and when they
grew; a night's verdicts (A/B comparisons, what could not be judged) are kept with the run.

- results: config_name (the old config_id, model/quant/mode), the identity knobs that had no column (n_prompt, n_gen,
  n_gpu_layers, type_k, type_v) and needed_mib. config_id becomes config_name@<hash of the identity settings>,
  computed here from each row's stored record with a frozen copy of records.BenchConfig.config_id, and the ids in
  quarantine and incidents follow.
- results.status takes 32 characters: invalid_measurement has 19.
- incidents: changes (one line per config), escalated_night.
- verdicts: one JSON document per run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:00:00
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Frozen copies (records.IDENTITY_KNOBS, BenchKnobs' defaults, settings_id): what config_id meant at this revision.
IDENTITY_DEFAULTS = {
    "n_prompt": 512, "n_gen": 128, "n_ctx": 4096, "n_batch": 2048, "n_ubatch": 512, "n_threads": 0,
    "n_gpu_layers": 999, "flash_attn": "auto", "use_mmap": True, "type_k": "f16", "type_v": "f16",
    "generation": {"prompt": "Explain quantum computing in simple terms", "max_tokens": 100, "temperature": 0.7,
                   "seed": 42},
}


def _config_id(name, config):
    settings = {knob: config.get(knob, default) for knob, default in IDENTITY_DEFAULTS.items()}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:8]}", settings


def _needed_mib(record):
    memory = record.get("memory") or {}
    if memory.get("gpu_total_mib") is None:
        return None
    if memory.get("nvml_process_mib") is not None:
        return memory["nvml_process_mib"]
    buffers = sum(memory.get(f"gpu_{kind}_mib") or 0.0 for kind in ("model", "kv", "compute", "output"))
    return buffers + (memory.get("cuda_context_mib") or 0.0)


def _as_dict(value):
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('config_name', sa.String(length=200), nullable=False, server_default=''))
        batch.add_column(sa.Column('n_prompt', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('n_gen', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('n_gpu_layers', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('type_k', sa.String(length=8), nullable=False, server_default=''))
        batch.add_column(sa.Column('type_v', sa.String(length=8), nullable=False, server_default=''))
        batch.add_column(sa.Column('needed_mib', sa.Float(), nullable=True))
        batch.alter_column('status', existing_type=sa.String(length=16), type_=sa.String(length=32),
                           existing_nullable=False)
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('changes', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('escalated_night', sa.Date(), nullable=True))
    op.create_table('verdicts',
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_verdicts_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_verdicts'))
    )

    connection = op.get_bind()
    results = sa.table('results', sa.column('id'), sa.column('config_id'), sa.column('config_name'),
                       sa.column('n_prompt'), sa.column('n_gen'), sa.column('n_gpu_layers'), sa.column('type_k'),
                       sa.column('type_v'), sa.column('needed_mib'), sa.column('record', sa.JSON))
    new_ids = {}  # old id (a name) -> the newest row's new id, for incidents
    for row in connection.execute(sa.select(results.c.id, results.c.config_id, results.c.record)
                                  .order_by(results.c.id)):
        record = _as_dict(row.record)
        new_id, settings = _config_id(row.config_id, record["config"])
        new_ids[row.config_id] = new_id
        connection.execute(results.update().where(results.c.id == row.id).values(
            config_id=new_id, config_name=row.config_id, n_prompt=settings["n_prompt"], n_gen=settings["n_gen"],
            n_gpu_layers=settings["n_gpu_layers"], type_k=settings["type_k"], type_v=settings["type_v"],
            needed_mib=_needed_mib(record)))
    quarantine = sa.table('quarantine', sa.column('id'), sa.column('config_id'), sa.column('record', sa.JSON))
    for row in connection.execute(sa.select(quarantine.c.id, quarantine.c.config_id, quarantine.c.record)):
        new_id, _ = _config_id(row.config_id, _as_dict(row.record)["config"])
        connection.execute(quarantine.update().where(quarantine.c.id == row.id).values(config_id=new_id))
    incidents = sa.table('incidents', sa.column('id'), sa.column('configs', sa.JSON))
    for row in connection.execute(sa.select(incidents.c.id, incidents.c.configs)):
        configs = [new_ids.get(config, config) for config in _as_dict(row.configs)]
        connection.execute(incidents.update().where(incidents.c.id == row.id).values(configs=configs))


def downgrade() -> None:
    connection = op.get_bind()
    for table in ('results', 'quarantine'):
        connection.execute(sa.text(f"UPDATE {table} SET config_id = substr(config_id, 1, length(config_id) - 9) "
                                   "WHERE config_id LIKE '%@________'"))
    incidents = sa.table('incidents', sa.column('id'), sa.column('configs', sa.JSON))
    for row in connection.execute(sa.select(incidents.c.id, incidents.c.configs)):
        configs = [config.split('@', 1)[0] for config in _as_dict(row.configs)]
        connection.execute(incidents.update().where(incidents.c.id == row.id).values(configs=configs))
    op.drop_table('verdicts')
    with op.batch_alter_table('incidents') as batch:
        batch.drop_column('escalated_night')
        batch.drop_column('changes')
    with op.batch_alter_table('results') as batch:
        for column in ('needed_mib', 'type_v', 'type_k', 'n_gpu_layers', 'n_gen', 'n_prompt', 'config_name'):
            batch.drop_column(column)
        batch.alter_column('status', existing_type=sa.String(length=32), type_=sa.String(length=16),
                           existing_nullable=False)
