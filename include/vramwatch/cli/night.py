"""`vramwatch nightly|measure|ingest|prune`: a whole night, or its GPU and CPU halves, and the disk after it."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from vramwatch import pipeline
from vramwatch.cli.common import add_matrix, add_models, at_least_one
from vramwatch.config import Paths, load_matrix
from vramwatch.errors import UserError
from vramwatch.records import MeasuredNight


def _night_ids(run_id: str | None) -> tuple[str, str]:
    """Tonight's date and the run id: the one asked for, else the time plus a random part, so two runs started in the
    same second never share an id (and one never replaces the other's rows)."""
    now = datetime.now(timezone.utc)
    return now.date().isoformat(), run_id or f"cli__{now.isoformat(timespec='seconds')}__{secrets.token_hex(4)}"


def _write_measured(measured: MeasuredNight, path: Path) -> Path:
    """Temp file plus rename: the measured night a later ingest reads is whole or absent, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False) as partial:
        partial.write(measured.to_json(indent=1))
    os.replace(partial.name, path)
    return path


def _keep_measured(measured: MeasuredNight, run_id: str) -> Path:
    """Write the measured night under data/measured/ before anything can fail to store it."""
    name = re.sub(r"[^\w.-]", "_", run_id) + ".json"  # a run id may hold "/" or ":"
    return _write_measured(measured, Paths().data / "measured" / name)


def _nightly(args: argparse.Namespace) -> int:
    """Run the whole night in this process, without Airflow (what the DAG does, task by task)."""
    matrix = load_matrix(args.matrix)
    check = pipeline.detect_build(matrix, force=args.force)
    if not check.should_run:
        print("no new build: nothing to do (use --force to run anyway)")
        return 0
    night, run_id = _night_ids(args.run_id)
    measured = pipeline.measure(matrix, check.latest, models=args.models)
    kept = _keep_measured(measured, run_id)
    try:
        summary = pipeline.ingest(measured, run_id, night, trigger="cli", policy=matrix.policy, prices=matrix.prices)
    except UserError as exc:
        finish = f"vramwatch ingest {kept} --run-id {run_id} --night {night} --matrix {args.matrix}"
        raise UserError(f"{exc.message}; the measured night is kept in {kept}",
                        f"{exc.fix + ', then ' if exc.fix else ''}finish the night with `{finish}`") from None
    pipeline.prune(matrix)
    pipeline.prune_reports(matrix)
    print(pipeline.one_line(summary))
    return 0


def _measure(args: argparse.Namespace) -> int:
    """The GPU worker's half of a night: build, prepare models, bench; results to a JSON file."""
    matrix = load_matrix(args.matrix)
    version = args.version or pipeline.detect_build(matrix, force=True).latest
    measured = pipeline.measure(matrix, version, models=args.models)
    _write_measured(measured, args.out)
    ok = sum(r.ok for r in measured.results)
    print(f"measured {len(measured.results)} configs ({ok} ok) on {measured.build.request.backend} "
          f"in {sum(measured.stage_seconds.values()):.0f} s -> {args.out}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """The CPU half of a night: validate, store, detect regressions, report and alert a measured night."""
    if not args.measured.is_file():
        raise UserError(f"no such file: {args.measured}", "pass the JSON written by `vramwatch measure --out`")
    night, run_id = _night_ids(args.run_id)
    matrix = load_matrix(args.matrix)
    summary = pipeline.ingest(MeasuredNight.from_json(args.measured.read_text()), run_id, args.night or night,
                              trigger="ingest", policy=matrix.policy, move_night=args.move_night,
                              prices=matrix.prices)
    print(pipeline.one_line(summary))
    return 0


def _prune(args: argparse.Namespace) -> int:
    """Free this disk of what old builds left (engines, wheels, source trees, quantized models) and of old nights'
    GX Data Docs."""
    matrix = load_matrix(args.matrix)
    overrides = {"keep_builds": args.keep, "keep_data_docs": args.keep_data_docs}
    matrix = matrix.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    print(f"builds: {pipeline.prune(matrix, dry_run=args.dry_run).summary()}")
    print(f"data docs: {pipeline.prune_reports(matrix, dry_run=args.dry_run).summary()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    nightly = subparsers.add_parser("nightly", help="run the whole nightly pipeline here, without Airflow")
    add_matrix(nightly)
    nightly.add_argument("--force", action="store_true", help="run even when no new build appeared")
    nightly.add_argument("--run-id", help="run id to store under (default: cli__<timestamp>__<random>)")
    add_models(nightly)
    nightly.set_defaults(func=_nightly)

    measure = subparsers.add_parser("measure", help="build, prepare models and bench a matrix; write the results")
    add_matrix(measure)
    measure.add_argument("--version", help="build this version (default: the newest the matrix's source has)")
    add_models(measure)
    measure.add_argument("--out", type=Path, required=True, help="JSON file for the measured night")
    measure.set_defaults(func=_measure)

    ingest = subparsers.add_parser("ingest", help="validate, store, detect regressions, report a measured night")
    ingest.add_argument("measured", type=Path, help="JSON written by `vramwatch measure`")
    ingest.add_argument("--night", help="the night's date, YYYY-MM-DD (default: today, UTC)")
    ingest.add_argument("--run-id", help="run id to store under (default: cli__<timestamp>__<random>); a night "
                                         "stored before keeps the run it has")
    ingest.add_argument("--move-night", action="store_true",
                        help="a measured night stored before under another night: move it to --night (its report "
                             "leaves the old night's folder); without it, that is refused")
    add_matrix(ingest, "the matrix whose policy judges the night and whose prices price it")
    ingest.set_defaults(func=_ingest)

    prune = subparsers.add_parser("prune", help="remove what builds used before the last N left on this disk, "
                                                "and GX Data Docs of all but the newest nights")
    add_matrix(prune, "the matrix whose keep_* settings apply")
    prune.add_argument("--keep", type=at_least_one,
                       help="keep the N finished builds used last (default: the matrix's keep_builds)")
    prune.add_argument("--keep-data-docs", type=at_least_one, metavar="N",
                       help="keep the N newest nights' Data Docs (default: the matrix's keep_data_docs)")
    prune.add_argument("--dry-run", action="store_true", help="only list what would go and how much it frees")
    prune.set_defaults(func=_prune)
