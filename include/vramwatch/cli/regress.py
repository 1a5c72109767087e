"""`vramwatch regress`: detect regressions for a stored run and print its incidents; accept an intended change.

Read-only unless --apply: run after the DAG, it must not resolve or open incidents behind the nightly's back."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from vramwatch import pipeline
from vramwatch.cli.common import add_matrix, add_run_selection
from vramwatch.config import load_matrix


def _accept(incident_id: int) -> int:
    from vramwatch.warehouse.store import Warehouse

    accepted = Warehouse().accept_incident(incident_id, datetime.now(timezone.utc).date())
    print(f"#{accepted.incident_id} accepted: {accepted.kind} {accepted.metric} on {', '.join(accepted.configs)}; "
          f"from {accepted.opened_night} on, that level is the reference and pages no more")
    return 0


def _regress(args: argparse.Namespace) -> int:
    from vramwatch.warehouse.store import Warehouse

    if args.accept is not None:
        return _accept(args.accept)
    warehouse = Warehouse()
    run = pipeline.stored_run(warehouse, args.run, args.night)
    tonight = pipeline.detect_regressions(run.run_id, load_matrix(args.matrix).policy, warehouse,
                                          save=args.apply).incidents
    still_open = [i for i in tonight if not i.is_closed]
    for incident in tonight:
        label = "NEW " if incident.is_new else ""
        print(f"#{incident.incident_id or '-'} {label}[{incident.state}] {incident.kind} "
              f"since {incident.opened_night}: {incident.summary}")
    print(f"run {run.run_id}: {len(still_open)} open incident(s), {sum(i.is_new for i in tonight)} new"
          f"{'' if args.apply else ' (nothing stored: --apply stores them)'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("regress", help="detect VRAM/throughput regressions of a run; print incidents")
    add_run_selection(parser)
    add_matrix(parser, "the matrix whose policy judges the run")
    parser.add_argument("--apply", action="store_true",
                        help="store the incidents it finds (default: only print them; the nightly stores its own)")
    parser.add_argument("--accept", type=int, metavar="INCIDENT_ID",
                        help="close an incident whose new level is intended: it becomes the reference")
    parser.set_defaults(func=_regress)
