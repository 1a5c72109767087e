"""The report's figures: the history plot has one point per run (not per date), dated x ticks, labelled axes and a
legend, read through the warehouse as the report reads it; bars never draw a figure that was not measured."""

from __future__ import annotations

import dataclasses

from support.samples import night, replace
from support.warehouses import build_record

from vramwatch.records import Incident, ValidatedNight
from vramwatch.report import history_chart, plots
from vramwatch.report.geometry import padded_range
from vramwatch.report.history_chart import HISTORY_RUNS
from vramwatch.report.tables import ModeNumbers, seed_table_rows
from vramwatch.report.write import HISTORY_FIELDS
from vramwatch.warehouse.store import Warehouse

RUNS = (("scheduled__2026-01-04", "2026-01-04", "old"), ("scheduled__2026-01-05", "2026-01-05", "old"),
        ("manual__2026-01-05T14:00", "2026-01-05", "new"))


def stored_history(url: str):
    """Three runs, two of them on one night; the third grew the DeepSeek baseline's model buffer by 1 GiB."""
    warehouse = Warehouse(url)
    rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    for run_id, day, commit in RUNS:
        grown = [replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + 1024)
                 if commit == "new" and r.config.mode == "baseline" else r for r in rows]
        warehouse.store_run(run_id, day, build_record(commit), ValidatedNight(accepted=grown, quarantined=[]), "manual")
    history = warehouse.recent_history({r.config.config_id for r in rows}, HISTORY_RUNS, fields=HISTORY_FIELDS)
    warehouse.close()
    return history, rows


def test_two_runs_in_one_night_are_two_points_and_the_axes_say_what_they_show(sqlite_warehouse_url):
    """Plots were per date: the night's second run (here the one that grew) collapsed onto the first."""
    history, rows = stored_history(sqlite_warehouse_url)
    baseline = rows[0].config.config_id
    incident = Incident(incident_id=1, kind="vram", metric="gpu_model_mib", state="open", configs=[baseline],
                        summary="grew", opened_night="2026-01-05")

    figure = history_chart.history(history, [incident])

    vram, tg = figure.panels
    line = next(line for line in vram.lines if line.name == "Q4_K_M/baseline")
    xs, ys = [p.x for p in line.points], [p.y for p in line.points]
    assert len(xs) == 3 and xs[0] < xs[1] < xs[2]  # three runs, three points
    assert ys[0] == ys[1] > ys[2]  # the third run's VRAM is higher (px grow downwards)
    assert [t.label for t in tg.x_ticks] == ["2026-01-04", "2026-01-05", "2026-01-05"]
    assert [t.at for t in vram.x_ticks] == xs
    assert tg.x_title == history_chart.X_TITLE and vram.y_title == "VRAM (GiB)" and tg.y_title == "tg (tok/s)"
    assert [name for name, _ in tg.legend] == ["Q4_K_M/baseline", "Q4_K_M/offload"] and tg.legend_title == "quant/mode"
    assert [(m.x, m.y) for m in vram.marks] == [(xs[1], ys[1]), (xs[2], ys[2])]  # both runs of 2026-01-05, in red
    (change,) = vram.rules  # the new build, marked between its run and the one before, as the page marks it
    assert xs[1] < change.x < xs[2] and change.label == "build old -> new"
    (change,) = vram.rules  # the new build, marked between its run and the one before, as the page marks it
    assert xs[1] < change.x < xs[2] and change.label == "build old -> new"
    assert all(m.label.startswith("2026-01-05") for m in vram.marks)


def test_a_flat_vram_line_stays_flat_and_ticks_are_round_numbers():
    """Allocator noise must not fill the panel's height, and tick labels are round values inside the axis."""
    low, high = padded_range([10.98, 10.99], plots.MIN_PAD)
    assert low < 10.98 and high > 10.99 and (high - low) > 0.1  # 1 % of the size, not 10 % of a 0.01 spread
    assert plots.nice_ticks(0, 23.1, 4) == [(0.0, "0"), (5.0, "5"), (10.0, "10"), (15.0, "15"), (20.0, "20")]
    assert [label for _, label in plots.nice_ticks(10.87, 11.1, 4)] == ["10.90", "10.95", "11.00", "11.05", "11.10"]


def test_a_failed_mode_says_no_result_instead_of_a_bar_of_zero():
    rows = seed_table_rows(night(models=("deepseek-moe-16b",), quants=("Q4_K_M",)))
    failed = [dataclasses.replace(row, offload=ModeNumbers(status="oom", reps=1)) for row in rows]

    figure = plots.baseline_vs_offload(failed)

    vram, tg = figure.panels
    for panel in (vram, tg):
        assert len(panel.bars) == 1 and [n.label for n in panel.notes] == ["no result"]
        assert panel.bars[0].width > 0 and panel.bars[0].x == panel.left
    assert vram.x_title == "VRAM (GiB)" and [t.label for t in vram.y_ticks] == ["deepseek-moe-16b Q4_K_M"]
