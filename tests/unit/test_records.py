"""Records survive the JSON trip between processes and tasks, measured nights of every committed version still read,
and the one check of a bench config names what is wrong."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from support.samples import bisection

from vramwatch.errors import UserError
from vramwatch.records import (
    MEASURED_NIGHT_VERSION,
    POWER_USAGE,
    TENSOR_SPLIT_MAX,
    BenchConfig,
    BenchKnobs,
    BenchResult,
    BuildRecord,
    BuildRequest,
    MeasuredNight,
    Memory,
    ModelFile,
    TestResult,
    config_name,
    expected_gpu_devices,
    knob_problems,
    split_shares,
)

RAW = Path(__file__).resolve().parents[2] / "docs" / "results" / "raw"
RAW_NIGHTS = sorted(p for p in RAW.glob("*.json") if "fidelity" not in p.name)  # what `vramwatch measure` wrote
TWO_RELEASES = sorted((RAW / "2026-11-29-h200-two-releases").glob("measure-*.json"))  # 0.3.30, then 0.3.36
# the one night measured on two GPUs, unpinned: llama.cpp split DeepSeek's layers over both H200s by itself
TWO_GPUS = RAW / "2026-11-29-h200-bisect-attempt" / "measure-0.3.36-two-gpus.json"


def _model(**overrides) -> ModelFile:
    fields = dict(model="deepseek-moe-16b", quant="Q4_K_M", path="/m.gguf", file_bytes=10, sha256="ab", arch="deepseek",
                  n_params=16_000_000_000, n_layer=28, n_expert=64, n_expert_used=6, synthetic=True, scale="full")
    return ModelFile(**{**fields, **overrides})


def test_bench_result_round_trips_through_json_with_nested_records():
    config = BenchConfig(model=_model(), mode="partial", n_cpu_moe=4)
    result = BenchResult(config=config, status="ok",
                         tg=TestResult(n_prompt=0, n_gen=128, samples_ts=[10.0, 12.0], avg_ts=11.0, stddev_ts=1.41),
                         memory=Memory(buffers_mib={"CUDA0/model": 100.0}, gpu_model_mib=100.0, gpu_total_mib=81559.0))
    again = BenchResult.from_json(result.to_json())
    assert again == result
    assert isinstance(again.config.model, ModelFile) and isinstance(again.tg, TestResult)
    assert again.config.config_name == "deepseek-moe-16b/Q4_K_M/partial4"
    assert again.config.config_id == config.config_id


def test_seed_vram_metric_is_model_plus_kv_plus_compute_and_absent_without_a_gpu():
    gpu = Memory(gpu_model_mib=1024, gpu_kv_mib=512, gpu_compute_mib=512, gpu_output_mib=99, gpu_total_mib=81559)
    assert gpu.vram_gib == 2.0
    assert Memory(gpu_model_mib=1024).vram_gib is None


def test_cuda_context_is_nvml_process_memory_beyond_the_gpu_buffers():
    # the DeepSeek Q4_K_M baseline's shape on an H200; 518 MiB is what the old pre-load reading said under 0.3.36
    memory = Memory(gpu_model_mib=10_010.0, gpu_kv_mib=1_024.0, gpu_compute_mib=260.39, gpu_output_mib=0.39,
                    nvml_process_mib=11_965.0, gpu_total_mib=143_771.0, cuda_context_mib=518.0)
    assert memory.gpu_buffers_mib == 11_294.78
    assert memory.with_cuda_context().cuda_context_mib == 670.22
    # no NVML process figure (no GPU, or a container that hides pids): no context figure, never a 0
    assert Memory(gpu_model_mib=100.0, cuda_context_mib=3.2).with_cuda_context().cuda_context_mib is None


def test_a_good_config_has_no_problems_and_a_bad_one_names_each_field():
    assert BenchConfig(model=_model(), mode="baseline").problems() == []
    bad = BenchConfig(model=_model(), mode="partial", n_cpu_moe=0, n_prompt=4096, n_ctx=4096, type_v="f8")
    assert [p.split(":")[0] for p in bad.problems()] == ["n_prompt", "type_v", "n_cpu_moe"]
    assert knob_problems(BenchKnobs(n_ctx=513, n_prompt=512)) == []


@pytest.mark.parametrize("path", RAW_NIGHTS, ids=[p.name for p in RAW_NIGHTS])
def test_committed_measured_nights_read_migrated_to_the_current_version(path):
    assert "format_version" not in json.loads(path.read_text())  # written before the field: version 1
    measured = MeasuredNight.from_json(path.read_text())
    assert measured.format_version == MEASURED_NIGHT_VERSION
    assert measured.results and all(isinstance(r.config, BenchConfig) for r in measured.results)
    measured_on_gpu = [r.memory for r in measured.results if r.memory.nvml_process_mib is not None]
    assert measured_on_gpu
    for memory in measured_on_gpu:
        assert memory.cuda_context_mib == pytest.approx(memory.nvml_process_mib - memory.gpu_buffers_mib, abs=0.01)
        assert 0 < memory.cuda_context_mib < 1024  # ~0.7 GiB on the H200, where the old reading said 518 MiB
    assert all(r.memory.source_lines == {} for r in measured.results)
    # no size read by the bench then: an ok row's tensor data fit its file, a failed one unknown
    assert all(r.file_bytes_on_disk == (r.config.model.file_bytes if r.ok else None) for r in measured.results)
    assert MeasuredNight.from_json(measured.to_json()) == measured  # the current version reads back as written


def test_the_two_release_nights_trace_every_buffer_and_agree_on_the_cuda_context():
    """On one H200, 0.3.30 and 0.3.36 read a context of 3.2 and 518 MiB the old way; the same figure on both now."""
    old, new = (MeasuredNight.from_json(path.read_text()) for path in TWO_RELEASES)
    assert (old.build.llama_cpp_python_version, new.build.llama_cpp_python_version) == ("0.3.30", "0.3.36")
    for before, after in zip(old.results, new.results):
        for result in (before, after):
            memory = result.memory
            assert set(memory.source_lines) == set(memory.buffers_mib) and all(memory.source_lines.values())
            assert memory.cuda_context_mib == pytest.approx(memory.nvml_process_mib - memory.gpu_buffers_mib, abs=0.01)
        assert after.memory.cuda_context_mib == pytest.approx(before.memory.cuda_context_mib, abs=64)


@pytest.mark.parametrize("model", ["deepseek", "phi"])
def test_the_h100_energy_nights_read_as_sampled_through_get_power_usage(model):
    """Written before the instant power field: their power samples were GetPowerUsage's (a 1-s average there)."""
    text = (RAW / "2026-12-07-h100-energy" / f"energy-{model}.json").read_text()
    assert json.loads(text)["format_version"] < 5
    measured = MeasuredNight.from_json(text)
    assert measured.results and all(r.energy.power_source == POWER_USAGE for r in measured.results)
    assert all(r.energy.pp.n_samples for r in measured.results)  # the migration marks only rows that sampled
    assert MeasuredNight.from_json(measured.to_json()) == measured


