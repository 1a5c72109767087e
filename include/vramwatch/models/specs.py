"""Shape-true model specs: upstream hyperparameters and llama.cpp's tensor layout for each architecture.

Every tensor name and shape below is what llama.cpp's loader asks for (src/models/<arch>.cpp in the vendored
llama.cpp 0c1e57098); every GGUF key is one that loader or convert_hf_to_gguf.py writes for the upstream model.
Shapes are in ggml order (ne0 first = the input dimension of a matmul), as llama.cpp's create_tensor states them.

`tiny` keeps each architecture's structure (leading dense layer and shared experts for DeepSeek, biases and rope
factors for Phi-MoE, sinks, biases and sliding window for gpt-oss) with every matmul input dimension a multiple of
256, so K-quants apply without fallback, and the real tokenizer's vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import LlamaFileType

from vramwatch.errors import UserError
from vramwatch.gguf_file import tensor_bytes

SCALES = ("tiny", "full")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # matrix synth name, e.g. "deepseek-moe-16b"
    arch: str  # general.architecture as llama.cpp knows it
    scale: str  # tiny | full
    upstream: str  # the Hugging Face model these shapes come from
    vocab: str  # ggml-vocab-<vocab>.gguf in llama.cpp's models/ supplies the tokenizer
    n_vocab: int  # tokens in the file; above the tokenizer's count, the rest is padded with unused tokens
    n_ctx_train: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int  # dense FFN width (DeepSeek's leading layer; phimoe writes its expert width here, as upstream does)
    rms_eps: float
    rope_freq_base: float
    n_ff_exp: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_layer_dense_lead: int = 0
    sliding_window: int = 0
    weight_type: str = "F16"  # 2-D non-expert weights of the synthetic source
    expert_type: str = "F16"  # routed expert weights of the synthetic source
    extra_kv: tuple[tuple[str, Any, str], ...] = field(default_factory=tuple)  # (key without arch prefix, value, vtype)

    @property
    def file_type(self) -> int:
        """general.file_type of the synthetic source, as llama.cpp names the mix."""
        if self.expert_type == "MXFP4":
            return LlamaFileType.MOSTLY_MXFP4_MOE
        return LlamaFileType[f"MOSTLY_{self.weight_type}"]

    @property
    def digest(self) -> str:
        """Changes whenever anything that shapes the file changes: part of the synthetic file's cache key."""
        raw = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(raw + SYNTH_FORMAT.encode()).hexdigest()[:10]


# Bump when synth.py changes what it writes for the same spec (init, key set), so caches regenerate.
SYNTH_FORMAT = "synth-v1"


@dataclass(frozen=True)
class TensorPlan:
    """One tensor to write: name, ggml shape, storage type and how to initialise it."""

    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (matmul input dim) first
    type: QT
    init: str  # weight (uniform, variance 1/ne0) | one | zero

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.type, self.shape)


def _w(name: str, shape: tuple[int, ...], qtype: QT) -> TensorPlan:
    return TensorPlan(name, shape, qtype, "weight")


def _f32(name: str, shape: tuple[int, ...], init: str) -> TensorPlan:
    return TensorPlan(name, shape, QT.F32, init)


