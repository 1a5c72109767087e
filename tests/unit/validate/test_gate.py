"""The validation gate: which rows of a night are quarantined, and for which expectations."""

from __future__ import annotations

import re
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import pytest
from support.samples import XSS_PAYLOAD, markup_named_rows, night, replace, result
from support.two_gpu import CONTEXT_MIB, two_gpu_result

from vramwatch.records import Fingerprint, TestResult
from vramwatch.validate.frame import validation_frame
from vramwatch.validate.gate import (
    CONTEXT_SLACK_MIB,
    LEARN_FROM,
    NVML_MARGIN_MIB,
    expectations,
    learned_nvml_margins,
    validate_night,
)


def _by_config(validated):
    return {q.result.config.config_name: sorted(q.failed_expectations) for q in validated.quarantined}


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_a_sane_night_passes_whole(gpu):
    # rows that did not run are valid history when status and error are sane, even with the partial fingerprint
    # the bench parent gives a child that never reported, or none at all
    timeout = replace(result("phi-3.5-moe", "Q8_0", "offload", gpu=gpu, status="timeout"),
                      fingerprint=Fingerprint(llama_cpp_commit="0c1e57098", backend="cuda" if gpu else "cpu"))
    crashed = replace(result("deepseek-moe-16b", "Q8_0", gpu=gpu, status="crashed"), fingerprint=Fingerprint())
    unparsed = replace(result("deepseek-moe-16b", "Q8_0", "offload", gpu=gpu, status="invalid_measurement"),
                       error="no llama.cpp buffer line parsed: the log format may have changed")
    results = night(gpu=gpu, n_cpu_moe_sweep=(4,)) + [result("phi-3.5-moe", "Q8_0", gpu=gpu, status="oom"), timeout,
                                                      crashed, unparsed]

    validated = validate_night(results, build_backend="cuda" if gpu else "cpu")

    assert validated.quarantined == []
    assert validated.accepted == results


def test_each_broken_row_is_quarantined_with_the_expectations_it_failed():
    good = night(quants=("Q2_K", "Q4_K_M", "Q8_0"))
    by_id = {r.config.config_name: r for r in good}
    offload = by_id["deepseek-moe-16b/Q4_K_M/offload"]
    broken = {
        "deepseek-moe-16b/Q2_K/baseline": replace(by_id["deepseek-moe-16b/Q2_K/baseline"],
                                                  tg=TestResult(0, 128, [0.0] * 5, 0.0, 0.0)),
        "deepseek-moe-16b/Q2_K/offload": replace(by_id["deepseek-moe-16b/Q2_K/offload"],
                                                 pp=TestResult(512, 0, [800.0] * 4, 800.0, 1.0)),
        # offload that kept everything on the GPU: more VRAM than tonight's baseline of the same file
        "deepseek-moe-16b/Q4_K_M/offload": replace(offload, memory__gpu_model_mib=10_500.0,
                                                   memory__nvml_process_mib=12_350.0),
        # the file the bench read was not the file the models stage made
        "deepseek-moe-16b/Q8_0/baseline": replace(by_id["deepseek-moe-16b/Q8_0/baseline"], file_bytes_on_disk=64),
        # the worker did not say what it read (a bench from before it did, or one that lost the file)
        "deepseek-moe-16b/Q8_0/offload": replace(by_id["deepseek-moe-16b/Q8_0/offload"], file_bytes_on_disk=None),
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
        "deepseek-moe-16b/Q8_0/offload": ["file_size_checked"],
        "phi-3.5-moe/Q2_K/baseline": ["nvml_agrees_with_buffers"],
        "phi-3.5-moe/Q2_K/offload": ["fingerprint_present"],
        "phi-3.5-moe/Q4_K_M/baseline": ["tg_measured"],
        "phi-3.5-moe/Q4_K_M/offload": ["error_explained", "status_known"],
        "phi-3.5-moe/Q8_0/offload": ["error_explained"],
    }
    assert [r.config.config_name for r in validated.accepted] == [cid for cid in by_id if cid not in broken]
    # the quarantined row is the record that came in, untouched
    assert validated.quarantined[0].result == broken["deepseek-moe-16b/Q2_K/baseline"]


