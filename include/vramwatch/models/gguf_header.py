"""Read a GGUF file's header (metadata and tensor infos) without touching tensor data.

gguf.GGUFReader builds a numpy view per string, which takes ~30 s for a 128k-token vocabulary on this machine;
a sequential struct parse of the same header takes well under a second.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramwatch.errors import UserError

GGUF_MAGIC = b"GGUF"
# GGUFValueType codes -> struct format (8 = string, 9 = array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order
    type: int  # GGMLQuantizationType value
    offset: int  # from the start of the data section


@dataclass
class GGUFHeader:
    path: Path
    kv: dict[str, Any] = field(default_factory=dict)
    kv_types: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> (vtype, array item vtype)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    alignment: int = 32

    @property
    def arch(self) -> str:
        return str(self.kv.get("general.architecture", ""))

    def arch_int(self, key: str, default: int = 0) -> int:
        value = self.kv.get(f"{self.arch}.{key}", default)
        return int(max(value)) if isinstance(value, list) else int(value)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("Q")
        end = self.pos + n
        if end > len(self.data):
            raise struct.error("string past end of buffer")
        text = self.data[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, vtype: int) -> Any:
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            item, n = self.take("I"), self.take("Q")
            if item in _SCALARS:
                fmt = f"<{n}{_SCALARS[item]}"
                values = list(struct.unpack_from(fmt, self.data, self.pos))
                self.pos += struct.calcsize(fmt)
                return values
            return [self.value(item) for _ in range(n)]
        return self.take(_SCALARS[vtype])


def read_header(path: str | Path) -> GGUFHeader:
    """Parse path's GGUF header; UserError when missing, not GGUF, or cut short."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file", "check the path (models inspect takes a .gguf file)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise UserError(f"{path}: not a GGUF file (bad magic)", "pass a .gguf model file")
        # Headers are small next to the data; read growing prefixes until one holds the whole header.
        chunk = 8 * 1024 * 1024
        while True:
            f.seek(0)
            data = f.read(chunk)
            try:
                return _parse(path, data, size)
            except (struct.error, IndexError, KeyError, UnicodeDecodeError):
                if len(data) < chunk:
                    raise UserError(f"{path}: GGUF header is truncated or corrupt",
                                    "the file was cut short: download or regenerate it") from None
                chunk *= 4


def _parse(path: Path, data: bytes, file_size: int) -> GGUFHeader:
    c = _Cursor(data)
    c.pos = 4
    version = c.take("I")
    if version < 2:
        raise UserError(f"{path}: GGUF version {version} is too old", "convert the model again with current gguf-py")
    n_tensors, n_kv = c.take("Q"), c.take("Q")
    header = GGUFHeader(path)
    for _ in range(n_kv):
        key = c.string()
        vtype = c.take("I")
        item = None
        if vtype == ARRAY:
            item = struct.unpack_from("<I", data, c.pos)[0]
        if vtype not in _SCALARS and vtype not in (STRING, ARRAY):
            raise KeyError(vtype)
        header.kv[key] = c.value(vtype)
        header.kv_types[key] = (vtype, item)
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.take("I")
        shape = tuple(c.take("Q") for _ in range(n_dims))
        header.tensors.append(TensorInfo(name, shape, c.take("I"), c.take("Q")))
    header.alignment = int(header.kv.get("general.alignment", 32))
    header.data_offset = (c.pos + header.alignment - 1) // header.alignment * header.alignment
    return header


def tensor_nbytes(info: TensorInfo) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(info.type)]
    n = 1
    for d in info.shape:
        n *= d
    return n // block * size
