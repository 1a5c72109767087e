"""A local llama.cpp repository made from a vendored llama.cpp tree, with planted commits for bisection tests.

    c0  the vendored tree as it is (slimmed like a build's working copy)     the good end
    c1  docs: a README line                                                   harmless
    c2  context: a syntax error in src/llama-context.cpp                      breaks the build
    c3  context: the syntax error reverted                                    harmless (builds like c0)
    c4  context: micro-batch capped at half of n_ubatch                       the planted change
    c5  docs: another README line                                             the bad end

The plant halves the micro-batch every compute graph is reserved for, so the CPU compute buffer the bench reports
shrinks deterministically (the bench is still correct: smaller micro-batches). Bisecting c0..c5 probes c2 (the
middle: skipped, its build fails), c3 (its neighbour: good), c4 (bad): it names c4 and reports c2 stepped around.

Fixed author, committer and dates make the hashes the same on every machine and run, so the wheel cache (keyed by
commit) makes a second run cheap. The repository is made once under the cache.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from support.git_repos import commit, git, init_repo
from support.llama_commits import copy_slim_llama

CONTEXT = "src/llama-context.cpp"
UBATCH_LINE = ("    cparams.n_ubatch = std::min(cparams.n_batch, params.n_ubatch == 0 ? params.n_batch : "
               "params.n_ubatch);\n")
PLANTED_UBATCH = "    cparams.n_ubatch = std::max(1u, cparams.n_ubatch / 2); // planted: halves the compute buffer\n"
SYNTAX_ERROR = "\nthis line is not C++ // planted: breaks the build\n"
FIXTURE_VERSION = 1  # bump when the commits change: the cached repository is keyed by it


@dataclass(frozen=True)
class PlantedRepo:
    path: Path
    commits: list[str]  # c0 .. c5

    @property
    def good(self) -> str:
        return self.commits[0]

    @property
    def bad(self) -> str:
        return self.commits[-1]

    @property
    def broken(self) -> str:
        return self.commits[2]

    @property
    def planted(self) -> str:
        return self.commits[4]


def planted_llama_repo(vendored: Path, cache: Path) -> PlantedRepo:
    """The repository for `vendored` (a vendor/llama.cpp tree), made once under `cache`."""
    repo = cache / f"planted-llama.cpp-v{FIXTURE_VERSION}"
    if (repo / ".git" / "COMPLETE").is_file():
        return PlantedRepo(repo, git(repo, "log", "--reverse", "--format=%H").split())
    shutil.rmtree(repo, ignore_errors=True)
    init_repo(repo)
    copy_slim_llama(vendored, repo)
    context = (repo / CONTEXT).read_text()
    if UBATCH_LINE not in context:
        raise AssertionError(f"{vendored / CONTEXT} no longer has the line the plant follows: update llama_repo.py")
    readme = (repo / "README.md").read_text()
    commits = [
        commit(repo, "base: the vendored llama.cpp tree", {}),
        commit(repo, "docs: a note", {"README.md": readme + "\nA note.\n"}),
        commit(repo, "context: a syntax error", {CONTEXT: context + SYNTAX_ERROR}),
        commit(repo, "context: revert the syntax error", {CONTEXT: context}),
        commit(repo, "context: cap the micro-batch at half of n_ubatch",
               {CONTEXT: context.replace(UBATCH_LINE, UBATCH_LINE + PLANTED_UBATCH)}),
        commit(repo, "docs: another note", {"README.md": readme + "\nA note.\nAnother note.\n"}),
    ]
    (repo / ".git" / "COMPLETE").write_text("\n".join(commits) + "\n")
    return PlantedRepo(repo, commits)
