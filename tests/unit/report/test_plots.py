"""The report's history plot: one point per run (not per date), dated x ticks, labelled axes and a legend. Read
through the warehouse, as the report reads it."""

from __future__ import annotations

from support.samples import night, replace
from support.warehouses import build_record

from vramwatch.records import Incident, ValidatedNight
from vramwatch.report import plots
from vramwatch.report.write import HISTORY_FIELDS, HISTORY_RUNS
from vramwatch.warehouse.store import Warehouse

RUNS = (("scheduled__2026-01-04", "2026-01-04", "old"), ("scheduled__2026-01-05", "2026-01-05", "old"),
        ("manual__2026-01-05T14:00", "2026-01-05", "new"))


def stored_history(tmp_path):
    """Three runs, two of them on one night; the third grew the DeepSeek baseline's model buffer by 1 GiB."""
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    for run_id, day, commit in RUNS:
        grown = [replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + 1024)
                 if commit == "new" and r.config.mode == "baseline" else r for r in rows]
        warehouse.store_run(run_id, day, build_record(commit), ValidatedNight(accepted=grown, quarantined=[]), "manual")
    history = warehouse.recent_history({r.config.config_id for r in rows}, HISTORY_RUNS, fields=HISTORY_FIELDS)
    warehouse.close()
    return history, rows


def test_two_runs_in_one_night_are_two_points_and_the_axes_say_what_they_show(tmp_path):
    """Plots were per date: the night's second run (here the one that grew) collapsed onto the first."""
    history, rows = stored_history(tmp_path)
    baseline = rows[0].config.config_id
    incident = Incident(incident_id=1, kind="vram", metric="gpu_model_mib", state="open", configs=[baseline],
                        summary="grew", opened_night="2026-01-05")

    figure = plots.history_figure(history, [incident])

    vram, tg = figure.axes[0], figure.axes[1]
    line = next(line for line in vram.lines if line.get_label() == "Q4_K_M/baseline")
    assert list(line.get_xdata()) == [0, 1, 2]  # three runs, three points
    assert list(line.get_ydata()) == [r + d for r, d in zip([rows[0].memory.vram_gib] * 3, (0, 0, 1))]
    assert [t.get_text() for t in tg.get_xticklabels()] == ["2026-01-04", "2026-01-05", "2026-01-05"]
    assert tg.get_xlabel().startswith("run, oldest to newest") and vram.get_ylabel() == "VRAM, GiB"
    assert tg.get_ylabel() == "tg tok/s"
    legend = tg.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["Q4_K_M/baseline", "Q4_K_M/offload"]
    assert legend.get_title().get_text() == "quant/mode"
    (marks,) = vram.collections  # the incident's nights in red: both runs of 2026-01-05
    before = rows[0].memory.vram_gib
    assert [tuple(xy) for xy in marks.get_offsets()] == [(1.0, before), (2.0, before + 1)]
    assert plots.history(history, [incident]).startswith("iVBOR")  # still a PNG for the report
