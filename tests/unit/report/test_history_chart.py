"""The history chart, one renderer for the page and the report: one point per run, a flat VRAM line stays flat,
failures sit on the axis, new builds are marked, and the axes carry titles and dated ticks."""

from __future__ import annotations

from vramwatch.report.history_chart import PAGE_TICKS, X_TITLE, RunPoint, config_chart, config_label, energy_chart


def run(night: str, status: str, mib: float | None, build: str, run_id: str = "") -> RunPoint:
    return RunPoint(night=night, run_id=run_id or f"scheduled__{night}", status=status, value=mib, build=build)


def panel_of(chart):
    (panel,) = chart.figure.panels
    return panel


def test_flat_history_is_a_flat_line_in_the_middle_not_noise_blown_up():
    runs = [run(f"2026-01-0{day}", "ok", 11_238.5, "abc") for day in (1, 2, 3)]
    chart = config_chart("Q4_K_M/baseline", "VRAM", runs)
    panel = panel_of(chart)
    (line,) = panel.lines
    ys = {p.y for p in line.points}
    assert len(ys) == 1 and abs(ys.pop() - panel.middle[1]) < 1
    assert panel.y_title == "memory (GiB)" and chart.latest == "10.98 GiB"
    assert all(10.8 < float(t.label) < 11.2 for t in panel.y_ticks)  # round values around the line, in GiB
    assert not panel.failures and not panel.rules


def test_growth_failure_and_build_change_are_placed_where_they_happened():
    runs = [run("2026-01-01", "ok", 640.0, "old"), run("2026-01-02", "ok", 950.0, "new"),
            run("2026-01-03", "oom", None, "new")]
    chart = config_chart("Q4_K_M/offload", "VRAM", runs, flagged=True)
    panel = panel_of(chart)
    first, second = panel.lines[0].points
    assert second.y < first.y  # more memory is higher up
    assert panel.y_title == "memory (MiB)" and first.label == "2026-01-01 (run scheduled__2026-01-01): 640 MiB (build old)"
    assert [f.label for f in panel.failures] == ["2026-01-03 (run scheduled__2026-01-03): oom (build new)"]
    assert panel.failures[0].y == panel.bottom and chart.latest == "oom" and chart.flagged
    (change,) = panel.rules
    assert first.x < change.x < second.x and change.label == "build old -> new"
    assert [t.label for t in panel.x_ticks] == ["2026-01-01", "2026-01-02", "2026-01-03"]  # full dates, readable


def test_two_runs_in_one_night_are_two_points_not_one():
    """Plots were per date: a night's second run (a rerun, a manual run) collapsed onto the first."""
    runs = [run("2026-01-01", "ok", 640.0, "old"), run("2026-01-02", "ok", 640.0, "old", "scheduled__2026-01-02"),
            run("2026-01-02", "ok", 960.0, "new", "manual__2026-01-02T15:00")]
    points = panel_of(config_chart("Q4_K_M/offload", "VRAM", runs)).lines[0].points
    assert len(points) == 3 and len({p.x for p in points}) == 3
    assert [p.label.split(":")[0] for p in points[1:]] == [
        "2026-01-02 (run scheduled__2026-01-02)", "2026-01-02 (run manual__2026-01-02T15"]
    assert points[2].y < points[1].y


def test_the_axes_have_titles_and_a_few_dated_ticks_spread_over_the_runs():
    runs = [run(f"2026-01-{day:02d}", "ok", 640.0 + day, "b") for day in range(1, 31)]
    panel = panel_of(config_chart("x", "VRAM", runs))
    assert (panel.x_title, panel.y_title) == (X_TITLE, "memory (MiB)")
    assert [t.label for t in panel.x_ticks] == ["2026-01-01", "2026-01-15", "2026-01-30"] and PAGE_TICKS == 3
    assert panel.x_ticks[0].at == panel.left and panel.x_ticks[-1].at == panel.right


def test_a_config_that_never_measured_has_no_line_and_no_scale():
    panel = panel_of(config_chart("x", "VRAM", [run("2026-01-01", "crashed", None, "b")]))
    assert panel.lines[0].points == [] and panel.y_ticks == [] and len(panel.failures) == 1


