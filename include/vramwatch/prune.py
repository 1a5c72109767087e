"""prune: keep the GPU worker's disk bounded. Every new llama.cpp build leaves an engine venv, a cached wheel, often
a source tree, and its own quantized copy of every model (about 75 GB for the seed matrix at full scale); nothing
else ever deletes them, so a nightly on a fresh llama.cpp each day fills a disk within a week.

The `keep` finished builds used last stay (a build's build.json is touched each time a night reuses it, so a pinned
version benched every night stays however many builds are newer), with every failed build tried since the oldest of
them (their logs explain a failure).
Each older build goes with what it alone left behind:

    paths.builds/<key>/                         its venv, build.json, build.log, llama-bench
    paths.cache/wheels/<key>/, cache/build/<key>/   its wheel (and llama-bench), an interrupted cmake tree
    its source tree under paths.cache/src/      unless a kept build was made from the same tree
    paths.models/quantized/*-<commit>.gguf(.json)   unless a kept build has the same llama.cpp commit

Synthetic sources, downloaded models and sdists stay: they do not grow with builds. A build whose key is locked
(being built or checked right now) is left for the next prune.

Reports grow with nights instead. A run's GX Data Docs are about 4 MiB, nearly all of it GX's own static assets
copied again each night, so prune_data_docs keeps them for the newest nights only. Each run's summary.md/.html
(under 0.1 MiB) stays for good, and why a row was quarantined stays in the warehouse.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from vramwatch.builds.engine import build_lock, list_builds
from vramwatch.config import Paths
from vramwatch.models.prepare import quantized_tag
from vramwatch.progress import for_stage
from vramwatch.records import BuildRecord, PruneResult

NIGHT = re.compile(r"\d{4}-\d{2}-\d{2}")  # reports/<night>/ (and its runs' <night>/<run>/), as report/write.py names it


_say = for_stage("prune")


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def _drop(path: Path, dry_run: bool) -> int:
    """Remove `path` (a file, link or folder) unless dry_run, saying so; returns the bytes it held."""
    size = _size(path)
    _say(f"{'would remove' if dry_run else 'removing'} {path} ({size / 2**20:.1f} MiB)")
    if dry_run:
        return size
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


def _last_used(build: BuildRecord, paths: Paths) -> float:
    return (paths.builds / build.request.key / "build.json").stat().st_mtime


def split_builds(builds: list[BuildRecord], keep: int) -> tuple[list[BuildRecord], list[BuildRecord]]:
    """(kept, older) from builds latest used first: the first `keep` ok builds and every build before the last."""
    kept, ok_seen = [], 0
    for position, build in enumerate(builds):
        if ok_seen == keep:
            return kept, builds[position:]
        kept.append(build)
        ok_seen += build.ok
    return kept, []


def _leftovers(build: BuildRecord, kept: list[BuildRecord], paths: Paths) -> list[Path]:
    key = build.request.key
    found = [paths.builds / key, paths.cache / "wheels" / key, paths.cache / "build" / key]
    source = Path(build.source_dir) if build.source_dir else None
    if source and source.is_relative_to(paths.cache / "src") and all(Path(k.source_dir) != source for k in kept):
        found.append(source)
    tag = quantized_tag(build)
    if tag not in {quantized_tag(k) for k in kept}:
        found += sorted((paths.models / "quantized").glob(f"*-{tag}.gguf*"))
    return [p for p in found if p.exists() or p.is_symlink()]


def prune(paths: Paths, keep: int, dry_run: bool = False) -> PruneResult:
    """Remove what builds used before the last `keep` finished ones left behind (see the module doc)."""
    if keep < 1:
        raise ValueError("keep must be at least 1: tonight's engine is always kept")
    kept, older = split_builds(sorted(list_builds(paths), key=lambda b: _last_used(b, paths), reverse=True), keep)
    removed, in_use, gone, freed = [], [], [], 0
    for build in older:
        key = build.request.key
        with build_lock(paths, key, wait=False) as free:
            if not free:
                _say(f"{key}: in use, left for the next prune")
                in_use.append(key)
                continue
            for path in _leftovers(build, kept, paths):
                if str(path) in gone:  # two old builds of one commit or source tree share those files
                    continue
                freed += _drop(path, dry_run)
                gone.append(str(path))
        removed.append(key)
    result = PruneResult(kept=[b.request.key for b in kept], removed=removed, in_use=in_use, paths=gone,
                         freed_bytes=freed, dry_run=dry_run)
    _say(f"result: {result.summary()}")
    return result


def prune_data_docs(reports: Path, keep: int, dry_run: bool = False) -> PruneResult:
    """Remove the Data Docs of every night before the newest `keep` (see the module doc): each run's
    (reports/<night>/<run>/data_docs) and the night's own (reports/<night>/data_docs, from before runs had folders)."""
    if keep < 1:
        raise ValueError("keep must be at least 1: tonight's Data Docs are always kept")
    by_night: dict[str, list[Path]] = {}
    for docs in sorted([*reports.glob("*/data_docs"), *reports.glob("*/*/data_docs")]):
        night = docs.relative_to(reports).parts[0]
        if NIGHT.fullmatch(night) and docs.is_dir():
            by_night.setdefault(night, []).append(docs)
    nights = sorted(by_night, reverse=True)
    gone = [docs for night in nights[keep:] for docs in by_night[night]]
    freed = sum(_drop(docs, dry_run) for docs in gone)
    result = PruneResult(kept=nights[:keep], removed=nights[keep:], in_use=[], paths=[str(d) for d in gone],
                         freed_bytes=freed, dry_run=dry_run, unit="night")
    _say(f"data docs: {result.summary()}")
    return result
