"""The GPU run's plan (benchmarks/gpu/seed_night.py) rehearsed end to end with tiny models on the demo engine, so a
broken step shows here rather than on a leased GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = ("build", "deepseek-a", "fidelity", "deepseek-sweep", "deepseek-b", "phi", "fidelity-phi", "phi-b", "gptoss",
         "gptoss-nommap")


def rehearse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEED_NIGHT_OUT": str(tmp_path / "out"), "SEED_NIGHT_DISK": str(tmp_path / "disk"),
           "VRAMWATCH_MODELS_DIR": str(tmp_path / "models"), "VRAMWATCH_HOST_BW_MIB": "64"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/seed_night.py"), "--rehearse", *args],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def full_plan(engine_build, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The whole plan, rehearsed once for the tests that read its results."""
    tmp_path = tmp_path_factory.mktemp("plan")
    return tmp_path, rehearse(tmp_path)


def test_rehearsal_runs_every_step_and_leaves_the_results(full_plan):
    tmp_path, proc = full_plan
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


def test_the_plans_results_become_the_docs(full_plan, tmp_path):
    """benchmarks/seed_reproduction.py, as docs/results/README.md runs it, on what the plan brought back."""
    out = full_plan[0] / "out"
    measured = [out / f"{name}.json" for name in ("deepseek-a", "deepseek-b", "deepseek-sweep", "phi", "phi-b",
                                                   "gptoss")]
    fidelity = [out / "fidelity.json", out / "fidelity-phi.json"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/seed_reproduction.py"), *map(str, measured),
                           "--fidelity", *map(str, fidelity), "--date", "2026-01-02", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    rows = json.loads((tmp_path / "seed-reproduction.json").read_text())
    assert {(r["model"], r["quant"], r["mode"]) for r in rows} == {
        *((model, quant, mode) for model in ("deepseek-moe-16b", "phi-3.5-moe") for quant in ("Q2_K", "Q4_K_M", "Q8_0")
          for mode in ("baseline", "offload")),
        ("gpt-oss-20b", "MXFP4_MOE", "baseline"), ("gpt-oss-20b", "MXFP4_MOE", "offload")}
    assert all(r["date"] == "2026-01-02" and r["tg128_ts"] > 0 for r in rows)
    md = (tmp_path / "seed-reproduction.md").read_text()
    assert "## Partial offload sweep: deepseek-moe-16b Q4_K_M" in md
    assert "DeepSeek matrix (6 configs) after the build" in md
    cpu_half = next(line for line in md.splitlines() if line.startswith("The CPU half"))
    for stage in ("validate", "store", "detect_regressions", "report", "alert"):
        assert f" {stage} " in cpu_half, cpu_half
    assert "Worst ratio" in (tmp_path / "engine-vs-llama-bench.md").read_text()
    assert "Partial offload" in (tmp_path / "seed-report.html").read_text()


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


def test_the_two_gpu_plan_rehearses_its_steps_and_says_why_a_split_did_not_run_here(engine_build, tmp_path):
    """benchmarks/gpu/two_gpu.py (issue 29, not run on GPUs yet) on the CPU: the one-GPU references run, every split
    ends not_applicable with the GPUs the bench saw, and the summary lists them all."""
    env = {**os.environ, "SEED_NIGHT_OUT": str(tmp_path / "out"), "VRAMWATCH_MODELS_DIR": str(tmp_path / "models"),
           "VRAMWATCH_HOST_BW_MIB": "64"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/two_gpu.py"), "--rehearse"],
                          capture_output=True, text=True, env=env, timeout=900)
    out = tmp_path / "out"
    log = (out / "driver.log").read_text()
    assert proc.returncode == 0, proc.stderr[-2000:] + log
    assert all(f" {step}: ok in " in log for step in ("build", "one-gpu", "layer", "row")), log
    statuses = {r["config"]["split_mode"] if r["config"]["gpus"] > 1 else "one-gpu": r["status"]
                for step in ("one-gpu", "layer", "row")
                for r in json.loads((out / f"two-gpu-{step}.json").read_text())["results"]}
    assert statuses == {"one-gpu": "ok", "layer": "not_applicable", "row": "not_applicable"}
    summary = (out / "two-gpu.md").read_text()
    assert "phi-3.5-moe/Q8_0/baseline-2gpu-row | not_applicable: gpus=2: the bench sees 0 GPU(s)" in summary
