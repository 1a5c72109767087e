"""The nightly report: the seed's table per model, honest 'no GPU' cells, fits/change/sweep tables, embedded plots."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from support.samples import XSS_PAYLOAD, bisection, night, replace, result
from support.warehouses import commit_of, night_of, store_nights

from vramwatch.records import (
    BuildRecord,
    BuildRequest,
    ExpectationOutcome,
    Incident,
    NightVerdicts,
    QualityResult,
    RunRecord,
)
from vramwatch.report import style
from vramwatch.report.tables import NO_FILE, NO_GPU, seed_table_rows, seed_tables
from vramwatch.report.write import report_for_run, write_report
from vramwatch.rows import flatten
from vramwatch.validate.gate import validate_night
from vramwatch.warehouse.store import Warehouse

SEED_HEADER = "| Quantization | File Size | VRAM Baseline | VRAM Offload | VRAM Saved | Reduction % |"
NOTHING = NightVerdicts(incidents=[])  # a night whose checks found nothing and judged everything


def run_record(run_id: str = "run001", night_: str = "2026-01-02") -> RunRecord:
    return RunRecord(run_id=run_id, night=night_, trigger="test", status="stored", started="", ended="",
                     build_version="0.3.36", llama_cpp_python_version="0.3.36", llama_cpp_commit="b5001",
                     backend="cuda", n_quarantined=1)


def history_of(*nights) -> pd.DataFrame:
    return pd.DataFrame([{**flatten(r), "night": f"2026-01-0{i + 1}", "run_id": f"run{i:03d}",
                          "llama_cpp_commit": f"b{5000 + i}", "gpu_name": r.fingerprint.gpu_name}
                         for i, results in enumerate(nights) for r in results])


def markdown_rows(md: str, model: str) -> list[list[str]]:
    """The body rows of one model's seed table."""
    section = md.split(f"## {model} Quantizations", 1)[1].split("\n---\n", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| **")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.fixture
def gpu_night():
    results = night(n_cpu_moe_sweep=(4, 8)) + [result("phi-3.5-moe", "Q8_0", "baseline", status="oom"),
                                               result("phi-3.5-moe", "Q8_0", "offload")]
    return results, history_of(results, results)


def test_seed_table_rows_are_data(gpu_night):
    results, _ = gpu_night
    rows = {(r.model, r.quant): r for r in seed_table_rows(results)}

    assert list(rows) == [("deepseek-moe-16b", "Q2_K"), ("deepseek-moe-16b", "Q4_K_M"), ("phi-3.5-moe", "Q2_K"),
                          ("phi-3.5-moe", "Q4_K_M"), ("phi-3.5-moe", "Q8_0")]
    q4 = rows[("deepseek-moe-16b", "Q4_K_M")]
    assert q4.baseline.vram_gib == pytest.approx((10_010 + 1_024 + 204.5) / 1024)
    assert q4.offload.vram_gib == pytest.approx((640 + 1_024 + 204.5) / 1024)
    assert q4.reduction_pct == pytest.approx(100 * (10_010 - 640) / (10_010 + 1_024 + 204.5))
    assert (q4.baseline.tg_ts, q4.offload.tg_ts, q4.baseline.reps) == (118.0, 31.0, 5)
    q8 = rows[("phi-3.5-moe", "Q8_0")]
    assert (q8.baseline.status, q8.baseline.vram_gib, q8.vram_saved_gib) == ("oom", None, None)


def test_a_model_file_never_made_has_no_size_in_the_seed_table():
    """A missing model source's row read "0.0 MB": a figure not measured is absent, with the reason."""
    missing = [replace(r, config__model=replace(r.config.model, file_bytes=0, error="no such file"),
                       status="invalid_model") for r in night(models=("phi-3.5-moe",), quants=("Q2_K",))]
    (table,) = seed_tables(seed_table_rows(missing))
    assert table.rows[0][1] == NO_FILE


def test_markdown_has_the_seed_table_per_model_with_speed_and_failures(gpu_night, tmp_path):
    results, history = gpu_night
    md_path, html_path = write_report(run_record(), results, history, NOTHING, tmp_path)

    md = md_path.read_text()
    assert md_path == tmp_path / "2026-01-02" / "run001" / "summary.md" and html_path.name == "summary.html"
    assert "**Test Date**: 2026-01-02" in md and "llama-cpp-python 0.3.36 with llama.cpp b5001" in md
    assert "NVIDIA H100 80GB HBM3" in md and "N=5" in md
    assert md.count(SEED_HEADER) == 2
    deepseek = markdown_rows(md, "deepseek-moe-16b")
    assert [row[0] for row in deepseek] == ["**Q2_K**", "**Q4_K_M**"]
    # sizes in binary units, said so: the report labelled these GiB figures "GB"
    assert deepseek[1][:6] == ["**Q4_K_M**", "10.90 GiB", "10.98 GiB", "1.82 GiB", "9.15 GiB", "**83.4%**"]
    assert deepseek[1][6:] == ["4100.0", "118.0", "820.0", "31.0", "5"]
    q8 = markdown_rows(md, "phi-3.5-moe")[2]
    assert q8[2] == "oom" and q8[3] == "2.59 GiB" and q8[6] == "oom"
    assert "phi-3.5-moe/Q8_0/baseline (oom)" in md  # key findings name the failure
    assert "offload cuts VRAM by 77.7% - 83.4%" in md


def drawn_figures(html: str) -> list[str]:
    """The captions of the inline SVG figures that draw something (bars or lines), in page order."""
    figures = re.findall(r'<svg class="chart" [^>]*aria-label="([^"]+)">(.*?)</svg>', html, re.DOTALL)
    return [caption for caption, body in figures if "<rect " in body or "<polyline " in body]


def test_no_gpu_cells_say_so_and_never_show_zeros(tmp_path):
    results = night(gpu=False)
    md_path, html_path = write_report(run_record(), results, history_of(results, results), NOTHING, tmp_path)

    md = md_path.read_text()
    for row in markdown_rows(md, "deepseek-moe-16b") + markdown_rows(md, "phi-3.5-moe"):
        assert row[2:6] == [NO_GPU] * 4
        assert row[7] == "9.5"  # CPU throughput is still measured
    assert "0.00 GiB" not in md and "No GPU on this machine" in md
    fits = md.split("## Fits on a GPU of", 1)[1].split("\n---\n", 1)[0]
    assert fits.count(NO_GPU) == 4 * 7
    html = html_path.read_text()
    assert "VRAM by component (stacked): nothing measured to draw" in html
    assert drawn_figures(html) == ["Baseline vs offload", "History per config (red: incident opened)"]


def test_html_embeds_every_plot_and_latest_are_copies(gpu_night, tmp_path):
    results, history = gpu_night
    md_path, html_path = write_report(run_record(), results, history, NOTHING, tmp_path)

    html = html_path.read_text()
    assert drawn_figures(html) == ["VRAM by component (stacked)", "Baseline vs offload", "History per config (red: incident "
                        "opened)", "Partial offload sweep: VRAM and tg against n_cpu_moe"]
    assert "<td><strong>Q4_K_M</strong></td>" in html and "<td>10.98 GiB</td>" in html
    night_latest = tmp_path / "2026-01-02" / "summary"
    for run_file in (md_path, html_path):
        for latest in (tmp_path / f"latest{run_file.suffix}", night_latest.with_suffix(run_file.suffix)):
            assert not latest.is_symlink() and latest.read_text() == run_file.read_text()


def test_fits_change_sweep_and_incident_sections(gpu_night, tmp_path):
    results, history = gpu_night
    grown = next(r for r in results if r.config.config_name == "phi-3.5-moe/Q2_K/offload")
    tonight = [replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + 64) if r is grown else r
               for r in results]
    change = "phi-3.5-moe/Q2_K/offload: CUDA0 compute 204.50 -> 268.50 MiB (+64.00 MiB, +31.3%)"
    incident = Incident(incident_id=7, kind="vram", metric="gpu_compute_mib", state="open",
                        configs=[grown.config.config_id], summary="VRAM gpu_compute_mib +64 MiB / +31.3%",
                        delta_mib=64.0, delta_pct=31.3, build_before="b5000", build_after="b5001",
                        opened_night="2026-01-02", is_new=True, changes=[change])

    md_path, _ = write_report(run_record(), tonight, history_of(results, tonight), NightVerdicts([incident]), tmp_path)

    md = md_path.read_text()
    fits = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:10]]
            for line in md.split("## Fits on a GPU of", 1)[1].split("\n---\n", 1)[0].splitlines()
            if line.startswith("| deepseek") or line.startswith("| phi")}
    # deepseek Q4_K_M: baseline needs 10010 + 1850 MiB (NVML) > 8 GiB, offload 2490 MiB fits
    assert fits["deepseek-moe-16b Q4_K_M"] == ["offload", "baseline", "baseline", "baseline", "baseline", "baseline",
                                               "baseline"]
    assert fits["phi-3.5-moe Q4_K_M"][:4] == ["offload"] * 4 and fits["phi-3.5-moe Q4_K_M"][4] == "baseline"
    assert md.splitlines()[2:4] == ["**Paged: 1 regression(s) tonight**", f"- {change}, llama.cpp b5000 -> b5001"]
    assert "## Change against the previous run (llama.cpp b5000 -> b5001, night 2026-01-01)" in md
    assert "| phi-3.5-moe/Q2_K/offload | ok | GPU compute +64.00 MiB (+31.3%) | +0 MiB | +0.0% | +0.0% |" in md
    assert "| deepseek-moe-16b/Q2_K/offload | ok | unchanged | +0 MiB | +0.0% | +0.0% |" in md
    assert "| phi-3.5-moe/Q8_0/baseline | oom | – | – | – | – |" in md
    sweep = md.split("## Partial offload sweep: deepseek-moe-16b Q2_K", 1)[1].split("\n---\n", 1)[0]
    assert [line.split("|")[1].strip() for line in sweep.splitlines() if line.startswith("| ")][1:] == \
        ["0", "4", "8", "28"]
    assert "| 7 | NEW | open | vram | 2026-01-02 | VRAM gpu_compute_mib +64 MiB / +31.3% |" in md
    assert "1 incident(s) paged tonight, 1 open." in md


