"""What a GGUF file is: its ModelFile record, per-tensor sizes, and the bytes one decoded token reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gguf import LlamaFileType

from vramwatch.errors import UserError
from vramwatch.gguf_file import GGUFError, GGUFInfo, read_gguf, token_reads
from vramwatch.records import ModelFile

HASH_CHUNK = 16 * 1024 * 1024
# What to do about each GGUFError problem.
_FIXES = {
    "missing": "check the path (models inspect takes a .gguf file)",
    "foreign": "pass a .gguf model file",
    "version": "convert the model again with current gguf-py",
    "corrupt": "the file was cut short: download or regenerate it",
}


def read_header(path: str | os.PathLike[str]) -> GGUFInfo:
    """gguf_file.read_gguf with every array kept (the tokenizer too), and UserError (message and fix) for a
    missing, non-GGUF, too old or truncated file.
    """
    try:
        return read_gguf(path, full_arrays=True)
    except GGUFError as exc:
        message = f"{path}: no such file" if exc.problem == "missing" else str(exc)
        raise UserError(message, _FIXES[exc.problem]) from None


def quant_name(header: GGUFInfo) -> str:
    """llama.cpp's name for the file's type mix (general.file_type): Q4_K_M, Q8_0, F16, MXFP4_MOE, ..."""
    ftype = header.metadata.get("general.file_type")
    if ftype is None:
        return "unknown"
    try:
        name = LlamaFileType(int(ftype)).name
    except ValueError:
        return f"ftype{ftype}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def partial_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place: per process, so two runs making one file at
    once (two DAG runs, the CLI beside the scheduler) never write into each other's bytes."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


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
    return ModelFile(
        model=model or str(header.metadata.get("general.name", Path(path).stem)),
        quant=quant or quant_name(header),
        path=str(Path(path).resolve()),
        file_bytes=header.file_bytes,
        sha256=sha256_file(path),
        arch=header.arch,
        n_params=header.n_params,
        n_layer=header.n_layer,
        n_expert=header.n_expert,
        n_expert_used=header.n_expert_used,
        synthetic=synthetic,
        scale=scale,
        fallback_tensors=fallback_tensors,
    )


def active_bytes_per_token(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(total_active, expert_active): weight bytes one decoded token reads (gguf_file.token_reads).

    Every non-expert tensor is read whole, routed expert tensors (llama.cpp's --cpu-moe pattern) only for the
    n_expert_used of n_expert experts picked, token_embd one row unless the output reuses it as its matrix.
    """
    reads = token_reads(read_header(path))
    return reads.total, reads.experts


def model_file(path: str | os.PathLike[str]) -> ModelFile:
    """The record of a file to bench; a missing or broken file gets a placeholder, which the bench then records as
    invalid_model with the reason, so every bad input still yields one record."""
    try:
        return inspect_gguf(path)
    except UserError:
        return ModelFile(model=Path(path).stem, quant="", path=str(path), file_bytes=0, sha256="", arch="",
                         n_params=0, n_layer=0, n_expert=0, n_expert_used=0, synthetic=False)
