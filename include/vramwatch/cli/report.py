"""`vramwatch report`: write a night's reports again from the warehouse."""

from __future__ import annotations

import argparse

from vramwatch import pipeline
from vramwatch.cli.common import add_matrix, add_run_selection
from vramwatch.config import Prices, load_matrix


def _report(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix)
    summary = pipeline.report_again(run_id=args.run, night=args.night, matrix=matrix)
    print(f"report for {summary.night} (run {summary.run_id}): {summary.report_md} and {summary.report_html}")
    if matrix.prices == Prices():
        print(f"matrix {args.matrix} has no prices: the report has no cost sections (pass --matrix with a `prices:` "
              "section, README: \"Energy and cost per token\")")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="regenerate reports/<night>/summary.{md,html} from the warehouse")
    add_run_selection(parser)
    add_matrix(parser, "the matrix whose prices price the night (and whose policy judges a run stored without "
                       "verdicts)")
    parser.set_defaults(func=_report)
