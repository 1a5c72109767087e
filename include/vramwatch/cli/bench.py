"""`vramwatch bench MODEL.gguf`: one config through the same parent/child as the nightly, printed like llama-bench."""

from __future__ import annotations

import argparse
import sys

from vramwatch.cli.common import add_engine, add_record_flags, engine, record_fields
from vramwatch.errors import UserError
from vramwatch.records import MODES, BenchConfig, BenchKnobs, BenchResult

# The knob flags (one per records.BenchKnobs field, named as the matrix names it) that had other names before.
RENAMED = {"n_threads": ("--threads",), "type_k": ("--cache-type-k",), "type_v": ("--cache-type-v",),
           "timeout_s": ("--timeout",), "host_memory_limit_mib": ("--host-memory-limit",)}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="bench one GGUF in one mode (llama-bench style pp/tg, VRAM, placement proof)",
        description="Bench one model file in one mode in a child process of the engine's Python, exactly as the "
                    "nightly does, and print the result. Exits non-zero when the status is not ok.",
    )
    parser.add_argument("model", metavar="MODEL.gguf", help="the GGUF file to bench")
    parser.add_argument("--mode", choices=MODES, default="baseline",
                        help="baseline: all layers on the GPU; offload: every MoE expert tensor in CPU memory "
                             "(--cpu-moe); partial: experts of the first N layers in CPU memory (--n-cpu-moe N)")
    parser.add_argument("--n-cpu-moe", type=int, default=0, metavar="N", help="partial mode: layers 0..N-1 (N >= 1)")
    add_record_flags(parser, BenchKnobs, aliases=RENAMED)
    parser.add_argument("--no-mmap", dest="use_mmap", action="store_false", help=argparse.SUPPRESS)  # --no-use-mmap
    add_engine(parser)
    parser.add_argument("--llama-log", metavar="FILE", help="write llama.cpp's whole log (all levels) to FILE")
    parser.add_argument("--json", action="store_true", help="print the BenchResult record as one JSON line")
    parser.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from vramwatch.bench.runner import run_config
    from vramwatch.models.inspect import model_file

    config = BenchConfig(model=model_file(args.model), mode=args.mode, n_cpu_moe=args.n_cpu_moe,
                         **record_fields(args, BenchKnobs))
    problems = config.problems()
    if problems:
        raise UserError("; ".join(problems), "fix those options (--n-prompt, --n-ctx, --mode, ...) and run again")
    result = run_config(config, engine(args), llama_log_path=args.llama_log)
    print(result.to_json() if args.json else format_result(result))
    if not result.ok:
        print(f"error: {result.status}: {result.error}", file=sys.stderr)
        return 1
    return 0


def format_result(result: BenchResult) -> str:
    """A llama-bench-like table plus the memory, placement and roofline lines."""
    config, model = result.config, result.config.model
    header = ["model", "quant", "mode", "size", "backend", "threads", "fa", "test", "t/s"]
    size = f"{model.file_bytes / 2**30:.2f} GiB" if model.file_bytes else "?"
    common = [model.model, model.quant, config.mode_label, size, result.fingerprint.backend or "?",
              str(result.n_threads), result.flash_attn or config.flash_attn]
    rows = []
    for name, test in (("pp", result.pp), ("tg", result.tg)):
        if test:
            count = test.n_prompt if name == "pp" else test.n_gen
            rows.append(common + [f"{name}{count}", f"{test.avg_ts:.2f} ± {test.stddev_ts:.2f}"])
    if not rows:
        rows.append(common + ["-", result.status])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    memory, roof = result.memory, result.roofline
    lines.append("")
    lines.append(f"status: {result.status}" + (f" ({result.error})" if result.error else ""))
    if result.ok:
        vram = f"{memory.vram_gib:.3f} GiB" if memory.vram_gib is not None else "n/a (no GPU)"
        lines.append(f"VRAM (model + KV + compute on GPU): {vram}")
        lines.append("buffers: " + ", ".join(f"{k} {v:.2f} MiB" for k, v in sorted(memory.buffers_mib.items())))
        lines.append(f"tensors placed in CPU memory by override: {result.n_overridden_tensors}")
        if memory.nvml_process_mib is not None or memory.cuda_context_mib is not None:
            lines.append(f"NVML: process {memory.nvml_process_mib} MiB, peak device {memory.nvml_peak_device_mib} "
                         f"MiB, CUDA context {memory.cuda_context_mib} MiB, total {memory.gpu_total_mib} MiB")
        lines.append(f"host RSS peak: {memory.host_rss_peak_mib:.0f} MiB, load {result.load_s:.2f} s")
        if result.generation:
            gen = result.generation
            lines.append(f"generation: {gen.tokens} tokens at {gen.tokens_per_s:.2f} t/s "
                         f"(sha256 {gen.text_sha256[:12]})")
        if roof.bound_tg_ts:
            lines.append(f"roofline: {roof.active_bytes_per_token / 1e6:.1f} MB/token, bound {roof.bound_tg_ts:.1f} "
                         f"t/s, tg reached {100 * (roof.fraction_of_bound or 0):.1f}%")
    return "\n".join(lines)

