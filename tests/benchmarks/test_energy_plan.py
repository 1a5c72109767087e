"""The GPU energy plan (benchmarks/gpu/energy.py) rehearsed end to end with tiny models on the demo engine, and its
results made into the docs by benchmarks/energy_report.py: a broken step shows here rather than on a leased GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = ("build", "energy-deepseek", "overhead-baseline", "overhead-offload", "energy-phi", "energy-noise")


def test_the_rehearsed_plan_runs_every_step_and_its_results_become_the_docs(engine_build, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SEED_NIGHT_OUT": str(out), "SEED_NIGHT_DISK": str(tmp_path / "disk"),
           "VRAMWATCH_MODELS_DIR": str(tmp_path / "models"), "VRAMWATCH_HOST_BW_MIB": "64"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/energy.py"), "--rehearse"], capture_output=True,
                          text=True, env=env, timeout=1800)
    log = (out / "driver.log").read_text()
    assert proc.returncode == 0, proc.stderr[-2000:] + log
    for step in STEPS:
        assert f" {step}: ok in " in log, log
    assert (out / "DONE").is_file()
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        ["energy-deepseek.json", "energy-phi.json", "overhead-baseline.json", "overhead-offload.json",
         "energy-noise-baseline.json", "energy-noise-offload.json"])
    deepseek = json.loads((out / "energy-deepseek.json").read_text())["results"]
    assert [(r["config"]["mode"], r["status"]) for r in deepseek] == [("baseline", "ok"), ("offload", "ok")]
    assert all(r["energy"]["gpu_reason"] == "no GPU: GPU energy not measured" for r in deepseek)  # absent, with why
    overhead = json.loads((out / "overhead-offload.json").read_text())
    assert overhead["nvml"] == "replayed trace" and len(overhead["speeds"]["full"]["tg"]) == 2  # rehearsal rounds

    docs = subprocess.run([sys.executable, str(REPO / "benchmarks/energy_report.py"), str(out), "--date",
                           "2026-01-02", "--out", str(tmp_path / "docs")], capture_output=True, text=True, timeout=300)
    assert docs.returncode == 0, docs.stderr[-2000:]
    md = (tmp_path / "docs" / "2026-01-02-cpu-energy.md").read_text()
    assert "| deepseek-moe-16b/Q4_K_M/offload | – | – |" in md  # no GPU here: no J/token, never a 0
    assert "no GPU: GPU energy not measured" in md and "Not in the results" not in md
