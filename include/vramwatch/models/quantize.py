"""Quantize a GGUF to any llama.cpp file type with the build under test (llama_model_quantize, in a subprocess).

The parent never loads llama.cpp: the child (vramwatch.models.quantize_child) runs in the build's own Python and
answers with one JSON line; llama.cpp's per-tensor log (its stderr) is relayed as progress while it comes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gguf.constants import GGMLQuantizationType

from vramwatch.errors import UserError
from vramwatch.gguf_file import tensor_bytes
from vramwatch.models.inspect import partial_path, read_header
from vramwatch.models.synth import disk_full, ensure_free_space
from vramwatch.progress import for_stage, relay
from vramwatch.records import BuildRecord

INCLUDE_DIR = Path(__file__).resolve().parents[2]  # so the engine's Python can import vramwatch.records
FLOAT_TYPES = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
MIN_WRITE = 1024 * 1024  # less free than this after a failed write: the disk is full, whatever the file still needs
_say = for_stage("quantize")
_child_said = relay("quantize")


@dataclass(frozen=True)
class QuantizeResult:
    quant: str  # file type name as asked, upper case (Q4_K_M)
    ftype: int  # llama_ftype value
    path: Path | None  # None for a dry run
    file_bytes: int  # the file's size; for a dry run, predicted from the types llama.cpp chose
    tensor_types: dict[str, str]  # tensor name -> ggml type name it got
    fallback_tensors: list[str]  # tensors stored in another type than the mix asked, because of their shape
    seconds: float
    dry_run: bool


def _relay_log(stream: TextIO) -> None:
    """llama.cpp's per-tensor log, which the child prints on stderr, as progress while it comes."""
    for line in stream:
        _child_said(line.rstrip("\n"))


def _child(build: BuildRecord, args: list[str], timeout_s: float | None) -> dict:
    python = Path(build.python)
    if not python.exists():
        raise UserError(f"engine python {python} does not exist", "build the engine first (vramwatch builds ...) "
                        "or pass --python PATH of a venv with llama-cpp-python")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INCLUDE_DIR), env.get("PYTHONPATH", "")) if p)
    with subprocess.Popen([str(python), "-m", "vramwatch.models.quantize_child", *args], env=env, text=True,
                          errors="replace", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        answer: list[str] = []
        readers = [threading.Thread(target=lambda: answer.append(proc.stdout.read()), daemon=True),
                   threading.Thread(target=_relay_log, args=(proc.stderr,), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"quantize child timed out after {timeout_s}s") from None
        finally:
            for reader in readers:
                reader.join(timeout=5)
    stdout = "".join(answer)
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        raise RuntimeError(f"quantize child exited with {proc.returncode} and no result "
                           f"(llama.cpp crashed? its log is above): {stdout[-500:]}") from None
    if "types" in result and not result["ok"]:
        raise UserError(f"{result['error']} for llama.cpp {build.llama_cpp_commit}",
                        f"use one of: {', '.join(result['types'])}")
    return result


def file_types(build: BuildRecord) -> dict[str, int]:
    """The file types this build's llama.cpp knows, by name (from its llama_cpp.LLAMA_FTYPE_* table)."""
    return _child(build, ["--list-types"], timeout_s=120)["types"]


def quantize_gguf(src: str | os.PathLike[str], quant: str, build: BuildRecord, out: str | os.PathLike[str] | None = None,
             *, nthread: int = 0, dry_run: bool = False, timeout_s: float | None = None) -> QuantizeResult:
    """Quantize src to file type `quant` (Q4_K_M, Q2_K, Q8_0, ...) with build's llama.cpp.

    nthread 0 = all cores. Already-quantized sources (phi-3.5-moe's Q8_0, gpt-oss's MXFP4 experts) are
    requantized. The output appears under its name only once complete. dry_run writes nothing and predicts the
    size from the type llama.cpp picks for each tensor.
    """
    src = Path(src)
    header = read_header(src)  # UserError for missing / not GGUF / truncated
    quant = quant.upper()
    requantize = any(GGMLQuantizationType(t.type) not in FLOAT_TYPES for t in header.tensors)
    args = ["--src", str(src), "--type", quant, "--nthread", str(nthread)]
    args += ["--allow-requantize"] if requantize else []
    started = time.monotonic()
    if dry_run:
        result = _child(build, args + ["--dry-run"], timeout_s)
        _check(result, src, quant)
        sizes = [_padded(tensor_bytes(GGMLQuantizationType[t["type"].upper()], t["shape"]), header.alignment)
                 for t in result["tensors"]]
        # The output keeps the source's metadata (file_type changes in place): same header size.
        return _result(quant, result, None, header.data_offset + sum(sizes), started, dry_run=True)

    out = Path(out) if out else src.with_name(f"{src.stem}-{quant}.gguf")
    if out.resolve() == src.resolve():
        raise UserError(f"output {out} is the source file", "pass another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    needed = src.stat().st_size  # the output of a quantization down is smaller
    ensure_free_space(out.parent, needed, f"quantizing {src.name} to {quant}")
    partial = partial_path(out)
    _say(f"{src.name} -> {out.name} ({quant}, llama.cpp {build.llama_cpp_commit})")
    out_of_disk = False
    try:
        result = _child(build, args + ["--out", str(partial)], timeout_s)
        out_of_disk = not result["ok"] and _rest_does_not_fit(partial, needed)
        if not out_of_disk:
            _check(result, src, quant)
            os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    if out_of_disk:  # llama.cpp says only "iostream error"; the disk says why
        raise disk_full(out.parent, out.name, needed)
    done = _result(quant, result, out, out.stat().st_size, started, dry_run=False)
    _say(f"wrote {out.name}: {done.file_bytes / 2**20:.1f} MiB in {done.seconds:.1f}s, "
         f"{len(done.fallback_tensors)} tensor(s) fell back to another type")
    return done


def _check(result: dict, src: Path, quant: str) -> None:
    if not result["ok"]:
        raise UserError(f"llama.cpp could not quantize {src.name} to {quant}: {result['error']}",
                        "pick another --type, or check the source file loads (models inspect)")


def _rest_does_not_fit(partial: Path, needed: int) -> bool:
    """Whether the disk of a failed quantization's partial file cannot take the rest of it (at least MIN_WRITE):
    the disk filled during the write."""
    written = partial.stat().st_size if partial.exists() else 0
    return shutil.disk_usage(partial.parent).free < max(needed - written, MIN_WRITE)


def _result(quant: str, result: dict, path: Path | None, size: int, started: float, dry_run: bool) -> QuantizeResult:
    tensor_types = {t["name"]: t["type"] for t in result["tensors"]}
    if path is not None:  # the written file is the ground truth for types
        tensor_types = {t.name: GGMLQuantizationType(t.type).name.lower() for t in read_header(path).tensors}
    fallback = list(result["fallback"])
    if len(fallback) != result["fallback_count"]:  # log format drifted: trust llama.cpp's own count
        fallback = fallback[: result["fallback_count"]] + ["?"] * max(0, result["fallback_count"] - len(fallback))
    return QuantizeResult(quant, result["ftype"], path, size, tensor_types, fallback,
                          round(time.monotonic() - started, 3), dry_run)


def _padded(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment
