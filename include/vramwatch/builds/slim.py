"""What of a llama-cpp-python source tree its build needs.

The 76 MB sdist is mostly llama.cpp's docs, tests, benches, example models and git history; the build (the bindings'
CMake and llama-bench's) needs none of them. The tokenizer-only vocab GGUFs stay: the models stage reads them.
One rule serves the air-gapped bundle and the per-build working copy, so every local build also proves that a slim
tree builds.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

LLAMA = "vendor/llama.cpp"
DROPPED = (
    ".git",  # the bindings' history; the llama.cpp commit is kept in a marker file (sources.COMMIT_MARKER)
    f"{LLAMA}/.git",
    f"{LLAMA}/.github",
    f"{LLAMA}/docs",
    f"{LLAMA}/tests",  # only with LLAMA_BUILD_TESTS, off for both builds
    f"{LLAMA}/benches",
    f"{LLAMA}/examples",  # only with LLAMA_BUILD_EXAMPLES, off for both builds
    f"{LLAMA}/media",
    f"{LLAMA}/tools/ui",  # the server's web UI, only with LLAMA_BUILD_SERVER
)
KEPT_MODELS = f"{LLAMA}/models/ggml-vocab-*.gguf"


def keep(relpath: str) -> bool:
    """Whether the build (or the models stage) needs this path, relative to the source tree's top."""
    if any(relpath == d or relpath.startswith(d + "/") for d in DROPPED):
        return False
    if relpath.startswith(f"{LLAMA}/models/"):
        return fnmatch.fnmatchcase(relpath, KEPT_MODELS)
    return True


def copy_slim(source: Path, dest: Path) -> None:
    """Copy the parts of a source tree that `keep` keeps (symlinks as links) into `dest` (may exist, empty)."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(source).as_posix()
        prefix = "" if rel == "." else rel + "/"
        return {n for n in names if not keep(prefix + n)}

    shutil.copytree(source, dest, ignore=ignored, symlinks=True, dirs_exist_ok=True)
