"""A nearby llama.cpp commit rebuilds in its slot's kept tree: a real CPU compile of the vendored llama.cpp from a
local git repository (tag b1), then b2, a commit that changes one .cpp file of libllama, built through build_engine.

ccache's store is the machine's (Paths().cache/ccache, which `make engine` fills; a set CCACHE_DIR wins), so after the
first run on a machine the first build is mostly cache hits. No timing is asserted: benchmarks/bench_rebuild.py
prints the times.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from support.llama_commits import ONE_FILE, compiled_objects, init_llama_repo, plant_commit, share_release

from vramwatch.builds.engine import build_engine
from vramwatch.builds.sources import GIT_BINDINGS_VERSION
from vramwatch.config import BuildSource, Paths
from vramwatch.records import BuildRecord


def compiled(paths: Paths, record: BuildRecord) -> list[str]:
    return compiled_objects(paths.builds / record.request.key / "build.log")


def test_a_commit_next_to_a_built_one_recompiles_only_the_changed_file(engine_build, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CCACHE_DIR", os.environ.get("CCACHE_DIR", str(Paths().cache / "ccache")))
    bindings = Path(engine_build.source_dir)
    repo = tmp_path / "llama.cpp"
    init_llama_repo(bindings / "vendor" / "llama.cpp", repo)
    plant_commit(repo, "b2", ONE_FILE)
    paths = Paths(tmp_path)
    paths.cache, paths.builds = tmp_path / "cache", tmp_path / "builds"
    share_release(paths, bindings, GIT_BINDINGS_VERSION)
    source = BuildSource(source="git", location=str(repo), version="b*", backend="cpu")

    first = build_engine(source, "b1", paths)
    assert first.status == "ok", first.error
    assert len(compiled(paths, first)) > 100  # a new tree: everything
    caplog.clear()
    caplog.set_level(logging.INFO, logger="vramwatch")  # progress is logging at INFO

    second = build_engine(source, "b2", paths)
    assert second.status == "ok", second.error
    assert second.request.key != first.request.key  # another build, in the same tree
    assert compiled(paths, second) == ["vendor/llama.cpp/src/CMakeFiles/llama.dir/llama-context.cpp.o"]
    said = caplog.text
    assert re.search(r"syncing the build tree .*: 2 files written, ", said)  # the planted file and the commit marker
    assert "ABI guard: bindings match llama.h" in said
