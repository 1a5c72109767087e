"""The arithmetic every figure shares (report/plots.py, and through it history_chart.py's charts of the report and
the page): points, dated ticks spread over a run axis, a padded y range. Light on purpose (no pandas)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str  # its tooltip, or a tick's text


def spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n), the first and the last included (fewer when n is smaller): which
    runs of a history axis get a dated tick."""
    count = min(count, n)
    if count <= 1:
        return [0] if n else []
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})


def padded_range(values: Sequence[float], min_pad: float) -> tuple[float, float]:
    """A y range for a line: its values with 10 % of their spread around them, or 1 % of their size (at least
    `min_pad`) when they are flat; VRAM mostly is, and a flat line should read flat, not blow noise up to full height.
    Never below zero for values that are not; (0, 1) when there is nothing to draw."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, 0.01 * max(abs(lo), abs(hi)), min_pad)
    return max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad
