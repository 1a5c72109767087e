"""A local llama.cpp git repository made from a vendored llama.cpp tree, with nearby commits planted on top: what a
git-source build fetches from, with no network. Used by the rebuild test and benchmarks/bench_rebuild.py."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from support.git_repos import git, init_repo

from vramwatch.builds.slim import LLAMA, keep
from vramwatch.builds.sources import find_sdist
from vramwatch.config import Paths

# A one-file change that really recompiles (a comment would be served by ccache): a new definition in libllama.
ONE_FILE = ("src/llama-context.cpp", "\nnamespace {{ [[maybe_unused]] int vramwatch_planted_{tag} = 1; }}\n")
# A llama.h change that leaves every struct alone (the ABI guard passes) but reaches every file that includes it.
LLAMA_H = ("include/llama.h", "\nint llama_vramwatch_planted_{tag}(void);\n")
# A compile in a build log: the bindings build with ninja verbose, so each is its full command line.
_COMPILE = re.compile(r" -o (\S+\.o) -c ")


def copy_slim_llama(vendored: Path, repo: Path) -> None:
    """Copy `vendored` (a llama.cpp tree) into `repo`, left out what a build does not need (slim.keep)."""
    shutil.copytree(vendored, repo, dirs_exist_ok=True, symlinks=True,
                    ignore=lambda folder, names: {n for n in names if not keep(
                        f"{LLAMA}/{Path(folder, n).relative_to(vendored).as_posix()}")})


def init_llama_repo(vendored: Path, repo: Path, tag: str = "b1") -> str:
    """A repository holding `vendored` (a llama.cpp tree, slimmed) as one commit tagged `tag`; returns the commit."""
    init_repo(repo)
    copy_slim_llama(vendored, repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"llama.cpp as vendored ({tag})")
    git(repo, "tag", tag)
    return git(repo, "rev-parse", tag)


def plant_commit(repo: Path, tag: str, change: tuple[str, str]) -> str:
    """Commit `change` (a file, and text with "{tag}" to append to it) tagged `tag`; returns the commit."""
    relpath, text = change
    with open(repo / relpath, "a") as planted:
        planted.write(text.format(tag=tag))
    git(repo, "commit", "-qam", f"planted: {relpath} ({tag})")
    git(repo, "tag", tag)
    return git(repo, "rev-parse", tag)


def share_release(paths: Paths, tree: Path, version: str) -> None:
    """Give a scratch cache the already downloaded and unpacked `version` release (read-only use): no download."""
    sdist = find_sdist(Paths().cache / "sdists", version)
    assert sdist, f"llama-cpp-python {version} has not been downloaded into {Paths().cache / 'sdists'}"
    (paths.cache / "sdists").mkdir(parents=True, exist_ok=True)
    (paths.cache / "sdists" / sdist.name).symlink_to(sdist)
    (paths.cache / "src").mkdir(parents=True, exist_ok=True)
    (paths.cache / "src" / version).symlink_to(tree)


def compiled_objects(build_log: Path) -> list[str]:
    """The objects the compiler was run for in this build log, in order."""
    return _COMPILE.findall(build_log.read_text(errors="replace"))
