"""Two-GPU results for tests, made from the recorded llama.cpp logs under llama_logs/ (constructed; each log's
header says from what) the way the bench child makes them: the log's buffer lines parsed, summed per kind, with
NVML's per-process figure on each GPU (the buffers plus a CUDA context of 600 MiB each) beside them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from support.samples import GPU_HOST, result

from vramwatch.bench import llama_log
from vramwatch.records import BenchResult, Memory, gpu_buffers_by_device

LOGS = Path(__file__).with_name("llama_logs")
CONTEXT_MIB = 600.0  # NVML's process figure per GPU beyond llama.cpp's buffers (the CUDA context and pools)
TWO_H100 = dataclasses.replace(GPU_HOST, gpu_count=2)


def log_lines(name: str) -> list[str]:
    """A recorded log's lines, without its '#' header."""
    return [line for line in (LOGS / f"{name}.log").read_text().splitlines() if not line.startswith("#")]


def two_gpu_result(log: str, model: str = "phi-3.5-moe", quant: str = "Q8_0", split_mode: str = "layer",
                   tensor_split: str = "", **memory_changes: float) -> BenchResult:
    """A baseline config on two GPUs whose memory is what the child reads from the log; memory_changes plant a
    change on one buffer ("CUDA1/compute": +24.0 MiB)."""
    parsed = llama_log.parse_buffers(log_lines(log))
    buffers = dict(parsed.mib)
    for key, delta in memory_changes.items():
        buffers[key] = round(buffers[key] + delta, 2)
    figures = llama_log.memory_figures(parsed._replace(mib=buffers))
    devices = gpu_buffers_by_device(buffers)
    split_rows = sum(kinds["model"] for device, kinds in devices.items() if device.endswith("_Split"))
    # NVML sees a row split's rows on the GPUs that hold them: even shares here
    by_device = {device: round(sum(kinds.values()) + split_rows / 2 + CONTEXT_MIB, 2)
                 for device, kinds in devices.items() if not device.endswith("_Split")}
    one_gpu = result(model, quant, "baseline")
    memory = Memory(**figures, gpu_total_mib=one_gpu.memory.gpu_total_mib, nvml_process_by_device_mib=by_device,
                    nvml_process_mib=round(sum(by_device.values()), 2)).with_cuda_context()
    config = dataclasses.replace(one_gpu.config, gpus=2, split_mode=split_mode, tensor_split=tensor_split)
    return dataclasses.replace(one_gpu, config=config, memory=memory, fingerprint=TWO_H100)