def test_a_current_night_keeps_its_figures_and_a_newer_one_asks_for_an_upgrade():
    memory = Memory(gpu_model_mib=100.0, nvml_process_mib=900.0, cuda_context_mib=800.0,
                    source_lines={"CUDA0/model": ["load_tensors:        CUDA0 model buffer size =   100.00 MiB"]})
    build = BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="", source_dir="",
                        llama_cpp_python_version="0.3.36", llama_cpp_commit="0c1e57098")
    night = MeasuredNight(build=build, results=[BenchResult(config=BenchConfig(model=_model(), mode="baseline"),
                                                             status="ok", memory=memory)])
    assert json.loads(night.to_json())["format_version"] == MEASURED_NIGHT_VERSION
    assert MeasuredNight.from_json(night.to_json()) == night

    newer = {**night.to_dict(), "format_version": MEASURED_NIGHT_VERSION + 1}
    with pytest.raises(UserError) as refused:
        MeasuredNight.from_json(json.dumps(newer))
    assert f"format version {MEASURED_NIGHT_VERSION + 1}" in str(refused.value) and "\n" not in str(refused.value)
    assert "upgrade vramwatch on the ingest side" in refused.value.fix

def test_the_config_id_changes_with_every_setting_that_changes_the_figures():
    base = BenchConfig(model=_model(), mode="baseline")
    assert base.config_id.startswith("deepseek-moe-16b/Q4_K_M/baseline@") and config_name(base.config_id) == \
        base.config_name
    for change in (dict(n_ctx=8192), dict(n_prompt=256), dict(n_gen=64), dict(flash_attn="on"), dict(type_k="q8_0"),
                   dict(use_mmap=False), dict(n_threads=8), dict(generation=None), dict(n_ubatch=256)):
        assert dataclasses.replace(base, **change).config_id != base.config_id, change
    for same in (dict(reps=3), dict(timeout_s=60.0), dict(quality=True)):
        assert dataclasses.replace(base, **same).config_id == base.config_id, same
    assert dataclasses.replace(base, model=_model(sha256="cd", path="/other.gguf")).config_id == base.config_id


def test_a_bisections_cost_says_seconds_where_minutes_would_round_to_zero():
    """The H200 search's five benches took 20 s in all, and the report, alert and page said "0 min bench"."""
    found = bisection()
    quick = dataclasses.replace(found, steps=[dataclasses.replace(s, bench_s=4.0) for s in found.steps])

    assert found.cost == "5 builds: 40 min build, 3 min bench"
    assert quick.cost == "5 builds: 40 min build, 20 s bench"


