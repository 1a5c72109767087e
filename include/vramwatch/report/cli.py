"""`vramwatch report`: regenerate a night's reports from the warehouse."""

from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from vramwatch.config import Paths
    from vramwatch.errors import UserError
    from vramwatch.report.write import report_for_run
    from vramwatch.warehouse import Warehouse

    warehouse = Warehouse()
    runs = [r for r in warehouse.runs() if r.n_results]  # newest first
    if args.night:
        runs = [r for r in runs if r.night == args.night]
    elif args.run:
        runs = [r for r in runs if r.run_id == args.run]
    if not runs:
        wanted = f"night {args.night}" if args.night else f"run {args.run}" if args.run else "any run"
        raise UserError(f"the warehouse holds no results for {wanted}", "run the nightly first, or pick another run")
    run = runs[0]
    environments = {r.fingerprint.environment_id for r in warehouse.results_for_run(run.run_id)}
    incidents = [i for env in sorted(environments) for i in warehouse.incidents(env)
                 if not i.is_closed or i.opened_night == run.night]
    summary = report_for_run(warehouse, run.run_id, incidents, Paths().reports)
    print(f"report for {run.night} (run {run.run_id}): {summary.report_md} and {summary.report_html}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="regenerate reports/<night>/summary.{md,html} from the warehouse")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="the run to report (default: the latest with results)")
    which.add_argument("--night", metavar="DATE", help="the night to report, YYYY-MM-DD (its latest run)")
    parser.set_defaults(func=_report)