def tensor_plan(spec: ModelSpec) -> list[TensorPlan]:
    """The tensors llama.cpp's loader requires for spec.arch, in the order convert_hf_to_gguf writes them."""
    w, e = QT[spec.weight_type], QT[spec.expert_type]
    d, v = spec.n_embd, spec.n_vocab
    q_dim, kv_dim = spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim
    plan = [_w("token_embd.weight", (d, v), w)]
    biased = spec.arch in ("phimoe", "gpt-oss")
    if spec.arch == "phimoe":  # longrope factors, one pair for all layers (convert writes them once)
        plan += [_f32("rope_factors_long.weight", (spec.head_dim // 2,), "one"),
                 _f32("rope_factors_short.weight", (spec.head_dim // 2,), "one")]
    for i in range(spec.n_layer):
        b = f"blk.{i}"
        plan.append(_f32(f"{b}.attn_norm.weight", (d,), "one"))
        if spec.arch == "phimoe":  # LayerNorm with bias
            plan.append(_f32(f"{b}.attn_norm.bias", (d,), "zero"))
        for proj, out in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)):
            plan.append(_w(f"{b}.attn_{proj}.weight", (d, out), w))
            if biased:
                plan.append(_f32(f"{b}.attn_{proj}.bias", (out,), "zero"))
        plan.append(_w(f"{b}.attn_output.weight", (q_dim, d), w))
        if biased:
            plan.append(_f32(f"{b}.attn_output.bias", (d,), "zero"))
        if spec.arch == "gpt-oss":
            plan.append(_f32(f"{b}.attn_sinks.weight", (spec.n_head,), "zero"))
            plan.append(_f32(f"{b}.post_attention_norm.weight", (d,), "one"))
        else:
            plan.append(_f32(f"{b}.ffn_norm.weight", (d,), "one"))
            if spec.arch == "phimoe":
                plan.append(_f32(f"{b}.ffn_norm.bias", (d,), "zero"))
        if spec.n_expert == 0 or i < spec.n_layer_dense_lead:
            plan += [_w(f"{b}.ffn_gate.weight", (d, spec.n_ff), w),
                     _w(f"{b}.ffn_down.weight", (spec.n_ff, d), w),
                     _w(f"{b}.ffn_up.weight", (d, spec.n_ff), w)]
            continue
        ff, n = spec.n_ff_exp, spec.n_expert
        plan.append(_f32(f"{b}.ffn_gate_inp.weight", (d, n), "weight"))  # the router: llama.cpp never quantizes it
        if spec.arch == "gpt-oss":
            plan.append(_f32(f"{b}.ffn_gate_inp.bias", (n,), "zero"))
        plan += [_w(f"{b}.ffn_gate_exps.weight", (d, ff, n), e),
                 _w(f"{b}.ffn_down_exps.weight", (ff, d, n), e),
                 _w(f"{b}.ffn_up_exps.weight", (d, ff, n), e)]
        if spec.arch == "gpt-oss":
            plan += [_f32(f"{b}.ffn_gate_exps.bias", (ff, n), "zero"),
                     _f32(f"{b}.ffn_down_exps.bias", (d, n), "zero"),
                     _f32(f"{b}.ffn_up_exps.bias", (ff, n), "zero")]
        if spec.n_expert_shared:
            sh = ff * spec.n_expert_shared
            plan += [_w(f"{b}.ffn_gate_shexp.weight", (d, sh), w),
                     _w(f"{b}.ffn_down_shexp.weight", (sh, d), w),
                     _w(f"{b}.ffn_up_shexp.weight", (d, sh), w)]
    plan.append(_f32("output_norm.weight", (d,), "one"))
    if spec.arch == "phimoe":
        plan.append(_f32("output_norm.bias", (d,), "zero"))
    plan.append(_w("output.weight", (d, v), w))
    if spec.arch == "phimoe":
        plan.append(_f32("output.bias", (v,), "zero"))
    return plan


def arch_metadata(spec: ModelSpec) -> list[tuple[str, Any, VT]]:
    """The model's own GGUF keys (tokenizer.* come from the vocab file), as convert_hf_to_gguf writes them."""
    a = spec.arch
    kv: list[tuple[str, Any, VT]] = [
        ("general.name", f"{spec.upstream} (vramwatch synthetic, {spec.scale})", VT.STRING),
        ("general.file_type", int(spec.file_type), VT.UINT32),
        ("general.quantization_version", 2, VT.UINT32),
        (f"{a}.context_length", spec.n_ctx_train, VT.UINT32),
        (f"{a}.embedding_length", spec.n_embd, VT.UINT32),
        (f"{a}.block_count", spec.n_layer, VT.UINT32),
        (f"{a}.feed_forward_length", spec.n_ff, VT.UINT32),
        (f"{a}.attention.head_count", spec.n_head, VT.UINT32),
        (f"{a}.attention.head_count_kv", spec.n_head_kv, VT.UINT32),
        (f"{a}.attention.layer_norm_rms_epsilon", spec.rms_eps, VT.FLOAT32),
        (f"{a}.rope.freq_base", spec.rope_freq_base, VT.FLOAT32),
        (f"{a}.vocab_size", spec.n_vocab, VT.UINT32),
    ]
    if spec.n_expert:
        kv += [(f"{a}.expert_count", spec.n_expert, VT.UINT32),
               (f"{a}.expert_used_count", spec.n_expert_used, VT.UINT32)]
    if spec.sliding_window:
        kv.append((f"{a}.attention.sliding_window", spec.sliding_window, VT.UINT32))
    kv += [(f"{a}.{key}", value, VT[vtype]) for key, value, vtype in spec.extra_kv]
    return kv


_DEEPSEEK_KV = (("rope.dimension_count", 128, "UINT32"), ("rope.scaling.type", "none", "STRING"),
                ("leading_dense_block_count", 1, "UINT32"), ("expert_feed_forward_length", 1408, "UINT32"),
                ("expert_weights_scale", 1.0, "FLOAT32"), ("expert_shared_count", 2, "UINT32"))

_FULL: dict[str, ModelSpec] = {
    # deepseek-ai/deepseek-moe-16b-base config.json
    "deepseek-moe-16b": ModelSpec(
        name="deepseek-moe-16b", arch="deepseek", scale="full", upstream="deepseek-ai/deepseek-moe-16b-base",
        vocab="deepseek-llm", n_vocab=102400, n_ctx_train=4096, n_embd=2048, n_layer=28, n_head=16, n_head_kv=16,
        head_dim=128, n_ff=10944, rms_eps=1e-6, rope_freq_base=10000.0, n_ff_exp=1408, n_expert=64,
        n_expert_used=6, n_expert_shared=2, n_layer_dense_lead=1, extra_kv=_DEEPSEEK_KV),
    # microsoft/Phi-3.5-MoE-instruct: F16 is ~84 GB, so the source is written as Q8_0 (as a 64 GB disk allows)
    "phi-3.5-moe": ModelSpec(
        name="phi-3.5-moe", arch="phimoe", scale="full", upstream="microsoft/Phi-3.5-MoE-instruct",
        vocab="phi-3", n_vocab=32064, n_ctx_train=131072, n_embd=4096, n_layer=32, n_head=32, n_head_kv=8,
        head_dim=128, n_ff=6400, rms_eps=1e-5, rope_freq_base=10000.0, n_ff_exp=6400, n_expert=16,
        n_expert_used=2, sliding_window=131072, weight_type="Q8_0", expert_type="Q8_0",
        extra_kv=(("rope.dimension_count", 128, "UINT32"), ("rope.scaling.original_context_length", 4096, "UINT32"),
                  ("rope.scaling.attn_factor", 1.1902380714238083, "FLOAT32"))),
    # openai/gpt-oss-20b: experts ship as MXFP4; sliding window 128 on every other layer (llama.cpp's default
    # pattern 2 for this arch); o200k_harmony is not among llama.cpp's vocab files, llama-bpe (the closest:
    # tiktoken-style byte-level BPE) is used and padded to the real 201088 rows.
    "gpt-oss-20b": ModelSpec(
        name="gpt-oss-20b", arch="gpt-oss", scale="full", upstream="openai/gpt-oss-20b", vocab="llama-bpe",
        n_vocab=201088, n_ctx_train=131072, n_embd=2880, n_layer=24, n_head=64, n_head_kv=8, head_dim=64,
        n_ff=2880, rms_eps=1e-5, rope_freq_base=150000.0, n_ff_exp=2880, n_expert=32, n_expert_used=4,
        sliding_window=128, expert_type="MXFP4",
        extra_kv=(("expert_feed_forward_length", 2880, "UINT32"), ("attention.key_length", 64, "UINT32"),
                  ("attention.value_length", 64, "UINT32"), ("rope.scaling.type", "yarn", "STRING"),
                  ("rope.scaling.factor", 32.0, "FLOAT32"),
                  ("rope.scaling.original_context_length", 4096, "UINT32"))),
    # meta-llama/Meta-Llama-3-8B: a dense model to contrast with the MoEs (offload moves nothing)
    "llama-dense": ModelSpec(
        name="llama-dense", arch="llama", scale="full", upstream="meta-llama/Meta-Llama-3-8B", vocab="llama-bpe",
        n_vocab=128256, n_ctx_train=8192, n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, head_dim=128,
        n_ff=14336, rms_eps=1e-5, rope_freq_base=500000.0, extra_kv=(("rope.dimension_count", 128, "UINT32"),)),
}

# Tiny: same arch structure; widths multiples of 256; vocab = the tokenizer's own token count.
_TINY: dict[str, dict[str, Any]] = {
    "deepseek-moe-16b": dict(n_embd=256, n_layer=4, n_head=2, n_head_kv=2, n_ff=768, n_ff_exp=256, n_expert=8,
                             n_expert_used=2, extra_kv=tuple((k, 256 if k == "expert_feed_forward_length" else v, t)
                                                             for k, v, t in _DEEPSEEK_KV)),
    "phi-3.5-moe": dict(n_embd=512, n_layer=4, n_head=4, n_head_kv=1, n_ff=512, n_ff_exp=512, n_expert=4,
                        n_expert_used=2),
    "gpt-oss-20b": dict(n_vocab=128256, n_embd=256, n_layer=4, n_head=8, n_head_kv=1, n_ff=256, n_ff_exp=256,
                        n_expert=4, n_expert_used=2,
                        extra_kv=tuple((k, 256 if k == "expert_feed_forward_length" else v, t)
                                       for k, v, t in _FULL["gpt-oss-20b"].extra_kv)),
    "llama-dense": dict(n_embd=256, n_layer=4, n_head=2, n_head_kv=1, n_ff=768),
}

SPEC_NAMES = tuple(_FULL)


def get_spec(name: str, scale: str = "tiny") -> ModelSpec:
    if name not in _FULL:
        raise UserError(f"unknown synthetic model {name!r}", f"use one of: {', '.join(SPEC_NAMES)}")
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}", f"use one of: {', '.join(SCALES)}")
    full = _FULL[name]
    return full if scale == "full" else replace(full, scale="tiny", **_TINY[name])
