"""The flat row is declared once: flatten, the results table and the history frame all follow rows.FIELDS."""

from __future__ import annotations

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
