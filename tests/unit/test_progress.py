"""Progress: INFO records on `vramwatch.<stage>` loggers (what Airflow's task log shows at INFO), and `[stage] message`
lines on stderr where a process asks for them (the CLI, the bench child). Each case runs in a fresh interpreter:
logging's setup is per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(INCLUDE)}, check=True)


def test_progress_is_an_info_record_on_its_stages_logger_and_not_stderr_text():
    """Fault: progress was printed to stderr, which Airflow's task log shows as ERROR."""
    said = run("""
        import logging, sys
        from vramwatch.progress import for_stage, relay
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)  # what Airflow's task runner sets up
        for_stage("bench")("warm-up")
        relay("builds")("[ 50%] Building CXX object")
        for_stage("vramwatch")("report: done")
        print([(r.name, r.levelname, r.getMessage()) for r in records])
    """)
    assert said.stderr == ""
    assert said.stdout.strip() == str([("vramwatch.bench", "INFO", "warm-up"),
                                       ("vramwatch.builds", "INFO", "[ 50%] Building CXX object"),
                                       ("vramwatch", "INFO", "report: done")])


def test_a_process_that_asks_for_it_gets_tagged_lines_on_stderr_once():
    """The CLI and the bench child (stdlib only, in the engine's venv) call to_stderr(); a child's relayed lines keep
    the tag the child gave them, and asking twice does not print twice."""
    said = run("""
        from vramwatch.progress import for_stage, relay, to_stderr
        to_stderr()
        to_stderr()
        for_stage("bench")("warm-up")
        relay("bench")("[bench] pp512 rep 1/3: 100.00 t/s")
        import logging
        logging.getLogger("vramwatch.validate.gate").warning("quarantined x")
    """)
    assert said.stderr.splitlines() == ["[bench] warm-up", "[bench] pp512 rep 1/3: 100.00 t/s",
                                        "[validate.gate] quarantined x"]
