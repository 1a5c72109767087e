"""Write shape-true synthetic GGUF models: real tokenizer, upstream tensor shapes, random weights from a fixed seed.

Tensors are generated and written a slab of rows at a time, so memory stays bounded (~100 MB) whatever the model
size: full DeepSeek-MoE-16B is 32.8 GB of F16. The file appears under its final name only once complete.
Weights are uniform with variance 1/fan_in (norms 1, biases and sinks 0), which keeps activations finite through
any number of layers, so the models load, generate, quantize and offload like the real ones.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType, GGUFWriter
from gguf.gguf_writer import WriterState
from gguf.quants import quantize as numpy_quantize

from vramwatch.errors import UserError
from vramwatch.models.inspect import partial_path, read_header
from vramwatch.models.specs import ModelSpec, TensorPlan, arch_metadata, tensor_plan
from vramwatch.progress import for_stage

ALIGNMENT = 32  # GGUF default data alignment
SLAB_ELEMENTS = 16 * 1024 * 1024  # elements generated per write: bounds memory to ~100 MB
DISK_MARGIN = 512 * 1024 * 1024  # free space kept after writing
# MXFP4 stores 4-bit E2M1 codes; ggml scales them by 2^(e-128). Their mean square over all 16 codes is 34.25.
MXFP4_CODE_RMS = float(np.sqrt(34.25))


def vocab_path(vocab_dir: Path, spec: ModelSpec) -> Path:
    path = Path(vocab_dir) / f"ggml-vocab-{spec.vocab}.gguf"
    if not path.is_file():
        raise UserError(f"tokenizer file {path} not found",
                        "point --vocab-dir at llama.cpp's models/ folder (vendor/llama.cpp/models in llama-cpp-python)")
    return path


def file_name(spec: ModelSpec) -> str:
    return f"{spec.name}-{spec.scale}-{spec.digest}.gguf"


def _tokenizer_kv(vocab_file: Path, n_vocab: int) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
    """tokenizer.* keys of a real vocab file; padded with unused tokens up to n_vocab rows when the model has more."""
    header = read_header(vocab_file)
    n_tokens = len(header.metadata["tokenizer.ggml.tokens"])
    if n_tokens > n_vocab:
        raise UserError(f"{vocab_file.name} has {n_tokens} tokens, more than the model's {n_vocab}",
                        "use a vocab file with at most as many tokens as the spec's n_vocab")
    pad = n_vocab - n_tokens
    kv = []
    for key, value in header.metadata.items():
        if not key.startswith("tokenizer."):
            continue
        if pad and key == "tokenizer.ggml.tokens":
            value = value + [f"<|vramwatch_pad_{i}|>" for i in range(pad)]
        elif pad and key == "tokenizer.ggml.token_type":
            value = value + [5] * pad  # LLAMA_TOKEN_TYPE_UNUSED
        elif pad and key == "tokenizer.ggml.scores":
            value = value + [-1000.0] * pad
        vtype, item = header.value_types[key]
        kv.append((key, value, GGUFValueType(vtype), GGUFValueType(item) if item is not None else None))
    return kv


def _writer(spec: ModelSpec, vocab_file: Path, plan: list[TensorPlan], fout: io.RawIOBase | io.BufferedIOBase) -> GGUFWriter:
    """A GGUFWriter holding metadata and tensor infos, bound to an already-open file object."""
    writer = GGUFWriter(None, spec.arch)
    for key, value, vtype in arch_metadata(spec):
        writer.add_key_value(key, value, vtype)
    for key, value, vtype, sub_type in _tokenizer_kv(vocab_file, spec.n_vocab):
        writer.add_key_value(key, value, vtype, sub_type)
    for t in plan:
        writer.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32), t.nbytes, raw_dtype=t.type)
    writer.fout = [fout]  # type: ignore[list-item]
    writer.state = WriterState.EMPTY  # "output already open": GGUFWriter's own convention for a caller-owned file
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def planned_file_bytes(spec: ModelSpec, vocab_dir: Path) -> int:
    """The synthetic file's exact size, computed from the tensor plan and metadata, without writing it."""
    plan = tensor_plan(spec)
    header = io.BytesIO()
    _writer(spec, vocab_path(vocab_dir, spec), plan, header)
    return _pad(header.tell()) + sum(_pad(t.nbytes) for t in plan)


