"""The nightly, end to end, as Airflow runs it: `airflow dags test` on tiny models, SQLite everywhere, real engine.

Asserts what the team reads in the morning: warehouse rows for every config and the seed-format report tables.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vramwatch.config import load_matrix

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
pytestmark = pytest.mark.e2e
MISSING = "missing-model"


@pytest.fixture(scope="module")
def night(tmp_path_factory, demo_models, airflow_sqlite_db):
    """One forced demo night in a throwaway Airflow home, warehouse and reports dir."""
    tmp = tmp_path_factory.mktemp("night")
    matrix = tmp / "demo.yaml"  # builds/ is this checkout's: the night must not prune a developer's other engines
    demo = (REPO / "include/vramwatch/matrices/demo.yaml").read_text()
    missing = f"models:\n  - name: {MISSING}\n    source: {{path: {tmp}/gone.gguf}}\n    quants: [native]\n" \
              "    modes: [baseline]\n"  # a source that is not there: its config fails, the night goes on
    matrix.write_text(demo.replace("models:\n", missing, 1) + "keep_builds: 1000\n")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_sqlite_db(tmp / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "VRAMWATCH_MATRIX": str(matrix),
        "VRAMWATCH_WAREHOUSE_URL": f"sqlite:///{tmp}/warehouse.db",
        "VRAMWATCH_REPORTS_DIR": str(tmp / "reports"),
        "PYTHONPATH": str(REPO / "include"),
    }
    for day in range(1, 31):  # 30 earlier nights: with tonight's, one more than the matrix keeps Data Docs for
        night = tmp / "reports" / f"2000-01-{day:02d}"
        (night / "data_docs").mkdir(parents=True)
        (night / "data_docs" / "index.html").write_text("<html></html>")
        (night / "summary.md").write_text("# an earlier night\n")

    def dags_test(conf: dict) -> subprocess.CompletedProcess:
        return subprocess.run([AIRFLOW, "dags", "test", "llamacpp_nightly", "--conf", json.dumps(conf)],
                              env=env, capture_output=True, text=True, timeout=1800)

    first = dags_test({"force": True})  # red: the missing model's config was not measured
    assert first.returncode != 0 and "DagRun failed" in first.stderr, first.stdout[-4000:] + first.stderr[-4000:]
    assert info_line(first, "vramwatch.prune", "result: freed")  # the last tasks ran
    assert info_line(first, "vramwatch.prune", "data docs: freed")
    return env, tmp, dags_test, first


def info_line(run: subprocess.CompletedProcess, logger: str, message: str) -> bool:
    """Whether the task log holds `message` from `logger` at INFO, as Airflow writes a record: `[info ] message
    [logger]`. (Airflow's task log gives what a task writes to stderr level ERROR, to stdout INFO, and a logging
    record its own level: checked in a real LocalExecutor task log, see docs/RELIABILITY.md.)"""
    pattern = rf"\[info\s*\] {re.escape(message)}.*\[{re.escape(logger)}\]"
    return re.search(pattern, run.stdout) is not None


def _warehouse(env):
    from vramwatch.warehouse.store import Warehouse

    return Warehouse(env["VRAMWATCH_WAREHOUSE_URL"])


def test_every_config_lands_in_the_warehouse(night):
    env, *_ = night
    everything = _warehouse(env).history()
    history = everything[everything["model"] != MISSING]
    assert len(history) == 2 * 3 * 2 + 1  # synthetic models x quants x modes, plus real Gemma at baseline
    assert set(history["mode"]) == {"baseline", "offload"}
    assert set(history["quant"]) == {"Q2_K", "Q4_K_M", "Q8_0"}
    assert set(history["status"]) == {"ok"}
    assert (history["tg_avg_ts"] > 0).all() and (history["pp_avg_ts"] > 0).all()
    synthetic, real = history[history["model"] != "gemma-3-270m"], history[history["model"] == "gemma-3-270m"]
    assert list(real["config_name"]) == ["gemma-3-270m/Q4_K_M/baseline"]
    gemma = real.iloc[0]
    assert math.isfinite(gemma["perplexity"]) and gemma["perplexity"] > 1 and len(gemma["greedy_sha256"]) == 64
    assert synthetic["perplexity"].isna().all()  # random weights: no quality figure


def test_a_config_that_was_not_measured_fails_its_named_task_and_the_night_is_stored_then_red(night):
    """Fault: a config that could not be measured was a green bench task named 3 in a green run; then a red task in a
    green run. The night still stores, reports and alerts, and its last task then fails the run, saying why."""
    env, tmp, _, first = night
    with sqlite3.connect(tmp / "airflow" / "airflow.db") as db:
        benches = dict(db.execute("SELECT rendered_map_index, state FROM task_instance WHERE task_id = 'bench'"))
        stored = db.execute("SELECT state FROM task_instance WHERE task_id = 'store'").fetchone()
    assert benches.pop(f"{MISSING}/native/baseline") == "failed"
    assert set(benches.values()) == {"success"} and "gemma-3-270m/Q4_K_M/baseline" in benches
    assert stored == ("success",)
    with sqlite3.connect(tmp / "airflow" / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE task_id != 'bench'"))
        (run_state,) = db.execute("SELECT state FROM dag_run").fetchone()
    assert states["report"] == states["alert"] == "success" and states["every_config_measured"] == "failed"
    assert run_state == "failed"  # red in the DAG list, with the reason in the last task's log:
    reason = f"1 of 14 configs not measured: {MISSING}/native/baseline (invalid_model: "
    assert reason in first.stdout + first.stderr
    (row,) = _warehouse(env).history(config_names=[f"{MISSING}/native/baseline"]).itertuples()
    assert row.status == "invalid_model" and "gone.gguf" in row.error


def test_report_has_the_seed_table_per_model_with_honest_no_gpu_cells(night):
    _, tmp, *_ = night
    md = (tmp / "reports" / "latest.md").read_text()
    assert "| Quantization | File Size | VRAM Baseline | VRAM Offload | VRAM Saved | Reduction % |" in md.replace("  ", " ")
    for model in ("deepseek-moe-16b-tiny", "phi-3.5-moe-tiny"):
        assert model in md
    for quant in ("Q2_K", "Q4_K_M", "Q8_0"):
        assert quant in md
    assert "no GPU" in md
    quality = md.split("## Quality (real weights)", 1)[1].split("\n---\n", 1)[0]
    assert "| gemma-3-270m | Q4_K_M | baseline |" in quality and "| – |" in quality  # first night: nothing before
    html = (tmp / "reports" / "latest.html").read_text()
    assert '<svg class="chart"' in html and "<polyline " in html  # the figures, drawn inline


def test_tonights_data_docs_push_out_the_oldest_nights(night):
    env, tmp, *_ = night
    assert load_matrix(env["VRAMWATCH_MATRIX"]).keep_data_docs == 30
    reports = tmp / "reports"
    nights = sorted({p.parent.name for p in reports.glob("*/data_docs")}  # nights before runs had folders
                    | {p.parent.parent.name for p in reports.glob("*/*/data_docs")})
    assert len(nights) == 30 and nights[0] == "2000-01-02"
    assert list((reports / nights[-1]).glob("*/data_docs/index.html"))  # tonight's, built by validate in its run's
    assert (tmp / "reports" / "2000-01-01" / "summary.md").is_file()  # a night's summary stays


def test_a_night_without_a_new_build_is_skipped_and_stores_nothing(night):
    env, _, dags_test, _ = night
    before = len(_warehouse(env).history())
    second = dags_test({"force": False})
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "no new build" in second.stdout + second.stderr
    assert len(_warehouse(env).history()) == before


def test_progress_shows_at_info_in_the_task_log_not_as_stderr(night):
    """Fault: every progress line vramwatch printed went to stderr, which Airflow's task log shows as ERROR. Stages,
    the build steps and the bench child's relayed lines are now logging records at INFO on vramwatch.<stage>."""
    _, _, _, first = night
    assert info_line(first, "vramwatch", "validate: ")
    assert info_line(first, "vramwatch.bench", "[bench] warm-up")  # the child's own line, relayed as it came
    assert re.search(r"\[warning\s*\] no alert channel is configured .*\[vramwatch\.alerts\]", first.stdout)
    assert not re.search(r"^\[(vramwatch|bench|builds|models|quantize|prune)\] ", first.stderr, re.MULTILINE)


def test_the_report_shows_the_validation_and_says_that_alerts_are_off(night):
    _, tmp, *_ = night
    md = (tmp / "reports" / "latest.md").read_text()
    assert "> **Warning:** Alerts are off: no alert channel is configured" in md
    validation = md.split("## Validation (Great Expectations)", 1)[1]
    assert "| config_unique | expect_column_values_to_be_unique | config_id | passed | 0 |" in validation
    run_docs = next((tmp / "reports").glob("*/*/data_docs/index.html")).relative_to(tmp / "reports")  # tonight's run's
    assert f"]({run_docs.as_posix()})" in validation  # the report links the run's own Data Docs
