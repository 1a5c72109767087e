"""What a GGUF file is: its ModelFile record, per-tensor sizes, and the bytes one decoded token reads."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from gguf import LlamaFileType

from vramwatch.errors import UserError
from vramwatch.models.gguf_header import GGUFHeader, read_header, tensor_nbytes
from vramwatch.models.specs import EXPERT_TENSOR_PATTERN
from vramwatch.records import ModelFile

_EXPERT = re.compile(EXPERT_TENSOR_PATTERN)
HASH_CHUNK = 16 * 1024 * 1024


def quant_name(header: GGUFHeader) -> str:
    """llama.cpp's name for the file's type mix (general.file_type): Q4_K_M, Q8_0, F16, MXFP4_MOE, ..."""
    ftype = header.kv.get("general.file_type")
    if ftype is None:
        return "unknown"
    try:
        name = LlamaFileType(int(ftype)).name
    except ValueError:
        return f"ftype{ftype}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _check_complete(header: GGUFHeader) -> None:
    end = max((header.data_offset + t.offset + tensor_nbytes(t) for t in header.tensors), default=0)
    size = header.path.stat().st_size
    if end > size:
        raise UserError(f"{header.path}: truncated: tensor data ends at byte {end}, file has {size}",
                        "the file was cut short: download or regenerate it")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of the file, streamed; remembered beside it (keyed by size and mtime) so big files hash once."""
    path = Path(path)
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    memo = path.with_name(f".{path.name}.sha256")
    try:
        recorded_stamp, digest = memo.read_text().rsplit(" ", 1)
        if recorded_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        memo.write_text(f"{stamp} {digest}")
    except OSError:  # read-only location (a package's own file): hashing again next time is fine
        pass
    return digest


def inspect_gguf(path: str | os.PathLike[str], *, model: str = "", quant: str = "", synthetic: bool = False,
                 scale: str = "", fallback_tensors: int = 0) -> ModelFile:
    """The ModelFile record of a GGUF; UserError for a missing, non-GGUF or truncated file.

    model defaults to general.name, quant to llama.cpp's name for general.file_type.
    """
    header = read_header(path)
    _check_complete(header)
    n_params = 0
    for t in header.tensors:
        n = 1
        for d in t.shape:
            n *= d
        n_params += n
    return ModelFile(
        model=model or str(header.kv.get("general.name", Path(path).stem)),
        quant=quant or quant_name(header),
        path=str(Path(path).resolve()),
        file_bytes=header.path.stat().st_size,
        sha256=sha256_file(path),
        arch=header.arch,
        n_params=n_params,
        n_layer=header.arch_int("block_count"),
        n_expert=header.arch_int("expert_count"),
        n_expert_used=header.arch_int("expert_used_count"),
        synthetic=synthetic,
        scale=scale,
        fallback_tensors=fallback_tensors,
    )


def tensor_sizes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of each tensor in the file, by name."""
    return {t.name: tensor_nbytes(t) for t in read_header(path).tensors}


def active_bytes_per_token(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(total_active, expert_active): weight bytes one decoded token reads.

    Every non-expert tensor is read whole, routed expert tensors (llama.cpp's --cpu-moe pattern) only for the
    n_expert_used of n_expert experts picked. token_embd is a row lookup (one row per token, negligible) unless the
    model has no output.weight and reuses it as the output matrix.
    """
    header = read_header(path)
    sizes = {t.name: tensor_nbytes(t) for t in header.tensors}
    n_expert, n_used = header.arch_int("expert_count"), header.arch_int("expert_used_count")
    tied = "output.weight" not in sizes
    dense = expert = 0
    for name, nbytes in sizes.items():
        if _EXPERT.search(name):
            expert += nbytes
        elif name != "token_embd.weight" or tied:
            dense += nbytes
    expert_active = expert * n_used // n_expert if n_expert else 0
    return dense + expert_active, expert_active
