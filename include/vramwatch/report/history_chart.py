"""History charts, one renderer for the report and the page: a run axis, one point per run, drawn by
plots.line_figure and templates/figure.svg.j2.

There is one point per run, evenly spaced (a category axis): two runs in one night are two points, and a skipped
night is not a gap worth drawing; the axis is dated at a few runs and every point's tooltip names its night, run and
build. A new llama.cpp build is a dashed vertical mark, a run that measured nothing (oom, crashed...) a cross on the
x axis, a run an incident opened on a red triangle. VRAM is near-deterministic, so most lines are flat: the y range
is padded to at least 1 % of the values (plots.padded_range), which keeps a flat line flat instead of blowing
allocator noise up to full height.

The report draws one figure of every config per model (history()); the page one small chart per config
(config_chart()); the published site one panel per figure of each config on each machine (figures_chart()), all read
the newest HISTORY_RUNS runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramwatch.records import NO_HOST_ENERGY, Incident, config_name
from vramwatch.report.geometry import spread
from vramwatch.report.plots import Figure, Series, line_figure
from vramwatch.rows import BY_NAME, ENERGY_LINES, Field, binary_size, number

if TYPE_CHECKING:
    import pandas as pd

HISTORY_RUNS = 60  # runs a history reads and draws (the report's and the page's): two months of nightlies
X_TITLE = "runs, oldest → newest (dated by night)"
REPORT_TICKS, PAGE_TICKS = 6, 3  # dated runs on the x axis: the page's charts are narrower (full dates fit three)
PAGE_PLOT_W = 260
MIN_PAD_MIB = 16.0  # the page's memory charts: allocator noise below this stays flat
REPORT_PANELS = ("vram_gib", "tg_avg_ts")  # the report's history rows: VRAM where measured, then speed


@dataclass(frozen=True)
class RunPoint:
    """One run of one config. `value` is None when the run measured nothing (not ok)."""

    night: str
    run_id: str
    status: str
    value: float | None
    build: str  # llama.cpp commit (or the build version when the commit is unknown)

    @property
    def label(self) -> str:
        return f"{self.night} (run {self.run_id})"


@dataclass(frozen=True)
class Track:
    """One config's line: (place on the run axis, the run) oldest first, and the nights an incident of it opened."""

    name: str
    runs: list[tuple[int, RunPoint]]
    marked_nights: frozenset[str] = frozenset()


def config_label(config_id: str) -> str:
    """quant/mode: a config within its model's chart (records.config_name's words, "partial4" included)."""
    return config_name(config_id).split("/", 1)[1]


def _series(track: Track, text: Callable[[float], str]) -> Series:
    points, marked, failures = [], [], []
    for x, run in track.runs:
        if run.value is None:
            if run.status != "ok":
                failures.append((float(x), f"{run.label}: {run.status} (build {run.build})"))
            continue
        point = (float(x), run.value, f"{run.label}: {text(run.value)} (build {run.build})")
        points.append(point)
        if run.night in track.marked_nights:
            marked.append(point)
    return Series(track.name, points, marked, failures)


def _build_changes(axis: Sequence[RunPoint]) -> list[tuple[float, str]]:
    """Between two neighbouring runs of different builds: where the mark goes and what it says."""
    return [(i - 0.5, f"build {before.build} -> {after.build}")
            for i, (before, after) in enumerate(zip(axis, axis[1:]), start=1) if before.build != after.build]


def _figure(caption: str, grid: list[list[tuple[str, str, list[Series]]]], axis: Sequence[RunPoint], ticks: int,
            **layout: object) -> Figure:
    return line_figure(caption, grid, (0, len(axis) - 1),
                       [(float(i), axis[i].night) for i in spread(len(axis), ticks)], X_TITLE,
                       rules=_build_changes(axis), **layout)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the report's


def _build(row: pd.Series) -> str:
    return str(row["llama_cpp_commit"] or row["build_version"])[:9]


def history(frame: pd.DataFrame, incidents: Sequence[Incident]) -> Figure | None:
    """Per model: every config's VRAM (where measured) and tg speed, one point per run; incidents marked in red, runs
    that measured nothing crossed on the axis."""
    runs = frame.sort_values("night", kind="stable").drop_duplicates("run_id")
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return None
    axis = [RunPoint(row["night"], row["run_id"], "ok", None, _build(row)) for _, row in runs.iterrows()]
    position = {run.run_id: i for i, run in enumerate(axis)}
    panels = [BY_NAME[name] for name in REPORT_PANELS if ok[name].notna().any()]
    marks: dict[str, set[str]] = {}  # config_id -> nights an incident of it opened
    for incident in incidents:
        if incident.kind != "vram_improved":
            for config in incident.configs:
                marks.setdefault(config, set()).add(incident.opened_night)
    grid = []
    for model, mine in frame.groupby("model", sort=False):
        row = []
        for measure in panels:
            series = []
            for config_id, config_rows in mine.groupby("config_id", sort=False):
                runs = [(position[r["run_id"]], RunPoint(r["night"], r["run_id"], r["status"],
                                                         number(r[measure.name]) if r["status"] == "ok" else None,
                                                         _build(r)))
                        for _, r in config_rows.iterrows()]
                # an ok run without this figure (VRAM on a CPU host) is no point and no failure
                track = Track(config_label(config_id), [(x, run) for x, run in runs
                                                        if run.value is not None or run.status != "ok"],
                              frozenset(marks.get(config_id, ())))
                series.append(_series(track, measure.text))
            row.append((f"{model}: {measure.title}", measure.title, series))
        grid.append(row)
    return _figure("History per config (red: incident opened)", grid, axis, REPORT_TICKS, legend_title="quant/mode")


