"""The refs a bisection walks, from real sources: a bundle directory of sdists and a local llama.cpp-like git
repository (fetched through file://, as an air-gapped worker's mirror is)."""

from __future__ import annotations

import pytest
from support.git_repos import commit, git, init_repo

from vramwatch.bisect import refs
from vramwatch.bisect.run import run_bisect
from vramwatch.builds.process import StepFailed
from vramwatch.builds.sources import GIT_BINDINGS_VERSION, fetch_commit, find_sdist, git_source
from vramwatch.cli.main import main
from vramwatch.config import BuildSource, Paths, load_matrix
from vramwatch.errors import UserError
from vramwatch.records import BisectRequest, BuildRequest

CONFIG = "deepseek-moe-16b-tiny/Q4_K_M/baseline"


@pytest.fixture
def bundle(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    for version in ("0.3.30", "0.3.31", "0.3.32", "0.3.33rc1", "0.3.34", "0.3.36", "0.3.40"):
        (folder / f"llama_cpp_python-{version}.tar.gz").write_bytes(b"")
    return BuildSource(source="path", location=str(folder))


def test_releases_between_are_the_final_versions_strictly_inside(bundle):
    assert refs.releases_between(bundle, "0.3.30", "0.3.36") == ["0.3.31", "0.3.32", "0.3.34"]


def test_a_reversed_or_unavailable_release_range(bundle):
    """Fault: good is not older than bad (the range is not reachable), or the source lacks an end (bad input)."""
    with pytest.raises(refs.RangeUnreachable, match="0.3.36 is not older than 0.3.30"):
        refs.releases_between(bundle, "0.3.36", "0.3.30")
    with pytest.raises(UserError, match="0.3.35 not available"):
        refs.releases_between(bundle, "0.3.30", "0.3.35")


@pytest.fixture
def llama_repo(tmp_path):
    """master: c0 .. c4, with a side branch merged after c2 (its commit is not first-parent); and an unrelated root."""
    repo = init_repo(tmp_path / "llama.cpp")
    commits = [commit(repo, "c0: start", {"src/llama.cpp": "0\n"})]
    commits.append(commit(repo, "c1: model: add a thing", {"src/llama.cpp": "1\n"}))
    git(repo, "checkout", "--quiet", "-b", "side")
    side = commit(repo, "side: work on a branch", {"side.txt": "s\n"})
    git(repo, "checkout", "--quiet", "master")
    commits.append(commit(repo, "c2: ggml: tweak", {"src/llama.cpp": "2\n"}))
    git(repo, "merge", "--quiet", "--no-ff", "-m", "c3: merge side", "side")
    commits.append(git(repo, "rev-parse", "HEAD"))
    commits.append(commit(repo, "c4: context: larger graph", {"src/llama.cpp": "4\n"}))
    git(repo, "checkout", "--quiet", "--orphan", "unrelated")
    unrelated = commit(repo, "elsewhere", {"x": "x\n"})
    git(repo, "checkout", "--quiet", "master")
    return repo, commits, side, unrelated


SHARED_CACHE = Paths().cache  # the machine's sdists and unpacked trees, before a test points the cache elsewhere


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    return Paths(tmp_path / "home")


def test_commits_between_are_first_parent_oldest_first_with_subject_and_date(llama_repo, paths, tmp_path):
    repo, commits, side, _ = llama_repo
    fetch_commit(str(repo), commits[4], paths, tmp_path / "log")  # a build fetched it shallow before: deepened now
    found = refs.commits_between(str(repo), commits[0], commits[4], paths, tmp_path / "log")

    assert [c.commit for c in found.commits] == commits[1:4] and side not in [c.commit for c in found.commits]
    assert [c.subject for c in found.commits] == ["c1: model: add a thing", "c2: ggml: tweak", "c3: merge side"]
    culprit = refs.commit_culprit(found.repo, commits[2])
    assert (culprit.subject, culprit.date) == ("c2: ggml: tweak", "2026-11-01T12:00:00+00:00")
    assert culprit.link == f"https://github.com/ggml-org/llama.cpp/commit/{commits[2]}"


def test_an_arbitrary_commit_is_fetched_shallow_from_a_mirror(llama_repo, paths, tmp_path):
    repo, commits, _, _ = llama_repo
    bare, fetched = fetch_commit(str(repo), commits[2], paths, tmp_path / "log")
    assert fetched == commits[2]
    assert git(bare, "show", f"{commits[2]}:src/llama.cpp") == "2"


def test_a_range_that_is_not_reachable_stops_before_any_build(llama_repo, paths):
    """Fault: the good commit is not an ancestor of the bad one: the result says the range is not reachable."""
    repo, commits, _, unrelated = llama_repo
    request = BisectRequest(CONFIG, unrelated, commits[4], level="commit", metric="CPU/compute", repository=str(repo))
    result = run_bisect(load_matrix("demo"), request, paths=paths)

    assert result.stopped.startswith("the range is not reachable") and not result.steps and result.culprit is None
    assert not (paths.builds).exists()


def test_commit_ends_must_be_full_hashes(llama_repo, paths, tmp_path):
    repo, commits, _, _ = llama_repo
    with pytest.raises(UserError, match="not a full llama.cpp commit hash"):
        refs.commits_between(str(repo), commits[0][:8], commits[4], paths, tmp_path / "log")


def test_good_and_bad_the_same_commit_is_bad_input(llama_repo, paths, tmp_path, capsys):
    """Fault: `vramwatch bisect --level commit` took good == bad and went on to build it."""
    repo, commits, _, _ = llama_repo
    with pytest.raises(UserError, match="the same commit"):
        refs.commits_between(str(repo), commits[2], commits[2], paths, tmp_path / "log")
    assert main(["bisect", "--config", CONFIG, "--good", commits[2], "--bad", commits[2], "--level", "commit",
                 "--metric", "CPU/compute", "--repository", str(repo)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: --good and --bad are the same commit") and err[1].startswith("  fix: ")
    assert not paths.builds.exists()


def test_a_commit_with_an_empty_tree_is_a_failed_build_not_a_crash(tmp_path, monkeypatch):
    """Fault: a commit with no files (an empty tree) crashed the build with tarfile's ReadError, and the bisection
    with it; it is now a failed build (StepFailed), which a bisection skips as it skips any failed build."""
    sdist = find_sdist(SHARED_CACHE / "sdists", GIT_BINDINGS_VERSION)
    unpacked = SHARED_CACHE / "src" / GIT_BINDINGS_VERSION
    if not sdist or not unpacked.is_dir():
        pytest.skip(f"no llama-cpp-python {GIT_BINDINGS_VERSION} sdist in {SHARED_CACHE}: run `make models` once")
    cache = tmp_path / "cache"
    for link, target in ((cache / "sdists" / sdist.name, sdist), (cache / "src" / GIT_BINDINGS_VERSION, unpacked)):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(cache))
    repo = init_repo(tmp_path / "llama.cpp")
    empty = commit(repo, "nothing here", {})
    with pytest.raises(StepFailed, match="empty tree"):
        git_source(BuildRequest(version=empty, source="git", location=str(repo)), empty, Paths(tmp_path / "home"),
                   tmp_path / "log")
