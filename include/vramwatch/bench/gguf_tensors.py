"""Read a GGUF file's header, metadata and tensor table with the stdlib alone.

The bench child runs in the engine venv, which has no `gguf` package, yet it needs the tensor table to know what an
offload mode should move and how many bytes a decoded token reads. The parent uses the same reader to refuse a file
that is not a GGUF or is cut short before spending a subprocess on it. Tensor data is never read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this (vocabularies, merges) are walked but not kept: nothing here needs them.
MAX_KEPT_ARRAY = 64

# ggml type id -> (elements per block, bytes per block); ggml.c's type_traits, checked against gguf-py in the tests.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}

# The same expression llama.cpp's --cpu-moe uses (common.h LLM_FFN_EXPS_REGEX): routed expert weights.
EXPERT_PATTERN = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
EXPERT_TENSOR_RE = re.compile(EXPERT_PATTERN)
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")

# GGUF value types: id -> struct format of a scalar (8 = string, 9 = array are handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not a readable GGUF: the message says why in one line."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 first
    ggml_type: int
    offset: int  # from the start of the data section
    n_bytes: int

    @property
    def layer(self) -> int | None:
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None

    @property
    def is_expert(self) -> bool:
        return EXPERT_TENSOR_RE.search(self.name) is not None


@dataclass
class GGUFInfo:
    path: str
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    file_bytes: int

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_key(self, name: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.arch}.{name}", default)

    @property
    def n_layer(self) -> int:
        return int(self.arch_key("block_count", 0) or 0)

    @property
    def n_expert(self) -> int:
        """Routed experts per MoE layer: metadata first, else the expert tensors' last dimension; 0 = dense."""
        declared = int(self.arch_key("expert_count", 0) or 0)
        if declared:
            return declared
        experts = [t for t in self.tensors if t.is_expert]
        return experts[0].shape[-1] if experts else 0

    @property
    def n_expert_used(self) -> int:
        return int(self.arch_key("expert_used_count", 0) or 0)

    @property
    def n_vocab(self) -> int:
        embd = self.tensor("token_embd.weight")
        return embd.shape[-1] if embd else 0

    @property
    def n_params(self) -> int:
        total = 0
        for tensor in self.tensors:
            count = 1
            for dim in tensor.shape:
                count *= dim
            total += count
        return total

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)

    def expert_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.is_expert]


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse header, metadata and tensor infos; raise GGUFError for a missing, foreign or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"model file not found: {path}")
    file_bytes = path.stat().st_size
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            if magic != GGUF_MAGIC:
                raise GGUFError(f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {path}")
            version, n_tensors, n_kv = _unpack(fh, "<IQQ")
            if version < 2:
                raise GGUFError(f"GGUF version {version} is too old (need 2 or 3): {path}")
            if n_tensors > 1_000_000 or n_kv > 1_000_000:
                raise GGUFError(f"GGUF header is corrupt ({n_tensors} tensors, {n_kv} keys): {path}")
            metadata = {}
            for _ in range(n_kv):
                key = _read_string(fh)
                (value_type,) = _unpack(fh, "<I")
                metadata[key] = _read_value(fh, value_type)
            raw = []
            for _ in range(n_tensors):
                name = _read_string(fh)
                (n_dims,) = _unpack(fh, "<I")
                if n_dims > 8:
                    raise GGUFError(f"tensor {name} has {n_dims} dimensions: corrupt tensor table in {path}")
                shape = _unpack(fh, f"<{n_dims}Q")
                ggml_type, offset = _unpack(fh, "<IQ")
                raw.append((name, tuple(shape), ggml_type, offset))
            alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT) or DEFAULT_ALIGNMENT)
            data_offset = -(-fh.tell() // alignment) * alignment
    except (struct.error, EOFError, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise GGUFError(f"GGUF header or tensor table is truncated or corrupt ({exc}): {path}") from None

    tensors = _with_sizes(raw, file_bytes - data_offset)
    end = max((t.offset + t.n_bytes for t in tensors), default=0)
    if data_offset + end > file_bytes:
        raise GGUFError(
            f"GGUF is truncated: tensor data needs {data_offset + end} bytes, the file has {file_bytes}: {path}"
        )
    return GGUFInfo(str(path), version, metadata, tensors, data_offset, file_bytes)


def _with_sizes(raw: list[tuple[str, tuple[int, ...], int, int]], data_bytes: int) -> list[TensorInfo]:
    """Exact sizes from the block table; a type this table does not know is sized by the next tensor's offset."""
    by_offset = sorted(offset for *_, offset in raw)
    tensors = []
    for name, shape, ggml_type, offset in raw:
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        if ggml_type in GGML_BLOCKS:
            block, size = GGML_BLOCKS[ggml_type]
            n_bytes = n_elements // block * size
        else:
            later = [o for o in by_offset if o > offset]
            n_bytes = (later[0] if later else data_bytes) - offset
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
    return tensors


def _unpack(fh: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("unexpected end of file")
    return struct.unpack(fmt, data)


def _read_string(fh: BinaryIO) -> str:
    (length,) = _unpack(fh, "<Q")
    if length > 1 << 30:
        raise OverflowError(f"string of {length} bytes")
    data = fh.read(length)
    if len(data) != length:
        raise EOFError("unexpected end of file")
    return data.decode("utf-8")


def _read_value(fh: BinaryIO, value_type: int) -> Any:
    if value_type in _SCALARS:
        return _unpack(fh, _SCALARS[value_type])[0]
    if value_type == _STRING:
        return _read_string(fh)
    if value_type == _ARRAY:
        item_type, count = _unpack(fh, "<IQ")
        if count > MAX_KEPT_ARRAY and item_type in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)  # skip, e.g. token scores
            return None
        items = [_read_value(fh, item_type) for _ in range(count)]
        return items if count <= MAX_KEPT_ARRAY else None
    raise ValueError(f"unknown GGUF value type {value_type}")
