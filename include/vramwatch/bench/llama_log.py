"""llama.cpp's log, captured whole and read for what it alone knows: buffers, placement, failures.

llama.cpp reports its own memory accounting and every tensor placement only in its log (placement at DEBUG), so the
child installs `LogCapture` as the log callback at every level and these functions read the lines back. Line
prefixes (the emitting function) changed across versions ("llama_kv_cache_unified:", "llama_kv_cache:",
"sched_reserve:", "llm_load_tensors:"), so the patterns key on the message, not the prefix.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Callable, NamedTuple

from vramwatch.records import EXPECTED_ON_GPU, is_gpu_device, missing_gpu_buffers

# ggml_log_level; llama-cpp-python's own table predates DEBUG = 1 and maps the levels wrongly.
LEVEL_DEBUG, LEVEL_INFO, LEVEL_WARN, LEVEL_ERROR, LEVEL_CONT = 1, 2, 3, 4, 5
LEVEL_NAMES = {0: "NONE", 1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR"}

_BUFFER_RE = re.compile(r"\s(?P<dev>[A-Za-z][\w.-]*)\s+(?P<kind>model|KV|compute|output|RS)\s+buffer size\s*=\s*"
                        r"(?P<mib>[\d.]+)\s*MiB")
# Before "model buffer size" (2024 and earlier) the weights line read "llm_load_tensors: CUDA0 buffer size = ...".
_LEGACY_MODEL_RE = re.compile(r"llm_load_tensors:\s+(?P<dev>[A-Za-z][\w.-]*)\s+buffer size\s*=\s*(?P<mib>[\d.]+)\s*MiB")
_OVERRIDE_RE = re.compile(r"tensor (?P<name>\S+) .*buffer type overridden to (?P<buft>\S+)")
_FLASH_ATTN_RE = re.compile(r"Flash Attention (?:was auto, set to )?(?P<state>enabled|disabled|not supported)", re.I)
_OOM_RE = re.compile(r"out of memory|failed to allocate|unable to allocate|cudaMalloc failed|OutOfDeviceMemory|"
                     r"not enough (device )?memory|CUDA error: out of memory", re.I)
# A split the build cannot do: llama.cpp 0c1e570 (llama-cpp-python 0.3.36) dropped CUDA's row-split buffer type.
_UNSUPPORTED_RE = re.compile(r"does not support split buffers|not implemented for architecture", re.I)
_BAD_MODEL_RE = re.compile(r"unknown model architecture|invalid magic|not within the file bounds|failed to read|"
                           r"wrong number of tensors|missing tensor|tensor .* has wrong shape|unsupported model|"
                           r"invalid ggml type|failed to open", re.I)

KINDS = {"model": "model", "KV": "kv", "compute": "compute", "output": "output", "RS": "kv"}


class LogCapture:
    """Collects llama.cpp log text into whole lines (pieces arrive split, CONT continues the last line).

    WARN and ERROR lines are echoed to stderr as they come, so a crash leaves its last words for the parent.
    """

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[tuple[int, str]] = []
        self._partial = ""
        self._level = LEVEL_INFO
        self._echo = echo or (lambda line: print(f"llama.cpp: {line}", file=sys.stderr, flush=True))

    def write(self, level: int, text: str) -> None:
        if level != LEVEL_CONT:
            self.flush()
            self._level = level
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._store(line)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._store(line)

    def _store(self, line: str) -> None:
        self.lines.append((self._level, line))
        if self._level in (LEVEL_WARN, LEVEL_ERROR) and line.strip():
            self._echo(line.strip())

    def text(self) -> list[str]:
        self.flush()
        return [line for _, line in self.lines]

    def problems(self) -> list[str]:
        """WARN and ERROR lines: what a failure is judged by (INFO/DEBUG text mentions 'failed' harmlessly)."""
        self.flush()
        return [line for level, line in self.lines if level in (LEVEL_WARN, LEVEL_ERROR)]

    def dump(self) -> str:
        """The whole log with levels, as a file for a human to read."""
        self.flush()
        return "".join(f"[{LEVEL_NAMES.get(level, level)}] {line}\n" for level, line in self.lines)


class ParsedBuffers(NamedTuple):
    """llama.cpp's buffers per "<device>/<kind>" (MiB), with the log lines each figure was read from."""

    mib: dict[str, float]
    source_lines: dict[str, list[str]]


