"""The import graph keeps its layers (README: "Where the code lives"): import-linter's contracts in .importlinter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(include: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(include)}
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--config", str(REPO / ".importlinter")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_library_keeps_its_layers_and_has_no_cycles(tmp_path):
    run = lint_imports(REPO / "include", tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("records.py", "from vramwatch import pipeline", "entry points > pipeline"),  # ground reaching up
    ("bench/runner.py", "from vramwatch.builds import engine", "entry points > pipeline"),  # a stage into another
    ("bench/host.py", "from vramwatch.bench import runner", "no import cycles"),  # runner already imports host
])
def test_an_upward_import_or_a_cycle_breaks_a_contract(tmp_path, module, planted, contract):
    include = tmp_path / "include"
    shutil.copytree(REPO / "include" / "vramwatch", include / "vramwatch",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(include / "vramwatch" / module, "a") as source:
        source.write(f"\n{planted}  # planted\n")

    run = lint_imports(include, tmp_path)

    assert run.returncode != 0 and f"{contract}" in run.stdout.split("Broken contracts", 1)[1]