def test_a_config_is_named_by_its_quant_and_mode_as_records_writes_them():
    """The page wrote "partial 4", the tables "partial4": one writer now (records.BenchConfig.mode_label)."""
    assert config_label("deepseek-moe-16b/Q4_K_M/partial4@0123abcd") == "Q4_K_M/partial4"


def test_the_reports_history_crosses_a_run_that_measured_nothing_as_the_page_does(sqlite_warehouse_url):
    """One renderer: the report's figure showed only ok runs, so a config that ran out of memory just stopped."""
    from support.warehouses import NIGHTS, OOM, three_nights

    from vramwatch.report.history_chart import HISTORY_RUNS, history
    from vramwatch.report.write import HISTORY_FIELDS
    from vramwatch.warehouse.store import Warehouse

    url = sqlite_warehouse_url
    three_nights(url)
    warehouse = Warehouse(url)
    frame = warehouse.history()
    frame = warehouse.recent_history(set(frame["config_id"]), HISTORY_RUNS, fields=HISTORY_FIELDS)
    warehouse.close()

    figure = history(frame, [])
    model = OOM.split("/")[0]
    vram, tg = [panel for panel in figure.panels if panel.title.startswith(f"{model}:")]
    for panel in (vram, tg):
        (failure,) = panel.failures
        assert failure.label.startswith(f"{NIGHTS[-1]} (run ") and ": oom (build " in failure.label
        assert failure.y == panel.bottom


def test_the_energy_chart_draws_j_per_token_of_pp_and_tg_and_says_when_the_host_was_not_measured():
    runs = [run("2026-01-01", "ok", None, "old"), run("2026-01-02", "ok", None, "new"),
            run("2026-01-03", "oom", None, "new")]
    lines = {"pp_j_per_tok": [0.127, 0.131, None], "tg_j_per_tok": [2.63, 2.91, None],
             "pp_host_j_per_tok": [None] * 3, "tg_host_j_per_tok": [None] * 3}
    chart = energy_chart("Q4_K_M/offload", "GPU energy (NVML) on H100", runs, lines)
    pp, tg = chart.figure.panels
    assert (pp.y_title, tg.y_title) == ("pp energy (J/tok)", "tg energy (J/tok)")
    assert [line.name for line in tg.lines] == ["GPU"] and tg.lines[0].points[1].y < tg.lines[0].points[0].y
    assert tg.lines[0].points[1].label == "2026-01-02 (run scheduled__2026-01-02): 2.9100 J/tok (build new)"
    assert [f.label for f in tg.failures] == ["2026-01-03 (run scheduled__2026-01-03): oom (build new)"]
    assert chart.subtitle.endswith("; host energy not measured") and chart.latest == "oom"

    lines |= {"tg_host_j_per_tok": [1.9, 2.0, None]}
    with_host = energy_chart("Q4_K_M/offload", "GPU energy (NVML) on H100", runs[:2], {k: v[:2] for k, v in
                                                                                     lines.items()})
    assert [line.name for line in with_host.figure.panels[1].lines] == ["GPU", "host"]
    assert with_host.subtitle.endswith("; host by RAPL") and with_host.latest == "tg energy 2.9100 J/tok"


def test_the_sites_chart_has_a_panel_per_figure_sharing_the_build_marks_with_incidents_on_their_own():
    from vramwatch.report.history_chart import figures_chart
    from vramwatch.rows import BY_NAME

    axis = [RunPoint(f"2026-01-0{i + 1}", f"run{i}", "ok", None, "aaa" if i < 2 else "bbb") for i in range(4)]
    model, tg = BY_NAME["gpu_model_mib"], BY_NAME["tg_avg_ts"]
    figure = figures_chart("moe/Q4_K_M/baseline", axis, [
        (model, [100.0, 100.0, 140.0, 140.0], frozenset({"2026-01-03"})),
        (tg, [50.0, None, 49.0, 51.0], frozenset())])
    assert [panel.title for panel in figure.panels] == [model.words, tg.words]
    assert [len(panel.rules) for panel in figure.panels] == [1, 1]  # aaa -> bbb, on both
    assert [len(panel.marks) for panel in figure.panels] == [1, 0]  # the incident on its own metric only
    assert len(figure.panels[1].lines[0].points) == 3  # the run without a tg figure is no point
