"""The persistent build tree: the sync that lets ninja recompile only what changed, and the slot lock."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from vramwatch.builds.build_tree import build_slot, slot_lock, sync_tree
from vramwatch.config import Paths
from vramwatch.records import BuildRequest

OLD = 1_000_000_000  # an mtime long past: a file the sync rewrites gets "now"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _age(root: Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, (OLD, OLD), follow_symlinks=False)


def test_sync_writes_only_changed_files_and_removes_deleted_ones(tmp_path):
    first = _tree(tmp_path / "commit1", {"vendor/llama.cpp/src/llama.cpp": "one", "vendor/llama.cpp/src/kv.cpp": "kv",
                                         "vendor/llama.cpp/include/llama.h": "h", "llama_cpp/llama_cpp.py": "py",
                                         "vendor/llama.cpp/src/gone.cpp": "old"})
    dest = tmp_path / "slot" / "src"
    assert sync_tree(first, dest).written == 5
    _age(dest)

    second = _tree(tmp_path / "commit2", {"vendor/llama.cpp/src/llama.cpp": "two", "vendor/llama.cpp/src/kv.cpp": "kv",
                                          "vendor/llama.cpp/include/llama.h": "h", "llama_cpp/llama_cpp.py": "py",
                                          "vendor/llama.cpp/src/new.cpp": "new"})
    os.utime(second / "vendor/llama.cpp/src/kv.cpp", (OLD + 99, OLD + 99))  # an unchanged file with a newer mtime
    (dest / "llama_cpp" / "lib").mkdir()
    (dest / "llama_cpp" / "lib" / "libllama.so").write_text("an earlier build's output")

    count = sync_tree(second, dest)

    assert (count.written, count.removed, count.unchanged) == (2, 2, 3)
    assert (dest / "vendor/llama.cpp/src/llama.cpp").read_text() == "two"
    assert (dest / "vendor/llama.cpp/src/llama.cpp").stat().st_mtime > OLD + 99
    assert (dest / "vendor/llama.cpp/src/new.cpp").read_text() == "new"
    for unchanged in ("vendor/llama.cpp/src/kv.cpp", "vendor/llama.cpp/include/llama.h", "llama_cpp/llama_cpp.py"):
        assert (dest / unchanged).stat().st_mtime == OLD, unchanged  # ninja must not see it as changed
    assert not (dest / "vendor/llama.cpp/src/gone.cpp").exists()
    assert not (dest / "llama_cpp" / "lib").exists()
    assert sync_tree(second, dest) == type(count)(0, 0, 5)


def test_sync_keeps_the_slim_rule_links_and_modes(tmp_path):
    source = _tree(tmp_path / "src", {"vendor/llama.cpp/docs/build.md": "docs", "vendor/llama.cpp/CMakeLists.txt": "c",
                                      "vendor/llama.cpp/models/ggml-vocab-x.gguf": "v",
                                      "vendor/llama.cpp/models/big.gguf": "weights", "build.sh": "#!/bin/sh\n"})
    (source / "build.sh").chmod(0o755)
    (source / "vendor/llama.cpp/link.txt").symlink_to("CMakeLists.txt")
    dest = tmp_path / "dest"

    sync_tree(source, dest)

    assert (dest / "vendor/llama.cpp/CMakeLists.txt").is_file()
    assert (dest / "vendor/llama.cpp/models/ggml-vocab-x.gguf").is_file()
    assert not (dest / "vendor/llama.cpp/docs").exists() and not (dest / "vendor/llama.cpp/models/big.gguf").exists()
    assert os.readlink(dest / "vendor/llama.cpp/link.txt") == "CMakeLists.txt"
    assert os.access(dest / "build.sh", os.X_OK)

    (source / "vendor/llama.cpp/link.txt").unlink()
    (source / "vendor/llama.cpp/link.txt").symlink_to("elsewhere.txt")
    assert sync_tree(source, dest).written == 1
    assert os.readlink(dest / "vendor/llama.cpp/link.txt") == "elsewhere.txt"


def test_commits_share_a_slot_other_flags_do_not():
    base = BuildRequest(version="b1", source="git", backend="cpu", cmake_args="-DGGML_NATIVE=OFF")
    assert build_slot(base) == build_slot(BuildRequest(version="b2", source="git", backend="cpu",
                                                       cmake_args="-DGGML_NATIVE=OFF"))
    assert build_slot(base) != build_slot(BuildRequest(version="b1", source="git", backend="cpu",
                                                       cmake_args="-DGGML_NATIVE=ON"))


def test_a_second_build_waits_for_the_slot_tree_until_the_first_is_done(tmp_path, caplog):
    """Two builds of one slot at once would write the same source and cmake tree: the second waits."""
    paths = Paths(tmp_path)
    paths.cache = tmp_path / "cache"
    entered = threading.Event()
    caplog.set_level(logging.INFO, logger="vramwatch")
    with slot_lock(paths, "cpu-abc") as held:
        assert held
        with slot_lock(paths, "cpu-abc", wait=False) as second:
            assert second is False  # another holder: not taken

        def second_build() -> None:
            with slot_lock(paths, "cpu-abc"):
                entered.set()

        waiter = threading.Thread(target=second_build)
        waiter.start()
        assert not entered.wait(0.5)  # still waiting while the first holds the tree
    assert entered.wait(10)
    waiter.join()
    assert f"waiting for the build tree cpu-abc that pid {os.getpid()} on" in caplog.text  # progress at INFO
