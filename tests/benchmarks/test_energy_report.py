"""benchmarks/energy_report.py on planted results shaped as the GPU plan (benchmarks/gpu/energy.py) returns them:
the measured nights of both models, the overhead rounds and the J/token processes become the committed Markdown and
JSON, with the device, the build, the date, the command and $/Mtok at the README's example prices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from support.samples import night, replace, simulated_ab

from vramwatch.records import BuildRecord, BuildRequest, MeasuredNight

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from energy_overhead import summary  # noqa: E402

BUILD = BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="", source_dir="",
                    llama_cpp_python_version="0.3.36", llama_cpp_commit="0c1e57098bba", built_at="2026-12-08T10:00")


def plant(results_dir: Path, with_overhead: bool = True) -> None:
    results_dir.mkdir()
    for model, step in (("deepseek-moe-16b", "energy-deepseek"), ("phi-3.5-moe", "energy-phi")):
        results = night(models=(model,), quants=("Q4_K_M",))
        if model == "phi-3.5-moe":  # a window whose counter and samples disagree: flagged, not hidden
            offload = results[1]
            tg = replace(offload.energy.tg, sampled_j=offload.energy.tg.counter_j * 0.9,
                         flags=["counter and power samples differ by 10.0 % (more than 5 %)"])
            results[1] = replace(offload, energy=replace(offload.energy, tg=tg))
        (results_dir / f"{step}.json").write_text(MeasuredNight(build=BUILD, results=results).to_json())
    if with_overhead:
        rng = np.random.default_rng(3)
        for mode, level in (("baseline", (10_900.0, 388.0)), ("offload", (520.0, 52.0))):
            speeds = {way: {test: [float(x * (1 + rng.normal(0, 0.003))) for _ in range(12)]
                            for test, x in zip(("pp", "tg"), level)} for way in ("none", "full")}
            (results_dir / f"overhead-{mode}.json").write_text(json.dumps(
                {"config_name": f"deepseek-moe-16b/Q4_K_M/{mode}", "rounds": 12, "nvml": "real", "speeds": speeds,
                 "rows": summary(speeds)}))
    run = simulated_ab("x", ("a", "a"), {"tg": (388.0, 388.0), "tg_j_per_tok": (0.8, 0.8)}, 0.02,
                       np.random.default_rng(4), 3)
    (results_dir / "energy-noise-baseline.json").write_text(run.to_json())


def report(results_dir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks/energy_report.py"), str(results_dir),
                           "--date", "2026-12-08", "--out", str(out)], capture_output=True, text=True, timeout=120)


def test_the_plans_results_become_the_energy_docs(tmp_path):
    plant(tmp_path / "results")
    proc = report(tmp_path / "results", tmp_path / "docs")
    assert proc.returncode == 0, proc.stderr[-2000:]

    doc = json.loads((tmp_path / "docs" / "2026-12-08-h100-energy.json").read_text())
    assert doc["device"]["gpu"] == "NVIDIA H100 80GB HBM3" and doc["device"]["llama_cpp_commit"] == "0c1e57098bba"
    assert doc["command"].startswith("PLAN=energy bash benchmarks/gpu/seed_night.sh")
    assert doc["prices"]["gpu_hour"]["NVIDIA H100 80GB HBM3"] == 2.5 and doc["prices"]["kwh"] == 0.15
    by_config = {r["config"]: r for r in doc["configs"]}
    assert set(by_config) == {f"{m}/Q4_K_M/{mode}" for m in ("deepseek-moe-16b", "phi-3.5-moe")
                              for mode in ("baseline", "offload")}
    deepseek = by_config["deepseek-moe-16b/Q4_K_M/baseline"]
    tg = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))[0]
    assert deepseek["tg_j_per_tok"] == tg.energy.tg.j_per_tok and deepseek["idle_w"] == 71.5
    assert 0 < deepseek["tg_above_idle_j_per_tok"] < deepseek["tg_j_per_tok"]
    hours = 1e6 / tg.tg.avg_ts / 3600
    assert abs(deepseek["tg_usd_per_mtok_rental"] - round((2.5 + 0.4) * hours, 4)) < 1e-4
    assert abs(deepseek["tg_usd_per_mtok_energy"] - round(tg.energy.tg.j_per_tok * 1e6 / 3.6e6 * 0.15, 4)) < 1e-4
    assert deepseek["agreement_within_5_pct"] and deepseek["average_below_limit"]
    assert deepseek["host_energy"] == "host energy not measured"
    assert by_config["phi-3.5-moe/Q4_K_M/offload"]["agreement_within_5_pct"] is False
    assert [o["verdict"] for o in doc["overhead"]] == ["yes"] * 4 and doc["missing"] == ["energy-noise-offload.json"]

    md = (tmp_path / "docs" / "2026-12-08-h100-energy.md").read_text()
    assert md.startswith("# Energy per token, NVIDIA H100 80GB HBM3 (2026-12-08)")
    assert "Build: llama-cpp-python 0.3.36 (llama.cpp 0c1e57098), cuda. Date: 2026-12-08." in md
    assert "**Example prices, not quotes**" in md and "| **no** |" in md  # Phi offload's disagreement
    assert "counter and power samples differ by 10.0 %" in md and "| tg energy | 6 |" in md
    assert sorted(p.name for p in (tmp_path / "docs" / "raw" / "2026-12-08-h100-energy").iterdir()) == sorted(
        p.name for p in (tmp_path / "results").iterdir())


def test_what_the_plan_did_not_reach_is_said_and_no_figure_is_invented(tmp_path):
    plant(tmp_path / "results", with_overhead=False)
    (tmp_path / "results" / "energy-phi.json").unlink()
    assert report(tmp_path / "results", tmp_path / "docs").returncode == 0

    md = (tmp_path / "docs" / "2026-12-08-h100-energy.md").read_text()
    assert "–: not measured (no overhead-<mode>.json in the results)." in md
    assert "Not in the results (the plan did not reach or finish them): energy-phi.json, overhead-baseline.json" in md
    assert "phi-3.5-moe" not in md.split("## What reading")[0]

    (tmp_path / "results" / "energy-deepseek.json").unlink()
    none = report(tmp_path / "results", tmp_path / "docs")
    assert none.returncode == 1 and "no measured night in" in none.stderr and "Traceback" not in none.stderr
