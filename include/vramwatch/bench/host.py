"""The bench machine's CPU side: physical cores, CPU model, RAM, and host memory bandwidth.

Offload decode reads expert weights from host RAM, so its speed limit is this machine's memory bandwidth, measured
in the same child that measured the speed (numbers from another run or a spec sheet would not be comparable).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")


def physical_cores(cpuinfo: str | None = None) -> int:
    """Distinct (physical id, core id) pairs: llama-bench's default thread count; os.cpu_count() without them."""
    text = cpuinfo if cpuinfo is not None else _read(CPUINFO)
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or os.cpu_count() or 1


def hostname() -> str:
    """The machine's name: a bench on another host is an environment change the regress stage reports."""
    return socket.gethostname()


def cpu_model() -> str:
    for line in _read(CPUINFO).splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return ""


def ram_gib() -> float:
    for line in _read(MEMINFO).splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / (1024 * 1024), 1)
    return 0.0


def host_copy_bandwidth_gbs(n_threads: int, mib: int = 1024, repeats: int = 3) -> float:
    """Best of `repeats` parallel numpy copies of `mib` MiB, in GB/s counting bytes read plus bytes written.

    One thread per decode thread (numpy releases the GIL while copying), since decode streams weights with that
    many threads; the first pass faults the pages in and is not timed.
    """
    import numpy as np

    n_threads = max(1, n_threads)
    chunk = max(1, mib * 1024 * 1024 // n_threads)
    sources = [np.ones(chunk, dtype=np.uint8) for _ in range(n_threads)]
    targets = [np.empty_like(s) for s in sources]

    def copy_all() -> float:
        threads = [threading.Thread(target=np.copyto, args=(t, s)) for t, s in zip(targets, sources)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    copy_all()
    best = min(copy_all() for _ in range(repeats))
    return round(2 * chunk * n_threads / best / 1e9, 2)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
