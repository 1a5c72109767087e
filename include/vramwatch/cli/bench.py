"""`vramwatch bench MODEL.gguf`: one config through the same parent/child as the nightly, printed like llama-bench."""

from __future__ import annotations

import argparse
import sys

from vramwatch.cli.common import add_engine, add_record_flags, engine, record_fields
from vramwatch.errors import UserError
from vramwatch.records import MODES, BenchConfig, BenchKnobs, BenchResult
from vramwatch.rows import BY_NAME, COMPARED, MISSING, flatten, number

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


# The table's columns, llama-bench's: flat-row fields in their words, then what llama-bench adds (backend, test).
TABLE_FIELDS = ("model", "quant", "mode", "file_bytes", "n_threads", "flash_attn")


def _cells(result: BenchResult, flat: dict) -> list[str]:
    cells = {name: BY_NAME[name].text(flat[name]) for name in TABLE_FIELDS}
    cells["mode"] = result.config.mode_label  # partial with its layer count, as every table names it
    cells["file_bytes"] = cells["file_bytes"] if flat["file_bytes"] else MISSING
    return [*(cells[name] for name in TABLE_FIELDS[:4]), result.fingerprint.backend or MISSING,
            *(cells[name] for name in TABLE_FIELDS[4:])]


def _line(flat: dict, *names: str) -> str:
    """Fields as "words value unit", the measured ones only (a figure not measured is left out, never 0)."""
    return ", ".join(f"{BY_NAME[name].words} {BY_NAME[name].text(flat[name])}" for name in names
                     if number(flat[name]) is not None)


def format_result(result: BenchResult) -> str:
    """A llama-bench-like table plus the memory, placement and roofline lines, each figure in its field's words,
    unit and format (vramwatch.rows)."""
    flat = flatten(result)
    words = [BY_NAME[name].words for name in TABLE_FIELDS]
    header = [*words[:4], "backend", *words[4:], "test", BY_NAME["tg_avg_ts"].unit]
    rows = []
    for test, count in (("pp", "pp_n_prompt"), ("tg", "tg_n_gen")):
        if flat[f"{test}_avg_ts"] is not None:
            speed = f"{BY_NAME[f'{test}_avg_ts'].number(flat[f'{test}_avg_ts'])} ± " \
                    f"{BY_NAME[f'{test}_stddev_ts'].number(flat[f'{test}_stddev_ts'])}"
            rows.append([*_cells(result, flat), f"{test}{flat[count]}", speed])
    if not rows:
        rows.append([*_cells(result, flat), MISSING, result.status])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.append("")
    lines.append(f"status: {result.status}" + (f" ({result.error})" if result.error else ""))
    if result.ok:
        vram = BY_NAME["vram_gib"]
        lines.append(f"{vram.words} (GPU model + KV + compute): "
                     f"{vram.text(flat['vram_gib']) if flat['vram_gib'] is not None else 'n/a (no GPU)'}")
        lines.append(f"{BY_NAME['buffers_mib'].words}: " + ", ".join(
            f"{k} {v:.2f} {BY_NAME['buffers_mib'].unit}" for k, v in sorted(result.memory.buffers_mib.items())))
        # every other figure runs and builds are compared on (the table has the speeds): a new one shows here
        compared = [f.name for f in COMPARED if not f.name.endswith("_avg_ts") and flat[f.name]]
        lines.append(_line(flat, *compared))
        lines.append(_line(flat, "n_overridden_tensors"))
        nvml = _line(flat, "nvml_process_mib", "nvml_peak_device_mib", "cuda_context_mib", "gpu_total_mib")
        lines += [nvml] if nvml else []
        energy = [_line(flat, "pp_power_avg_w", "tg_power_avg_w", "gpu_power_peak_w", "gpu_idle_w", "gpu_power_limit_w",
                        "energy_agreement_pct", "pp_host_j_per_tok", "tg_host_j_per_tok"), flat["energy_note"]]
        lines.append("energy: " + "; ".join(part for part in energy if part))  # with why a figure is absent
        lines.append(_line(flat, "host_rss_peak_mib", "load_s"))
        if result.generation:
            lines.append(f"{_line(flat, 'gen_tokens', 'gen_tokens_per_s')} (sha256 {result.generation.text_sha256[:12]})")
        if result.roofline.bound_tg_ts:
            lines.append("roofline: " + _line(flat, "active_bytes_per_token", "bound_tg_ts", "fraction_of_bound"))
    return "\n".join(lines)
