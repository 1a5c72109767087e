"""Tiny real GGUF models for the bench tests, written with gguf-py in the main venv.

A DeepSeek-shaped MoE (2 layers, 4 routed experts top-2, 1 shared expert) or a llama-shaped dense model, dims
multiples of 256, with the real deepseek-llm tokenizer copied from llama.cpp's vocab GGUF, so llama.cpp loads,
offloads, decodes and samples them like the real thing. Random weights: the text is noise, the mechanics are real.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

VOCAB_FILE = "ggml-vocab-deepseek-llm.gguf"

N_EMBD, N_HEAD, N_FF, N_FF_EXP = 256, 4, 512, 256
FIXTURE_VERSION = 1  # bump when write_tiny_model changes: cached files are keyed by it


def cached_tiny_model(vocab_dir: Path, name: str, **kwargs) -> Path:
    """write_tiny_model once per machine, in vramwatch's cache (reading the vocab GGUF alone takes ~20 s)."""
    from vramwatch.config import Paths

    folder = Paths().cache / "test-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-v{FIXTURE_VERSION}.gguf"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        write_tiny_model(partial, vocab_dir / VOCAB_FILE, **kwargs)
        os.replace(partial, path)
    return path


def write_tiny_model(path: Path, vocab: Path, *, moe: bool = True, n_layer: int = 2, n_expert: int = 4,
                     n_expert_used: int = 2,
                     leading_dense: int = 0) -> Path:
    import gguf

    arch = "deepseek" if moe else "llama"
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(2048)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if moe:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
        writer.add_expert_feed_forward_length(N_FF_EXP)
        writer.add_expert_shared_count(1)
        writer.add_leading_dense_block_count(leading_dense)
        writer.add_expert_weights_scale(1.0)
    n_vocab = _copy_tokenizer(writer, vocab)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # numpy shapes are ggml shapes reversed: (rows, cols) = (ne1, ne0). No output.weight: tied to token_embd.
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", norm(N_EMBD))
    for i in range(n_layer):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", norm(N_EMBD))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.ffn_norm.weight", norm(N_EMBD))
        if moe and i >= leading_dense:
            writer.add_tensor(f"{block}.ffn_gate_inp.weight", weight(n_expert, N_EMBD).astype(np.float32))
            writer.add_tensor(f"{block}.ffn_gate_exps.weight", weight(n_expert, N_FF_EXP, N_EMBD))
            writer.add_tensor(f"{block}.ffn_up_exps.weight", weight(n_expert, N_FF_EXP, N_EMBD))
            writer.add_tensor(f"{block}.ffn_down_exps.weight", weight(n_expert, N_EMBD, N_FF_EXP))
            writer.add_tensor(f"{block}.ffn_gate_shexp.weight", weight(N_FF_EXP, N_EMBD))
            writer.add_tensor(f"{block}.ffn_up_shexp.weight", weight(N_FF_EXP, N_EMBD))
            writer.add_tensor(f"{block}.ffn_down_shexp.weight", weight(N_EMBD, N_FF_EXP))
        else:
            writer.add_tensor(f"{block}.ffn_gate.weight", weight(N_FF, N_EMBD))
            writer.add_tensor(f"{block}.ffn_up.weight", weight(N_FF, N_EMBD))
            writer.add_tensor(f"{block}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _copy_tokenizer(writer, vocab: Path) -> int:
    """Copy every tokenizer.* key from llama.cpp's deepseek-llm vocab GGUF; return the vocabulary size."""
    fields = _tokenizer_fields(vocab)
    for name, value, value_type, sub_type in fields:
        writer.add_key_value(name, value, value_type, sub_type=sub_type)
    return next(len(value) for name, value, *_ in fields if name == "tokenizer.ggml.tokens")


@functools.lru_cache(maxsize=1)
def _tokenizer_fields(vocab: Path) -> list[tuple]:
    import gguf

    reader = gguf.GGUFReader(str(vocab))
    fields = []
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            fields.append((name, field.contents(), value_type, sub_type))
    return fields
