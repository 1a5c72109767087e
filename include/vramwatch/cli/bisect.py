"""`vramwatch bisect`: the release or llama.cpp commit between a good and a bad build that changed one config."""

from __future__ import annotations

import argparse
from pathlib import Path

from vramwatch.cli.common import add_matrix, add_record_flags, record_fields
from vramwatch.records import BisectRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bisect", help="find the release or llama.cpp commit that changed a config's VRAM or speed",
        description="Build each release (or llama.cpp commit) between --good and --bad, bench the one config on the "
                    "good build's model file, and bisect to the first that shows the bad build's figure. Exits 0 "
                    "when it names a culprit, 1 when it stopped (the result says where and why). The flags are a "
                    "bisection request's fields, as the llamacpp_bisect DAG's params are.",
    )
    add_record_flags(parser, BisectRequest)
    add_matrix(parser, "the matrix whose build source and config to use")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the result as JSON to FILE")
    parser.set_defaults(func=bisect_command)


def bisect_command(args: argparse.Namespace) -> int:
    from vramwatch.bisect.run import run_bisect, write_result
    from vramwatch.config import load_matrix

    result = run_bisect(load_matrix(args.matrix), BisectRequest(**record_fields(args, BisectRequest)))
    if args.out:
        write_result(result, args.out)
    print(result.headline())
    for step in result.steps:
        figure = "no figure" if step.figure is None else f"{step.figure:g}"
        print(f"  {step.role:9} {step.ref}  {figure:>10}  {step.verdict:7}  build {step.build_s:.0f} s, "
              f"bench {step.bench_s:.0f} s" + (f"  ({step.reason})" if step.reason else ""))
    if result.culprit:
        print(f"culprit: {result.culprit.ref} {result.culprit.date} {result.culprit.link}")
    return 0 if result.finished else 1