def test_vram_beyond_the_gpu_is_quarantined_and_only_where_there_is_a_gpu():
    gpu_rows = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    cpu_rows = night(gpu=False, quants=("Q2_K",))

    # a 10 GiB card: tonight's Q4_K_M baseline (~11 GiB) cannot have fitted; offload (~1.8 GiB) can
    validated = validate_night(gpu_rows + cpu_rows, gpu_total_mib=10_240)

    assert _by_config(validated) == {"deepseek-moe-16b/Q4_K_M/baseline": ["vram_within_gpu_total"]}


def test_results_measured_on_another_backend_than_the_build_are_quarantined():
    cuda_night = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    # a CUDA engine on a worker that lost its GPU: llama.cpp ran it on the CPU, tg fell twentyfold
    on_cpu = result("phi-3.5-moe", "Q4_K_M", gpu=False)
    never_ran = replace(result("phi-3.5-moe", "Q2_K", status="timeout"), fingerprint=Fingerprint())

    validated = validate_night([*cuda_night, on_cpu, never_ran], build_backend="cuda")

    assert _by_config(validated) == {"phi-3.5-moe/Q4_K_M/baseline": ["backend_matches_build"]}
    # and a CPU build's night is CPU results only
    assert _by_config(validate_night(cuda_night, build_backend="cpu")) == {
        r.config.config_name: ["backend_matches_build"] for r in cuda_night}


def test_a_row_whose_buffers_did_not_parse_is_never_accepted_as_ok():
    gpu_baseline, gpu_offload = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
    no_buffers = dict(memory__buffers_mib={}, memory__gpu_model_mib=0.0, memory__gpu_kv_mib=0.0,
                      memory__gpu_compute_mib=0.0, memory__gpu_output_mib=0.0, memory__host_model_mib=0.0,
                      memory__host_kv_mib=0.0, memory__host_compute_mib=0.0)
    # what an older worker stored after llama.cpp reworded its buffer lines: every figure 0, NVML still counting
    unparsed_gpu = replace(gpu_baseline, **no_buffers)
    unparsed_cpu = replace(result("phi-3.5-moe", "Q2_K", gpu=False), **no_buffers)
    # only the GPU weights' line went unread: KV and compute parsed
    no_gpu_weights = replace(result("phi-3.5-moe", "Q4_K_M"), memory__gpu_model_mib=0.0,
                             memory__nvml_process_mib=None)
    # no layer offloaded: no GPU weights, KV or compute expected
    cpu_layers = replace(result("phi-3.5-moe", "Q8_0"), config__n_gpu_layers=0, memory__gpu_model_mib=0.0,
                         memory__gpu_kv_mib=0.0, memory__gpu_compute_mib=0.0, memory__nvml_process_mib=None)

    validated = validate_night([unparsed_gpu, gpu_offload, unparsed_cpu, no_gpu_weights, cpu_layers])

    assert _by_config(validated) == {
        "deepseek-moe-16b/Q4_K_M/baseline": ["buffers_parsed", "gpu_buffers_on_each_gpu", "gpu_compute_buffer_measured",
                                             "gpu_kv_buffer_measured", "gpu_model_buffer_measured",
                                             "nvml_agrees_with_buffers"],
        "phi-3.5-moe/Q2_K/baseline": ["buffers_parsed"],
        "phi-3.5-moe/Q4_K_M/baseline": ["gpu_model_buffer_measured"],
    }
    # the broken baseline is no reference for tonight's offload row of the same file, which stays accepted
    assert gpu_offload in validated.accepted


