"""How long storing one night (~100 results) takes, on SQLite and on PostgreSQL. Target: <= 1 s each.

Prints one line per backend: opening the warehouse (schema check) and the store itself (store_run, the one
transaction the nightly's store is; median of 5 stores of the same run, which also exercises the replace-on-rerun
path).
PostgreSQL: a throwaway database on VRAMWATCH_BENCH_POSTGRES (default the local test server), dropped afterwards.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

from backends import on_each_backend  # noqa: E402  (beside this script: SQLite, then PostgreSQL)
from support.samples import night  # noqa: E402  (realistic records, shared with the tests)

from vramwatch.records import BuildRecord, BuildRequest, ValidatedNight  # noqa: E402
from vramwatch.warehouse.store import Warehouse

TARGET_S = 1.0
REPEATS = 5

RESULTS = night(quants=("Q2_K", "Q4_K_M", "Q8_0"), n_cpu_moe_sweep=tuple(range(1, 16)))
BUILD = BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="", source_dir="",
                    llama_cpp_python_version="0.3.36", llama_cpp_commit="0c1e57098", built_at="2026-01-01T00:00:00")


def bench(label: str, url: str) -> float:
    start = time.perf_counter()
    warehouse = Warehouse(url)
    open_s = time.perf_counter() - start
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        warehouse.store_run("bench", "2026-01-02", BUILD, ValidatedNight(accepted=RESULTS, quarantined=[]), "test")
        times.append(time.perf_counter() - start)
    warehouse.close()
    median = statistics.median(times)
    verdict = "ok" if median <= TARGET_S else f"SLOWER than the {TARGET_S:.0f} s target"
    print(f"{label:<10} store {len(RESULTS)} rows: median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}) "
          f"over {REPEATS}; open + schema check {open_s:.3f} s -> {verdict}")
    return median


def main() -> int:
    print(f"bench_store: one night of {len(RESULTS)} results, target <= {TARGET_S:.0f} s", flush=True)
    medians = on_each_backend(lambda url, label: bench(label, url))
    return 0 if all(m <= TARGET_S for m in medians) else 1


if __name__ == "__main__":
    sys.exit(main())
