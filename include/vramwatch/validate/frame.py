"""A night's results as the pandas frame the expectation suite runs on.

Each row is the flattened result (the warehouse's columns) plus derived columns for checks that GX cannot express
on raw fields: counts of samples and buffers, NVML process memory beyond the GPU buffers (and the most its GPU's
history allows), the backend and GPU layers, the file size the bench read on its worker, and the cross-row baseline
VRAM of the same model and quantization. `row_id` is the row's position in the input list: failures map back through
it.

GX writes the values it reports (unexpected values of a failed expectation) into Data Docs as raw HTML, and the UI
serves Data Docs on the Airflow origin. So every text cell is HTML-escaped here, and the JSON columns (llama.cpp's
buffer names, sample lists), which the suite reads only as counts, are left out: nothing a result holds can become
markup. Escaping is one-to-one, so equal values stay equal and distinct ones distinct (uniqueness, set membership of
plain words and the baseline pairing are unchanged), and a quarantined row is still found by its row_id.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import pandas as pd

from vramwatch.records import (
    GPU_DEVICE_PREFIX,
    BenchResult,
    expected_gpu_devices,
    gpu_buffers_by_device,
    missing_gpu_buffers,
)
from vramwatch.rows import FIELDS, JSON, STRING, flatten

ROW_ID = "row_id"
# Blank strings are missing values here: an empty model name is as absent as a None.
REQUIRED_TEXT = ("model", "quant", "mode", "status", "error")
JSON_COLUMNS = [f.name for f in FIELDS if f.kind == JSON]
BOUNDED = [f for f in FIELDS if f.kind == STRING and f.length]


def _too_long(result: BenchResult) -> str | None:
    """The columns whose value is longer than the warehouse keeps (None: all fit): on PostgreSQL one such value
    would fail the whole night's store, so the row is quarantined instead."""
    names = [f.name for f in BOUNDED if len(str(f.value(result) or "")) > f.length]
    return ", ".join(names) or None


def _fingerprint_present(result: BenchResult) -> bool:
    """Enough to tell machines apart. Not cpu_model: aarch64 hosts (GH200) may have no model name to report."""
    fp = result.fingerprint
    return bool(fp.backend and fp.cpu_cores > 0 and (fp.gpu_name or fp.backend != "cuda"))


def context_per_gpu(result: BenchResult) -> float | None:
    """NVML's process memory beyond llama.cpp's GPU buffers, per GPU of the config: one CUDA context each."""
    context = result.memory.with_cuda_context().cuda_context_mib
    return None if context is None else round(context / result.config.gpus, 2)


def gpu_prefix(buffers_mib: dict[str, float]) -> str:
    """What llama.cpp calls the result's GPUs (CUDA, ROCm, Vulkan): the name of its first GPU buffer, less digits."""
    devices = gpu_buffers_by_device(buffers_mib)
    return next(iter(devices), GPU_DEVICE_PREFIX).split("_")[0].rstrip("0123456789")


def _derived(result: BenchResult, gpu_total_mib: float | None, nvml_margins: Mapping[str, float]) -> dict[str, object]:
    memory = result.memory
    total = gpu_total_mib if gpu_total_mib is not None else memory.gpu_total_mib
    return {
        "pp_n_samples": len(result.pp.samples_ts) if result.pp else None,
        "tg_n_samples": len(result.tg.samples_ts) if result.tg else None,
        "n_buffers": len(memory.buffers_mib),
        # NVML process memory minus the GPU buffers: what cuda_context_mib holds, computed from the two it compares;
        # per GPU, as each of a config's GPUs holds a context of its own
        "nvml_beyond_buffers_mib": context_per_gpu(result),
        # on a GPU backend, the GPUs' buffers none of the config's GPUs holds (records.missing_gpu_buffers)
        "gpu_buffers_missing": ", ".join(missing_gpu_buffers(
            memory.buffers_mib, expected_gpu_devices(result.config, gpu_prefix(memory.buffers_mib)))) or None,
        "nvml_margin_mib": nvml_margins.get(result.fingerprint.gpu_name),  # what this GPU's history allows
        "backend": result.fingerprint.backend,
        "energy_gpu_reason": result.energy.gpu_reason,  # why a row has no GPU energy (the bench says)
        "n_gpu_layers": result.config.n_gpu_layers,
        # what the config's GPUs hold together (its VRAM is the sum over them)
        "gpu_total_gib": total * result.config.gpus / 1024 if total is not None else None,
        "file_bytes_on_disk": result.file_bytes_on_disk,  # read by the bench on the worker that has the file
        "has_fingerprint": _fingerprint_present(result),
        "too_long": _too_long(result),
    }


def validation_frame(results: list[BenchResult], gpu_total_mib: float | None = None,
                     nvml_margins: Mapping[str, float] = {}) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{ROW_ID: i, **flatten(r), **_derived(r, gpu_total_mib, nvml_margins)} for i, r in enumerate(results)]
    ).drop(columns=JSON_COLUMNS)
    for column in REQUIRED_TEXT:
        frame[column] = frame[column].map(lambda v: v if isinstance(v, str) and v.strip() else None)
    text = frame.select_dtypes(include=["object", "str"]).columns  # None makes a text column object, else str
    frame[text] = frame[text].map(lambda v: html.escape(v) if isinstance(v, str) else v)
    # Cross-row: the VRAM the ok baseline of the same model+quant on the same GPUs and split measured tonight (None
    # where there is none). A baseline whose GPU weights did not parse is no reference: its offload row is not to
    # blame for it.
    measured = (frame["mode"] == "baseline") & (frame["status"] == "ok") & (frame["gpu_model_mib"] > 0)
    same = ["model", "quant", "gpus", "split_mode", "tensor_split"]
    baseline = frame[measured].groupby(same)["vram_gib"]
    frame = frame.merge(baseline.max().rename("baseline_vram_gib"), how="left", left_on=same, right_index=True)
    return frame