def parse_buffers(lines: list[str]) -> ParsedBuffers:
    """llama.cpp's buffer lines per "<device>/<kind>", MiB (kind: model, kv, compute, output), and their lines.

    Weights and KV may come in several buffers per device (each logged): those add up, and every line is kept.
    Compute and output buffers are logged again whenever they are re-reserved: the last figure is the one in force,
    and its line the one kept. So each figure is the sum of the figures on its source lines.
    """
    buffers: dict[str, float] = {}
    source_lines: dict[str, list[str]] = {}
    for line in lines:
        match = _BUFFER_RE.search(" " + line)
        if match:
            key = f"{match['dev']}/{KINDS[match['kind']]}"
        else:
            match = _LEGACY_MODEL_RE.search(line)
            if not match:
                continue
            key = f"{match['dev']}/model"
        summed = key.endswith(("/model", "/kv"))
        buffers[key] = round((buffers.get(key, 0.0) if summed else 0.0) + float(match["mib"]), 2)
        source_lines[key] = [*source_lines.get(key, []), line] if summed else [line]
    return ParsedBuffers(buffers, source_lines)


def memory_figures(parsed: ParsedBuffers) -> dict[str, object]:
    """The records.Memory fields the buffers give: each buffer with its lines, and each kind summed over the GPUs
    (every device's share, whatever the split) and over host memory."""
    total, buffers = sum_buffers, parsed.mib
    return dict(
        buffers_mib=buffers, source_lines=parsed.source_lines,
        gpu_model_mib=total(buffers, "model", True), gpu_kv_mib=total(buffers, "kv", True),
        gpu_compute_mib=total(buffers, "compute", True), gpu_output_mib=total(buffers, "output", True),
        host_model_mib=total(buffers, "model", False), host_kv_mib=total(buffers, "kv", False),
        host_compute_mib=total(buffers, "compute", False),
    )


def measurement_problem(buffers: dict[str, float], backend: str, n_gpu_layers: int,
                        devices: Sequence[str] = ()) -> str | None:
    """Why parsed buffers cannot stand as a memory measurement, in one line naming what is missing; None when they can.

    No buffer at all means llama.cpp's log no longer reads as we expect (a format change), on any backend. On a GPU
    backend with layers offloaded, a missing GPU model, KV or compute buffer is a line that did not parse, not a
    config that needs no VRAM for it. Either way a 0 would pass for a measurement (and the next healthy night for a
    regression). `devices`: the GPUs that must each hold them (records.expected_gpu_devices; a row split's
    CUDA1_Split counts as CUDA1's weights); empty: any GPU.
    """
    if not buffers:
        return "no llama.cpp buffer line parsed: the log format may have changed"
    if backend != "cpu" and n_gpu_layers > 0:
        missing = [name for kind, name in EXPECTED_ON_GPU.items() if sum_buffers(buffers, kind, gpu=True) <= 0]
        if missing:
            return (f"no GPU {' or '.join(f'{name} buffer' for name in missing)} parsed on backend {backend} with "
                    f"n_gpu_layers={n_gpu_layers} (parsed: {', '.join(sorted(buffers))}): the log format may have "
                    f"changed")
        missing = missing_gpu_buffers(buffers, list(devices))
        if missing:
            return (f"no {' or '.join(f'{name} buffer' for name in missing)} parsed on backend {backend} with "
                    f"n_gpu_layers={n_gpu_layers} over {len(devices)} GPUs (parsed: {', '.join(sorted(buffers))}): "
                    f"the log format may have changed, or the split left a GPU without layers")
    return None


def sum_buffers(buffers: dict[str, float], kind: str, gpu: bool) -> float:
    return round(sum(mib for key, mib in buffers.items()
                     if key.endswith(f"/{kind}") and is_gpu_device(key.split("/")[0]) == gpu), 2)


def overridden_tensors(lines: list[str]) -> dict[str, str]:
    """Tensor name -> buffer type, for every tensor llama.cpp placed by a buffer-type override (DEBUG lines)."""
    return {m["name"]: m["buft"] for m in map(_OVERRIDE_RE.search, lines) if m}


def flash_attn_used(lines: list[str], requested: str) -> str:
    """on/off as llama.cpp resolved it; "auto" is resolved by a probe that logs its verdict."""
    if requested in ("on", "off"):
        return requested
    for line in reversed(lines):
        match = _FLASH_ATTN_RE.search(line)
        if match:
            return "on" if match["state"].lower() == "enabled" else "off"
    return "auto"


def classify_failure(lines: list[str]) -> str:
    """Status for a load/context failure: oom when llama.cpp says memory ran out, not_applicable for a split this build
    cannot do, invalid_model for a bad file."""
    if any(_OOM_RE.search(line) for line in lines):
        return "oom"
    if any(_UNSUPPORTED_RE.search(line) for line in lines):
        return "not_applicable"
    if any(_BAD_MODEL_RE.search(line) for line in lines):
        return "invalid_model"
    return "crashed"


def last_error(lines: list[str], default: str) -> str:
    """The most telling line for a one-line error: the first out-of-memory line (it names the allocation and the
    device; later lines only repeat the consequence), else the last error-looking line."""
    for line in lines:
        if _OOM_RE.search(line):
            return line.strip()[:300]
    for line in reversed(lines):
        if re.search(r"error|failed|exception", line, re.I):
            return line.strip()[:300]
    return default
