"""`vramwatch builds check|build|bundle|list`: detect, build and bundle llama.cpp engines."""

from __future__ import annotations

import argparse
from pathlib import Path

from vramwatch import pipeline
from vramwatch.cli.common import add_matrix
from vramwatch.config import BuildSource, Paths, load_matrix


def _source(args: argparse.Namespace) -> BuildSource:
    """The matrix's build source, with command-line overrides."""
    source = load_matrix(args.matrix).build
    backend = getattr(args, "backend", None)
    return source.model_copy(update={"backend": backend}) if backend else source


def _check(args: argparse.Namespace) -> int:
    from vramwatch.builds.detect import check_for_new_build

    if args.last is None:
        check = pipeline.detect_build(load_matrix(args.matrix), force=args.force)
    else:
        check = check_for_new_build(_source(args), args.last or None, force=args.force)
    commit = f" (commit {check.commit})" if check.commit else ""
    verdict = "new" if check.is_new else "not new"
    print(f"latest {check.latest}{commit}; last benchmarked {check.last_benchmarked or 'none'}: {verdict}"
          + ("; forced" if check.forced else ""))
    return 0


def _build(args: argparse.Namespace) -> int:
    from vramwatch.builds.engine import build_engine

    source = _source(args)
    record = build_engine(source, args.version or source.version, Paths())
    if not record.ok:
        print(f"build {record.request.key} failed: {record.error}")
        return 1
    print(f"{record.status} {record.request.key}: {record.python}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from vramwatch.builds.bundle import make_bundle

    version = args.version or load_matrix(args.matrix).build.version
    print(make_bundle(version, Path(args.out), Paths(), python_version=args.python))
    return 0


def _list(args: argparse.Namespace) -> int:
    from vramwatch.builds.engine import list_builds

    records = list_builds(Paths())
    for r in records:
        print(f"{r.request.key:28} {r.status:7} {r.request.source:5} {r.llama_cpp_python_version:8} "
              f"llama.cpp {r.llama_cpp_commit[:12]:12} {r.built_at}  {r.python or r.error}")
    if not records:
        print(f"no builds under {Paths().builds}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    builds = subparsers.add_parser("builds", help="detect, build and bundle llama.cpp engines")
    commands = builds.add_subparsers(dest="builds_command", metavar="ACTION", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        add_matrix(parser, "the matrix whose build section to use")
        parser.set_defaults(func=func)
        return parser

    check = add("check", _check, "is there a build newer than the last one benchmarked?")
    check.add_argument("--last", help="compare with this version instead of the warehouse's last benchmarked "
                                      "('' = none)")
    check.add_argument("--force", action="store_true", help="report a forced run even if nothing is new")

    build = add("build", _build, "build (or reuse) the engine venv for a version")
    build.add_argument("--backend", choices=["cpu", "cuda"], help="override the matrix's backend (default: auto)")
    build.add_argument("--version", help="version or tag to build (default: the matrix's build.version)")

    bundle = add("bundle", _bundle, "write a slim source bundle for workers without network")
    bundle.add_argument("--out", required=True, help="directory to write the bundle into")
    bundle.add_argument("--version", help="llama-cpp-python version (default: the matrix's build.version)")
    bundle.add_argument("--python", help="the worker's Python version for binary wheels, e.g. 3.11 (default: this)")

    add("list", _list, "list the engines built on this machine")
