"""Arguments several commands share, declared once: the matrix, the run to look at, the engine, counts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vramwatch.config import Paths
from vramwatch.errors import UserError
from vramwatch.records import BuildRecord

ENGINE_ENV = "VRAMWATCH_ENGINE_PYTHON"


def add_matrix(parser: argparse.ArgumentParser, what: str = "the matrix to use") -> None:
    parser.add_argument("--matrix", default="demo",
                        help=f"{what}: a shipped matrix name (demo, seed) or a YAML path (default: demo)")


def add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these models of the matrix (default: all)")


def add_run_selection(parser: argparse.ArgumentParser) -> None:
    """--run RUN_ID or --night DATE; neither means the latest run that stored results."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN_ID", help="the run (default: the latest with results)")
    which.add_argument("--night", metavar="DATE", help="the night, YYYY-MM-DD (its latest run with results)")


def add_engine(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python", default=os.environ.get(ENGINE_ENV), metavar="PATH",
                        help=f"the engine venv's python, which has llama_cpp (default: ${ENGINE_ENV}, "
                             "else the newest build on this machine)")


def at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, at least 1")
    return int(text)


def engine(args: argparse.Namespace) -> BuildRecord:
    """The engine a command runs in: --python (or $VRAMWATCH_ENGINE_PYTHON), else the newest build here."""
    from vramwatch.builds.engine import engine_for

    if args.python and not Path(args.python).exists():
        raise UserError(f"--python {args.python} does not exist", "pass the engine venv's bin/python")
    return engine_for(args.python, Paths())