def test_an_ok_gpu_row_without_its_kv_or_compute_buffer_is_quarantined_naming_it():
    """Fault: only the model buffer was guarded; a row whose compute (or KV) line did not parse was stored ok at 0 MiB,
    read as "VRAM improved -100%", and the next healthy night paged a +260 MiB regression that never happened."""
    healthy = result()
    no_kv = replace(result("deepseek-moe-16b", "Q2_K"), memory__gpu_kv_mib=0.0, memory__nvml_process_mib=None)
    no_compute = replace(result("phi-3.5-moe", "Q2_K"), memory__gpu_compute_mib=0.0, memory__nvml_process_mib=None)
    # a CPU backend keeps them in host memory: nothing is missing there
    on_cpu = result("phi-3.5-moe", "Q4_K_M", gpu=False)

    validated = validate_night([healthy, no_kv, no_compute, on_cpu])

    assert _by_config(validated) == {"deepseek-moe-16b/Q2_K/baseline": ["gpu_kv_buffer_measured"],
                                     "phi-3.5-moe/Q2_K/baseline": ["gpu_compute_buffer_measured"]}


def test_each_gpu_learns_its_nvml_margin_so_a_missing_buffer_cannot_hide_in_it():
    """Fault: NVML could exceed the buffers by 4,096 MiB while real rows differ by about 706 MiB (the CUDA context):
    a row whose buffers missed a whole 900 MiB allocation passed."""
    def with_context(r, mib: float):
        return replace(r, memory__nvml_process_mib=r.memory.gpu_buffers_mib + mib)

    rows = [with_context(r, 706.0 + (i % 3 - 1) * 4) for i, r in enumerate(night())]  # 8 rows, 702-710 MiB
    missed = with_context(rows[0], 706.0 + 900.0)
    assert learned_nvml_margins(rows) == {rows[0].fingerprint.gpu_name: pytest.approx(706.0 + CONTEXT_SLACK_MIB)}

    validated = validate_night([missed, *rows[1:]])

    assert _by_config(validated) == {missed.config.config_name: ["nvml_within_gpu_context"]}  # under 4 GiB
    # too few rows on a GPU to learn from: the fixed margin alone holds
    few = [missed, *rows[1:LEARN_FROM - 1]]
    assert learned_nvml_margins(few) == {} and validate_night(few).quarantined == []


def test_nvml_may_exceed_the_buffers_by_the_stated_margin_and_no_more():
    # one night, a config per case: fewer than LEARN_FROM rows, so the stated margin governs
    excess = {("deepseek-moe-16b", "Q2_K"): 0.0, ("deepseek-moe-16b", "Q4_K_M"): NVML_MARGIN_MIB,
              ("deepseek-moe-16b", "Q8_0"): NVML_MARGIN_MIB + 1,  # the buffers missed an allocation
              ("phi-3.5-moe", "Q2_K"): -1.0}  # the buffers above what the process holds
    rows = [replace(row, memory__nvml_process_mib=row.memory.gpu_buffers_mib + mib)
            for (model, quant), mib in excess.items() for row in [result(model, quant)]]
    assert len(rows) < LEARN_FROM

    assert _by_config(validate_night(rows)) == {"deepseek-moe-16b/Q8_0/baseline": ["nvml_agrees_with_buffers"],
                                                "phi-3.5-moe/Q2_K/baseline": ["nvml_agrees_with_buffers"]}


def test_the_file_size_is_judged_from_what_the_bench_read_on_its_worker():
    """Fault: validate read the GGUF's size on its own (default) worker, where the file does not exist, and then
    silently checked nothing. It now compares the size the bench recorded on the GPU worker, and quarantines an ok
    row that recorded none."""
    row = result(quant="Q2_K", path="/only/on/the/gpu/worker/m.gguf")
    assert not Path(row.config.model.path).exists() and row.file_bytes_on_disk == row.config.model.file_bytes

    assert validate_night([row]).quarantined == []
    assert [q.failed_expectations for q in validate_night([replace(row, file_bytes_on_disk=None)]).quarantined] == [
        ["file_size_checked"]]


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
    frame = validation_frame(night()).set_index("config_name")

    baseline = frame.loc["phi-3.5-moe/Q4_K_M/baseline", "vram_gib"]
    assert frame.loc["phi-3.5-moe/Q4_K_M/offload", "baseline_vram_gib"] == baseline
    assert frame.loc["deepseek-moe-16b/Q2_K/offload", "baseline_vram_gib"] != baseline


