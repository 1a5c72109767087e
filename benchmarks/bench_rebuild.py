"""How long a git-source engine build takes cold, and after a nearby llama.cpp commit (the bisection's case).

A local llama.cpp repository is made from the vendored tree of llama-cpp-python GIT_BINDINGS_VERSION, with two
planted commits: b2 changes one .cpp file of libllama, b3 adds a declaration to llama.h (every file that includes it
recompiles; no struct changes, so the ABI guard passes). Each is built with build_engine, as the nightly and a
bisection build them, in a scratch vramwatch cache (no cached wheel to short-circuit it) and a scratch ccache store:

    cold             b1: new build tree, empty ccache
    one .cpp file    b2: the slot's tree kept, one file synced in
    llama.h          b3: the same tree, llama.h synced in
    new tree         b1 again in a second scratch cache: no tree, but ccache's store is warm (a fresh worker volume)

Each line: seconds for the whole build (fetch, sync, compile, wheel, venv, install, ABI guard), how many objects
ninja compiled, and ccache's hits and misses. Target on the H200 with CUDA: "one .cpp file" under 90 s.
Measured on the 2-core CPU dev machine (shared with another compile, 2026-11-29): cold 1242 s (127 objects), one
.cpp file 55 s (1 object), llama.h 669 s (77 objects), new tree 92 s (127 objects, 117 of them ccache hits).
Run: PYTHONPATH=include .venv/bin/python benchmarks/bench_rebuild.py [--backend auto|cpu|cuda] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vramwatch.builds.engine import build_engine
from vramwatch.builds.sources import GIT_BINDINGS_VERSION, release_source
from vramwatch.config import BuildSource, Paths
from vramwatch.records import BuildRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.llama_commits import (  # noqa: E402
    LLAMA_H,
    ONE_FILE,
    compiled_objects,
    init_llama_repo,
    plant_commit,
    share_release,
)


def ccache_stats(store: Path) -> tuple[int, int]:
    """(hits, misses) of the store since its last zeroing."""
    out = subprocess.run(["ccache", "--print-stats"], capture_output=True, text=True,
                         env={**os.environ, "CCACHE_DIR": str(store)}).stdout
    stats = dict(line.split("\t") for line in out.splitlines() if line.count("\t") == 1)
    hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
    return hits, int(stats.get("cache_miss", 0))


def measure(label: str, source: BuildSource, tag: str, paths: Paths, store: Path) -> None:
    subprocess.run(["ccache", "--zero-stats"], env={**os.environ, "CCACHE_DIR": str(store)}, capture_output=True)
    started = time.monotonic()
    record = build_engine(source, tag, paths)
    seconds = time.monotonic() - started
    if not record.ok:
        sys.exit(f"bench_rebuild: the {label} build of {tag} failed: {record.error}")
    objects = compiled_objects(paths.builds / record.request.key / "build.log")
    hits, misses = ccache_stats(store)
    print(f"{label:14s} {seconds:7.1f} s   {len(objects):4d} objects compiled   "
          f"ccache {hits} hits, {misses} misses   ({record.request.backend}, llama.cpp {record.llama_cpp_commit[:12]})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = parser.parse_args()
    if not shutil.which("ccache"):
        sys.exit("bench_rebuild: ccache is not installed; run scripts/ensure_tools.py ccache (or apt-get install ccache)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="vramwatch-bench-rebuild-"))
    store = root / "ccache"
    os.environ["CCACHE_DIR"] = str(store)  # build_tree.ccache_env leaves a set CCACHE_DIR alone
    try:
        vendored = release_source(BuildRequest(version=GIT_BINDINGS_VERSION), Paths(), root / "sdist.log").path
        repo = root / "llama.cpp"
        init_llama_repo(vendored / "vendor" / "llama.cpp", repo)
        plant_commit(repo, "b2", ONE_FILE)
        plant_commit(repo, "b3", LLAMA_H)
        source = BuildSource(source="git", location=str(repo), version="b*", backend=args.backend)
        print(f"bench_rebuild: {os.cpu_count()} cores, llama.cpp as vendored by llama-cpp-python "
              f"{GIT_BINDINGS_VERSION}, work folder {root}", flush=True)
        first, second = Paths(root / "first"), Paths(root / "second")
        for paths in (first, second):
            paths.cache, paths.builds = paths.data / "cache", paths.data / "builds"
            share_release(paths, vendored, GIT_BINDINGS_VERSION)
        measure("cold", source, "b1", first, store)
        measure("one .cpp file", source, "b2", first, store)
        measure("llama.h", source, "b3", first, store)
        measure("new tree", source, "b1", second, store)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