def test_split_knobs_leave_every_config_id_stored_before_them_as_it_was():
    """The ids the 2026-11-29 verdicts and the 2026-12-07 noise run stored (before gpus, split_mode, tensor_split
    existed) are still the ids of those configs: their history goes on."""
    stored_ids = {config_id for name in ("2026-11-29-h200-two-releases-verdicts.json", "2026-12-07-h100-noise.json")
                  for config_id in re.findall(r'"config_id": "([^"]+)"', (RAW.parent / name).read_text())}
    measured = MeasuredNight.from_json(TWO_RELEASES[1].read_text())
    assert {r.config.config_id for r in measured.results} <= stored_ids
    assert "deepseek-moe-16b/Q4_K_M/baseline@455b4df2" in {r.config.config_id for r in measured.results}
    base = measured.results[0].config
    assert dataclasses.replace(base, gpus=1, split_mode="layer", tensor_split="").config_id == base.config_id
    split = {dataclasses.replace(base, gpus=2).config_id, dataclasses.replace(base, gpus=2, split_mode="row").config_id,
             dataclasses.replace(base, gpus=2, tensor_split="3,1").config_id}
    assert len(split) == 3 and base.config_id not in split
    two = dataclasses.replace(base, gpus=2, split_mode="row")
    assert two.config_name == "deepseek-moe-16b/Q4_K_M/baseline-2gpu-row"  # never its one-GPU twin's name
    assert dataclasses.replace(base, mode="partial", n_cpu_moe=4, gpus=2).mode_label == "partial4-2gpu-layer"


def test_split_knobs_that_could_not_run_are_named_by_field():
    def fields(**knobs) -> list[str]:
        return [p.split(":")[0] for p in knob_problems(BenchKnobs(**knobs))]

    assert fields(gpus=2) == fields(gpus=2, split_mode="row", tensor_split="3,1") == fields(gpus=2, tensor_split="1,0") \
        == []
    assert fields(gpus=0) == ["gpus"]
    assert fields(gpus=2, split_mode="none") == ["split_mode"]  # two GPUs pinned, the model on one
    assert fields(split_mode="tensor") == ["split_mode"]
    for bad in ("3,1", "a,b", "1", "1,2,3", "-1,2", "0,0", f"0.{'0' * TENSOR_SPLIT_MAX}1,1"):  # the last: too long
        assert fields(gpus=1 if bad == "3,1" else 2, tensor_split=bad) == ["tensor_split"], bad
    assert split_shares(BenchKnobs(gpus=2, tensor_split="3,1")) == [0.75, 0.25]
    assert split_shares(BenchKnobs(gpus=2)) == [0.5, 0.5]  # even: never llama.cpp's split by free memory
    assert expected_gpu_devices(BenchKnobs(gpus=2)) == ["CUDA0", "CUDA1"]
    assert expected_gpu_devices(BenchKnobs(gpus=2, tensor_split="1,0")) == ["CUDA0"]  # CUDA1 given no layer
    assert expected_gpu_devices(BenchKnobs(gpus=2, split_mode="row"), "ROCm") == ["ROCm0", "ROCm1"]
    assert expected_gpu_devices(BenchKnobs()) == ["CUDA0"]


def test_the_unpinned_two_gpu_night_reads_as_the_layer_split_it_was():
    """Format 3 and earlier pinned no GPU: the one result measured on two H200s is filed as a two-GPU layer split (a
    series of its own), and its NVML figure, read on CUDA0 alone, is kept as CUDA0's: it no longer makes the CUDA
    context -5039.83 MiB nor stands for the need of both cards."""
    raw = json.loads(TWO_GPUS.read_text())
    assert raw["format_version"] == 2 and raw["results"][0]["memory"]["cuda_context_mib"] == -5039.83
    (result,) = MeasuredNight.from_json(TWO_GPUS.read_text()).results
    assert (result.config.gpus, result.config.split_mode, result.config.config_name) == (
        2, "layer", "deepseek-moe-16b/Q4_K_M/baseline-2gpu-layer")
    memory = result.memory
    assert memory.nvml_process_by_device_mib == {"CUDA0": 6484.0}
    assert memory.nvml_process_mib is None and memory.cuda_context_mib is None
    assert memory.needed_mib == memory.gpu_buffers_mib == 11523.83  # the buffers of both cards, all that is known
    assert memory.needed_by_device() == {"CUDA0": 5780.82, "CUDA1": 5743.01}  # each card's buffers
    # every one-GPU night of the same format reads as before: one GPU, its figures untouched
    for path in TWO_RELEASES:
        night = MeasuredNight.from_json(path.read_text())
        assert all(r.config.gpus == 1 and r.memory.nvml_process_mib is not None for r in night.results)