def test_importing_the_gate_does_not_import_great_expectations():
    code = "import sys, vramwatch.validate.gate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "include")})
    assert out.stdout.strip() == "False"


def test_markup_in_a_result_reaches_data_docs_as_text_not_html(tmp_path):
    """Fault: stored XSS. GX wrote a quarantined row's model name `<img src=x onerror=...>` into Data Docs raw, and
    the UI serves Data Docs on the Airflow origin. The row must stay quarantined, named, and be shown as text."""
    docs = tmp_path / "data_docs"
    rows = markup_named_rows()

    validated = validate_night([*night(quants=("Q2_K",)), *rows], data_docs_dir=docs)

    assert [q.result for q in validated.quarantined] == rows
    # the payload is also longer than the status column keeps
    assert {name for q in validated.quarantined for name in q.failed_expectations} == {
        "config_unique", "status_known", "values_fit_columns"}
    (page,) = (docs / "validations").rglob("*.html")
    html = page.read_text()
    assert XSS_PAYLOAD not in html and "<img src=x" not in html
    assert html.count(html_escape(XSS_PAYLOAD)) >= 2  # the status and the config id, each shown as text


# a tag attribute or CSS url() that would load (or link to) something from another host
EXTERNAL = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)(?:https?:)?//""", re.IGNORECASE)


def test_data_docs_load_nothing_from_another_host_and_each_expectations_outcome_is_kept(tmp_path):
    """Fault: GX Data Docs load ~15 CSS/JS assets (Bootstrap, jQuery, Vega, Font Awesome, its logo) from CDNs, so on
    an offline network their index was empty. Every HTML and CSS file vramwatch writes now points at no other host;
    and the night keeps each expectation's outcome, which the report shows itself."""
    docs = tmp_path / "data_docs"
    rows = markup_named_rows()

    validated = validate_night([*night(quants=("Q2_K",)), *rows], data_docs_dir=docs)

    written = [*docs.rglob("*.html"), *docs.rglob("*.css")]
    assert len(written) >= 3  # the index, the suite, the validation (and their stylesheets)
    assert {str(f.relative_to(docs)): EXTERNAL.findall(f.read_text()) for f in written
            if EXTERNAL.search(f.read_text())} == {}
    index = (docs / "index.html").read_text()  # its tables are filled by script: it lists every page plainly too
    listed = re.findall(r'<li><a href="([^"]+)">', index.split('<section id="vramwatch-pages">', 1)[1])
    assert listed and all((docs / page).is_file() for page in listed)
    assert any(page.startswith("validations/") for page in listed)
    outcomes = {o.name: o for o in validated.expectations}
    assert list(outcomes) == [name for name, _ in expectations()]
    assert {name for name, o in outcomes.items() if not o.success} == {"config_unique", "status_known",
                                                                       "values_fit_columns"}
    status = outcomes["status_known"]
    assert (status.expectation, status.columns, status.unexpected_count) == (
        "expect_column_values_to_be_in_set", ["status"], 2)
    assert status.unexpected_examples == [f"{rows[0].config.config_name}: status={XSS_PAYLOAD}"] * 2
    assert outcomes["pp_measured"].success and outcomes["pp_measured"].unexpected_count == 0


