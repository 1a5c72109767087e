"""Two builds compared (issue 16), built from a real SQLite warehouse filled through the Warehouse API: per config
every compared figure (rows.COMPARED) on build A and B, the delta and the delta %, in the field's words and unit."""

from __future__ import annotations

import pytest
from support.warehouses import GROWTH_MIB, NEW_BUILD, OLD_BUILD, OOM, REGRESSED, three_nights

from vramwatch.report.compare import compare_builds
from vramwatch.rows import BY_NAME, COMPARED
from vramwatch.warehouse.store import Warehouse


@pytest.fixture
def warehouse(sqlite_warehouse_url):
    url = sqlite_warehouse_url
    three_nights(url)
    opened = Warehouse(url)
    yield opened
    opened.close()


def figures(comparison, config_name: str) -> dict[str, tuple]:
    """field name -> (a, b, delta) of one config."""
    (config,) = [c for c in comparison.configs if c.config_name == config_name]
    return {row.field.name: (row.a, row.b, row.delta) for row in config.rows}


def test_the_last_two_builds_are_compared_per_config_by_default(warehouse):
    comparison = compare_builds(warehouse)
    assert (comparison.a.label.split(" ·")[0], comparison.b.label.split(" ·")[0]) == (OLD_BUILD, NEW_BUILD)
    grown = figures(comparison, REGRESSED)
    assert grown["gpu_model_mib"] == (10_010.0, 10_010.0 + GROWTH_MIB, GROWTH_MIB)
    assert grown["gpu_kv_mib"] == (1024.0, 1024.0, 0.0)
    assert "host_kv_mib" not in grown  # empty on both builds: no row
    assert grown["tg_avg_ts"][:2] == (118.0, 118.0)  # speed too
    oom = [c for c in comparison.configs if c.config_name == OOM][0]
    assert (oom.status_a, oom.status_b) == ("ok", "oom") and figures(comparison, OOM)["gpu_model_mib"][1] is None
    assert comparison.n_changed == 2 and len(comparison.configs) == 8


def test_each_figure_is_printed_in_its_fields_words_and_unit(warehouse):
    """The page printed hand-made words and formats; now every row is a rows.Field."""
    (row,) = [r for r in compare_builds(warehouse).configs if r.config_name == REGRESSED][0].rows[:1]
    assert row.field in COMPARED
    model = BY_NAME["gpu_model_mib"]
    assert (model.words, model.unit, model.number(10_010.0), model.number(GROWTH_MIB, sign=True)) == (
        "GPU model", "MiB", "10010.00", f"+{GROWTH_MIB:.2f}")
    assert model.number(None) == "–"  # not measured: a dash, never 0


def test_any_two_builds_can_be_picked_and_an_unknown_one_is_said_in_one_line(warehouse):
    ids = {option.label.split(" ·")[0]: option.build_id for option in compare_builds(warehouse).options}
    swapped = compare_builds(warehouse, ids[NEW_BUILD], ids[OLD_BUILD])
    unknown = compare_builds(warehouse, "999", "<b>x</b>")
    assert figures(swapped, REGRESSED)["gpu_model_mib"][2] == -GROWTH_MIB
    assert unknown.problem.startswith("build '999' is not in the warehouse; build '<b>x</b>' is not")
    assert figures(unknown, REGRESSED)["gpu_model_mib"][2] == GROWTH_MIB  # the default pair


def test_changed_configs_only_keeps_the_configs_whose_figures_or_status_moved(warehouse):
    comparison = compare_builds(warehouse, changed_only=True)
    assert [c.config_name for c in comparison.shown] == [REGRESSED, OOM]
