"""How fast history is read back from a real warehouse of 3 years x 100 configs (about 110k result rows), on SQLite
and on PostgreSQL. Prints the figures; asserts nothing (speed is measured here, not tested).

Targets (issue 17): `vramwatch report` <= 3 s, the regression scan (detect_for_run) <= 2 s, the VRAM history page
(the plugin app's page route, with the build comparison) <= 1 s, and every API response <= 5 MB. /api/history's
pages are timed too: the newest, the deepest by offset and the oldest by cursor (issue 26), beside the oldest by offset.

The history is made once per backend per run, through the Warehouse API (store_run, one night at a time, as the
nightly stores it: tests/support/years.py), into a temporary SQLite file and a throwaway PostgreSQL database
(VRAMWATCH_BENCH_POSTGRES, default the local test server; dropped afterwards). PostgreSQL is ANALYZEd after the
load, as autovacuum would have done by the time a warehouse holds three years. Each figure is the best of REPEATS
warm runs, with the first (cold: imports, caches) beside it, and CPU time next to wall time: on a shared machine the
wall clock also counts other processes' turns.
Run: PYTHONPATH=include .venv/bin/python benchmarks/bench_reads.py [--nights N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

from backends import on_each_backend  # noqa: E402  (beside this script: SQLite, then PostgreSQL)
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from support.years import Years, fill  # noqa: E402  (the history generator, shared with the tests)

from vramwatch.cli.main import main as vramwatch  # noqa: E402
from vramwatch.regress.detect import detect_for_run  # noqa: E402
from vramwatch.ui.app import HISTORY_OFFSET_MAX, HISTORY_PAGE, HISTORY_PAGE_MAX, create_app  # noqa: E402
from vramwatch.warehouse.store import Warehouse  # noqa: E402

REPEATS = 3
REPORT_S, SCAN_S, PAGE_S, RESPONSE_MB = 3.0, 2.0, 1.0, 5.0


def timed(call: Callable[[], object], repeats: int = REPEATS) -> tuple[str, float]:
    """'best wall / CPU (cold wall)' over a cold call and `repeats` warm ones; returns the text and the best wall."""
    walls, cpus = [], []
    for _ in range(repeats + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    best = min(walls[1:])
    return f"best {best:.2f} s wall / {min(cpus[1:]):.2f} s CPU (cold {walls[0]:.2f} s)", best


def as_process(argv: list[str]) -> tuple[str, float]:
    """A vramwatch command as a fresh process, as people run it: Python's start and every import included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from vramwatch.cli.main import main; sys.exit(main(sys.argv[1:]))",
                    *argv], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "include")})
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return f"{wall:.2f} s wall / {cpu:.2f} s CPU", wall


def verdict(seconds: float, target: float) -> str:
    return "met" if seconds <= target else f"MISSED (target {target:g} s)"


def build(url: str, years: Years, label: str) -> None:
    start = time.perf_counter()
    warehouse = Warehouse(url)

    def progress(nights: int) -> None:
        print(f"  {label}: {nights}/{years.nights} nights stored ({time.perf_counter() - start:.0f} s)", flush=True)

    fill(warehouse, years, progress)
    warehouse.close()
    if url.startswith("postgresql"):
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text("ANALYZE"))
    print(f"  {label}: {years.rows:,} result rows ({years.nights} nights x {years.configs} configs) stored through "
          f"Warehouse.store_run in {time.perf_counter() - start:.0f} s", flush=True)


