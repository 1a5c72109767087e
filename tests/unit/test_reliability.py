"""docs/RELIABILITY.md names, for each fault, the test that proves it: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# `tests/x.py::test_name[param]`, or `::test_name` for another test of the file named before it on the same line
_REFERENCE = re.compile(r"`(?P<file>tests/[\w/]+\.py)(?:::(?P<test>\w+))?(?:\[[^\]`]*\])?`|`::(?P<same_file>\w+)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) for each test the text names."""
    named = []
    for line in text.splitlines():
        file = None
        for match in _REFERENCE.finditer(line):
            file = match["file"] or file
            test = match["test"] or match["same_file"]
            if test:
                named.append((file or "(no file before it)", test))
    return named


def test_every_test_the_reliability_notes_name_exists():
    """Fault: the notes named tests that had been renamed or moved (a chart test under ui/ after the chart moved to
    report/, two end-to-end tests renamed): the proof they cite could not be found."""
    named = named_tests((REPO / "docs" / "RELIABILITY.md").read_text())
    assert len(named) > 90  # the parser still reads the notes' tables
    functions = {}  # file -> the functions it defines, each file parsed once (the notes name ~100 tests in ~30 files)
    for file in {file for file, _test in named}:
        path = REPO / file
        functions[file] = {node.name for node in ast.walk(ast.parse(path.read_text()))
                           if isinstance(node, ast.FunctionDef)} if path.is_file() else set()
    missing = [f"{file}::{test}" for file, test in named if test not in functions[file]]
    assert missing == []
