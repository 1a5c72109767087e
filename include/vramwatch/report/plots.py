"""The HTML report's figures, as base64 PNGs to embed (one self-contained file). Agg backend: no display needed.

Each function returns None when it has nothing honest to draw (no GPU: no VRAM figure, never bars of zeros).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vramwatch.records import BenchResult, Incident, config_name  # noqa: E402
from vramwatch.report.tables import SeedRow, sweep_points  # noqa: E402

COMPONENTS = (("gpu_model_mib", "model"), ("gpu_kv_mib", "KV"), ("gpu_compute_mib", "compute"))

SHORT_HISTORY = 60  # runs; beyond this, per-run markers only clutter the line
X_TICKS = 6  # dated ticks on a history axis: enough to read, few enough not to overlap
# Layout in inches, set by hand: bbox_inches="tight" draws every figure twice, seconds on a 100-config night.
CHAR_IN, TITLE_IN, XAXIS_IN = 0.075, 0.45, 0.6  # a tick label's character (fontsize 9), the title, the x axis
# Titles sit at a fixed height: left to matplotlib, each is placed by measuring every tick label of its axes.
TITLE_Y = 1.01


def _png(fig: plt.Figure, tight: bool = True) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _bar_layout(fig: plt.Figure, labels: Sequence[str], panels: int = 1) -> None:
    """Room for the longest y tick label on the left, the title above and the x axis below."""
    width, height = fig.get_size_inches()
    left = (max(map(len, labels)) * CHAR_IN + 0.25) / width
    fig.subplots_adjust(left=left, right=0.98, top=1 - TITLE_IN / height, bottom=XAXIS_IN / height,
                        wspace=0.15 + left * panels)


def vram_by_component(results: Sequence[BenchResult]) -> str | None:
    measured = [r for r in results if r.ok and r.memory.has_gpu]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(measured) + 1.2))
    labels = [r.config.config_name for r in measured]
    left = [0.0] * len(measured)
    for field, name in COMPONENTS:
        widths = [getattr(r.memory, field) / 1024 for r in measured]
        ax.barh(labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=9)
    ax.set_xlabel("GPU memory, GiB (llama.cpp buffers)")
    ax.set_title("VRAM by component", y=TITLE_Y)
    ax.legend(loc="lower right", title="buffer")
    _bar_layout(fig, labels)
    return _png(fig, tight=False)


def baseline_vs_offload(rows: Sequence[SeedRow]) -> str | None:
    """VRAM (when measured) and tg tok/s per model x quant, baseline beside offload."""
    if not rows:
        return None
    panels = [("tg_ts", "tg tok/s")]
    if any(r.has_gpu for r in rows):
        panels.insert(0, ("vram_gib", "VRAM, GiB"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.35 * len(rows) + 1.5), squeeze=False)
    labels = [f"{r.model} {r.quant}" for r in rows]
    positions = range(len(rows))
    for ax, (field, title) in zip(axes[0], panels):
        for offset, mode in ((-0.2, "baseline"), (0.2, "offload")):
            values = [getattr(getattr(r, mode), field) if getattr(r, mode) else None for r in rows]
            ax.barh([p + offset for p in positions], [v or 0.0 for v in values], height=0.4, label=mode)
            for p, v in zip(positions, values):
                if v is None:  # a failed config: say so instead of an empty bar that reads as zero
                    ax.text(0, p + offset, " no result", va="center", fontsize=7)
        ax.set_yticks(list(positions), labels)
        ax.tick_params(axis="y", labelsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(title)
        ax.set_title(f"Baseline vs offload: {title}", y=TITLE_Y)
        ax.legend(loc="lower right", title="mode")
    _bar_layout(fig, labels, len(panels))
    return _png(fig, tight=False)


def run_positions(frame: pd.DataFrame) -> pd.Series:
    """Each run's x on a history axis: its place among the frame's runs, oldest first (by night, then as given).
    One point per run, not per night: two runs in one night are two points."""
    runs = frame.sort_values("night", kind="stable")["run_id"].drop_duplicates()
    return pd.Series(range(len(runs)), index=runs.to_numpy())


def history_figure(frame: pd.DataFrame, incidents: Sequence[Incident]) -> plt.Figure | None:
    """Per model: tg tok/s (and VRAM where measured) of every config, one point per run; incidents marked in red.

    x is the run's place in the history (run_positions) with a few dated ticks: evenly spaced runs keep several runs
    of one night apart, and fixed ticks keep matplotlib's locators and tight layout from costing seconds.
    """
    ok = frame.loc[frame["status"] == "ok", ["night", "run_id", "model", "config_id", "vram_gib", "tg_avg_ts"]]
    if ok.empty:
        return None
    positions = run_positions(frame)
    ok = ok.assign(x=ok["run_id"].map(positions))
    has_gpu = ok["vram_gib"].notna().any()
    panels = [("vram_gib", "VRAM, GiB")] if has_gpu else []
    panels.append(("tg_avg_ts", "tg tok/s"))
    models = list(dict.fromkeys(ok["model"]))
    fig, axes = plt.subplots(len(models), len(panels), figsize=(7 * len(panels), 2.2 * len(models)), squeeze=False,
                             sharex=True)
    marks: dict[str, set[str]] = {}  # config_id -> nights an incident of it opened
    for incident in incidents:
        if incident.kind != "vram_improved":
            for config in incident.configs:
                marks.setdefault(config, set()).add(incident.opened_night)
    for row, model in enumerate(models):
        mine = ok[ok["model"] == model]
        for col, (field, title) in enumerate(panels):
            ax = axes[row][col]
            for config_id, series in mine.groupby("config_id", sort=False):
                # markers while history is short: a lone first run is otherwise an invisible line
                ax.plot(series["x"].to_numpy(), series[field].to_numpy(float), linewidth=0.8, markersize=3,
                        marker="o" if len(series) <= SHORT_HISTORY else None,
                        label=config_name(config_id).split("/", 1)[1])
                hit = series[series["night"].isin(marks.get(config_id, ()))]
                if not hit.empty:
                    ax.scatter(hit["x"], hit[field], color="red", marker="v", s=40, zorder=3)
            ax.set_title(f"{model}: {title}", fontsize=9, loc="left", y=TITLE_Y)
            ax.set_ylabel(title, fontsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=7)
            if col == len(panels) - 1:
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="quant/mode",
                          title_fontsize=6)
    nights = frame.drop_duplicates("run_id").set_index("run_id")["night"]
    ticks = np.unique(np.linspace(0, len(positions) - 1, num=min(X_TICKS, len(positions))).round().astype(int))
    for ax in axes[-1]:
        ax.set_xticks(ticks, [nights[positions.index[t]] for t in ticks])
        ax.set_xlabel("run, oldest to newest (labelled by night; each run is a point)", fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.85, top=1 - 0.3 / len(models), bottom=0.9 / len(models) / 2.2,
                        hspace=0.45, wspace=0.35)
    return fig


def history(frame: pd.DataFrame, incidents: Sequence[Incident]) -> str | None:
    fig = history_figure(frame, incidents)
    return None if fig is None else _png(fig, tight=False)


def sweep(results: Sequence[BenchResult]) -> str | None:
    """VRAM and tg tok/s against n_cpu_moe, per model x quant with a partial sweep."""
    sweeps = sweep_points(results)
    if not sweeps:
        return None
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 3.2), squeeze=False)
    for ax, ((model, quant), points) in zip(axes[0], sweeps.items()):
        good = [(n, r) for n, r in points if r.ok]
        ax.plot([n for n, _ in good], [r.tg.avg_ts if r.tg else None for _, r in good], "o-", color="tab:blue")
        ax.set_xlabel("n_cpu_moe (layers with experts in CPU memory)")
        ax.set_ylabel("tg tok/s", color="tab:blue")
        ax.set_title(f"{model} {quant}")
        if any(r.memory.has_gpu for _, r in good):
            twin = ax.twinx()
            twin.plot([n for n, _ in good], [r.memory.vram_gib for _, r in good], "s--", color="tab:red")
            twin.set_ylabel("VRAM, GiB", color="tab:red")
    fig.tight_layout()
    return _png(fig)
