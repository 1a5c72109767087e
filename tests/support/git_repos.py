"""Local git repositories for the tests: commit files one commit at a time, with a fixed author and date."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_AUTHOR_DATE": "2026-11-01T12:00:00+00:00",
           "GIT_COMMITTER_DATE": "2026-11-01T12:00:00+00:00", "PATH": "/usr/bin:/bin"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout.strip()


def init_repo(repo: Path) -> Path:
    """A new repository whose objects are neither delta-compressed nor zlib-compressed: the tests' repositories are
    read by local fetches only, and a fetch of a llama.cpp tree spent 9 CPU-seconds (130 s on the shared machine)
    compressing a pack that it unpacked again at once; 1.3 CPU-seconds without."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "--quiet", "--initial-branch=master")
    git(repo, "config", "core.compression", "0")
    git(repo, "config", "pack.window", "0")
    return repo


def commit(repo: Path, subject: str, files: dict[str, str]) -> str:
    """Write `files` (path -> text) and commit them all; returns the commit hash."""
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", subject)
    return git(repo, "rev-parse", "HEAD")
