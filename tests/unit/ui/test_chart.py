"""The history chart's geometry: flat VRAM stays a flat line, failures sit on the axis, new builds are marked."""

from __future__ import annotations

from vramwatch.ui.chart import HEIGHT, Night, format_mib, history_chart


def test_flat_history_is_a_flat_line_in_the_middle_not_noise_blown_up():
    nights = [Night(f"2026-01-0{day}", "ok", 11_238.5, "abc") for day in (1, 2, 3)]
    chart = history_chart("Q4_K_M · baseline", "VRAM", nights)
    ys = {p.y for p in chart.points}
    assert len(ys) == 1
    top, bottom = chart.y_ticks[0].y, chart.y_ticks[-1].y
    assert abs(ys.pop() - (top + bottom) / 2) < 1
    assert [t.label for t in chart.y_ticks][1] == "10.98 GiB" and chart.latest == "10.98 GiB"
    assert not chart.failures and not chart.build_changes


def test_growth_failure_and_build_change_are_placed_where_they_happened():
    nights = [Night("2026-01-01", "ok", 640.0, "old"), Night("2026-01-02", "ok", 950.0, "new"),
              Night("2026-01-03", "oom", None, "new")]
    chart = history_chart("Q4_K_M · offload", "VRAM", nights, flagged=True)
    first, second = chart.points
    assert second.y < first.y  # more memory is higher up
    assert [f.label for f in chart.failures] == ["2026-01-03: oom (build new)"]
    assert chart.failures[0].y == HEIGHT - 30 and chart.latest == "oom"
    (change,) = chart.build_changes
    assert first.x < change.x < second.x and change.label == "build old -> new"
    assert chart.line == f"{first.x},{first.y} {second.x},{second.y}"
    assert [t.label for t in chart.x_ticks] == ["01-01", "01-03"]


def test_a_config_that_never_measured_has_no_line_and_no_scale():
    chart = history_chart("x", "VRAM", [Night("2026-01-01", "crashed", None, "b")])
    assert chart.line == "" and chart.y_ticks == [] and len(chart.failures) == 1


def test_format_mib_switches_to_gib_at_one_gib():
    assert (format_mib(1023.0), format_mib(1024.0), format_mib(43_008.0)) == ("1023 MiB", "1.00 GiB", "42.00 GiB")
