"""Source trees to build from: a llama-cpp-python sdist unpacked once, or that sdist around a llama.cpp git checkout.

Layout under Paths.cache (it outlives clones of the repository):
  sdists/llama_cpp_python-<version>.tar.gz       downloaded once (pip download --no-binary :all:)
  src/<version>/                                 unpacked once; others read vendor/llama.cpp/models/ggml-vocab-*.gguf
  git/<repo>-<hash>.git                          a bare repository holding the fetched llama.cpp tags and commits
  src/<bindings>+llama.cpp-<commit12>/           the bindings around that llama.cpp commit (git sources)
Every tree appears by an atomic rename, so an interrupted unpack never leaves a half tree that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from vramwatch.builds.detect import PROJECT, index_url
from vramwatch.builds.process import StepFailed, engine_env, run_step, say
from vramwatch.builds.slim import LLAMA
from vramwatch.config import Paths
from vramwatch.errors import UserError
from vramwatch.records import BuildRequest
from vramwatch.redact import git_auth_env, redact, with_credentials

# The llama-cpp-python release whose bindings wrap llama.cpp checkouts from git. Its ctypes declarations follow the
# llama.h it was released with: far-away llama.cpp tags may fail to build or to load, and the build record says so.
GIT_BINDINGS_VERSION = "0.3.36"
# Written by us into trees that have no git metadata (bundles, git checkouts): the llama.cpp commit, one line.
COMMIT_MARKER = "LLAMA_CPP_COMMIT"
UNKNOWN_COMMIT = "unknown"
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class SourceTree:
    path: Path
    llama_cpp_python_version: str
    llama_cpp_commit: str


def find_sdist(folder: Path, version: str) -> Path | None:
    """The llama-cpp-python sdist of `version` in `folder` (PEP 440 equal: 0.3.36 finds 0.3.36.0 too)."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        try:
            name, found = parse_sdist_filename(path.name)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if name == canonicalize_name(PROJECT) and found == Version(version):
            return path
    return None


@dataclass(frozen=True)
class PipIndex:
    """Where pip finds packages: its arguments, and the environment it runs in. A private index's URL, with its
    credentials, goes in the environment (PIP_INDEX_URL): a process's environment is readable by its own user only,
    its command line by every local user through /proc/<pid>/cmdline."""

    args: tuple[str, ...]
    env: dict[str, str]


def pip_index(request: BuildRequest) -> PipIndex:
    """A bundle directory only (no network), the configured index (pip sends its token as HTTP basic auth), or pip's
    own default."""
    if request.source == "path":
        return PipIndex(("--no-index", "--find-links", request.location,
                         "--find-links", str(Path(request.location, "wheels"))), engine_env())
    if request.source == "pypi" and request.location:
        return PipIndex((), {**engine_env(), "PIP_INDEX_URL": with_credentials(index_url(request.location))})
    return default_index()


def default_index() -> PipIndex:
    """pip's own configuration (pip.conf, PIP_* variables)."""
    return PipIndex((), engine_env())


def fetch_sdist(version: str, index: PipIndex, paths: Paths, log: Path) -> Path:
    """The sdist from the cache, downloading it once."""
    folder = paths.cache / "sdists"
    cached = find_sdist(folder, version)
    if cached:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    run_step("download sdist", [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                                "--dest", folder, *index.args, f"{PROJECT}=={version}"], log, env=index.env)
    found = find_sdist(folder, version)
    if not found:
        raise StepFailed(f"download sdist failed: pip left no {PROJECT} {version} sdist in {folder}")
    return found


