"""One config's memory history as SVG geometry: the template draws it, this module only does the arithmetic.

VRAM is near-deterministic, so most lines are flat: the y range is padded to at least 1 % (or 16 MiB) around the
values, which keeps a flat line flat instead of blowing allocator noise up to full height. Nights are evenly spaced
(a category axis): a skipped night is not a gap worth drawing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 360, 150
LEFT, RIGHT, TOP, BOTTOM = 64, 18, 14, 30
MIN_PAD_MIB, MIN_PAD_REL = 16.0, 0.01


def format_mib(value: float) -> str:
    return f"{value / 1024:.2f} GiB" if abs(value) >= 1024 else f"{value:.0f} MiB"


@dataclass(frozen=True)
class Night:
    """One night of one config, as the chart needs it. `mib` is None when the night measured nothing (not ok)."""

    night: str
    status: str
    mib: float | None
    build: str  # llama.cpp commit (or the build version when the commit is unknown)


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str  # tooltip


@dataclass(frozen=True)
class Chart:
    title: str
    subtitle: str
    flagged: bool  # the config is part of an open incident
    width: int = WIDTH
    height: int = HEIGHT
    line: str = ""  # SVG polyline points of the measured nights
    points: list[Mark] = field(default_factory=list)
    failures: list[Mark] = field(default_factory=list)  # nights that ended oom/timeout/crashed...
    build_changes: list[Mark] = field(default_factory=list)
    y_ticks: list[Mark] = field(default_factory=list)
    x_ticks: list[Mark] = field(default_factory=list)
    latest: str = ""

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM


def _y_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, MIN_PAD_REL * max(abs(lo), abs(hi)), MIN_PAD_MIB)
    return max(lo - pad, 0.0), hi + pad  # memory is never negative


def history_chart(title: str, subtitle: str, nights: list[Night], flagged: bool = False) -> Chart:
    """Geometry for nights oldest first; failures sit on the x axis, build changes are vertical marks."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM
    step = plot_w / (len(nights) - 1) if len(nights) > 1 else 0.0
    xs = [LEFT + i * step if len(nights) > 1 else LEFT + plot_w / 2 for i in range(len(nights))]
    measured = [n.mib for n in nights if n.mib is not None]
    lo, hi = _y_range(measured) if measured else (0.0, 1.0)

    def y_of(value: float) -> float:
        return round(TOP + (hi - value) / (hi - lo) * plot_h, 1)

    points, failures, changes = [], [], []
    for i, (x, night) in enumerate(zip(xs, nights)):
        x = round(x, 1)
        if night.mib is None:
            failures.append(Mark(x, bottom, f"{night.night}: {night.status} (build {night.build})"))
        else:
            points.append(Mark(x, y_of(night.mib), f"{night.night}: {format_mib(night.mib)} (build {night.build})"))
        if i and night.build != nights[i - 1].build:
            changes.append(Mark(round(x - step / 2, 1), TOP, f"build {nights[i - 1].build} -> {night.build}"))
    y_ticks = [Mark(LEFT, y_of(v), format_mib(v)) for v in (hi, (lo + hi) / 2, lo)] if measured else []
    x_ticks = [Mark(round(xs[0], 1), bottom, nights[0].night[5:])] if nights else []
    if len(nights) > 1:
        x_ticks.append(Mark(round(xs[-1], 1), bottom, nights[-1].night[5:]))
    last = nights[-1] if nights else None
    latest = "" if last is None else (format_mib(last.mib) if last.mib is not None else last.status)
    return Chart(title=title, subtitle=subtitle, flagged=flagged, line=" ".join(f"{p.x},{p.y}" for p in points),
                 points=points, failures=failures, build_changes=changes, y_ticks=y_ticks, x_ticks=x_ticks,
                 latest=latest)
