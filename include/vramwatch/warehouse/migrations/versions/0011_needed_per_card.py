"""Each result's GPU memory need on its fullest card (needed_card_mib, issue 29): what "fits on N x size" holds
against a card's size. The flat row had only the need summed over the config's GPUs, so the published site judged a
two-GPU split's sum against one card. Computed for each stored row from its columns and record as the code of this
revision computes Memory.needed_card_mib; downgrade drops the column (it is derived, nothing moves back).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:10:00
"""

import json
import re

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Frozen copies of records.is_gpu_device's rule and of Memory.needed_by_device at this revision.
GPU_DEVICE = re.compile(r'^(CUDA|ROCm|HIP|Vulkan|MUSA|SYCL|CANN|OpenCL|Metal)')
BATCH = 1000  # rows per executemany


def _as_dict(value):
    return json.loads(value) if isinstance(value, str) else (value or {})  # SQLite's JSON comes back as text


def needed_card_mib(needed_mib, buffers_mib, nvml_by_device):
    """The most any one GPU of the row needs; None without a GPU, or for a row split without NVML on each card."""
    if needed_mib is None:  # no GPU
        return None
    by_device = {}
    for key, mib in buffers_mib.items():
        device = key.partition('/')[0]
        if GPU_DEVICE.match(device) and not device.endswith('_Host'):
            by_device[device] = by_device.get(device, 0.0) + mib
    cards = {device for device in by_device if not device.endswith('_Split')}
    if nvml_by_device and cards <= set(nvml_by_device):
        return max(nvml_by_device.values())
    if len(by_device) <= 1:
        return needed_mib
    if len(cards) < len(by_device):  # a row split's buffer spans the cards
        return None
    return round(max(by_device.values()), 2)


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('needed_card_mib', sa.Float(), nullable=True))
    connection = op.get_bind()
    results = sa.table('results', sa.column('id'), sa.column('needed_mib'), sa.column('buffers_mib', sa.JSON),
                       sa.column('record', sa.JSON), sa.column('needed_card_mib'))
    rows = [{'row_id': row.id, 'needed_card_mib': needed_card_mib(
                row.needed_mib, _as_dict(row.buffers_mib),
                _as_dict(row.record).get('memory', {}).get('nvml_process_by_device_mib'))}
            for row in connection.execute(sa.select(results.c.id, results.c.needed_mib, results.c.buffers_mib,
                                                    results.c.record))]
    statement = results.update().where(results.c.id == sa.bindparam('row_id'))
    for start in range(0, len(rows), BATCH):
        connection.execute(statement, rows[start:start + BATCH])


def downgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.drop_column('needed_card_mib')
