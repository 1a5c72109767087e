"""Read a GGUF file's header, metadata and tensor table, and count the weight bytes one decoded token reads.

Stdlib only: the bench child imports this inside the engine venv (llama_cpp and numpy, no `gguf` package), and the
parent side uses it to refuse a missing, foreign or cut-short file before spending a subprocess on it. Tensor data is
never read. gguf.GGUFReader builds a numpy view per string (~30 s for a 128k-token vocabulary here); this walks a
memory map with struct, well under a second for the same file.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this (vocabularies, merges) are walked but not kept unless the caller asks for full_arrays.
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

# GGUF value types: id -> struct of a scalar; 8 = string and 9 = array are handled apart.
_SCALARS = {vtype: struct.Struct("<" + fmt) for vtype, fmt in
            {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}.items()}
_STRING, _ARRAY = 8, 9
_U32, _U64, _ARRAY_HEAD = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<IQ")


class GGUFError(ValueError):
    """The file is not a readable GGUF; the message says why in one line.

    problem names the case for callers that map it to their own advice: missing, foreign, version or corrupt
    (truncated files are corrupt).
    """

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


class _Corrupt(Exception):
    """The header runs past the end of the file, or holds what no GGUF writer writes."""


def tensor_bytes(ggml_type: int, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of a tensor of this ggml type and shape; KeyError for a type GGML_BLOCKS does not know."""
    block, size = GGML_BLOCKS[ggml_type]
    return math.prod(shape) // block * size


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 first
    type: int  # ggml type id (GGMLQuantizationType value)
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
    metadata: dict[str, Any]  # arrays over MAX_KEPT_ARRAY items are None unless read with full_arrays
    tensors: list[TensorInfo]
    data_offset: int
    file_bytes: int
    value_types: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> (type, array item type)
    alignment: int = DEFAULT_ALIGNMENT

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_int(self, name: str) -> int:
        """<arch>.<name> as an int, 0 when absent; a per-layer array gives its largest value."""
        value = self.metadata.get(f"{self.arch}.{name}") or 0
        return int(max(value)) if isinstance(value, list) else int(value)

    @property
    def n_layer(self) -> int:
        return self.arch_int("block_count")

    @property
    def n_expert(self) -> int:
        """Routed experts per MoE layer: metadata first, else the expert tensors' last dimension; 0 = dense."""
        declared = self.arch_int("expert_count")
        if declared:
            return declared
        experts = self.expert_tensors()
        return experts[0].shape[-1] if experts else 0

    @property
    def n_expert_used(self) -> int:
        return self.arch_int("expert_used_count")

    @property
    def n_vocab(self) -> int:
        embd = self.tensor("token_embd.weight")
        return embd.shape[-1] if embd else 0

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)

    def expert_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.is_expert]


def read_gguf(path: str | Path, *, full_arrays: bool = False) -> GGUFInfo:
    """Parse header, metadata and tensor infos; GGUFError for a missing, foreign, too old or truncated file.

    full_arrays keeps every array (a tokenizer's tokens and merges); without it long ones are walked but not kept,
    which is 4-5x faster and keeps them out of the bench child's memory.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"model file not found: {path}", "missing")
    file_bytes = path.stat().st_size
    with path.open("rb") as fh:
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {path}", "foreign")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                info = _Parser(buf, file_bytes, full_arrays).parse(str(path))
            except (_Corrupt, struct.error, OverflowError, MemoryError) as exc:
                why = str(exc) or "the header runs past the end of the file"
                raise GGUFError(f"GGUF header or tensor table is truncated or corrupt ({why}): {path}",
                                "corrupt") from None
    end = max((t.offset + t.n_bytes for t in info.tensors), default=0)
    if info.tensors and info.data_offset + end > file_bytes:
        raise GGUFError(f"GGUF is truncated: tensor data needs {info.data_offset + end} bytes, "
                        f"the file has {file_bytes}: {path}", "corrupt")
    return info


def read_model(path: str | Path) -> GGUFInfo:
    """read_gguf for a file that is to be benched: a GGUF without a tensor (a bare header, a vocab-only file) is
    readable but is no model, and llama.cpp would fail on it as if the engine had crashed."""
    info = read_gguf(path)
    if not info.tensors:
        raise GGUFError(f"GGUF has no tensors: a header without a model: {path}", "corrupt")
    return info


class _Parser:
    """A cursor over the mapped file; every read checks the end of the file."""

    def __init__(self, buf: mmap.mmap, size: int, full_arrays: bool) -> None:
        self.buf, self.size, self.pos, self.full_arrays = buf, size, 4, full_arrays

    def parse(self, path: str) -> GGUFInfo:
        version = self.scalar(_U32)
        if version < 2:
            raise GGUFError(f"GGUF version {version} is too old (need 2 or 3): {path}", "version")
        n_tensors, n_kv = self.scalar(_U64), self.scalar(_U64)
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GGUFError(f"GGUF header is corrupt ({n_tensors} tensors, {n_kv} keys): {path}", "corrupt")
        metadata: dict[str, Any] = {}
        value_types: dict[str, tuple[int, int | None]] = {}
        for _ in range(n_kv):
            key = self.string()
            vtype = self.scalar(_U32)
            item = _U32.unpack_from(self.buf, self.pos)[0] if vtype == _ARRAY else None
            metadata[key] = self.value(vtype)
            value_types[key] = (vtype, item)
        raw = []
        for _ in range(n_tensors):
            name = self.string()
            n_dims = self.scalar(_U32)
            if n_dims > 8:
                raise GGUFError(f"tensor {name} has {n_dims} dimensions: corrupt tensor table in {path}", "corrupt")
            shape = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
            self.pos += 8 * n_dims
            ggml_type, offset = self.scalar(_U32), self.scalar(_U64)
            raw.append((name, shape, ggml_type, offset))
        alignment = int(metadata.get("general.alignment") or DEFAULT_ALIGNMENT)
        data_offset = -(-self.pos // alignment) * alignment
        tensors = _with_sizes(raw, self.size - data_offset)
        return GGUFInfo(path, version, metadata, tensors, data_offset, self.size, value_types, alignment)

    def scalar(self, st: struct.Struct) -> Any:
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def string(self) -> str:
        n = self.scalar(_U64)
        end = self.pos + n
        if end > self.size:
            raise _Corrupt(f"a string of {n} bytes at byte {self.pos}")
        text = self.buf[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise _Corrupt(f"unknown GGUF value type {vtype} at byte {self.pos}")

    def array(self) -> list[Any] | None:
        item, count = _ARRAY_HEAD.unpack_from(self.buf, self.pos)
        self.pos += _ARRAY_HEAD.size
        keep = count <= MAX_KEPT_ARRAY or self.full_arrays
        if item in _SCALARS:  # one unpack for the whole array (token scores, token types)
            width = _SCALARS[item].size * count
            if self.pos + width > self.size:
                raise _Corrupt(f"an array of {count} items at byte {self.pos}")
            values = list(struct.unpack_from(f"<{count}{_SCALARS[item].format[1:]}", self.buf, self.pos)) \
                if keep else None
            self.pos += width
            return values
        if item == _STRING:
            return self._strings(count, keep)
        values = [self.value(item) for _ in range(count)]
        return values if keep else None

    def _strings(self, count: int, keep: bool) -> list[str] | None:
        """Tokenizer-sized string arrays: the hot loop of a header, so locals only."""
        buf, pos, u64 = self.buf, self.pos, _U64.unpack_from
        values = None
        if keep:
            values = []
            append = values.append
            for _ in range(count):
                (n,) = u64(buf, pos)
                pos += 8
                append(buf[pos:pos + n].decode("utf-8", errors="replace"))
                pos += n
        else:
            for _ in range(count):
                pos += 8 + u64(buf, pos)[0]
        if pos > self.size:
            raise _Corrupt(f"an array of {count} strings at byte {self.pos}")
        self.pos = pos
        return values


def _with_sizes(raw: list[tuple[str, tuple[int, ...], int, int]], data_bytes: int) -> list[TensorInfo]:
    """Exact sizes from the block table; a type this table does not know is sized by the next tensor's offset."""
    offsets = sorted(offset for *_, offset in raw)
    tensors = []
    for name, shape, ggml_type, offset in raw:
        if ggml_type in GGML_BLOCKS:
            n_bytes = tensor_bytes(ggml_type, shape)
        else:
            later = bisect_right(offsets, offset)
            n_bytes = (offsets[later] if later < len(offsets) else data_bytes) - offset
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
    return tensors


@dataclass(frozen=True)
class TokenReads:
    """Weight bytes one decoded token reads.

    tensors: per tensor name, what a token reads of it: dense tensors in full, routed experts at k/E (k of E experts
    are picked per token). The token embedding is a row lookup: embedding_row, which llama.cpp always reads from CPU
    memory (its input layer); when the output projection is tied to the embedding, the whole matrix is also read
    once per token for the logits, and token_embd.weight appears in tensors.
    """

    tensors: dict[str, int]
    embedding_row: int

    @property
    def total(self) -> int:
        return self.embedding_row + sum(self.tensors.values())

    @property
    def experts(self) -> int:
        return sum(n for name, n in self.tensors.items() if EXPERT_TENSOR_RE.search(name))


def token_reads(info: GGUFInfo) -> TokenReads:
    """What one decoded token reads of each weight (see TokenReads)."""
    n_expert, k = info.n_expert, info.n_expert_used
    tied_output = info.tensor("output.weight") is None
    reads, row = {}, 0
    for tensor in info.tensors:
        if tensor.is_expert and n_expert:
            reads[tensor.name] = tensor.n_bytes * k // n_expert
        elif tensor.name == "token_embd.weight":
            row = tensor.n_bytes // max(tensor.shape[-1], 1)
            if tied_output:
                reads[tensor.name] = tensor.n_bytes
        else:
            reads[tensor.name] = tensor.n_bytes
    return TokenReads(reads, row)