def appear_atomically(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Create `dest` by filling a scratch directory beside it and renaming it into place."""
    scratch = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        fill(scratch)
        scratch.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Every member of `tar` under `dest` and nothing outside it: PEP 706's "data" filter where Python has it (3.11.4
    and later); Debian 12's Python 3.11.2 has not, so there the same refusal of paths and links that leave `dest`."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = Path(dest).resolve()

    def inside() -> Iterator[tarfile.TarInfo]:
        for member in tar:  # in order: a stream ("r|") can be read only once
            target = (root / member.name).resolve()
            link = (target.parent / member.linkname).resolve() if member.issym() else (root / member.linkname).resolve()
            if member.isdev() or not target.is_relative_to(root) or (
                    (member.issym() or member.islnk()) and not link.is_relative_to(root)):
                raise tarfile.TarError(f"{member.name}: refused, it would land outside {dest}")
            yield member

    tar.extractall(dest, members=inside())


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack once; the sdist's single top directory becomes `dest`."""
    if dest.is_dir():
        return dest

    def fill(scratch: Path) -> None:
        with tarfile.open(sdist) as tar:
            extract_all(tar, scratch / "x")
        (top,) = (scratch / "x").iterdir()
        for child in top.iterdir():
            child.rename(scratch / child.name)
        shutil.rmtree(scratch / "x")

    say(f"unpacking {sdist.name} -> {dest}")
    try:
        return appear_atomically(dest, fill)
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise StepFailed(f"unpack {sdist.name} failed: {exc}") from None


def read_llama_cpp_commit(tree: Path) -> str:
    """The vendored llama.cpp commit: our marker, else the submodule HEAD that PyPI sdists carry in .git."""
    for candidate in (tree / COMMIT_MARKER, tree / ".git" / "modules" / "vendor" / "llama.cpp" / "HEAD"):
        if candidate.is_file():
            text = candidate.read_text().strip()
            if _SHA1.match(text):
                return text
    return UNKNOWN_COMMIT


def release_source(request: BuildRequest, paths: Paths, log: Path) -> SourceTree:
    """A llama-cpp-python release (pypi or a bundle directory), unpacked under paths.cache/src/<version>/."""
    if request.source == "path":
        sdist = find_sdist(Path(request.location), request.version)
        if not sdist:
            raise UserError(f"no {PROJECT} {request.version} sdist in {request.location}",
                            "make one with `vramwatch builds bundle --out DIR` and point build.location at DIR")
    else:
        sdist = fetch_sdist(request.version, pip_index(request), paths, log)
    tree = unpack_sdist(sdist, paths.cache / "src" / request.version)
    commit = read_llama_cpp_commit(tree)
    if commit == UNKNOWN_COMMIT:
        say(f"llama.cpp commit unknown: {sdist.name} carries no vendor/llama.cpp commit marker; recording 'unknown'")
    return SourceTree(tree, request.version, commit)


def _bare_repo(location: str, paths: Paths) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40]
    repo = paths.cache / "git" / f"{name}-{hashlib.sha256(location.encode()).hexdigest()[:10]}.git"
    if not (repo / "HEAD").is_file():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", str(repo)], check=True)
    return repo


def is_commit(ref: str) -> bool:
    """A full llama.cpp commit hash (what git sources build besides tags: a bisection's candidates)."""
    return bool(_SHA1.match(ref))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _fetch_url(location: str) -> str:
    local = Path(location)
    return local.resolve().as_uri() if local.is_dir() else location  # file:// lets --depth work locally


