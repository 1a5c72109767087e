"""Child process: run llama_model_quantize of the build under test and report what it did as one JSON line.

Runs in the engine's own Python (`python -m vramwatch.models.quantize_child ...`), so it imports only the stdlib
and llama_cpp. llama.cpp's log goes on to stderr as progress; the lines that matter are parsed on the way:
per-tensor target types (the dry run's only output) and shape fallbacks ("ncols ... not divisible ... -> falling
back to ..."), which llama.cpp reports nowhere else.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
import time

# "[  12/ 310]  blk.0.attn_q.weight  - [ 2048,  2048,     1,     1], type =    f16, <what happened>"
TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[([^\]]*)\], type =\s*(\w+),(.*)$")
DRY_RUN_TARGET = re.compile(r"->\s*[\d.]+ MiB \((\w+)\)")
CONVERTING_TO = re.compile(r"converting to (\w+)")
FALLBACK_LINE = re.compile(r"warning:\s+(\S+)\s+- ncols.*falling back to\s+(\w+)")
FALLBACK_SUMMARY = re.compile(r"(\d+) of \d+ tensor\(s\) required fallback")


def file_types(llama_cpp) -> dict[str, int]:
    """llama.cpp's file types by name (Q4_K_M, Q8_0, F16, F32, ...), from this build's own constants."""
    types = {}
    for attr in dir(llama_cpp):
        for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
            if attr.startswith(prefix):
                types[attr[len(prefix):]] = int(getattr(llama_cpp, attr))
    return types


class LogParser:
    """Collects llama.cpp log fragments into lines, echoes them to stderr and keeps what the parent needs."""

    def __init__(self) -> None:
        self.pending = ""
        self.tensors: list[dict] = []
        self.fallback: list[str] = []
        self.fallback_count: int | None = None
        self.errors: list[str] = []

    def feed(self, level: int, text: str) -> None:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.line(level, line)

    def line(self, level: int, line: str) -> None:
        sys.stderr.write(line + "\n")
        if level == 4:  # GGML_LOG_LEVEL_ERROR
            self.errors.append(line.strip())
        if m := FALLBACK_LINE.search(line):
            self.fallback.append(m.group(1))
        if m := FALLBACK_SUMMARY.search(line):
            self.fallback_count = int(m.group(1))
        if m := TENSOR_LINE.match(line.strip()):
            name, shape, src_type, rest = m.groups()
            target = DRY_RUN_TARGET.search(rest) or CONVERTING_TO.search(rest)
            self.tensors.append({
                "name": name,
                "shape": [int(d) for d in shape.split(",")],
                "src_type": src_type,
                "type": target.group(1) if target else src_type,
            })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src")
    parser.add_argument("--out")
    parser.add_argument("--type")
    parser.add_argument("--nthread", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--allow-requantize", action="store_true")
    parser.add_argument("--list-types", action="store_true")
    args = parser.parse_args(argv)

    import llama_cpp

    types = file_types(llama_cpp)
    if args.list_types:
        print(json.dumps({"ok": True, "types": types}))
        return 0
    name = args.type.upper()
    if name not in types:
        print(json.dumps({"ok": False, "error": f"unknown file type {args.type!r}", "types": sorted(types)}))
        return 2

    log = LogParser()

    @llama_cpp.llama_log_callback
    def on_log(level, text, _user_data):  # kept referenced until the end of main
        log.feed(level, text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[name]
    params.nthread = args.nthread
    params.allow_requantize = args.allow_requantize
    params.dry_run = args.dry_run
    started = time.monotonic()
    try:
        rc = llama_cpp.llama_model_quantize(args.src.encode(), (args.out or "").encode(), ctypes.byref(params))
    except Exception as exc:  # llama_cpp raises for some failures instead of returning non-zero
        log.errors.append(str(exc))
        rc = -1
    log.feed(0, "\n")
    result = {
        "ok": rc == 0,
        "ftype": types[name],
        "seconds": round(time.monotonic() - started, 3),
        "tensors": log.tensors,
        "fallback": log.fallback,
        "fallback_count": log.fallback_count if log.fallback_count is not None else len(log.fallback),
    }
    if rc != 0:
        result["error"] = "; ".join(log.errors[-3:]) or f"llama_model_quantize returned {rc}"
    print(json.dumps(result), flush=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
