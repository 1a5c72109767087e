"""prune on a worker's disk laid out the way builds and the models stage leave it: five builds of four llama.cpp
commits, their wheels, source trees and quantized models; only what the older builds alone left may go. And
prune_data_docs on a reports folder as the validate and report stages leave it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from vramwatch.config import Paths
from vramwatch.prune import prune, prune_data_docs
from vramwatch.records import BuildRecord, BuildRequest

MIB = 1 << 20


def _file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def _build(paths: Paths, version: str, backend: str, commit: str, day: int, status: str = "ok",
           source: str = "") -> BuildRecord:
    """A build as builds.engine leaves it: build.json and a venv under builds/<key>, the wheel in the cache."""
    request = BuildRequest(version=version, backend=backend)
    home = paths.builds / request.key
    record = BuildRecord(request=request, status=status, python=str(home / "venv/bin/python"),
                         source_dir=str(paths.cache / "src" / (source or version)), llama_cpp_python_version=version,
                         llama_cpp_commit=commit, built_at=f"2026-11-{day:02d}T02:00:00+00:00")
    _file(home / "build.json", 0)
    (home / "build.json").write_text(record.to_json())
    used = datetime(2026, 11, day, 2, tzinfo=timezone.utc).timestamp()
    os.utime(home / "build.json", (used, used))  # built (or last reused) that night
    if status == "ok":
        _file(home / "venv/lib/libllama.so", 3 * MIB)
        _file(paths.cache / "wheels" / request.key / f"llama_cpp_python-{version}.whl", 2 * MIB)
    _file(paths.cache / "src" / (source or version) / "pyproject.toml", MIB)
    return record


def _quantized(paths: Paths, commit: str) -> list[Path]:
    made = []
    for quant in ("Q4_K_M", "Q8_0"):
        gguf = paths.models / "quantized" / f"deepseek-moe-16b-tiny-53bc1d518e-{quant}-42d237241a7d-{commit}.gguf"
        _file(gguf, MIB)
        _file(gguf.with_name(gguf.name + ".json"), 0)
        made += [gguf, gguf.with_name(gguf.name + ".json")]
    return made


@pytest.fixture
def disk(tmp_path, monkeypatch):
    for name in ("VRAMWATCH_BUILDS_DIR", "VRAMWATCH_MODELS_DIR", "VRAMWATCH_REPORTS_DIR", "VRAMWATCH_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    paths = Paths(tmp_path)
    builds = {
        # newest first: a failed build, two kept ones (CPU and CUDA of one release), then the older ones
        "failed-new": _build(paths, "0.3.38", "cuda", "c4", day=26, status="failed"),
        "cuda-37": _build(paths, "0.3.37", "cuda", "c3", day=25),
        "cpu-37": _build(paths, "0.3.37", "cpu", "c3", day=24),
        "failed-old": _build(paths, "0.3.36", "cuda", "c2", day=23, status="failed", source="0.3.36-bad"),
        "cpu-36": _build(paths, "0.3.36", "cpu", "c2", day=22),
        "cpu-35": _build(paths, "0.3.35", "cpu", "c3", day=21),  # an older release on the kept commit
    }
    models = {commit: _quantized(paths, commit) for commit in ("c2", "c3", "c4")}
    _file(paths.models / "synth" / "deepseek-moe-16b-tiny-53bc1d518e.gguf", MIB)
    return paths, builds, models


def test_older_builds_go_with_what_only_they_left(disk):
    paths, builds, models = disk

    result = prune(paths, keep=2)

    keys = {name: b.request.key for name, b in builds.items()}
    assert result.kept == [keys["failed-new"], keys["cuda-37"], keys["cpu-37"]]
    assert result.removed == [keys["failed-old"], keys["cpu-36"], keys["cpu-35"]] and result.in_use == []
    for name in ("failed-old", "cpu-36", "cpu-35"):
        assert not (paths.builds / keys[name]).exists() and not (paths.cache / "wheels" / keys[name]).exists()
    for name in ("failed-new", "cuda-37", "cpu-37"):
        assert (paths.builds / keys[name] / "build.json").is_file()
    assert (paths.cache / "wheels" / keys["cuda-37"]).is_dir()
    assert not (paths.cache / "src/0.3.36").exists() and not (paths.cache / "src/0.3.36-bad").exists()
    assert not (paths.cache / "src/0.3.35").exists() and (paths.cache / "src/0.3.37").is_dir()
    assert not any(p.exists() for p in models["c2"])  # only the removed 0.3.36 builds had c2
    assert all(p.exists() for p in models["c3"] + models["c4"])  # c3: kept builds share it; c4: the failed new one
    assert (paths.models / "synth" / "deepseek-moe-16b-tiny-53bc1d518e.gguf").is_file()
    # cpu-36: venv 3 + wheel 2 + source 1; cpu-35: 3 + 2 + 1; failed-old: its own source 1; c2's models 2 (once)
    assert 15 * MIB < result.freed_bytes < 15 * MIB + 8192  # + the three build.json
    assert len(result.paths) == len(set(result.paths))
    assert prune(paths, keep=2).removed == []  # nothing older is left


def test_an_old_build_a_night_still_uses_is_kept(disk):
    paths, builds, _ = disk
    pinned = builds["cpu-36"].request.key
    (paths.builds / pinned / "build.json").touch()  # what builds.engine does when a night reuses it

    result = prune(paths, keep=2)

    assert result.kept == [pinned, builds["failed-new"].request.key, builds["cuda-37"].request.key]
    assert builds["cpu-37"].request.key in result.removed


def test_a_dry_run_lists_and_counts_but_removes_nothing(disk):
    paths, builds, models = disk

    result = prune(paths, keep=2, dry_run=True)

    assert result.dry_run and 15 * MIB < result.freed_bytes < 15 * MIB + 8192
    assert all(Path(p).exists() for p in result.paths)
    assert "would free 0.0 GiB: removed 3 build(s), kept 3" in result.summary()


def test_a_build_whose_key_is_locked_is_left_for_next_time(disk):
    paths, builds, _ = disk
    key = builds["cpu-36"].request.key
    with open(paths.builds / f"{key}.lock", "w") as building:  # as builds.engine holds it during a build
        fcntl.flock(building, fcntl.LOCK_EX)
        result = prune(paths, keep=2)
    assert result.in_use == [key] and key not in result.removed
    assert (paths.builds / key / "venv").is_dir()
    assert prune(paths, keep=2).removed == [key]


def _nights(reports: Path, days: range) -> None:
    """reports/<night>/ as a night leaves it: summary.md/html and GX Data Docs (1 MiB here, about 4 MiB for real)."""
    for day in days:
        night = reports / f"2026-11-{day:02d}"
        _file(night / "data_docs" / "static" / "styles" / "data_docs_default_styles.css", MIB)
        _file(night / "data_docs" / "index.html", 0)
        (night / "summary.md").write_text(f"# vramwatch nightly: {night.name}\n")
        (night / "summary.html").write_text("<html></html>")
    (reports / "latest.md").write_text("# latest\n")


def test_data_docs_of_all_but_the_newest_nights_go_and_summaries_stay(tmp_path):
    reports = tmp_path / "reports"
    _nights(reports, range(20, 26))
    (reports / "2026-11-26").mkdir()  # a night whose validate stage has not run yet
    _file(reports / "scratch" / "data_docs" / "index.html", MIB)  # not a night: not ours to remove

    result = prune_data_docs(reports, keep=3)

    assert result.kept == ["2026-11-25", "2026-11-24", "2026-11-23"]
    assert result.removed == ["2026-11-22", "2026-11-21", "2026-11-20"]
    assert result.freed_bytes == 3 * MIB
    assert "freed 0.0 GiB: removed 3 night(s), kept 3 (2026-11-25, 2026-11-24, 2026-11-23)" == result.summary()
    for day in range(20, 26):
        night = reports / f"2026-11-{day:02d}"
        assert (night / "data_docs").is_dir() == (day >= 23), night
        assert (night / "summary.md").is_file() and (night / "summary.html").is_file()
    assert (reports / "scratch" / "data_docs" / "index.html").is_file() and (reports / "latest.md").is_file()
    assert prune_data_docs(reports, keep=3).removed == []


def test_a_dry_run_of_data_docs_removes_nothing(tmp_path):
    reports = tmp_path / "reports"
    _nights(reports, range(1, 6))
    result = prune_data_docs(reports, keep=2, dry_run=True)
    assert result.removed == ["2026-11-03", "2026-11-02", "2026-11-01"] and result.freed_bytes == 3 * MIB
    assert all((reports / f"2026-11-0{day}" / "data_docs").is_dir() for day in range(1, 6))


def test_cli_refuses_a_keep_below_one_and_prints_one_line_per_disk_part(disk, monkeypatch):
    paths, _, _ = disk
    _nights(paths.reports, range(1, 7))
    vramwatch = str(Path(sys.executable).parent / "vramwatch")
    env = {"VRAMWATCH_HOME": str(paths.root), "VRAMWATCH_CACHE_DIR": str(paths.cache), "PATH": "/usr/bin:/bin"}

    refused = subprocess.run([vramwatch, "prune", "--keep", "0"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "at least 1" in refused.stderr and "Traceback" not in refused.stderr

    refused = subprocess.run([vramwatch, "prune", "--keep-data-docs", "0"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "at least 1" in refused.stderr and "Traceback" not in refused.stderr

    done = subprocess.run([vramwatch, "prune", "--keep", "2", "--keep-data-docs", "5", "--dry-run"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "builds: would free 0.0 GiB: removed 3 build(s), kept 3 (" + ", ".join(prune(paths, 2, dry_run=True).kept) + ")",
        "data docs: would free 0.0 GiB: removed 1 night(s), kept 5 (2026-11-06 ... 2026-11-02)"]


def test_each_runs_data_docs_go_with_their_night_beside_a_night_kept_before_runs_had_folders(tmp_path):
    """Each run of a night keeps its report and Data Docs in reports/<night>/<run>/: pruning a night removes every
    run's Data Docs, and a night written before runs had folders (reports/<night>/data_docs) is pruned as before."""
    reports = tmp_path / "reports"
    _nights(reports, range(20, 21))  # the old layout
    for day, runs in ((21, ("scheduled__a", "cli__b")), (22, ("scheduled__c",)), (23, ("scheduled__d",))):
        for run in runs:
            folder = reports / f"2026-11-{day}" / run
            _file(folder / "data_docs" / "index.html", MIB)
            (folder / "summary.md").write_text("# run\n")

    result = prune_data_docs(reports, keep=2)

    assert (result.kept, result.removed, result.freed_bytes) == (["2026-11-23", "2026-11-22"],
                                                                 ["2026-11-21", "2026-11-20"], 3 * MIB)
    assert not list(reports.glob("2026-11-2[01]/**/data_docs"))
    assert (reports / "2026-11-22" / "scheduled__c" / "data_docs" / "index.html").is_file()
    assert (reports / "2026-11-21" / "cli__b" / "summary.md").is_file()  # summaries stay