def test_a_gpu_row_without_energy_or_above_the_board_limit_is_quarantined():
    """Energy (issue 27): measured on every ok GPU row; each test's average power at most the board's limit. A CPU
    row has no GPU energy to measure and passes without it. One night, a config per case."""
    def at_limit(row):
        return replace(row, energy__pp=replace(row.energy.pp, power_avg_w=row.energy.power_limit_w))

    def unmeasured(row):  # as a GPU worker without NVML would report it
        return replace(row, energy=result(gpu=False).energy)

    def too_hot(row):
        return replace(row, energy__tg=replace(row.energy.tg, power_avg_w=row.energy.power_limit_w + 1))

    rows = [result("deepseek-moe-16b", "Q4_K_M"), at_limit(result("deepseek-moe-16b", "Q2_K")),
            unmeasured(result("deepseek-moe-16b", "Q8_0")), too_hot(result("phi-3.5-moe", "Q2_K")),
            result("phi-3.5-moe", "Q4_K_M", gpu=False)]

    assert _by_config(validate_night(rows)) == {
        "deepseek-moe-16b/Q8_0/baseline": ["pp_energy_measured", "tg_energy_measured"],
        "phi-3.5-moe/Q2_K/baseline": ["tg_power_within_limit"]}


def test_a_split_is_judged_against_its_gpus_together_and_beside_its_own_baseline():
    """A split's VRAM is the sum over its GPUs: it must fit their total, not one card's. An offload row is compared
    with the baseline of its own GPUs and split: a one-GPU offload above its one-GPU baseline fails, though the
    two-GPU baseline of the same model and quant (two contexts, two compute buffers) is larger still."""
    split = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-layer")
    card_mib = split.memory.vram_gib * 1024 * 0.75  # one card holds three quarters of the split's need
    baseline = result("phi-3.5-moe", "Q8_0", "baseline")
    offload = result("phi-3.5-moe", "Q8_0", "offload")
    between_mib = (baseline.memory.vram_gib + split.memory.vram_gib) / 2 * 1024  # above one, below the other
    growth_mib = between_mib - offload.memory.vram_gib * 1024  # NVML sees the bigger buffer too
    too_big_offload = replace(offload, memory__gpu_compute_mib=offload.memory.gpu_compute_mib + growth_mib,
                              memory__nvml_process_mib=offload.memory.nvml_process_mib + growth_mib)
    assert baseline.memory.vram_gib < too_big_offload.memory.vram_gib < split.memory.vram_gib

    validated = validate_night([split, baseline, too_big_offload], gpu_total_mib=max(card_mib, 60 * 1024))
    assert _by_config(validated) == {too_big_offload.config.config_name: ["offload_below_baseline_vram"]}
    alone = validate_night([split], gpu_total_mib=card_mib)
    assert alone.quarantined == [] and split in alone.accepted


def test_a_split_is_accepted_with_a_context_on_each_gpu_and_quarantined_without_a_gpus_buffer():
    """Two GPUs hold two CUDA contexts: NVML's process figure exceeds the buffers by twice a one-GPU context, which
    must not read as a missed buffer beside tonight's one-GPU rows. A split whose CUDA1 KV line did not parse is no
    measurement, though the KV summed over the GPUs (CUDA0's) is above 0."""
    one_gpu = night(models=("deepseek-moe-16b", "phi-3.5-moe"), quants=("Q2_K", "Q4_K_M", "Q8_0"))  # 12 rows
    split = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-layer")
    assert split.memory.cuda_context_mib == 2 * CONTEXT_MIB  # beyond the margin one-GPU rows teach tonight
    deepseek = two_gpu_result("deepseek-moe-16b-Q4_K_M-2gpu-layer", "deepseek-moe-16b", "Q4_K_M")
    no_cuda1_kv = replace(deepseek, memory__buffers_mib={
        key: mib for key, mib in deepseek.memory.buffers_mib.items() if key != "CUDA1/kv"})

    validated = validate_night([*one_gpu, split, no_cuda1_kv])

    assert _by_config(validated) == {"deepseek-moe-16b/Q4_K_M/baseline-2gpu-layer": ["gpu_buffers_on_each_gpu"]}
    assert split in validated.accepted
