"""What the report's figures (report/plots.py) and the page's memory charts (ui/chart.py) both draw with. Light on
purpose (no pandas): the UI imports it when Airflow loads the plugin."""

from __future__ import annotations

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