# ------------------------------------------------------------------------------------------------ the page's


@dataclass(frozen=True)
class ConfigChart:
    """One config's memory history on the page: its caption and its figure."""

    title: str
    subtitle: str
    flagged: bool  # the config is part of an open incident
    latest: str  # the newest run's figure, or its status when it measured nothing
    figure: Figure


def config_chart(title: str, subtitle: str, runs: list[RunPoint], flagged: bool = False) -> ConfigChart:
    """One config's runs (oldest first, values in MiB) as one chart, in GiB when its figures reach 1 GiB."""
    in_gib = any(run.value is not None and run.value >= 1024 for run in runs)
    unit, scale = ("GiB", 1024.0) if in_gib else ("MiB", 1.0)
    scaled = [RunPoint(r.night, r.run_id, r.status, None if r.value is None else r.value / scale, r.build)
              for r in runs]
    series = _series(Track(title, list(enumerate(scaled))), lambda value: binary_size(value * scale))
    figure = _figure(f"{title} memory history", [[("", f"memory ({unit})", [series])]], scaled, PAGE_TICKS,
                     plot_w=PAGE_PLOT_W, min_pad=MIN_PAD_MIB / scale)
    last = runs[-1] if runs else None
    latest = "" if last is None else binary_size(last.value) if last.value is not None else last.status
    return ConfigChart(title, subtitle, flagged, latest, figure)


def energy_chart(title: str, where: str, runs: Sequence[RunPoint], lines: dict[str, list[float | None]],
                 flagged: bool = False) -> ConfigChart:
    """One config's energy per token on the page: a panel per test (pp, tg), its GPU's J/token and, where RAPL
    measured it, the host's. `runs`: the config's runs, oldest first (their values unused); `lines`: each figure of
    rows.ENERGY_LINES by run, None where not measured. A run without the host's figure says "host energy not
    measured" in the subtitle, never a GPU-only figure as the whole."""
    grid, host_measured = [], False
    for gpu_name, host_name in ENERGY_LINES.values():
        series = []
        for source, name in (("GPU", gpu_name), ("host", host_name)):
            values = lines[name]
            if source == "host" and all(v is None for v in values):
                continue
            host_measured |= source == "host"
            track = Track(source, [(x, RunPoint(r.night, r.run_id, r.status, values[x], r.build))
                                   for x, r in enumerate(runs) if values[x] is not None or r.status != "ok"])
            series.append(_series(track, BY_NAME[name].text))
        grid.append([("", BY_NAME[gpu_name].title, series)])
    figure = _figure(f"{title} energy history", grid, runs, PAGE_TICKS, plot_w=PAGE_PLOT_W,
                     legend_title="source" if host_measured else "")
    tg = BY_NAME[ENERGY_LINES["tg"][0]]
    last, status = lines[tg.name][-1] if runs else None, runs[-1].status if runs else ""
    latest = f"{tg.words} {tg.text(last)}" if last is not None else status if status != "ok" else "not measured"
    subtitle = f"{where}; {'host by RAPL' if host_measured else NO_HOST_ENERGY}"
    return ConfigChart(title, subtitle, flagged, latest, figure)


# ------------------------------------------------------------------------------------------------ the site's

SITE_COLUMNS = 3  # panels a row of the site's config history


def figures_chart(caption: str, axis: Sequence[RunPoint],
                  panels: Sequence[tuple[Field, Sequence[float | None], frozenset[str]]]) -> Figure:
    """One config on one machine, one panel per figure: the field, its value at each run of `axis` (oldest first;
    None where the run did not measure it) and the nights an incident of it opened (red). The panels share the run
    axis and its build marks; a run that measured nothing is a cross."""
    cells = []
    for measure, values, marked_nights in panels:
        # a new RunPoint, not dataclasses.replace: a night's config pages make 60k of them
        runs = [(i, RunPoint(run.night, run.run_id, run.status, value, run.build))
                for i, (run, value) in enumerate(zip(axis, values))
                if value is not None or run.status != "ok"]
        cells.append((measure.words, measure.title,
                      [_series(Track(measure.words, runs, marked_nights), measure.text)]))
    grid = [cells[i:i + SITE_COLUMNS] for i in range(0, len(cells), SITE_COLUMNS)]
    return _figure(caption, grid, axis, PAGE_TICKS, plot_w=PAGE_PLOT_W)
