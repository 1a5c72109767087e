"""Is there a build newer than the last one benchmarked?

Three kinds of source (BuildSource.source):
- pypi: llama-cpp-python releases on PyPI or any PEP 503 simple index (BuildSource.location), ordered by PEP 440;
- path: a directory of llama-cpp-python sdists (a bundle from `make_bundle`), ordered the same way;
- git:  a llama.cpp repository (URL or local path); its tags matching a pattern ("b*": llama.cpp tags every merge to
  master bNNNN), ordered by the numbers in them (b10 after b9), each pointing at a commit; or a full commit hash.
"Older" is never new: an index that lags or a deleted tag must not trigger a night.
Air-gapped workers: a pinned PyPI version needs no index; with none reachable, detection says so and goes on with that
build, which the GPU worker reuses or builds from its cached sdist (path sources and local git repositories never ask).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from vramwatch.builds.process import say
from vramwatch.config import BuildSource
from vramwatch.errors import UserError
from vramwatch.records import BuildCheck
from vramwatch.redact import basic_auth, credentials, git_auth_env

PROJECT = "llama-cpp-python"
PYPI_SIMPLE = "https://pypi.org/simple/"
GIT_LATEST_PATTERN = "b*"  # what version "latest" means for a llama.cpp repository


@dataclass(frozen=True)
class Candidate:
    version: str  # llama-cpp-python version, or the git tag
    commit: str = ""  # git sources: the commit the tag points at


# ----------------------------------------------------------------------------------------------- PEP 503 index


class _SimplePageParser(HTMLParser):
    """File names of a PEP 503 project page, leaving out yanked files (PEP 592)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] = []
        self._anchor: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._anchor = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._anchor is not None and "data-yanked" not in self._anchor and data.strip():
            self.files.append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._anchor = None


def _sdist_versions(filenames: list[str]) -> dict[Version, str]:
    """Versions that have an sdist (llama-cpp-python is built from source, so a wheel-only version is no use)."""
    versions: dict[Version, str] = {}
    for name in filenames:
        try:
            project, version = parse_sdist_filename(name)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if project == canonicalize_name(PROJECT):
            versions[version] = str(version)
    return versions


class IndexUnreachable(UserError):
    """No answer from the package index (no route, refused, DNS, timeout): not the same as an index that answers."""


def index_url(location: str) -> str:
    return (location or PYPI_SIMPLE).rstrip("/") + "/"


def index_versions(location: str) -> dict[Version, str]:
    """llama-cpp-python versions with an sdist on the PEP 503 index at `location` (empty = PyPI)."""
    url = f"{index_url(location)}{canonicalize_name(PROJECT)}/"  # masked: what messages say
    bare, user_password = credentials(url)
    # the user and token as HTTP basic auth: left in the URL, urllib would resolve "user:token@host" as a host name
    headers = {"Accept": "text/html"} | ({"Authorization": basic_auth(user_password)} if user_password else {})
    request = urllib.request.Request(bare, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            page = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise UserError(f"{url}: HTTP {exc.code}: the index has no {PROJECT}",
                        "set build.location to a PEP 503 index that has it, or leave it empty for PyPI") from None
    except (urllib.error.URLError, OSError) as exc:
        raise IndexUnreachable(f"cannot reach package index {url}: {getattr(exc, 'reason', exc)}",
                               "check the network, or build from a bundle (build.source: path)") from None
    parser = _SimplePageParser()
    parser.feed(page)
    return _sdist_versions(parser.files)


def directory_versions(location: str) -> dict[Version, str]:
    """llama-cpp-python versions with an sdist in a local directory (a bundle)."""
    folder = Path(location)
    if not location or not folder.is_dir():
        raise UserError(f"build.location {location!r} is not a directory",
                        "point build.location at a bundle made by `vramwatch builds bundle`")
    return _sdist_versions([p.name for p in folder.iterdir()])


def _pick_release(versions: dict[Version, str], wanted: str, where: str) -> Candidate:
    if not versions:
        raise UserError(f"no {PROJECT} sdist found at {where}", "check build.location")
    if wanted == "latest":
        finals = [v for v in versions if not v.is_prerelease] or list(versions)
        return Candidate(versions[max(finals)])
    try:
        parsed = Version(wanted)
    except InvalidVersion:
        raise UserError(f"{wanted!r} is not a {PROJECT} version", "use e.g. '0.3.36' or 'latest'") from None
    if parsed not in versions:
        recent = ", ".join(versions[v] for v in sorted(versions)[-5:])
        raise UserError(f"{PROJECT} {wanted} is not available at {where}",
                        f"use 'latest' or one of the newest: {recent}")
    return Candidate(versions[parsed])


# ----------------------------------------------------------------------------------------------- git tags


def tag_order(tag: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: runs of digits compare as numbers, so b10 > b9 and b1000 > b999."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", tag))