def _has_commit(repo: Path, commit: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def fetch_commit(location: str, ref: str, paths: Paths, log: Path) -> tuple[Path, str]:
    """The bare repository of `location` holding `ref` (a tag or a full commit hash), fetched with --depth 1 unless
    it is there already; returns the repository and the commit."""
    repo = _bare_repo(location, paths)
    remote, auth_env = git_auth_env(_fetch_url(location))
    env = engine_env() | auth_env
    if is_commit(ref):
        if not _has_commit(repo, ref):
            run_step("fetch llama.cpp", ["git", "-C", repo, "fetch", "--depth", "1", "--no-tags", "--", remote, ref],
                     log, env)
        return repo, ref
    run_step("fetch llama.cpp", ["git", "-C", repo, "fetch", "--depth", "1", "--no-tags", "--", remote,
                                 f"+refs/tags/{ref}:refs/tags/{ref}"], log, env)
    return repo, _git(repo, "rev-parse", f"refs/tags/{ref}^{{commit}}").stdout.strip()


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    subject: str
    date: str  # committer date, ISO 8601


def fetch_history(location: str, commit: str, paths: Paths, log: Path) -> Path:
    """The bare repository of `location` with the whole history of `commit` (a bisection lists commits from it)."""
    repo = _bare_repo(location, paths)
    deepen = ["--unshallow"] if (repo / "shallow").is_file() else []
    remote, auth_env = git_auth_env(_fetch_url(location))
    done = subprocess.run(["git", "-C", str(repo), "fetch", "--no-tags", *deepen, "--", remote,
                           f"+{commit}:refs/bisect/{commit}"], capture_output=True, text=True, timeout=1800,
                          env=os.environ | auth_env)
    with log.open("a") as out:
        out.write(redact(done.stdout + done.stderr))
    if done.returncode != 0 and not _has_commit(repo, commit):
        reason = (done.stderr.strip().splitlines() or ["git fetch failed"])[-1]
        raise UserError(f"cannot fetch llama.cpp {commit[:12]} from {location}: {reason}",
                        "check the commit and the repository (--repository: a llama.cpp URL or a local mirror)")
    return repo


def commit_info(repo: Path, commit: str) -> CommitInfo:
    subject, _, date = _git(repo, "log", "-1", "--format=%s%x00%cI", commit).stdout.strip().partition("\0")
    return CommitInfo(commit, subject, date)


def first_parent_commits(repo: Path, good: str, bad: str) -> list[CommitInfo] | None:
    """The first-parent commits after `good` up to and including `bad`, oldest first (the merges to master, as
    llama.cpp tags them); None when `good` is not an ancestor of `bad` (the range is not reachable)."""
    if _git(repo, "merge-base", "--is-ancestor", good, bad).returncode != 0:
        return None
    listed = _git(repo, "log", "--first-parent", "--reverse", "--format=%H%x00%s%x00%cI", f"{good}..{bad}").stdout
    return [CommitInfo(*line.split("\0", 2)) for line in listed.splitlines() if line]


def git_source(request: BuildRequest, commit: str, paths: Paths, log: Path) -> SourceTree:
    """The bindings of GIT_BINDINGS_VERSION with vendor/llama.cpp replaced by `request.version` (a tag or a commit)."""
    dest = paths.cache / "src" / f"{GIT_BINDINGS_VERSION}+llama.cpp-{commit[:12]}"
    if dest.is_dir():
        return SourceTree(dest, GIT_BINDINGS_VERSION, commit)
    bindings = release_source(BuildRequest(version=GIT_BINDINGS_VERSION), paths, log).path
    repo, fetched = fetch_commit(request.location, request.version, paths, log)
    if fetched != commit:
        raise StepFailed(f"fetch llama.cpp failed: {request.version} is {fetched or 'missing'}, expected {commit}")

    def fill(scratch: Path) -> None:
        left_out = {bindings: {".git"}, bindings / "vendor": {"llama.cpp"}}  # old history, the old llama.cpp
        shutil.copytree(bindings, scratch, dirs_exist_ok=True, symlinks=True,
                        ignore=lambda folder, names: left_out.get(Path(folder), set()))
        checkout = scratch / LLAMA
        checkout.mkdir(parents=True)
        if not _git(repo, "ls-tree", commit).stdout.strip():  # tarfile cannot read git's archive of no files
            raise StepFailed(f"llama.cpp {commit[:12]} has an empty tree: nothing to build")
        archive = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=subprocess.PIPE)
        try:
            with archive, tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                extract_all(tar, checkout)
                # tarfile stops at the end-of-archive marker; git still writes its padding after it and, with the
                # pipe closed, dies of SIGPIPE (status -13) now and then: read the stream to its end
                while archive.stdout.read(1 << 16):
                    pass
        except tarfile.TarError as exc:
            raise StepFailed(f"git archive {commit} is not a readable tar: {exc}") from None
        if archive.returncode != 0:
            raise StepFailed(f"git archive {commit} failed with status {archive.returncode}")
        (scratch / COMMIT_MARKER).write_text(commit + "\n")

    say(f"assembling llama-cpp-python {GIT_BINDINGS_VERSION} around llama.cpp {request.version} ({commit[:12]}) "
        f"-> {dest}")
    return SourceTree(appear_atomically(dest, fill), GIT_BINDINGS_VERSION, commit)
