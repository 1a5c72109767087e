"""What a bisection measures: one llama.cpp buffer (exact), one Memory component, or one throughput test (A/B)."""

from __future__ import annotations

import dataclasses

from vramwatch.errors import UserError
from vramwatch.records import AB_METRICS, BenchResult, Memory

BUFFER_KINDS = ("model", "kv", "compute", "output")  # the kinds of llama.cpp's "<device>/<kind>" buffer keys
MEMORY_FIELDS = tuple(f.name for f in dataclasses.fields(Memory)
                      if f.name.endswith("_mib") and f.name.startswith(("gpu_", "host_"))
                      and f.name not in ("gpu_total_mib", "host_rss_peak_mib"))  # llama.cpp's buffers only: exact


def parse_metric(text: str) -> str:
    """The metric as the bisection names it: "CUDA0/compute", "gpu_compute_mib", "tg" (also from "tg_avg_ts", the
    throughput incidents' metric). A UserError names the forms it takes."""
    metric = text.strip().removesuffix("_avg_ts")
    device, _, kind = metric.partition("/")
    if metric in AB_METRICS or metric in MEMORY_FIELDS or (device and kind in BUFFER_KINDS):
        return metric
    raise UserError(f"--metric {text!r} is not something a bench measures",
                    f"use a llama.cpp buffer DEVICE/KIND (KIND one of {', '.join(BUFFER_KINDS)}, e.g. CUDA0/compute "
                    f"or CPU/compute), a memory component ({', '.join(MEMORY_FIELDS)}), or pp / tg for throughput")


def is_throughput(metric: str) -> bool:
    return metric in AB_METRICS


def is_model_buffer(metric: str) -> bool:
    """The model's weights buffer: it follows the quantized file, so each candidate must quantize its own."""
    return metric.endswith("/model") or metric in ("gpu_model_mib", "host_model_mib")


def unit(metric: str) -> str:
    return "x" if is_throughput(metric) else "MiB"


def read_figure(result: BenchResult, metric: str) -> tuple[float | None, str]:
    """The bench result's figure for a memory metric, or None and why there is none."""
    if not result.ok:
        return None, f"bench {result.status}: {result.error}"
    if "/" in metric:
        if metric not in result.memory.buffers_mib:
            found = ", ".join(sorted(result.memory.buffers_mib)) or "none"
            return None, f"llama.cpp reported no {metric} buffer (it reported: {found})"
        return result.memory.buffers_mib[metric], ""
    return float(getattr(result.memory, metric)), ""
