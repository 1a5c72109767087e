"""What the detectors return: one Finding per config and metric that is out of line tonight.

Findings are per config; incidents (incidents.py) group the findings that share a cause.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    kind: str  # a vramwatch.records.IncidentKind
    metric: str  # a history column (gpu_model_mib, tg_avg_ts, ...), or status / config / n_overridden_tensors
    config_id: str
    environment_id: str
    model: str
    quant: str
    mode: str
    before: float | None = None
    after: float | None = None
    delta_mib: float | None = None  # VRAM findings only
    delta_pct: float | None = None
    build_before: str = ""  # llama.cpp commit of the reference row
    build_after: str = ""  # llama.cpp commit of tonight's row
    detail: str = ""  # e.g. "ok -> oom"
    change: str = ""  # the exact change in one line, naming the config (VRAM and fit findings)
    separable: bool = True  # False: the build and the GPU changed together tonight; which made it cannot be told yet
    first_night: str = ""  # the first night of the change, where known (its build is build_before's successor)


@dataclass(frozen=True)
class Suspect:
    """A throughput drift seen once tonight: not an incident until the next night repeats it."""

    config_id: str
    environment_id: str
    metric: str  # tg_avg_ts | pp_avg_ts
    baseline_median: float
    baseline_sigma: float
    finding: Finding  # what it becomes if confirmed
    # how often a night this low comes by chance (throughput.one_night_p): the night's screen for watching
    p_value: float = 1.0
