"""The flat row is declared once: flatten, the results table and the history frame all follow rows.FIELDS."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from support.samples import replace, result

from vramwatch import rows
from vramwatch.records import TestResult
from vramwatch.warehouse.models import ResultRow

SQL_KINDS = {rows.TEXT: sa.Text, rows.STRING: sa.String, rows.INT: sa.Integer, rows.BIGINT: sa.BigInteger,
             rows.FLOAT: sa.Float, rows.BOOL: sa.Boolean, rows.JSON: sa.JSON}


def test_flatten_gives_every_field_in_order_with_none_where_nothing_was_measured():
    measured = result()
    flat = rows.flatten(measured)
    assert list(flat) == list(rows.FIELD_NAMES)
    assert flat["config_id"] == measured.config.config_id and flat["tg_avg_ts"] == measured.tg.avg_ts
    assert flat["pp_samples_ts"] == measured.pp.samples_ts and flat["pp_samples_ts"] is not measured.pp.samples_ts

    failed = rows.flatten(result(status="oom"))
    assert failed["pp_avg_ts"] is None and failed["gen_tokens"] is None and failed["perplexity"] is None


def test_the_results_table_has_a_column_of_the_declared_kind_for_each_field():
    table = ResultRow.__table__
    assert [c.name for c in table.columns] == ["id", "run_id", *rows.FIELD_NAMES, "record"]
    for field in rows.FIELDS:
        column = table.c[field.name]
        assert isinstance(column.type, SQL_KINDS[field.kind]), field.name
        assert column.nullable == field.optional, field.name
        if field.kind == rows.STRING:
            assert column.type.length == field.length, field.name


def test_flatten_reads_the_test_it_is_given():
    test = TestResult(n_prompt=512, n_gen=0, samples_ts=[1.0, 3.0], avg_ts=2.0, stddev_ts=1.4)
    flat = rows.flatten(replace(result(), pp=test))
    assert (flat["pp_n_prompt"], flat["pp_avg_ts"], flat["pp_samples_ts"]) == (512, 2.0, [1.0, 3.0])


def test_every_printer_reads_a_fields_words_unit_and_format():
    vram, file_size, kv, tg = (rows.BY_NAME[n] for n in ("vram_gib", "file_bytes", "gpu_kv_mib", "tg_avg_ts"))
    assert (vram.title, kv.title, tg.title, file_size.title) == ("VRAM (GiB)", "GPU KV (MiB)", "tg (tok/s)", "file size")
    assert (vram.text(10.984), kv.text(1024.0), kv.number(64.0, sign=True), tg.number(118.04)) == (
        "10.98 GiB", "1024.00 MiB", "+64.00", "118.0")
    assert file_size.text(9 * 2**30) == "9.00 GiB" and file_size.text(300 * 2**20) == "300 MiB"  # binary, said so
    assert vram.text(None) == tg.number(float("nan")) == rows.MISSING  # not measured: never a 0
    assert rows.BY_NAME["n_threads"].number(16) == "16"


def test_compared_figures_are_the_buffers_and_the_speeds_each_with_words_and_a_unit():
    assert {f.name for f in rows.COMPARED} >= {"pp_avg_ts", "tg_avg_ts", "gpu_model_mib", "gpu_kv_mib",
                                               "gpu_compute_mib", "gpu_output_mib", "host_model_mib", "host_kv_mib",
                                               "host_compute_mib"}  # a new compared figure needs no edit here
    for field in rows.COMPARED:
        assert field.label and field.unit and field.format, field.name


def test_a_metric_is_named_in_words_where_it_is_a_field():
    """The page and the report's culprit table showed raw names such as gpu_model_mib."""
    assert (rows.words_of("gpu_compute_mib"), rows.words_of("CUDA0/compute"), rows.words_of("tg")) == (
        "GPU compute", "CUDA0/compute", "tg")


def test_the_field_list_and_the_ab_runner_load_without_pandas():
    """A GPU machine's plan (benchmarks/gpu/*.py) runs the bench and the A/B runner on a bare python with no pandas;
    bench.ab reads the judged figures through rows.AB_JUDGED, so rows may not need pandas to load."""
    code = "import sys; sys.modules['pandas'] = None; import vramwatch.rows, vramwatch.bench.ab"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
