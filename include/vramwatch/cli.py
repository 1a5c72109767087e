"""`vramwatch`: the same library calls as the nightly DAG, one subcommand per stage.

Each stage package contributes its subcommands through `register(subparsers)`; errors a user can fix print as one
line plus the fix (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vramwatch.errors import UserError

# Stage packages that contribute subcommands, in the order the pipeline runs them.
STAGES = ("builds", "models", "bench", "regress", "report")


def _nightly(args: argparse.Namespace) -> int:
    """Run the whole night in this process, without Airflow (what the DAG does, task by task)."""
    from datetime import datetime, timezone

    from vramwatch import pipeline
    from vramwatch.config import load_matrix

    matrix = load_matrix(args.matrix)
    check = pipeline.detect_build(matrix, force=args.force)
    if not check.should_run:
        print("no new build: nothing to do (use --force to run anyway)")
        return 0
    night = datetime.now(timezone.utc).date().isoformat()
    run_id = args.run_id or f"cli__{datetime.now(timezone.utc).isoformat(timespec='seconds')}"
    build = pipeline.build_engine(matrix, check.latest)
    results = [pipeline.bench(config, build) for config in pipeline.prepare_models(matrix, build)]
    validated = pipeline.validate(results, night)
    pipeline.store(run_id, night, build, validated, trigger="cli")
    summary = pipeline.report(run_id, pipeline.detect_regressions(run_id, build))
    pipeline.alert(summary)
    print(f"night {night}: {summary.n_results} results, {summary.n_quarantined} quarantined, "
          f"{sum(i.is_new for i in summary.incidents)} new incident(s) -> {summary.report_md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vramwatch",
        description="Nightly VRAM and speed benchmark of llama.cpp builds: baseline vs MoE expert offload.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    nightly = subparsers.add_parser("nightly", help="run the whole nightly pipeline here, without Airflow")
    nightly.add_argument("--matrix", default="demo", help="shipped matrix name (demo, seed) or a YAML path")
    nightly.add_argument("--force", action="store_true", help="run even when no new build appeared")
    nightly.add_argument("--run-id", help="run id to store under (default: cli__<timestamp>)")
    nightly.set_defaults(func=_nightly)
    for stage in STAGES:
        importlib.import_module(f"vramwatch.{stage}.cli").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