def with_quality(r, perplexity: float, greedy: str):
    return replace(r, config__quality=True,
                   quality=QualityResult(perplexity=perplexity, n_tokens=327, greedy_sha256=greedy, greedy_tokens=32))


def test_quality_table_flags_a_greedy_hash_that_changed_since_the_previous_build(tmp_path):
    plain = night(models=("deepseek-moe-16b",), quants=("Q2_K",))
    same, moved = result("phi-3.5-moe", "Q2_K"), result("phi-3.5-moe", "Q4_K_M")
    last_night = plain + [with_quality(same, 25.1, "ab" * 32), with_quality(moved, 31.0, "cd" * 32)]
    tonight = plain + [with_quality(same, 25.1, "ab" * 32), with_quality(moved, 30.25, "ef" * 32)]

    md_path, html_path = write_report(run_record(), tonight, history_of(last_night, tonight), NOTHING, tmp_path)

    md = md_path.read_text()
    section = md.split("## Quality (real weights)", 1)[1].split("\n---\n", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| phi") or line.startswith("| deepseek")]
    assert rows == ["| phi-3.5-moe | Q2_K | baseline | 25.10 | abababababab | no |",
                    "| phi-3.5-moe | Q4_K_M | baseline | 30.25 | efefefefefef | **yes** (was cdcdcdcdcdcd) |"]
    assert "327 tokens" in section and "Quality (real weights)" in html_path.read_text()
    first, _ = write_report(run_record("run000", "2026-01-01"), last_night, history_of(last_night), NOTHING, tmp_path)
    assert "| phi-3.5-moe | Q4_K_M | baseline | 31.00 | cdcdcdcdcdcd | – |" in first.read_text()  # nothing before
    without, _ = write_report(run_record(), plain, history_of(plain, plain), NOTHING, tmp_path)
    assert "Quality (real weights)" not in without.read_text()


def test_report_for_run_reads_the_run_and_its_history_from_the_warehouse(sqlite_warehouse_url, tmp_path):
    warehouse = Warehouse(sqlite_warehouse_url)
    store_nights(warehouse, [night(gpu=False)] * 2)

    summary = report_for_run(warehouse, "run001", NOTHING, tmp_path / "reports")

    assert (summary.night, summary.n_results, summary.incidents) == (night_of(1), 8, [])
    assert f"llama.cpp {commit_of(1)} (cpu backend)" in (tmp_path / "reports" / "latest.md").read_text()
    warehouse.close()


def test_an_incidents_bisection_lands_in_the_report_of_a_later_rendering_escaped(sqlite_warehouse_url, tmp_path):
    warehouse = Warehouse(sqlite_warehouse_url)
    store_nights(warehouse, [night(gpu=False)] * 2)
    opened = warehouse.save_incident(Incident(incident_id=None, kind="vram", metric="gpu_compute_mib", state="open",
                                              configs=["deepseek-moe-16b/Q4_K_M/baseline"], summary="+24 MiB"),
                                     "env", night_of(1))
    warehouse.save_verdicts("run001", NightVerdicts([opened]))  # as the night stored them: before its bisection ran
    found = bisection(subject=XSS_PAYLOAD)  # a commit subject is text from outside: never markup
    warehouse.save_bisection(opened.incident_id, found)

    summary = report_for_run(warehouse, "run001", warehouse.verdicts("run001"), tmp_path / "reports")

    md, html = Path(summary.report_md).read_text(), Path(summary.report_html).read_text()
    section = md.split("## Culprit search (bisection)", 1)[1].split("\n---\n", 1)[0]
    assert (f"| {opened.incident_id} | deepseek-moe-16b/Q4_K_M/baseline | CUDA0/compute | 236.26 MiB -> 260.39 MiB | "
            f"release 0.3.33: {XSS_PAYLOAD} (llama.cpp {'b' * 12}..{'c' * 12} to bisect next) | "
            "https://pypi.org/project/llama-cpp-python/0.3.33/ | 5 builds: 40 min "
            "build, 3 min bench |") in section
    assert "Culprit search (bisection)" in html and XSS_PAYLOAD not in html and "&lt;img src=x" in html
    stopped, _ = write_report(warehouse.run("run001"), warehouse.results_for_run("run001"), warehouse.history(),
                              NightVerdicts([replace(opened, bisection=bisection(found=False))]), tmp_path / "r2")
    assert "stopped between 0.3.32 and 0.3.34: the change lies between" in stopped.read_text()
    warehouse.close()


def test_the_report_lists_quarantined_rows_what_they_failed_and_the_stored_validation_outcomes(
        sqlite_warehouse_url, tmp_path):
    warehouse = Warehouse(sqlite_warehouse_url)
    results = night(gpu=False)
    broken = replace(results[0], status="exploded", error="")  # an unknown status with no error: two failures
    build = BuildRecord(request=BuildRequest(version="0.3.36"), status="ok", python="", source_dir="",
                        llama_cpp_python_version="0.3.36", llama_cpp_commit="b5001")
    warehouse.store_run("run1", "2026-01-02", build, validate_night([broken, *results[1:]]), "test")

    summary = report_for_run(warehouse, "run1", NOTHING, tmp_path / "reports")

    assert (summary.n_results, summary.n_quarantined) == (7, 1)
    md = (tmp_path / "reports" / "latest.md").read_text()
    section = md.split("## Quarantined", 1)[1]
    (row,) = [line for line in section.splitlines() if line.startswith(f"| {broken.config.config_name} ")]
    assert "| exploded |" in row and "error_explained" in row and "status_known" in row
    assert "<h2>Quarantined</h2>" in (tmp_path / "reports" / "latest.html").read_text()
    # the night's validation outcomes come from the warehouse, stored with the run: no file beside the report
    validation = md.split("## Validation (Great Expectations)", 1)[1]
    assert "| config_unique | expect_column_values_to_be_unique | config_id | passed | 0 |" in validation
    assert "| status_known | expect_column_values_to_be_in_set | status | **FAILED** | 1 |" in validation
    assert not list(tmp_path.rglob("validation.json"))
    warehouse.close()
    clean, _ = write_report(run_record(), results, history_of(results, results), NOTHING, tmp_path / "clean")
    assert "## Quarantined" not in clean.read_text()


def test_the_inline_style_block_is_the_one_the_ui_policy_allows(gpu_night, tmp_path):
    """The report inlines its CSS so it stands alone on disk; the UI's Content-Security-Policy allows exactly that
    block by its hash (style.CSP_HASH), so the report keeps its look without 'unsafe-inline'."""
    results, history = gpu_night
    _, html_path = write_report(run_record(), results, history, NOTHING, tmp_path)

    (css,) = re.findall(r"<style>(.*?)</style>", html_path.read_text(), re.S)
    assert f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'" == style.CSP_HASH


def test_the_report_carries_each_expectations_outcome_escaped_and_links_the_nights_data_docs(tmp_path):
    """Fault: the Data Docs were linked from nowhere, and offline (CDN assets) their index was empty. The report now
    lists every expectation itself (its columns, result, how many rows failed it and which), and links the night's
    Data Docs relative to each file: the run's summary.* beside them, the night's one folder up, latest.* two."""
    results = night(gpu=False)
    payload = '<img src=x onerror="document.title=1">'
    validation = [
        ExpectationOutcome("status_known", "expect_column_values_to_be_in_set", ["status"], False, 2,
                           [f"m/Q2_K/baseline: status={payload}"]),
        ExpectationOutcome("vram_within_gpu_total", "expect_column_pair_values_a_to_be_greater_than_b",
                           ["gpu_total_gib", "vram_gib"], True, 0, []),
    ]
    docs = tmp_path / "2026-01-02" / "run001" / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html></html>")

    md_path, html_path = write_report(run_record(), results, history_of(results, results), NOTHING, tmp_path,
                                      validation=validation)

    md = md_path.read_text()
    section = md.split("## Validation (Great Expectations)", 1)[1]
    assert ("| status_known | expect_column_values_to_be_in_set | status | **FAILED** | 2 | m/Q2_K/baseline: "
            "status=<img src=x onerror=\"document.title=1\"> |") in section
    assert "| vram_within_gpu_total | expect_column_pair_values_a_to_be_greater_than_b | gpu_total_gib, vram_gib | " \
           "passed | 0 |  |" in section
    assert "1 of 2 expectations passed" in section and "(data_docs/index.html)" in section
    assert "(run001/data_docs/index.html)" in (tmp_path / "2026-01-02" / "summary.md").read_text()
    assert "(2026-01-02/run001/data_docs/index.html)" in (tmp_path / "latest.md").read_text()
    html = html_path.read_text()
    assert payload not in html and "status=&lt;img src=x onerror=&#34;document.title=1&#34;&gt;" in html
    assert '<a href="data_docs/index.html">' in html
    assert '<a href="2026-01-02/run001/data_docs/index.html">' in (tmp_path / "latest.html").read_text()

    # a night validated before runs had folders keeps its Data Docs in the night's folder: still linked
    docs.parent.rename(tmp_path / "2026-01-02" / "data_docs")
    md_path, _ = write_report(run_record(), results, history_of(results, results), NOTHING, tmp_path,
                              validation=validation)
    assert "(../data_docs/index.html)" in md_path.read_text()
    assert "(2026-01-02/data_docs/index.html)" in (tmp_path / "latest.md").read_text()

    (tmp_path / "2026-01-02" / "data_docs" / "index.html").unlink()  # pruned: the table stays, the link goes
    md_path, _ = write_report(run_record(), results, history_of(results, results), NOTHING, tmp_path,
                              validation=validation)
    assert "## Validation (Great Expectations)" in md_path.read_text() and "data_docs" not in md_path.read_text()


def test_the_cost_sections_appear_with_the_matrix_prices_and_not_without(gpu_night, tmp_path):
    from vramwatch.config import Prices

    results, history = gpu_night
    priced, _ = write_report(run_record(), results, history, NOTHING, tmp_path / "priced",
                             prices=Prices(gpu_hour={results[0].fingerprint.gpu_name: 2.0}, kwh=0.3))
    plain, _ = write_report(run_record(), results, history, NOTHING, tmp_path / "plain")
    md = priced.read_text()
    assert "Cost per million tokens" in md and "Cheapest config that fits" in md and "host energy not measured" in md
    assert "Cost per million tokens" not in plain.read_text()
