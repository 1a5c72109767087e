"""One way for a long step to say what it is doing: a tagged line on stderr, flushed at once.

Stdlib only: the bench and quantize children run it inside the engine's venv.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def for_stage(stage: str) -> Callable[[str], None]:
    """say(message) for one stage: prints `[stage] message` so a task log shows which stage spoke."""

    def say(message: str) -> None:
        print(f"[{stage}] {message}", file=sys.stderr, flush=True)

    return say
