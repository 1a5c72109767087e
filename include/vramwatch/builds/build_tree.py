"""The persistent build tree of a build slot, so that a nearby llama.cpp commit rebuilds in minutes, not from scratch.

    paths.cache/build/<slot>/src/     the slim source of the last build in this slot, synced file by file
    paths.cache/build/<slot>/cmake/   its CMake/ninja tree, kept between builds
    paths.cache/build/<slot>.lock     held while a build uses the slot: two builds never share a tree at once
    paths.cache/ccache/               ccache's store (compiler launcher), shared by every slot

A slot is what must match for a tree to be reused: the backend and the CMake flags; not the llama.cpp commit nor the
bindings version. A new commit's files are synced in, writing only files whose content differs (their mtime becomes
now) and keeping the mtime of the rest, so ninja recompiles only what changed; ccache serves objects another slot or
an earlier commit already compiled.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vramwatch.builds.locking import exclusive
from vramwatch.builds.slim import keep
from vramwatch.config import Paths
from vramwatch.records import BuildRequest

# ccache's settings unless the environment sets them: paths under the build trees hash as relative (two slots, or a
# tree that moved, still hit), the working directory is not hashed, and the store stays bounded.
CCACHE_DEFAULTS = {"CCACHE_NOHASHDIR": "true", "CCACHE_MAXSIZE": "10G"}


@dataclass(frozen=True)
class SyncCount:
    written: int
    removed: int
    unchanged: int

    def __str__(self) -> str:
        return f"{self.written} files written, {self.removed} removed, {self.unchanged} unchanged"


def build_slot(request: BuildRequest) -> str:
    """The slot whose tree a build of `request` reuses: one per backend and CMake flags, whatever the llama.cpp commit
    or bindings version, so the trees on a worker stay few (a CUDA tree is GBs) and a release bisection reuses them too.
    """
    identity = {"backend": request.backend, "cuda_architectures": request.cuda_architectures,
                "cmake_args": request.cmake_args}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{request.backend}-{digest}"


def slot_dir(paths: Paths, slot: str) -> Path:
    return paths.cache / "build" / slot


def slot_lock(paths: Paths, slot: str, wait: bool = True):
    """Hold the slot's tree (a context manager yielding whether it is held; see locking.exclusive)."""
    return exclusive(slot_dir(paths, slot).with_name(f"{slot}.lock"),
                     f"waiting for the build tree {slot} that {{holder}} is using", wait)


def ccache_env(paths: Paths) -> dict[str, str]:
    """Environment for ccache as compiler launcher: the store under paths.cache, unless the caller set CCACHE_*."""
    wanted = {"CCACHE_DIR": str(paths.cache / "ccache"), "CCACHE_BASEDIR": str(paths.cache / "build"),
              **CCACHE_DEFAULTS}
    return {name: os.environ.get(name, value) for name, value in wanted.items()}


def _same(source: Path, dest: Path) -> bool:
    if source.is_symlink() or dest.is_symlink():
        return source.is_symlink() and dest.is_symlink() and os.readlink(source) == os.readlink(dest)
    return dest.is_file() and filecmp.cmp(source, dest, shallow=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write(source: Path, dest: Path) -> None:
    """Replace `dest` by a copy of `source` in one rename; its mtime is now, so ninja sees it changed."""
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    scratch = dest.with_name(f".{dest.name}.sync-{os.getpid()}")
    if source.is_symlink():
        scratch.symlink_to(os.readlink(source))
    else:
        shutil.copyfile(source, scratch)
        shutil.copymode(source, scratch)
    os.replace(scratch, dest)


def sync_tree(source: Path, dest: Path) -> SyncCount:
    """Make `dest` hold what copy_slim would copy from `source`, touching only what differs: files whose content
    changed are rewritten, files that are gone are removed, every other file keeps its mtime."""
    kept: set[str] = set()
    written = unchanged = 0
    for folder, dirs, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        if (dest / rel).is_symlink() or (dest / rel).is_file():  # a file or link that became a folder
            (dest / rel).unlink()
        (dest / rel).mkdir(parents=True, exist_ok=True)
        entries = [n for n in dirs if Path(folder, n).is_symlink()] + files  # a link to a folder stays a link
        dirs[:] = [n for n in dirs if n not in entries and keep((rel / n).as_posix())]
        kept.update((rel / n).as_posix() for n in dirs)
        for name in entries:
            relpath = (rel / name).as_posix()
            if not keep(relpath):
                continue
            kept.add(relpath)
            if _same(source / relpath, dest / relpath):
                unchanged += 1
            else:
                _write(source / relpath, dest / relpath)
                written += 1
    removed = 0
    for folder, dirs, files in os.walk(dest, topdown=True):
        rel = Path(folder).relative_to(dest)
        for name in [*dirs, *files]:
            if (rel / name).as_posix() not in kept:
                _remove(dest / rel / name)
                removed += 1
        dirs[:] = [n for n in dirs if (rel / n).as_posix() in kept]
    return SyncCount(written, removed, unchanged)
