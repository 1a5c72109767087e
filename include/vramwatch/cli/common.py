"""Arguments several commands share, declared once: the matrix, the run to look at, the engine, counts."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

from vramwatch.config import Paths
from vramwatch.errors import UserError
from vramwatch.records import BuildRecord, Record

ENGINE_ENV = "VRAMWATCH_ENGINE_PYTHON"


def add_matrix(parser: argparse.ArgumentParser, what: str = "the matrix to use") -> None:
    parser.add_argument("--matrix", default="demo",
                        help=f"{what}: a shipped matrix name (demo, seed) or a YAML path (default: demo)")


def add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these models of the matrix (default: all)")


def add_warehouse(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", metavar="URL", default=None,
                        help="the warehouse's SQLAlchemy URL (default: $VRAMWATCH_WAREHOUSE_URL, the Airflow "
                             "connection, or SQLite under data/)")


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


def add_record_flags(parser: argparse.ArgumentParser, record: type, aliases: dict[str, tuple[str, ...]] | None = None
                     ) -> None:
    """One flag per field of a request record (records.BenchKnobs, records.BisectRequest), named as the field is
    (n_prompt: --n-prompt), with the field's default, type, choices and help (records.about). A field without a
    default is a required flag; a bool, or an optional record (the generation test), is --NAME / --no-NAME.
    `aliases`: older spellings a field's flag still answers to."""
    hints = typing.get_type_hints(record)
    for field in dataclasses.fields(record):
        about = field.metadata
        if not about.get("cli", True):
            continue
        flags = [f"--{field.name.replace('_', '-')}", *(aliases or {}).get(field.name, ())]
        hint, default = hints[field.name], _default(field)
        options: dict[str, Any] = {"dest": field.name, "help": about.get("help", "")}
        if hint is bool or _optional_record(hint):
            options["help"] += f" (default {'on' if default else 'off'})"
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=bool(default), **options)
            continue
        choices = about.get("choices") or (typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ())
        if choices:
            options["choices"] = choices
        if about.get("metavar"):
            options["metavar"] = about["metavar"]
            if choices:  # the metavar hides them from --help
                options["help"] += f", one of {', '.join(choices)}"
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = default
            if default not in (None, ""):
                options["help"] += " (default %(default)s)"
        parser.add_argument(*flags, type=_value_type(hint), **options)


def record_fields(args: argparse.Namespace, record: type) -> dict[str, Any]:
    """The values of add_record_flags' flags, as the record's fields take them (an optional record switched on: its
    default)."""
    hints = typing.get_type_hints(record)
    values = {}
    for field in dataclasses.fields(record):
        if hasattr(args, field.name) and field.metadata.get("cli", True):
            value = getattr(args, field.name)
            values[field.name] = (_default(field) if value else None) if _optional_record(hints[field.name]) else value
    return values


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _optional_record(hint: Any) -> bool:
    return any(isinstance(a, type) and issubclass(a, Record) for a in typing.get_args(hint))


def _value_type(hint: Any) -> Any:
    """What argparse converts a flag's text with: the field's type, or the one an optional field holds."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return str if typing.get_origin(hint) is typing.Literal else hint
