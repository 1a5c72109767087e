"""The refs a bisection walks: llama-cpp-python releases between two versions, or llama.cpp commits between two
commits, and what names a culprit (subject, date, link)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vramwatch.builds.detect import PROJECT, release_versions
from vramwatch.builds.sources import CommitInfo, commit_info, fetch_history, first_parent_commits, is_commit
from vramwatch.config import BuildSource, Paths
from vramwatch.errors import UserError
from vramwatch.records import Culprit

UPSTREAM = "https://github.com/ggml-org/llama.cpp"
COMMIT_LINK = "https://github.com/ggml-org/llama.cpp/commit/{}"
RELEASE_LINK = "https://pypi.org/project/llama-cpp-python/{}/"


class RangeUnreachable(Exception):
    """The good ref is not before the bad one in the source's history: nothing between them to search."""


def _version(ref: str, role: str) -> Version:
    try:
        return Version(ref)
    except InvalidVersion:
        raise UserError(f"--{role} {ref!r} is not a {PROJECT} version",
                        "give release versions like 0.3.30 (or use --level commit with llama.cpp commits)") from None


def releases_between(source: BuildSource, good: str, bad: str) -> list[str]:
    """The released versions (no pre-releases) strictly between good and bad, oldest first."""
    low, high = _version(good, "good"), _version(bad, "bad")
    if not low < high:
        raise RangeUnreachable(f"release {good} is not older than {bad}")
    versions = release_versions(source)
    missing = [ref for ref, v in ((good, low), (bad, high)) if v not in versions]
    if missing:
        raise UserError(f"{PROJECT} {' and '.join(missing)} not available from the build source",
                        "pick versions the matrix's build source has (build.location)")
    return [versions[v] for v in sorted(versions) if low < v < high and not v.is_prerelease]


def release_culprit(version: str, llama_cpp_commit: str) -> Culprit:
    return Culprit(ref=version, subject=f"{PROJECT} {version}", link=RELEASE_LINK.format(version),
                   llama_cpp_commit=llama_cpp_commit)


@dataclass(frozen=True)
class CommitRange:
    repo: Path  # the bare repository holding the history
    commits: list[CommitInfo]  # after good, before bad, oldest first


def commits_between(location: str, good: str, bad: str, paths: Paths, log: Path) -> CommitRange:
    """The first-parent llama.cpp commits strictly between two full commit hashes, from `location`."""
    for role, ref in (("good", good), ("bad", bad)):
        if not is_commit(ref):
            raise UserError(f"--{role} {ref!r} is not a full llama.cpp commit hash",
                            "give 40-hex commit hashes (a build's llama_cpp_commit), or release versions")
    if good == bad:
        raise UserError(f"--good and --bad are the same commit {good[:12]}: there is nothing to search",
                        "give the last commit without the change as --good and the first with it as --bad")
    repo = fetch_history(location, bad, paths, log)
    fetch_history(location, good, paths, log)
    listed = first_parent_commits(repo, good, bad)
    if listed is None:
        raise RangeUnreachable(f"llama.cpp {good[:12]} is not an ancestor of {bad[:12]} in {location}")
    return CommitRange(repo, listed[:-1])  # the last is bad itself


def commit_culprit(repo: Path, commit: str) -> Culprit:
    info = commit_info(repo, commit)
    return Culprit(ref=commit, subject=info.subject, date=info.date, link=COMMIT_LINK.format(commit),
                   llama_cpp_commit=commit)
