"""The validation gate: which rows of a night are quarantined, and for which expectations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.samples import night, replace, result

from vramwatch.records import Fingerprint, TestResult
from vramwatch.validate.frame import validation_frame
from vramwatch.validate.gate import validate_night


def _by_config(validated):
    return {q.result.config.config_id: sorted(q.failed_expectations) for q in validated.quarantined}


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_a_sane_night_passes_whole(gpu):
    # rows that did not run are valid history when status and error are sane, even with the partial fingerprint
    # the bench parent gives a child that never reported
    timeout = replace(result("phi-3.5-moe", "Q8_0", "offload", gpu=gpu, status="timeout"),
                      fingerprint=Fingerprint(llama_cpp_commit="0c1e57098", backend="cuda" if gpu else "cpu"))
    results = night(gpu=gpu, n_cpu_moe_sweep=(4,)) + [result("phi-3.5-moe", "Q8_0", gpu=gpu, status="oom"), timeout]

    validated = validate_night(results)

    assert validated.quarantined == []
    assert validated.accepted == results


def test_each_broken_row_is_quarantined_with_the_expectations_it_failed(tmp_path):
    gguf = tmp_path / "deepseek-Q8_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    good = night(quants=("Q2_K", "Q4_K_M", "Q8_0"))
    by_id = {r.config.config_id: r for r in good}
    offload = by_id["deepseek-moe-16b/Q4_K_M/offload"]
    broken = {
        "deepseek-moe-16b/Q2_K/baseline": replace(by_id["deepseek-moe-16b/Q2_K/baseline"],
                                                  tg=TestResult(0, 128, [0.0] * 5, 0.0, 0.0)),
        "deepseek-moe-16b/Q2_K/offload": replace(by_id["deepseek-moe-16b/Q2_K/offload"],
                                                 pp=TestResult(512, 0, [800.0] * 4, 800.0, 1.0)),
        # offload that kept everything on the GPU: more VRAM than tonight's baseline of the same file
        "deepseek-moe-16b/Q4_K_M/offload": replace(offload, memory__gpu_model_mib=10_500.0,
                                                   memory__nvml_process_mib=12_500.0),
        "deepseek-moe-16b/Q8_0/baseline": replace(by_id["deepseek-moe-16b/Q8_0/baseline"],
                                                  config__model=replace(by_id["deepseek-moe-16b/Q8_0/baseline"]
                                                                        .config.model, path=str(gguf))),
        "phi-3.5-moe/Q2_K/baseline": replace(by_id["phi-3.5-moe/Q2_K/baseline"], memory__nvml_process_mib=9_000.0),
        "phi-3.5-moe/Q2_K/offload": replace(by_id["phi-3.5-moe/Q2_K/offload"], fingerprint=Fingerprint()),
        "phi-3.5-moe/Q4_K_M/baseline": replace(by_id["phi-3.5-moe/Q4_K_M/baseline"], tg=None),
        "phi-3.5-moe/Q4_K_M/offload": replace(by_id["phi-3.5-moe/Q4_K_M/offload"], status="exploded", error=""),
        "phi-3.5-moe/Q8_0/offload": replace(by_id["phi-3.5-moe/Q8_0/offload"], status="oom", error="",
                                            pp=None, tg=None),
    }
    results = [broken.get(cid, r) for cid, r in by_id.items()]

    validated = validate_night(results)

    assert _by_config(validated) == {
        "deepseek-moe-16b/Q2_K/baseline": ["tg_tok_s_positive"],
        "deepseek-moe-16b/Q2_K/offload": ["pp_all_repetitions"],
        "deepseek-moe-16b/Q4_K_M/offload": ["offload_below_baseline_vram"],
        "deepseek-moe-16b/Q8_0/baseline": ["file_size_matches_disk"],
        "phi-3.5-moe/Q2_K/baseline": ["buffers_within_nvml_process"],
        "phi-3.5-moe/Q2_K/offload": ["fingerprint_present"],
        "phi-3.5-moe/Q4_K_M/baseline": ["tg_measured"],
        "phi-3.5-moe/Q4_K_M/offload": ["error_explained", "status_known"],
        "phi-3.5-moe/Q8_0/offload": ["error_explained"],
    }
    assert [r.config.config_id for r in validated.accepted] == [cid for cid in by_id if cid not in broken]
    # the quarantined row is the record that came in, untouched
    assert validated.quarantined[0].result == broken["deepseek-moe-16b/Q2_K/baseline"]


def test_vram_beyond_the_gpu_is_quarantined_and_only_where_there_is_a_gpu():
    gpu_rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    cpu_rows = night(gpu=False, quants=("Q2_K",))

    # a 10 GiB card: tonight's Q4_K_M baseline (~11 GiB) cannot have fitted; offload (~1.8 GiB) can
    validated = validate_night(gpu_rows + cpu_rows, gpu_total_mib=10_240)

    assert _by_config(validated) == {"deepseek-moe-16b/Q4_K_M/baseline": ["vram_within_gpu_total"]}


def test_a_file_that_matches_the_gguf_on_disk_passes(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(bytes(64))
    row = result(quant="Q2_K")
    row = replace(row, config__model=replace(row.config.model, path=str(gguf), file_bytes=64))

    assert validate_night([row]).quarantined == []


def test_duplicate_configs_are_both_quarantined():
    row = result()

    validated = validate_night([row, row])

    assert [q.failed_expectations for q in validated.quarantined] == [["config_unique"], ["config_unique"]]


def test_several_failures_on_one_row_are_all_named():
    row = replace(result(), tg=TestResult(0, 128, [-1.0, 2.0], -1.0, 0.1), fingerprint=Fingerprint(backend="cuda"))

    (quarantined,) = validate_night([row]).quarantined

    assert sorted(quarantined.failed_expectations) == ["fingerprint_present", "tg_all_repetitions",
                                                       "tg_tok_s_positive"]


def test_data_docs_are_built_into_the_given_directory(tmp_path):
    docs = tmp_path / "reports" / "2026-01-02" / "data_docs"

    validated = validate_night(night(quants=("Q2_K",)), data_docs_dir=docs)

    assert validated.data_docs_path == str(docs / "index.html")
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1 and "vramwatch_night" in pages[0].read_text()


def test_no_results_validate_to_an_empty_night():
    validated = validate_night([])
    assert validated.accepted == [] and validated.quarantined == [] and validated.data_docs_path == ""


def test_frame_pairs_each_offload_row_with_tonights_baseline_of_the_same_file():
    frame = validation_frame(night()).set_index("config_id")

    baseline = frame.loc["phi-3.5-moe/Q4_K_M/baseline", "vram_gib"]
    assert frame.loc["phi-3.5-moe/Q4_K_M/offload", "baseline_vram_gib"] == baseline
    assert frame.loc["deepseek-moe-16b/Q2_K/offload", "baseline_vram_gib"] != baseline


def test_importing_the_gate_does_not_import_great_expectations():
    code = "import sys, vramwatch.validate.gate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "include")})
    assert out.stdout.strip() == "False"
