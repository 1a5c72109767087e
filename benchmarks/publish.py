"""How long `vramwatch publish` takes, and how big the site is, on 3 years x 100 configs (about 110k result rows):
a full build into an empty folder, the same site published again with nothing new, and one new night on top.
Prints the figures; asserts nothing (speed is measured here, not tested).

Targets (issue 28): the full build under 60 s, one new night under 5 s, the whole site under 200 MB.

The history is the one benchmarks/bench_reads.py reads (tests/support/years.py, stored night by night through
Warehouse.store_run) in a SQLite file; --warehouse FILE reuses one filled before (it is copied first: the new night is
stored into the copy). Each figure is wall time and this process's CPU time beside it: on a shared machine the wall
clock also counts other processes' turns, so the load average is printed too.
Run: PYTHONPATH=include .venv/bin/python benchmarks/publish.py [--nights N] [--warehouse FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

import numpy as np  # noqa: E402
from support.years import Years, fill, store_night  # noqa: E402  (the history generator, shared with the tests)

from vramwatch.report.site import PublishResult, publish  # noqa: E402
from vramwatch.warehouse.store import Warehouse  # noqa: E402

FULL_S, NIGHT_S, SITE_MB = 60.0, 5.0, 200.0


def timed(label: str, call: Callable[[], PublishResult], target_s: float | None) -> PublishResult:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    verdict = "" if target_s is None else f" -> {'met' if wall <= target_s else 'MISSED'} (target {target_s:g} s)"
    print(f"{label}: {wall:.1f} s wall / {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.1f}{verdict}")
    print(f"  {result.line()}", flush=True)
    return result


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=Years().nights, help="nights of history (default 3 years)")
    parser.add_argument("--warehouse", type=Path, help="a SQLite file filled with that history before (copied)")
    args = parser.parse_args()
    years = Years(nights=args.nights)
    print(f"publish: {years.nights} nights x {years.configs} configs ({years.rows:,} results), "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "warehouse.db"
        if args.warehouse:
            shutil.copy(args.warehouse, database)
        warehouse = Warehouse(f"sqlite:///{database}")
        if not args.warehouse:
            start = time.perf_counter()
            fill(warehouse, years, lambda n: print(f"  {n}/{years.nights} nights stored", flush=True))
            print(f"history stored in {time.perf_counter() - start:.0f} s", flush=True)
        site = Path(tmp) / "site"
        full = timed("full build", lambda: publish(warehouse, site), FULL_S)
        timed("published again, nothing new", lambda: publish(warehouse, site), None)
        store_night(warehouse, years, years.nights, np.random.default_rng(1))
        night = timed("one new night on top", lambda: publish(warehouse, site), NIGHT_S)
        size = folder_mb(site)
        print(f"site size: {size:.1f} MB on disk in {night.files} files "
              f"-> {'met' if size <= SITE_MB else 'MISSED'} (target {SITE_MB:g} MB)")
        warehouse.close()
        print(f"the full build wrote {full.written} files; the new night wrote {night.written}, kept {night.kept} "
              f"unread and found {night.unchanged} made again unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
