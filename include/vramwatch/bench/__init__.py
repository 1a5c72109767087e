"""Bench stage: one child process per config (modes, timing, memory, fingerprint) and its parent.

Kept light on purpose: the child imports this package inside the engine venv, which has only the stdlib, numpy and
llama_cpp, so `run_config` (the parent's entry point) is imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MARKER", "run_config"]

MARKER = "VRAMWATCH_RESULT "  # starts the child's one result line on stdout (the parent never imports the child)


def __getattr__(name: str) -> Any:
    if name == "run_config":
        from vramwatch.bench.runner import run_config

        return run_config
    raise AttributeError(name)
