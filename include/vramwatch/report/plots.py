"""The report's and the page's figures as SVG geometry: this module does the arithmetic, templates/figure.svg.j2
draws it inline (summary.html stays one self-contained file; the page includes the same template), and
history_chart.py builds every history chart on its line figures. No image library: drawing PNGs with matplotlib cost two
seconds of every report on a large night, and importing it another half.

Each function returns None when it has nothing honest to draw (no GPU: no VRAM figure, never bars of zeros).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vramwatch.records import BenchResult
from vramwatch.report.geometry import Point, padded_range
from vramwatch.report.tables import SeedRow, sweep_points
from vramwatch.rows import BY_NAME

COMPONENTS = tuple(BY_NAME[name] for name in ("gpu_model_mib", "gpu_kv_mib", "gpu_compute_mib"))  # VRAM's buffers
VRAM, TG, N_CPU_MOE = (BY_NAME[name] for name in ("vram_gib", "tg_avg_ts", "n_cpu_moe"))
# tab10 without its red (the incident marks'), then three darker hues: a model's ten configs get ten colours
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#843c39")
SHORT_HISTORY = 20  # runs; up to this many, each run is a dot with its tooltip (a lone first run is otherwise
# an invisible line); beyond, dots only clutter the line and swell the file
X_TICKS = 6  # ticks on a numeric x axis (the sweep's): enough to read, few enough not to overlap
Y_TICKS = 4
MIN_PAD = 1e-6  # a flat line of zeros still gets a y range
# Layout in px. Text is 11 px (summary.css); CHAR_W is a character's width at that size, for the room labels need.
CHAR_W = 7.0
TITLE_H, X_AXIS_H, X_TITLE_H = 24, 20, 16  # above a plot area, its tick labels below, its axis title below those
UNTITLED_H = 8  # above a plot area without a title (the page's charts: their caption is outside the figure)
Y_TITLE_W, Y_LABEL_GAP, COLUMN_GAP = 18, 6, 40
BAR_H = 14  # one bar; a category of grouped bars holds one per group
PLOT_W, LINE_PLOT_H = 420, 120
LEGEND_ROW_H = 15
LEGEND_GAP = 40  # from a plot's right edge to its legend: clear of the last x tick's label


@dataclass(frozen=True)
class Tick:
    at: float  # px along its axis
    label: str
    grid: bool = True  # a numeric tick draws a grid line across the plot; a category label does not


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str  # tooltip


@dataclass(frozen=True)
class Line:
    name: str
    color: str
    points: list[Point]
    dots: bool

    @property
    def path(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class Panel:
    """One plot area (left, top, width, height in the figure's px) with its axes, what it draws, and a legend on
    its right when it has one."""

    title: str
    left: float
    top: float
    width: float
    height: float
    x_title: str = ""
    y_title: str = ""
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    marks: list[Point] = field(default_factory=list)  # incidents: red triangles
    failures: list[Point] = field(default_factory=list)  # runs that measured nothing (oom, crashed...): a red cross
    rules: list[Point] = field(default_factory=list)  # vertical marks across the plot (a new llama.cpp build)
    notes: list[Point] = field(default_factory=list)  # text where a figure is missing ("no result")
    legend_title: str = ""
    legend: list[tuple[str, str]] = field(default_factory=list)  # (name, color)
    y_title_x: float = 0.0  # where the rotated y axis title is centred, left of the tick labels

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def middle(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2

    @property
    def tick_label_y(self) -> float:
        return self.bottom + X_AXIS_H - 5

    @property
    def x_title_y(self) -> float:
        return self.bottom + X_AXIS_H + X_TITLE_H - 3

    @property
    def legend_x(self) -> float:
        return self.right + LEGEND_GAP

    @property
    def legend_rows(self) -> list[tuple[float, str, str]]:
        """(top y, name, color) of each legend entry, under the legend's title."""
        return [(self.top + LEGEND_ROW_H * (i + 1), name, color) for i, (name, color) in enumerate(self.legend)]


@dataclass(frozen=True)
class Figure:
    caption: str
    width: float
    height: float
    panels: list[Panel]


@dataclass(frozen=True)
class Scale:
    """Data [lo, hi] onto px [start, end] (end < start for a y axis, whose px grow downwards)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return round(self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start), 1)

    def ticks(self, most: int = Y_TICKS) -> list[Tick]:
        return [Tick(self(v), label) for v, label in nice_ticks(self.lo, self.hi, most)]


def nice_ticks(lo: float, hi: float, most: int = Y_TICKS) -> list[tuple[float, str]]:
    """The most round values in [lo, hi] that are at most `most` + 1 (steps of 1, 2, 2.5 or 5 x 10^k), labelled."""
    magnitude = 10 ** math.floor(math.log10((hi - lo) / most))

    def span(step: float) -> range:
        return range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)

    step, scale = next((m * magnitude, magnitude) for m in (1, 2, 2.5, 5, 10, 20, 25, 50)
                       if len(span(m * magnitude)) <= most + 1)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if round(step / scale % 10, 1) == 2.5 else 0))
    return [(i * step, f"{i * step:.{decimals}f}") for i in span(step)]


def _text_w(labels: Sequence[str]) -> float:
    return max((len(label) for label in labels), default=0) * CHAR_W


def _legend_w(panel_legend: Sequence[tuple[str, str]], title: str) -> float:
    return 0.0 if not panel_legend else LEGEND_GAP + 20 + _text_w([title, *(name for name, _ in panel_legend)])


def _bars(caption: str, labels: list[str], panels: list[tuple[str, str]], groups: list[tuple[str, str]],
          value_of: Callable[[int, int, int], float | None], stacked: bool, legend_title: str) -> Figure:
    """Horizontal bars, one category per label, side by side panels (title, x axis title), each category one bar per
    group (stacked: one bar of all groups). value_of(panel, category, group) is None for a figure not measured: the
    category then says "no result" instead of an empty bar that reads as zero."""
    label_w = _text_w(labels) + Y_LABEL_GAP
    legend_w = _legend_w(groups, legend_title)
    band = BAR_H * (1 if stacked else len(groups)) + 8
    height = band * len(labels)
    left, placed = 0.0, []
    for p, (title, x_title) in enumerate(panels):
        values = [[value_of(p, c, g) for g in range(len(groups))] for c in range(len(labels))]
        totals = [sum(v or 0.0 for v in row) if stacked else max((v or 0.0 for v in row), default=0.0)
                  for row in values]
        scale = Scale(0.0, max(totals) * 1.05 or 1.0, left + label_w, left + label_w + PLOT_W)
        bars, notes = [], []
        for c, row in enumerate(values):
            y, start = TITLE_H + c * band + 4, 0.0
            for g, value in enumerate(row):
                name, color = groups[g]
                y_bar = y if stacked else y + g * BAR_H
                if value is None:
                    notes.append(Point(scale(0.0) + 3, y_bar + BAR_H - 3, "no result"))
                    continue
                bars.append(Bar(scale(start), y_bar, round(scale(start + value) - scale(start), 1), BAR_H - 1, color,
                                f"{labels[c]} {name}: {value:.2f} ({x_title})"))
                start += value if stacked else 0.0
        categories = [Tick(TITLE_H + c * band + band / 2, label, grid=False) for c, label in enumerate(labels)]
        placed.append(Panel(title, left + label_w, TITLE_H, PLOT_W, height, x_title=x_title,
                            x_ticks=[Tick(t.at, t.label) for t in scale.ticks()], y_ticks=categories, bars=bars,
                            notes=notes, legend_title=legend_title, legend=groups))
        left += label_w + PLOT_W + legend_w + COLUMN_GAP
    return Figure(caption, left, TITLE_H + height + X_AXIS_H + X_TITLE_H, placed)


def vram_by_component(results: Sequence[BenchResult]) -> Figure | None:
    measured = [r for r in results if r.ok and r.memory.has_gpu]
    if not measured:
        return None
    groups = [(buffer.words, PALETTE[i]) for i, buffer in enumerate(COMPONENTS)]

    def value_of(_panel: int, category: int, group: int) -> float:
        return getattr(measured[category].memory, COMPONENTS[group].name) / 1024  # MiB -> VRAM's GiB

    return _bars("VRAM by component (stacked)", [r.config.config_name for r in measured],
                 [("VRAM by component", f"{VRAM.title}: llama.cpp buffers")], groups, value_of, stacked=True,
                 legend_title="buffer")


def baseline_vs_offload(rows: Sequence[SeedRow]) -> Figure | None:
    """VRAM (when measured) and tg tok/s per model x quant, baseline beside offload."""
    if not rows:
        return None
    fields = [("tg_ts", TG.title)]
    if any(r.has_gpu for r in rows):
        fields.insert(0, ("vram_gib", VRAM.title))
    modes = ("baseline", "offload")

    def value_of(panel: int, category: int, group: int) -> float | None:
        numbers = getattr(rows[category], modes[group])
        return getattr(numbers, fields[panel][0]) if numbers else None

    return _bars("Baseline vs offload", [f"{r.model} {r.quant}" for r in rows],
                 [(f"Baseline vs offload: {title}", title) for _, title in fields],
                 [(mode, PALETTE[i]) for i, mode in enumerate(modes)], value_of, stacked=False, legend_title="mode")


@dataclass(frozen=True)
class Series:
    """One line to draw: (x, y, tooltip) per point, the points an incident marks, and (x, tooltip) of the points
    that have no value (a run that measured nothing)."""

    name: str
    points: list[tuple[float, float, str]]
    marked: list[tuple[float, float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)


def line_figure(caption: str, grid: list[list[tuple[str, str, list[Series]]]], x_range: tuple[float, float],
                x_ticks: list[tuple[float, str]], x_title: str, legend_title: str = "",
                rules: Sequence[tuple[float, str]] = (), plot_w: float = PLOT_W, min_pad: float = MIN_PAD) -> Figure:
    """Small multiples: grid[row][col] = (title, y axis title, series). Every panel shares the x range, the ticks and
    the rules ((x, tooltip): vertical marks); the x axis title is under the last row; with a legend_title each row's
    legend (its series' names) is right of its last panel. min_pad: the least y padding of a flat line (padded_range)."""
    names = [list(dict.fromkeys(s.name for _, _, series in row for s in series)) for row in grid]
    legend_w = max(_legend_w([(n, "") for n in row_names], legend_title) for row_names in names) if legend_title else 0
    y_label_w = Y_TITLE_W + 8 * CHAR_W + Y_LABEL_GAP  # the y title, then tick labels of up to 8 characters
    lo_x, hi_x = x_range if x_range[1] > x_range[0] else (x_range[0] - 1, x_range[0] + 1)  # one run: in the middle
    title_h = TITLE_H if any(title for row in grid for title, _, _ in row) else UNTITLED_H
    panels, top = [], title_h
    for r, row in enumerate(grid):
        colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names[r])}
        for c, (title, y_title, series) in enumerate(row):
            left = y_label_w + c * (y_label_w + plot_w + COLUMN_GAP)
            x = Scale(lo_x, hi_x, left, left + plot_w)
            values = [v for s in series for _, v, _ in s.points]
            y = Scale(*padded_range(values, min_pad), top + LINE_PLOT_H, top)
            bottom = top + LINE_PLOT_H
            lines = [Line(s.name, colors[s.name], [Point(x(px), y(py), tip) for px, py, tip in s.points],
                          dots=len(s.points) <= SHORT_HISTORY) for s in series]
            marks = [Point(x(px), y(py), tip) for s in series for px, py, tip in s.marked]
            failures = [Point(x(px), bottom, tip) for s in series for px, tip in s.failures]
            last = c == len(row) - 1 and bool(legend_title)
            panels.append(Panel(title, left, top, plot_w, LINE_PLOT_H, x_title=x_title if r == len(grid) - 1 else "",
                                y_title=y_title, x_ticks=[Tick(x(v), label, grid=False) for v, label in x_ticks],
                                y_ticks=y.ticks() if values else [], lines=lines, marks=marks, failures=failures,
                                rules=[Point(x(px), top, tip) for px, tip in rules],
                                legend_title=legend_title if last else "", legend=list(colors.items()) if last else [],
                                y_title_x=left - y_label_w + Y_TITLE_W / 2))
        # the next row starts under this one's axis, or under its legend when that is longer
        top += max(LINE_PLOT_H + X_AXIS_H, (len(names[r]) + 1) * LEGEND_ROW_H if legend_title else 0) + title_h
    width = max(map(len, grid)) * (y_label_w + plot_w + COLUMN_GAP) + legend_w
    return Figure(caption, width, top - title_h + X_TITLE_H, panels)


