"""One way for a long step to say what it is doing: an INFO record on the logger `vramwatch.<stage>`.

In an Airflow task, Python logging is the task log, so progress shows there at INFO; what a task writes to stderr
shows as ERROR. A program that sets up no logging of its own (the CLI, the bench child in the engine's venv) calls
`to_stderr()` once and gets `[stage] message` lines on stderr, flushed at once.

Every line is redacted (vramwatch.redact): a URL's token never reaches a log.

Stdlib only: the bench and quantize children run it inside the engine's venv.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from vramwatch.redact import redact

ROOT = "vramwatch"


def logger(stage: str) -> logging.Logger:
    return logging.getLogger(ROOT if stage == ROOT else f"{ROOT}.{stage}")


def for_stage(stage: str) -> Callable[[str], None]:
    """say(message) for one stage: logs `message` at INFO on its stage's logger, so a task log shows who spoke."""
    log = logger(stage)

    def say(message: str) -> None:
        log.info(redact(message))

    return say


def relay(stage: str) -> Callable[[str], None]:
    """For the lines a child process prints (already tagged by the child, or a compiler's own): logged at INFO as
    they are, without a second tag."""
    log = logger(stage)

    def said(line: str) -> None:
        log.info(redact(line), extra={"relayed": True})

    return said


class _Tagged(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if getattr(record, "relayed", False):
            return message
        stage = record.name.removeprefix(f"{ROOT}.") if record.name != ROOT else ROOT
        return f"[{stage}] {message}"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream), not the one at setup."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - the property logging.StreamHandler reads and writes
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def to_stderr() -> None:
    """Show progress (INFO and up from every vramwatch logger) on stderr; idempotent. Only for processes where no one
    else routes logging: in Airflow the task log already takes it."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(handler, _CurrentStderr) for handler in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_Tagged())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
