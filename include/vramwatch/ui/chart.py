"""One config's memory history as SVG geometry: the template draws it, this module only does the arithmetic.

VRAM is near-deterministic, so most lines are flat: the y range is padded to at least 1 % (or 16 MiB) around the
values, which keeps a flat line flat instead of blowing allocator noise up to full height. There is one point per
run, evenly spaced (a category axis): two runs in one night are two points, and a skipped night is not a gap worth
drawing. The x axis is dated at X_TICKS runs; every point's tooltip names its night, run and build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vramwatch.report.geometry import Point, padded_range, spread

WIDTH, HEIGHT = 360, 172
LEFT, RIGHT, TOP, BOTTOM = 74, 30, 14, 44  # room for the y axis' title and labels, and the dated x axis below
MIN_PAD_MIB = 16.0  # allocator noise below this stays flat
X_TICKS = 3  # dated runs on the x axis: first, middle, last (full dates, which fit three abreast)
X_TITLE, Y_TITLE = "runs, oldest → newest", "memory"


def format_mib(value: float) -> str:
    return f"{value / 1024:.2f} GiB" if abs(value) >= 1024 else f"{value:.0f} MiB"


@dataclass(frozen=True)
class RunPoint:
    """One run of one config, as the chart needs it. `mib` is None when the run measured nothing (not ok)."""

    night: str
    run_id: str
    status: str
    mib: float | None
    build: str  # llama.cpp commit (or the build version when the commit is unknown)

    @property
    def label(self) -> str:
        return f"{self.night} (run {self.run_id})"


@dataclass(frozen=True)
class Chart:
    title: str
    subtitle: str
    flagged: bool  # the config is part of an open incident
    width: int = WIDTH
    height: int = HEIGHT
    line: str = ""  # SVG polyline points of the measured nights
    points: list[Point] = field(default_factory=list)
    failures: list[Point] = field(default_factory=list)  # nights that ended oom/timeout/crashed...
    build_changes: list[Point] = field(default_factory=list)
    y_ticks: list[Point] = field(default_factory=list)
    x_ticks: list[Point] = field(default_factory=list)
    latest: str = ""
    x_title: str = X_TITLE
    y_title: str = Y_TITLE

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT

    @property
    def plot_top(self) -> int:
        return TOP

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def plot_middle(self) -> tuple[float, float]:
        """The plot area's centre (x, y): where the axis titles are centred."""
        return (LEFT + self.plot_right) / 2, (TOP + self.plot_bottom) / 2


def _dated_ticks(xs: list[float], runs: list[RunPoint], bottom: float) -> list[Point]:
    """X_TICKS runs spread over the axis (first and last included), labelled with their night."""
    return [Point(round(xs[i], 1), bottom, runs[i].night) for i in spread(len(runs), X_TICKS)]


def history_chart(title: str, subtitle: str, runs: list[RunPoint], flagged: bool = False) -> Chart:
    """Geometry for runs oldest first; failures sit on the x axis, build changes are vertical marks."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM
    step = plot_w / (len(runs) - 1) if len(runs) > 1 else 0.0
    xs = [LEFT + i * step if len(runs) > 1 else LEFT + plot_w / 2 for i in range(len(runs))]
    measured = [r.mib for r in runs if r.mib is not None]
    lo, hi = padded_range(measured, MIN_PAD_MIB)

    def y_of(value: float) -> float:
        return round(TOP + (hi - value) / (hi - lo) * plot_h, 1)

    points, failures, changes = [], [], []
    for i, (x, run) in enumerate(zip(xs, runs)):
        x = round(x, 1)
        if run.mib is None:
            failures.append(Point(x, bottom, f"{run.label}: {run.status} (build {run.build})"))
        else:
            points.append(Point(x, y_of(run.mib), f"{run.label}: {format_mib(run.mib)} (build {run.build})"))
        if i and run.build != runs[i - 1].build:
            changes.append(Point(round(x - step / 2, 1), TOP, f"build {runs[i - 1].build} -> {run.build}"))
    y_ticks = [Point(LEFT, y_of(v), format_mib(v)) for v in (hi, (lo + hi) / 2, lo)] if measured else []
    last = runs[-1] if runs else None
    latest = "" if last is None else (format_mib(last.mib) if last.mib is not None else last.status)
    return Chart(title=title, subtitle=subtitle, flagged=flagged, line=" ".join(f"{p.x},{p.y}" for p in points),
                 points=points, failures=failures, build_changes=changes, y_ticks=y_ticks,
                 x_ticks=_dated_ticks(xs, runs, bottom), latest=latest)
