"""Where each mode puts the weights, and how many bytes a decoded token reads from each memory.

Modes are llama.cpp's own switches: baseline = every layer on the GPU; offload = --cpu-moe (all routed expert
tensors in CPU memory); partial = --n-cpu-moe N (expert tensors of layers 0..N-1 in CPU memory). The patterns are
the ones common.h builds, so a result here means the same as the same flag on llama-server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vramwatch.bench.gguf_tensors import EXPERT_PATTERN, GGUFInfo, TensorInfo


def override_patterns(mode: str, n_cpu_moe: int = 0) -> list[str]:
    """Tensor-name regexes whose tensors llama.cpp must keep in CPU memory for this mode."""
    if mode == "baseline":
        return []
    if mode == "offload":
        return [EXPERT_PATTERN]
    if mode == "partial":
        return [rf"blk\.{i}{EXPERT_PATTERN}" for i in range(n_cpu_moe)]
    raise ValueError(f"unknown mode {mode!r}: use baseline, offload or partial")


def moved_tensors(info: GGUFInfo, mode: str, n_cpu_moe: int = 0) -> list[TensorInfo]:
    """Tensors the mode's patterns match: what llama.cpp should report as 'buffer type overridden'."""
    patterns = [re.compile(p) for p in override_patterns(mode, n_cpu_moe)]
    return [t for t in info.tensors if any(p.search(t.name) for p in patterns)]


@dataclass(frozen=True)
class ActiveBytes:
    """Weight bytes one decoded token reads, and where they live."""

    total: int
    gpu: int
    host: int


def active_bytes_per_token(info: GGUFInfo, mode: str, n_cpu_moe: int, gpu_offload: bool) -> ActiveBytes:
    """Dense tensors in full, routed experts at k/E (k experts of E are read per token), token embedding one row.

    The token embedding always lives in CPU memory (llama.cpp's input layer); when the output projection is tied to
    it, the whole matrix is also read once per token for the logits. Without GPU offload every byte is host memory.
    """
    moved = {t.name for t in moved_tensors(info, mode, n_cpu_moe)}
    n_expert, k = info.n_expert, info.n_expert_used
    tied_output = info.tensor("output.weight") is None
    gpu = host = 0
    for tensor in info.tensors:
        if tensor.is_expert and n_expert:
            n_bytes, on_host = tensor.n_bytes * k // n_expert, tensor.name in moved
        elif tensor.name == "token_embd.weight":
            row = tensor.n_bytes // max(tensor.shape[-1], 1)
            host += row
            n_bytes, on_host = (tensor.n_bytes, False) if tied_output else (0, False)
        else:
            n_bytes, on_host = tensor.n_bytes, False
        if on_host or not gpu_offload:
            host += n_bytes
        else:
            gpu += n_bytes
    return ActiveBytes(total=gpu + host, gpu=gpu, host=host)
