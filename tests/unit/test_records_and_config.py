"""Records survive the JSON trip between processes and tasks; the matrix rejects bad input naming the field."""

from __future__ import annotations

import pytest

from vramwatch.config import MatrixError, load_matrix
from vramwatch.records import BenchConfig, BenchResult, Memory, ModelFile, TestResult


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
    assert again.config.config_id == "deepseek-moe-16b/Q4_K_M/partial4"


def test_seed_vram_metric_is_model_plus_kv_plus_compute_and_absent_without_a_gpu():
    gpu = Memory(gpu_model_mib=1024, gpu_kv_mib=512, gpu_compute_mib=512, gpu_output_mib=99, gpu_total_mib=81559)
    assert gpu.vram_gib == 2.0
    assert Memory(gpu_model_mib=1024).vram_gib is None


def test_shipped_matrices_load_and_expand_into_configs():
    demo = load_matrix("demo")
    entry = demo.models[0]
    configs = demo.bench_configs(_model(model=entry.name), entry)
    assert [c.mode for c in configs] == ["baseline", "offload"]
    assert all(c.reps == demo.reps and c.n_ctx == demo.n_ctx for c in configs)
    seed = load_matrix("seed")
    assert [m.name for m in seed.models] == ["deepseek-moe-16b", "phi-3.5-moe", "gpt-oss-20b", "gemma-3-270m"]
    assert seed.quants_for(seed.models[2]) == ["native"]
    assert not any(c.quality for c in configs)  # synthetic weights: no quality figure
    for matrix in (demo, seed):
        gemma = matrix.models[-1]
        (config,) = matrix.bench_configs(_model(model=gemma.name), gemma)
        assert (config.mode, config.quality, matrix.quants_for(gemma)) == ("baseline", True, ["native"])


def test_partial_mode_expands_over_the_sweep(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: p\nmodels: [{name: d, source: {synth: deepseek-moe-16b}}]\nquants: [Q4_K_M]\n"
                    "modes: [baseline, partial]\nn_cpu_moe_sweep: [4, 8]\n")
    matrix = load_matrix(path)
    ids = [c.config_id for c in matrix.bench_configs(_model(model="d"), matrix.models[0])]
    assert ids == ["d/Q4_K_M/baseline", "d/Q4_K_M/partial4", "d/Q4_K_M/partial8"]


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("name: x\nmodels: []\nquants: [Q2_K]\nmodes: [baseline]\n", "models"),
    ("name: x\nmodels: [{name: a, source: {synth: s}}]\nquants: [Q2_K]\nmodes: [sideways]\n", "modes.0"),
    ("name: x\nmodels: [{name: a, source: {synth: s}}]\nquants: [Q2_K]\nmodes: [partial]\n", "n_cpu_moe_sweep"),
    ("name: x\nmodels: [{name: a, source: {synth: s}}]\nquants: [Q2_K]\nmodes: [baseline]\nrepz: 3\n", "repz"),
])
def test_invalid_matrix_names_the_field(tmp_path, yaml_text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(MatrixError, match=field.replace(".", r"\.")):
        load_matrix(path)


def test_unknown_matrix_name_lists_the_shipped_ones():
    with pytest.raises(MatrixError, match="demo, seed"):
        load_matrix("nope")
