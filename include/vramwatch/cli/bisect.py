"""`vramwatch bisect`: the release or llama.cpp commit between a good and a bad build that changed one config."""

from __future__ import annotations

import argparse
from pathlib import Path

from vramwatch.cli.common import add_matrix
from vramwatch.records import BISECT_LEVELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bisect", help="find the release or llama.cpp commit that changed a config's VRAM or speed",
        description="Build each release (or llama.cpp commit) between --good and --bad, bench the one config on the "
                    "good build's model file, and bisect to the first that shows the bad build's figure. Exits 0 "
                    "when it names a culprit, 1 when it stopped (the result says where and why).",
    )
    parser.add_argument("--config", required=True, metavar="ID",
                        help="the config: model/quant/mode@hash as the report and incidents name it (the hash may be "
                             "left out)")
    parser.add_argument("--good", required=True, metavar="REF",
                        help="a build without the change: a release version, or (--level commit) a llama.cpp commit")
    parser.add_argument("--bad", required=True, metavar="REF", help="a build with the change, like --good")
    parser.add_argument("--level", choices=BISECT_LEVELS, default="release",
                        help="release: llama-cpp-python versions of the matrix's source; commit: llama.cpp commits "
                             "(release versions given as ends stand for the commits they vendor) (default %(default)s)")
    parser.add_argument("--metric", default="gpu_compute_mib",
                        help="what changed: a llama.cpp buffer DEVICE/KIND (CUDA0/compute, CPU/compute), a memory "
                             "component (gpu_compute_mib), or pp / tg for throughput (same-night A/B per step) "
                             "(default %(default)s)")
    parser.add_argument("--repository", default="", metavar="URL_OR_PATH",
                        help="--level commit: the llama.cpp repository, a URL or a local mirror (default: the matrix's "
                             "git location, else upstream)")
    parser.add_argument("--bad-figure", type=float, metavar="MIB",
                        help="the bad build's figure when known (a VRAM incident's, same GPU model): the bad build is "
                             "then not built or measured; the good one always is")
    add_matrix(parser, "the matrix whose build source and config to use")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the result as JSON to FILE")
    parser.set_defaults(func=bisect_command)


def bisect_command(args: argparse.Namespace) -> int:
    from vramwatch.bisect.run import run_bisect, write_result
    from vramwatch.config import load_matrix

    result = run_bisect(load_matrix(args.matrix), args.config, args.good, args.bad, level=args.level,
                        metric=args.metric, repository=args.repository, bad_figure=args.bad_figure)
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
