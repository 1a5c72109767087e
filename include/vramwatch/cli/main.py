"""`vramwatch`: the same library calls as the nightly DAG, one subcommand per stage.

Each command module contributes its subcommands through `register(subparsers)`; errors a user can fix print as one
line plus the fix (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from vramwatch.cli import bench, bisect, builds, models, night, publish, regress, report
from vramwatch.errors import UserError
from vramwatch.progress import to_stderr

# In the order a night runs them: the whole night and its halves first, then each stage.
COMMANDS = (night, builds, models, bench, regress, report, bisect, publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vramwatch",
        description="Nightly VRAM and speed benchmark of llama.cpp builds: baseline vs MoE expert offload.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to_stderr()  # progress on the terminal: Airflow's task log is the one place it goes elsewhere
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
