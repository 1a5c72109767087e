"""The report stage: seed-format Markdown, HTML with plots, fits-on-a-GPU and change tables."""

from vramwatch.report.tables import (
    GPU_SIZES_GB,
    NO_GPU,
    ModeNumbers,
    SeedRow,
    Table,
    changes_table,
    fits_table,
    key_findings,
    needed_mib,
    quality_table,
    seed_table_rows,
    seed_tables,
    sweep_tables,
)
from vramwatch.report.write import report_for_run, write_report

__all__ = [
    "GPU_SIZES_GB",
    "NO_GPU",
    "ModeNumbers",
    "SeedRow",
    "Table",
    "changes_table",
    "fits_table",
    "key_findings",
    "needed_mib",
    "quality_table",
    "report_for_run",
    "seed_table_rows",
    "seed_tables",
    "sweep_tables",
    "write_report",
]
