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

from vramwatch.records import BenchResult, Incident, config_name  # noqa: E402
from vramwatch.report.tables import SeedRow, sweep_points  # noqa: E402

COMPONENTS = (("gpu_model_mib", "model"), ("gpu_kv_mib", "KV"), ("gpu_compute_mib", "compute"))

SHORT_HISTORY = 60  # nights; beyond this, per-night markers only clutter the line


def _png(fig: plt.Figure, tight: bool = True) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


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
    ax.set_xlabel("GPU memory, GiB (llama.cpp buffers)")
    ax.set_title("VRAM by component")
    ax.legend(loc="lower right")
    return _png(fig)


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
        ax.invert_yaxis()
        ax.set_title(f"Baseline vs offload: {title}")
        ax.legend(loc="lower right")
    return _png(fig)


def history(frame: pd.DataFrame, incidents: Sequence[Incident]) -> str | None:
    """Per model: tg tok/s (and VRAM where measured) of every config over the nights; incidents marked in red.

    x is the night as a day number with a few fixed date ticks: matplotlib's automatic date ticks and tight layout
    cost seconds on years of nights (the report must stay fast on a 3-year history).
    """
    ok = frame.loc[frame["status"] == "ok", ["night", "model", "config_id", "vram_gib", "tg_avg_ts"]]
    if ok.empty:
        return None
    nights = pd.to_datetime(ok["night"])
    ok = ok.assign(day=(nights - nights.min()).dt.days)
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
                # markers while history is short: a lone first night is otherwise an invisible line
                ax.plot(series["day"].to_numpy(), series[field].to_numpy(float), linewidth=0.8, markersize=3,
                        marker="o" if len(series) <= SHORT_HISTORY else None, label=config_name(config_id).split("/", 1)[1])
                hit = series[series["night"].isin(marks.get(config_id, ()))]
                if not hit.empty:
                    ax.scatter(hit["day"], hit[field], color="red", marker="v", s=40, zorder=3)
            ax.set_title(f"{model}: {title}", fontsize=9, loc="left")
            ax.tick_params(labelsize=7)
            if col == len(panels) - 1:
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ticks = np.linspace(0, int(ok["day"].max()), num=min(6, int(ok["day"].max()) + 1)).round()
    for ax in axes[-1]:
        ax.set_xticks(ticks, [(nights.min() + pd.Timedelta(days=int(t))).date().isoformat() for t in ticks])
    fig.subplots_adjust(left=0.06, right=0.85, top=1 - 0.3 / len(models), bottom=0.6 / len(models) / 2.2,
                        hspace=0.45, wspace=0.35)
    return _png(fig, tight=False)


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
