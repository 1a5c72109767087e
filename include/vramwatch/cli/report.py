"""`vramwatch report`: write a night's reports again from the warehouse."""

from __future__ import annotations

import argparse

from vramwatch import pipeline
from vramwatch.cli.common import add_run_selection


def _report(args: argparse.Namespace) -> int:
    summary = pipeline.report_again(run_id=args.run, night=args.night)
    print(f"report for {summary.night} (run {summary.run_id}): {summary.report_md} and {summary.report_html}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="regenerate reports/<night>/summary.{md,html} from the warehouse")
    add_run_selection(parser)
    parser.set_defaults(func=_report)
