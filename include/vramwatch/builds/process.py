"""Run one long build step as a subprocess, streaming its output.

Every line is progress as it comes (vramwatch.progress: the task log at INFO in Airflow, stderr in the CLI, so a
10-minute compile shows progress) and goes to the build's log file; a failure becomes one line naming its cause plus the last lines, for the BuildRecord.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vramwatch.progress import for_stage, relay
from vramwatch.redact import redact

TAIL_LINES = 40

# The first line matching the earliest pattern in this list names the cause; later errors are usually fallout.
_CAUSES = (
    re.compile(r"CMake Error"),
    re.compile(r"\b(fatal )?error\b:", re.IGNORECASE),
    re.compile(r"^FAILED: "),
    re.compile(r"^ERROR: "),
)


class StepFailed(Exception):
    """A build step that failed for a reason in the build, not in the caller's input."""

    def __init__(self, error: str, log_tail: str = "") -> None:
        error, log_tail = redact(error), redact(log_tail)  # both reach the build record, the warehouse and alerts
        super().__init__(error)
        self.error = error
        self.log_tail = log_tail


say = for_stage("builds")
_step_said = relay("builds")


def failure_cause(lines: Sequence[str]) -> str:
    """One line naming why a build failed. CMake puts its message on the line after 'CMake Error at ...:'."""
    for pattern in _CAUSES:
        for i, line in enumerate(lines):
            if pattern.search(line):
                cause = line.strip()
                if cause.endswith(":"):
                    following = next((n.strip() for n in lines[i + 1:i + 4] if n.strip()), "")
                    cause = f"{cause} {following}".strip()
                return cause[:400]
    return ""


def engine_env() -> dict[str, str]:
    """This environment minus what would leak the caller's packages into an engine venv: with PYTHONPATH set,
    pip counts the caller's packages as installed and leaves them out of the venv, whose bench child then fails."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_step(
    title: str, cmd: Sequence[str | os.PathLike[str]], log: Path, env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run `cmd`, streaming its output; raise StepFailed(one line, last lines) if it exits non-zero."""
    argv = [str(part) for part in cmd]
    shown = redact(shlex.join(argv))  # a URL in the command may carry a token
    say(f"{title}: {shown}")
    lines: list[str] = []
    with open(log, "a", encoding="utf-8") as log_file:
        log_file.write(f"\n### {title}: {shown}\n")
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                env=env if env is not None else engine_env(), cwd=cwd,
            )
        except OSError as exc:
            raise StepFailed(f"{title}: cannot run {argv[0]}: {exc.strerror}") from None
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = redact(line)
                _step_said(line.rstrip("\n"))
                log_file.write(line)
                lines.append(line.rstrip("\n"))
    if proc.returncode != 0:
        cause = failure_cause(lines) or f"exited with status {proc.returncode}"
        raise StepFailed(f"{title} failed: {cause}", "\n".join(lines[-TAIL_LINES:]))