def sweep(results: Sequence[BenchResult]) -> Figure | None:
    """VRAM (when measured) and tg tok/s against n_cpu_moe, per model x quant with a partial sweep."""
    sweeps = sweep_points(results)
    if not sweeps:
        return None
    grid, top_n = [], 0
    for (model, quant), points in sweeps.items():
        good = [(n, r) for n, r in points if r.ok]
        top_n = max([top_n, *(n for n, _ in points)])
        tg = Series(quant, [(n, r.tg.avg_ts, f"{N_CPU_MOE.words} {n}: {TG.text(r.tg.avg_ts)}") for n, r in good
                            if r.tg])
        row = [(f"{model} {quant}: {TG.title}", TG.title, [tg])]
        if any(r.memory.has_gpu for _, r in good):
            vram = [(n, r.memory.vram_gib, f"{N_CPU_MOE.words} {n}: {VRAM.text(r.memory.vram_gib)}") for n, r in good
                    if r.memory.vram_gib is not None]
            row.insert(0, (f"{model} {quant}: {VRAM.title}", VRAM.title, [Series(quant, vram)]))
        grid.append([cell for cell in row if cell[2][0].points])
    grid = [row for row in grid if row]
    if not grid:
        return None
    return line_figure("Partial offload sweep: VRAM and tg against n_cpu_moe", grid, (0, top_n),
                       nice_ticks(0, top_n, X_TICKS) if top_n else [(0.0, "0")],
                       f"{N_CPU_MOE.words} (layers with experts in CPU memory)", "quant")
