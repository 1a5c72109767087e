"""The GPU run's plan (benchmarks/gpu/seed_night.py) rehearsed end to end with tiny models on the demo engine, so a
broken step shows here rather than on a leased GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = ("build", "deepseek-a", "fidelity", "deepseek-sweep", "deepseek-b", "phi", "fidelity-phi", "phi-b", "gptoss",
         "gptoss-nommap")


def rehearse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEED_NIGHT_OUT": str(tmp_path / "out"), "SEED_NIGHT_DISK": str(tmp_path / "disk"),
           "VRAMWATCH_MODELS_DIR": str(tmp_path / "models"), "VRAMWATCH_HOST_BW_MIB": "64"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/seed_night.py"), "--rehearse", *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_rehearsal_runs_every_step_and_leaves_the_results(engine_build, tmp_path):
    proc = rehearse(tmp_path)
    out = tmp_path / "out"
    log = (out / "driver.log").read_text()
    assert proc.returncode == 0, proc.stderr[-2000:] + log
    for step in STEPS:
        assert f" {step}: ok in " in log, log
    assert (out / "DONE").is_file()
    results = sorted(p.name for p in out.glob("*.json"))
    assert results == sorted(f"{s}.json" for s in STEPS if s != "build")
    sweep = json.loads((out / "deepseek-sweep.json").read_text())["results"]
    assert [r["config"]["n_cpu_moe"] for r in sweep if r["config"]["mode"] == "partial"] == [4, 8, 12, 16, 20, 24, 28]
    assert all(r["status"] == "ok" for r in sweep)
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert {row["mode"] for row in fidelity["rows"]} == {"baseline", "offload"}
    assert not list((tmp_path / "models" / "synth").glob("deepseek-*"))  # DeepSeek's files go before Phi's
    loads = {name: {r["config"]["use_mmap"] for r in json.loads((out / f"{name}.json").read_text())["results"]}
             for name in ("gptoss", "gptoss-nommap")}
    assert loads == {"gptoss": {True}, "gptoss-nommap": {False}}


def test_only_runs_the_build_and_the_steps_named(engine_build, tmp_path):
    proc = rehearse(tmp_path, "--only", "phi-b")
    out = tmp_path / "out"
    log = (out / "driver.log").read_text()
    assert proc.returncode == 0, proc.stderr[-2000:] + log
    assert [line.split()[1] for line in log.splitlines() if ": ok in " in line] == ["build:", "phi-b:"]
    assert sorted(p.name for p in out.glob("*.json")) == ["phi-b.json"]
    phi_b = json.loads((out / "phi-b.json").read_text())["results"]
    assert {(r["config"]["model"]["quant"], r["status"]) for r in phi_b} == {("Q4_K_M", "ok"), ("Q2_K", "ok")}
    assert not list((tmp_path / "models" / "synth").glob("deepseek-*"))  # no DeepSeek step, no DeepSeek source


def test_a_fidelity_step_without_its_model_is_refused(tmp_path):
    proc = rehearse(tmp_path, "--only", "fidelity-phi")
    assert proc.returncode == 2
    assert "fidelity-phi needs phi: add it to --only" in proc.stderr
    assert not (tmp_path / "out").exists()
