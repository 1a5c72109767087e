"""Where each mode puts the weights, and how many bytes a decoded token reads from each memory.

Modes are llama.cpp's own switches: baseline = every layer on the GPU; offload = --cpu-moe (all routed expert
tensors in CPU memory); partial = --n-cpu-moe N (expert tensors of layers 0..N-1 in CPU memory). The patterns are
the ones common.h builds, so a result here means the same as the same flag on llama-server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vramwatch.gguf_file import EXPERT_PATTERN, GGUFInfo, TensorInfo, token_reads


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
    """gguf_file.token_reads split by memory: the embedding row and the tensors this mode moves are read from host
    memory, the rest from the GPU; without GPU offload every byte is host memory.
    """
    reads = token_reads(info)
    moved = {t.name for t in moved_tensors(info, mode, n_cpu_moe)}
    host = reads.embedding_row + sum(n for name, n in reads.tensors.items() if name in moved or not gpu_offload)
    return ActiveBytes(total=reads.total, gpu=reads.total - host, host=host)