def history_pages(client: TestClient, warehouse: Warehouse, rows: int) -> dict[str, str]:
    """Seconds for /api/history pages of HISTORY_PAGE rows: the newest, the deepest an offset may reach, and the
    oldest by cursor; and the oldest by offset as the API read it before cursors (the same query, through the
    Warehouse: the API now refuses that offset)."""
    oldest = rows - HISTORY_PAGE
    before_oldest = warehouse.history_page(limit=HISTORY_PAGE, offset=oldest - HISTORY_PAGE).next
    assert before_oldest is not None
    asked = {f"/api/history, newest page ({HISTORY_PAGE} rows)": {},
             f"/api/history, page at offset={HISTORY_OFFSET_MAX:,} (the deepest by offset)": {"offset": HISTORY_OFFSET_MAX},
             f"/api/history, oldest page (row {oldest:,}) by cursor": {"after": before_oldest.token()}}
    figures = {name: timed(lambda params=params: client.get(
        "/api/history", params={"limit": HISTORY_PAGE, **params}).raise_for_status())[0]
        for name, params in asked.items()}
    figures[f"oldest page by offset={oldest:,} (as /api/history read it before cursors)"], _ = timed(
        lambda: warehouse.history_page(limit=HISTORY_PAGE, offset=oldest))
    warehouse.close()
    return figures


def measure(url: str, years: Years, label: str) -> bool:
    """Print every figure for one warehouse; True when every target is met."""
    build(url, years, label)
    run_id = years.run_id(years.nights - 1)
    warehouse = Warehouse(url)
    scan, scan_s = timed(lambda: detect_for_run(warehouse, run_id, save=False))
    detect_for_run(warehouse, run_id)  # store the night's verdicts, as the nightly does: the report reads them
    warehouse.close()
    with tempfile.TemporaryDirectory() as reports:
        os.environ.update(VRAMWATCH_WAREHOUSE_URL=url, VRAMWATCH_REPORTS_DIR=reports)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            report, report_s = timed(lambda: vramwatch(["report", "--run", run_id]))  # its lines, once a repeat
        report_process, report_process_s = as_process(["report", "--run", run_id])
        with TestClient(create_app(url, Path(reports))) as client:
            page, page_s = timed(lambda: client.get("/").raise_for_status())
            builds = Warehouse(url).builds_with_results()
            picked = {"a": str(builds["build_id"].iloc[-1]), "b": str(builds["build_id"].iloc[0])}
            compare, compare_s = timed(lambda: client.get("/", params=picked).raise_for_status())
            pages = history_pages(client, Warehouse(url), years.rows)
            sizes = {name: len(client.get(path, params=params).content) / 2**20 for name, path, params in (
                ("page", "/", {}), ("page, first and last build compared", "/", picked),
                (f"/api/history, largest page ({HISTORY_PAGE_MAX} rows)", "/api/history", {"limit": HISTORY_PAGE_MAX}),
                ("/api/incidents, all", "/api/incidents", {"include_resolved": "true"}))}
    print(f"  {label}: regression scan (detect_for_run): {scan} -> {verdict(scan_s, SCAN_S)}")
    print(f"  {label}: `vramwatch report` (in process): {report} -> {verdict(report_s, REPORT_S)}")
    print(f"  {label}: `vramwatch report` as a fresh process (Python's start and imports too): {report_process} -> "
          f"{verdict(report_process_s, REPORT_S)}")
    print(f"  {label}: VRAM history page: {page} -> {verdict(page_s, PAGE_S)}")
    print(f"  {label}: VRAM history page comparing two builds: {compare} -> {verdict(compare_s, PAGE_S)}")
    for name, figure in pages.items():
        print(f"  {label}: {name}: {figure}")
    for name, mb in sizes.items():
        print(f"  {label}: {name}: {mb:.2f} MB -> {'met' if mb <= RESPONSE_MB else 'MISSED'} (<= {RESPONSE_MB:g} MB)")
    return max(scan_s / SCAN_S, report_s / REPORT_S, report_process_s / REPORT_S, page_s / PAGE_S,
               compare_s / PAGE_S) <= 1 and max(
        sizes.values()) <= RESPONSE_MB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=Years().nights, help="nights of history (default 3 years)")
    years = Years(nights=parser.parse_args().nights)
    print(f"bench_reads: {years.nights} nights x {years.configs} configs, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    met = on_each_backend(lambda url, label: measure(url, years, label))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
