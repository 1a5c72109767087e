"""`vramwatch publish --out DIR`: the static site of the warehouse, as the nightly's publish task writes it."""

from __future__ import annotations

import argparse

from vramwatch import pipeline
from vramwatch.cli.common import add_warehouse


def _publish(args: argparse.Namespace) -> int:
    from vramwatch.warehouse.store import Warehouse

    result = pipeline.publish(args.out, Warehouse(args.warehouse))
    print(result.line())
    print(f"open {result.out}/index.html, or serve the folder: python -m http.server -d {result.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish", help="write the static site of every night (HTML, CSS, inline SVG; downloads) to a folder",
        description="Write the static site of the warehouse, or bring it up to date: only pages a new night changes "
                    "are written. It reads from file://, any static host and the Airflow plugin's /vramwatch/site/.")
    parser.add_argument("--out", metavar="DIR",
                        help=f"the site's folder (default: {pipeline.site_folder()}, where the nightly writes it)")
    add_warehouse(parser)
    parser.set_defaults(func=_publish)