def git_tags(location: str) -> dict[str, str]:
    """Tag -> commit of a git repository (URL or local path), annotated tags peeled to their commit."""
    remote, auth_env = git_auth_env(location)
    try:
        done = subprocess.run(["git", "ls-remote", "--tags", "--", remote], capture_output=True, text=True,
                              timeout=300, env=os.environ | auth_env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot list tags of {location}: {exc}", "check that git is installed and the URL") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["git ls-remote failed"])[-1]
        raise UserError(f"cannot list tags of {location}: {reason}",
                        "set build.location to a llama.cpp git URL or a local clone")
    tags: dict[str, str] = {}
    for line in done.stdout.splitlines():
        commit, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = commit  # the peeled commit of an annotated tag wins over the tag object
        else:
            tags.setdefault(name, commit)
    return tags


def _pick_tag(tags: dict[str, str], wanted: str, location: str) -> Candidate:
    pattern = GIT_LATEST_PATTERN if wanted == "latest" else wanted
    if any(ch in pattern for ch in "*?["):
        matching = [t for t in tags if fnmatch.fnmatchcase(t, pattern)]
        if not matching:
            raise UserError(f"no tag of {location} matches {pattern!r}", "use a tag pattern like 'b*' or an exact tag")
        newest = max(matching, key=tag_order)
        return Candidate(newest, tags[newest])
    if wanted not in tags:
        raise UserError(f"{location} has no tag {wanted!r}",
                        "use an existing tag (llama.cpp tags releases bNNNN) or a pattern like 'b*'")
    return Candidate(wanted, tags[wanted])


# ----------------------------------------------------------------------------------------------- public


def find_build(source: BuildSource, wanted: str | None = None) -> Candidate:
    """The build `wanted` names (default: source.version): 'latest', an exact version/tag, or a tag pattern (git)."""
    wanted = wanted or source.version
    if source.source == "git":
        if re.fullmatch(r"[0-9a-f]{40}", wanted):  # a commit (a bisection's candidate) names itself
            return Candidate(wanted, wanted)
        return _pick_tag(git_tags(source.location), wanted, source.location)
    where = source.location if source.source == "path" else index_url(source.location)
    try:
        versions = release_versions(source)
    except IndexUnreachable as unreachable:
        if not _is_exact_version(wanted):  # "latest" needs the index to know what latest is
            raise
        # Detection may run on a default worker with no engine cache: the GPU worker's build stage reuses its engine,
        # or its cached sdist, and fails there with its own reason if it has neither.
        say(f"no index reachable, using the pinned build {wanted} ({unreachable.message})")
        return Candidate(wanted)
    return _pick_release(versions, wanted, where)


def _is_exact_version(wanted: str) -> bool:
    try:
        Version(wanted)
    except InvalidVersion:
        return False
    return True


def release_versions(source: BuildSource) -> dict[Version, str]:
    """The llama-cpp-python versions a pypi or path source has an sdist of."""
    if source.source == "path":
        return directory_versions(source.location)
    return index_versions(source.location)


def _is_newer(source: BuildSource, latest: str, last: str) -> bool:
    if source.source == "git":
        pattern = GIT_LATEST_PATTERN if source.version == "latest" else source.version
        # A last build outside this tag series (another pattern, a PyPI version) says nothing about order: run.
        if any(ch in pattern for ch in "*?[") and not fnmatch.fnmatchcase(last, pattern):
            return True
        return tag_order(latest) > tag_order(last)
    try:
        return Version(latest) > Version(last)
    except InvalidVersion:
        return True


def check_for_new_build(source: BuildSource, last_benchmarked: str | None, force: bool = False) -> BuildCheck:
    """Newest build of `source` against the last one benchmarked: new only if strictly newer (older is not new)."""
    found = find_build(source)
    is_new = last_benchmarked is None or (found.version != last_benchmarked
                                          and _is_newer(source, found.version, last_benchmarked))
    return BuildCheck(latest=found.version, last_benchmarked=last_benchmarked, is_new=is_new, forced=force,
                      commit=found.commit)