def _slabs(t: TensorPlan, rng: np.random.Generator) -> Iterator[bytes]:
    """The tensor's bytes, a slab of whole rows at a time."""
    ne0 = t.shape[0]
    n_rows = t.n_elements // ne0
    if t.init != "weight":
        value = 1.0 if t.init == "one" else 0.0
        yield np.full(t.n_elements, value, dtype=np.float32).tobytes()  # 1-D, small
        return
    bound = float(np.sqrt(3.0 / ne0))  # uniform(-b, b) has variance 1/ne0
    rows_per_slab = max(1, SLAB_ELEMENTS // ne0)
    for start in range(0, n_rows, rows_per_slab):
        rows = min(rows_per_slab, n_rows - start)
        if t.type == QT.MXFP4:
            yield _random_mxfp4(rng, rows, ne0, bound / np.sqrt(3.0))
            continue
        if t.type == QT.Q8_0:
            yield _random_q8_0(rng, rows, ne0, bound)
            continue
        x = rng.random((rows, ne0), dtype=np.float32)
        x = (x - 0.5) * (2.0 * bound)
        if t.type == QT.F32:
            yield x.tobytes()
        elif t.type == QT.F16:
            yield x.astype(np.float16).tobytes()
        else:  # other block types: gguf-py's numpy quantizer
            yield numpy_quantize(x, t.type).tobytes()


def _random_mxfp4(rng: np.random.Generator, rows: int, ne0: int, std: float) -> bytes:
    """MXFP4 blocks (1 exponent byte + 16 bytes of 4-bit codes per 32 values) with random codes.

    Drawn directly in the packed format: gguf-py's MXFP4 quantizer runs at ~15 M values/s, 20 minutes for
    gpt-oss-20b's experts; random codes under one shared exponent give the same format and a chosen std.
    """
    n_blocks = rows * (ne0 // 32)
    exponent = int(np.clip(np.round(128 + np.log2(std / MXFP4_CODE_RMS)), 1, 254))
    blocks = np.empty((n_blocks, 17), dtype=np.uint8)
    blocks[:, 0] = exponent
    blocks[:, 1:] = rng.integers(0, 256, size=(n_blocks, 16), dtype=np.uint8)
    return blocks.tobytes()


def _random_q8_0(rng: np.random.Generator, rows: int, ne0: int, bound: float) -> bytes:
    """Q8_0 blocks (f16 scale + 32 int8 codes per 32 values): codes uniform in [-127, 127] under the scale bound/127,
    i.e. uniform(-bound, bound) on a 255-step grid, which is what quantizing such values gives.

    Drawn directly: gguf-py's Q8_0 quantizer runs at ~16 M values/s, about 40 minutes for Phi-3.5-MoE's 42 B weights.
    """
    n_blocks = rows * (ne0 // 32)
    blocks = np.empty((n_blocks, 34), dtype=np.uint8)
    blocks[:, :2] = np.frombuffer(np.float16(bound / 127).tobytes(), dtype=np.uint8)
    blocks[:, 2:] = rng.integers(-127, 128, size=(n_blocks, 32), dtype=np.int8).view(np.uint8)
    return blocks.tobytes()


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """UserError naming both figures when directory's disk cannot take `needed` more bytes (plus a margin)."""
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise UserError(f"{what} needs {_human(needed + DISK_MARGIN)} free in {directory}, only {_human(free)} free",
                        "free disk space or write to another directory (--out)")


def disk_full(folder: Path, file_name: str, needed: int) -> UserError:
    """The one line for a disk that filled while `file_name` was written into `folder` (its partial file removed):
    the folder, the space the file needs and what is free."""
    return UserError(f"{folder} is full: {file_name} needs {_human(needed + DISK_MARGIN)} free there, "
                     f"{_human(shutil.disk_usage(folder).free)} is",
                     "free disk space, or point VRAMWATCH_MODELS_DIR (or --out) at a bigger disk")


_say = for_stage("synth")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def write_gguf(spec: ModelSpec, out_dir: Path, vocab_dir: Path, *, seed: int = 0, shape_only: bool = False) -> Path:
    """Write spec's synthetic GGUF into out_dir and return its path (the name carries the spec's digest).

    shape_only writes metadata and tensor layout and leaves the data a hole (reads as zeros, costs no disk):
    enough for llama_model_quantize's dry run, which never reads tensor data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (file_name(spec) if not shape_only else file_name(spec).replace(".gguf", "-shape-only.gguf"))
    plan = tensor_plan(spec)
    vocab_file = vocab_path(vocab_dir, spec)
    partial = partial_path(path)
    started = time.monotonic()
    try:
        with open(partial, "wb") as fout:
            writer = _writer(spec, vocab_file, plan, fout)
            total = _pad(fout.tell()) + sum(_pad(t.nbytes) for t in plan)
            _say(f"{spec.name} ({spec.scale}, {spec.arch}): {len(plan)} tensors, {_human(total)} -> {path}")
            if shape_only:
                fout.truncate(total)
            else:
                ensure_free_space(out_dir, total - fout.tell(), f"{spec.name} ({spec.scale})")
                _write_data(plan, fout, seed, total, started)
            writer.fout = None  # the file is ours to close
        if partial.stat().st_size != total:
            raise RuntimeError(f"wrote {partial.stat().st_size} bytes, planned {total}")
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # the disk filled under us: one line, not a trace
            raise disk_full(out_dir, path.name, planned_file_bytes(spec, vocab_dir) if not shape_only else 0) from None
        raise
    _say(f"wrote {path.name}: {_human(total)} in {time.monotonic() - started:.1f}s")
    return path


def _write_data(plan: list[TensorPlan], fout, seed: int, total: int, started: float) -> None:
    fout.write(b"\0" * (_pad(fout.tell()) - fout.tell()))
    last_report = started
    for index, t in enumerate(plan):
        rng = np.random.default_rng([seed, index])  # per tensor: any tensor can be regenerated alone
        written = 0
        for chunk in _slabs(t, rng):
            fout.write(chunk)
            written += len(chunk)
        if written != t.nbytes:
            raise RuntimeError(f"{t.name}: generated {written} bytes, expected {t.nbytes}")
        fout.write(b"\0" * (_pad(written) - written))
        now = time.monotonic()
        if now - last_report > 10:
            _say(f"  {fout.tell() / total:5.1%} ({index + 1}/{len(plan)} tensors, {now - started:.0f}s)")
            last_report = now
