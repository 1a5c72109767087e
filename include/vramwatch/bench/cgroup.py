"""The memory cgroup a bench child runs in: how the runner tells the kernel's OOM killer from any other SIGKILL.

A SIGKILL carries no sender. The kernel counts its OOM kills per memory cgroup, though (`oom_kill` in
`memory.events` on cgroup v2, in `memory.oom_control` on v1, charged to the victim's cgroup), so a child that died
by SIGKILL while that counter rose was killed for memory. With a host-memory limit the child gets a cgroup of its
own (a sub-cgroup of ours, `memory.max` / `memory.limit_in_bytes` set), which makes the count exact and keeps a
runaway config from taking the worker's memory with it. Both need the memory controller mounted and writable (root,
or a delegated cgroup); without it the runner classifies as before and a requested limit fails its config in one
line.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
_NAMES = itertools.count()


class CgroupUnavailable(Exception):
    """No memory cgroup can be made or read here; the message says why."""


@dataclass(frozen=True)
class _Layout:
    """Where one cgroup version keeps the files the runner uses."""

    limit: str  # the hard memory limit, in bytes
    swap_limit: str  # memory plus swap (v1) or swap alone (v2): without it the child swaps instead of dying
    events: str  # holds the `oom_kill N` line


V1 = _Layout(limit="memory.limit_in_bytes", swap_limit="memory.memsw.limit_in_bytes", events="memory.oom_control")
V2 = _Layout(limit="memory.max", swap_limit="memory.swap.max", events="memory.events")


@dataclass(frozen=True)
class MemoryCgroup:
    path: Path
    layout: _Layout
    limit_bytes: int = 0  # 0: not set by us
    owned: bool = False  # made for one child: removed when it is done

    @classmethod
    def current(cls) -> MemoryCgroup | None:
        """The memory cgroup this process runs in (a child starts in it too); None where no memory controller is
        mounted or this process cannot see its cgroup."""
        try:
            return cls._current()
        except CgroupUnavailable:
            return None

    @classmethod
    def _current(cls) -> MemoryCgroup:
        try:
            memberships = Path("/proc/self/cgroup").read_text().splitlines()
            mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot read this process's cgroups: {exc.strerror}") from None
        v1_path = next((line.split(":", 2)[2] for line in memberships
                        if "memory" in line.split(":", 2)[1].split(",")), None)
        v2_path = next((line.split(":", 2)[2] for line in memberships if line.startswith("0::")), None)
        found = {}  # fstype -> the directory of this process's cgroup in that hierarchy
        for mount in mounts:  # "<id> <parent> <dev> <root> <mount point> <options> ... - <fstype> <source> <super>"
            fields, _, tail = mount.partition(" - ")
            root, mount_point = fields.split()[3:5]
            fstype, _, super_options = tail.split(" ", 2)
            if fstype == "cgroup" and v1_path and "memory" in super_options.split(","):
                found["cgroup"] = _inside(Path(mount_point), root, v1_path)
            elif fstype == "cgroup2" and v2_path:
                found["cgroup2"] = _inside(Path(mount_point), root, v2_path)
        if "cgroup" in found:  # a hybrid host mounts v2 too, but the memory controller is on v1
            return cls(found["cgroup"], V1)
        if "cgroup2" in found and (found["cgroup2"] / V2.events).is_file():  # memory is on for this cgroup
            return cls(found["cgroup2"], V2)
        raise CgroupUnavailable("no memory cgroup controller is mounted for this process")

    @classmethod
    def limited(cls, limit_mib: int) -> MemoryCgroup:
        """A new cgroup under this process's, limited to `limit_mib` MiB of memory and no swap, for one child."""
        parent = cls._current()
        path = parent.path / f"vramwatch-bench-{os.getpid()}-{next(_NAMES)}"
        limit = limit_mib * MIB
        try:
            if parent.layout is V2:  # a v2 child only has memory files if its parent hands the controller down
                (parent.path / "cgroup.subtree_control").write_text("+memory")
            path.mkdir()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot make a cgroup under {parent.path}: {exc.strerror}") from None
        cgroup = cls(path, parent.layout, limit_bytes=limit, owned=True)
        try:
            (path / parent.layout.limit).write_text(str(limit))
            swap = path / parent.layout.swap_limit
            if swap.exists():  # absent where the kernel accounts no swap: then there is none to use
                swap.write_text(str(limit) if parent.layout is V1 else "0")
        except OSError as exc:
            cgroup.remove()
            raise CgroupUnavailable(f"cannot set the memory limit of {path}: {exc.strerror}") from None
        return cgroup

    def oom_kills(self) -> int | None:
        """How many processes of this cgroup the kernel's OOM killer has killed; None where it does not say."""
        try:
            lines = (self.path / self.layout.events).read_text().splitlines()
        except OSError:
            return None
        return next((int(line.split()[1]) for line in lines if line.startswith("oom_kill ")), None)

    def add(self, pid: int) -> None:
        """Move a process into this cgroup: what it allocates from then on counts against the limit."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def describe(self) -> str:
        where = f"cgroup {self.path}"
        return f"host memory limit {self.limit_bytes // MIB} MiB, {where}" if self.limit_bytes else where

    def remove(self) -> None:
        """Remove an owned cgroup once its processes are gone (the kernel may take a moment to let it go)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _inside(mount_point: Path, mount_root: str, cgroup_path: str) -> Path:
    """The directory of `cgroup_path` (as /proc/self/cgroup names it) under a mount of the hierarchy's `mount_root`."""
    if mount_root != "/" and cgroup_path.startswith(mount_root):
        cgroup_path = cgroup_path[len(mount_root):]
    return mount_point / cgroup_path.lstrip("/")
