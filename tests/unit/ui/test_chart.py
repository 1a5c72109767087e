"""The history chart's geometry: one point per run, flat VRAM stays a flat line, failures sit on the axis, new builds
are marked, and the axes carry titles and dated ticks."""

from __future__ import annotations

from vramwatch.ui.chart import HEIGHT, X_TITLE, Y_TITLE, RunPoint, format_mib, history_chart


def run(night: str, status: str, mib: float | None, build: str, run_id: str = "") -> RunPoint:
    return RunPoint(night=night, run_id=run_id or f"scheduled__{night}", status=status, mib=mib, build=build)


def test_flat_history_is_a_flat_line_in_the_middle_not_noise_blown_up():
    runs = [run(f"2026-01-0{day}", "ok", 11_238.5, "abc") for day in (1, 2, 3)]
    chart = history_chart("Q4_K_M · baseline", "VRAM", runs)
    ys = {p.y for p in chart.points}
    assert len(ys) == 1
    top, bottom = chart.y_ticks[0].y, chart.y_ticks[-1].y
    assert abs(ys.pop() - (top + bottom) / 2) < 1
    assert [t.label for t in chart.y_ticks][1] == "10.98 GiB" and chart.latest == "10.98 GiB"
    assert not chart.failures and not chart.build_changes


def test_growth_failure_and_build_change_are_placed_where_they_happened():
    runs = [run("2026-01-01", "ok", 640.0, "old"), run("2026-01-02", "ok", 950.0, "new"),
            run("2026-01-03", "oom", None, "new")]
    chart = history_chart("Q4_K_M · offload", "VRAM", runs, flagged=True)
    first, second = chart.points
    assert second.y < first.y  # more memory is higher up
    assert [f.label for f in chart.failures] == ["2026-01-03 (run scheduled__2026-01-03): oom (build new)"]
    assert chart.failures[0].y == HEIGHT - 44 and chart.latest == "oom"
    (change,) = chart.build_changes
    assert first.x < change.x < second.x and change.label == "build old -> new"
    assert chart.line == f"{first.x},{first.y} {second.x},{second.y}"
    assert [t.label for t in chart.x_ticks] == ["2026-01-01", "2026-01-02", "2026-01-03"]  # full dates, readable


def test_two_runs_in_one_night_are_two_points_not_one():
    """Plots were per date: a night's second run (a rerun, a manual run) collapsed onto the first."""
    runs = [run("2026-01-01", "ok", 640.0, "old"), run("2026-01-02", "ok", 640.0, "old", "scheduled__2026-01-02"),
            run("2026-01-02", "ok", 960.0, "new", "manual__2026-01-02T15:00")]
    chart = history_chart("Q4_K_M · offload", "VRAM", runs)
    assert len(chart.points) == 3 and len({p.x for p in chart.points}) == 3
    assert [p.label.split(":")[0] for p in chart.points[1:]] == [
        "2026-01-02 (run scheduled__2026-01-02)", "2026-01-02 (run manual__2026-01-02T15"]
    assert chart.points[2].y < chart.points[1].y


def test_the_axes_have_titles_and_at_most_three_dated_ticks_spread_over_the_runs():
    runs = [run(f"2026-01-{day:02d}", "ok", 640.0 + day, "b") for day in range(1, 31)]
    chart = history_chart("x", "VRAM", runs)
    assert (chart.x_title, chart.y_title) == (X_TITLE, Y_TITLE)
    assert [t.label for t in chart.x_ticks] == ["2026-01-01", "2026-01-15", "2026-01-30"]
    assert chart.x_ticks[0].x == chart.plot_left and chart.x_ticks[-1].x == chart.plot_right
    assert all(t.label.endswith(("MiB", "GiB")) for t in chart.y_ticks)  # the unit is on every y label


def test_a_config_that_never_measured_has_no_line_and_no_scale():
    chart = history_chart("x", "VRAM", [run("2026-01-01", "crashed", None, "b")])
    assert chart.line == "" and chart.y_ticks == [] and len(chart.failures) == 1


def test_format_mib_switches_to_gib_at_one_gib():
    assert (format_mib(1023.0), format_mib(1024.0), format_mib(43_008.0)) == ("1023 MiB", "1.00 GiB", "42.00 GiB")
