"""One process at a time on a build's files: an flock on a lock file that names its holder."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vramwatch.builds.process import say


@contextmanager
def exclusive(lock_path: Path, waiting: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock at `lock_path`; a second process waits, saying `waiting` (its "{holder}" names the first).
    wait False: yields False at once if another process holds it, True once this one does."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            lock.seek(0)
            say(waiting.format(holder=lock.read().strip() or "another process"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        yield True  # closing the file releases the lock, also when the process dies
