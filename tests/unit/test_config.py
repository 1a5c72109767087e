"""The matrix: shipped ones load and expand into configs, bad input is refused naming the field, and every bench
knob comes from records.BenchKnobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vramwatch.config import MatrixError, load_matrix
from vramwatch.records import KNOB_NAMES, BenchKnobs, GenerationTest, ModelFile


def _model(**overrides) -> ModelFile:
    fields = dict(model="deepseek-moe-16b", quant="Q4_K_M", path="/m.gguf", file_bytes=10, sha256="ab", arch="deepseek",
                  n_params=16_000_000_000, n_layer=28, n_expert=64, n_expert_used=6, synthetic=True, scale="full")
    return ModelFile(**{**fields, **overrides})


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
    configs = matrix.bench_configs(_model(model="d"), matrix.models[0])
    assert [c.config_name for c in configs] == ["d/Q4_K_M/baseline", "d/Q4_K_M/partial4", "d/Q4_K_M/partial8"]
    assert len({c.config_id for c in configs}) == 3


def test_unknown_matrix_name_lists_the_shipped_ones():
    with pytest.raises(MatrixError, match="demo, seed"):
        load_matrix("nope")


BASE = "name: x\nmodels: [{name: a, source: {synth: deepseek-moe-16b}}]\nmodes: [baseline]\n"


@pytest.mark.parametrize(("yaml_text", "named"), [
    ("name: x\nmodels: []\nquants: [Q2_K]\nmodes: [baseline]\n", "models"),
    ("name: x\nmodels: [{name: a, source: {synth: s}}]\nquants: [Q2_K]\nmodes: [sideways]\n", "modes.0"),
    ("name: x\nmodels: [{name: a, source: {synth: s}}]\nquants: [Q2_K]\nmodes: [partial]\n", "n_cpu_moe_sweep"),
    (BASE + "quants: [Q2_K]\nrepz: 3\n", "repz"),
    (BASE + "quants: [Q4_K_M]\nn_prompt: 4096\nn_ctx: 4096\n",
     "n_prompt: 4096 prompt tokens plus one generated do not fit n_ctx 4096"),
    (BASE + "quants: [Q4_K_X]\n", "quants: 'Q4_K_X' is not a llama.cpp file type"),
    (BASE + "quants: [Q4_K_M]\nmodels: [{name: a, source: {synth: s}, quants: [q4_k_m]}]\n",
     "models.a.quants: 'q4_k_m' is not a llama.cpp file type (did you mean Q4_K_M"),
    (BASE + "quants: [Q4_K_M]\nn_gen: 9000\n", "n_gen: 9000 tokens do not fit n_ctx 4096"),
    (BASE + "quants: [Q4_K_M]\nreps: 0\n", "reps: must be at least 1"),
    (BASE + "quants: [Q4_K_M]\ntype_k: q3_k\n", "type_k: 'q3_k' is not a KV type"),
    (BASE + "quants: [Q4_K_M]\nflash_attn: maybe\n", "flash_attn"),
    (BASE + "quants: [Q4_K_M]\nmodes: [baseline, partial]\nn_cpu_moe_sweep: [0]\n", "n_cpu_moe_sweep: 0 layers"),
    # names the warehouse, paths and ids carry as they are (a 130-character name failed only on PostgreSQL)
    (f"name: x\nmodels: [{{name: {'m' * 130}, source: {{synth: s}}}}]\nquants: [Q2_K]\nmodes: [baseline]\n",
     "models.0.name: String should have at most 120 characters"),
    ("name: x\nmodels: [{name: '<img src=x onerror=alert(1)>', source: {synth: s}}]\nquants: [Q2_K]\n"
     "modes: [baseline]\n", "models.0.name: String should match pattern"),
    (BASE + "quants: [Q2_K]\nprices: {gpu_hour: {H100: -2}}\n", "prices.gpu_hour.H100"),
    (BASE + "quants: [Q2_K]\nprices: {kwh: 0.2, euro: 1}\n", "prices.euro"),
    ("name: x\nbuild: {source: git, location: '--upload-pack=touch /tmp/x'}\nmodels: [{name: a, source: {synth: s}}]\n"
     "quants: [Q2_K]\nmodes: [baseline]\n", "build.location: Value error, '--upload-pack=touch /tmp/x' starts with '-'"),
])
def test_an_invalid_matrix_fails_at_load_naming_the_field(tmp_path, yaml_text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    assert named in info.value.message


def test_every_bench_knob_and_its_default_comes_from_bench_knobs(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE + "quants: [Q4_K_M]\n")
    defaults = load_matrix(path)
    assert {name: getattr(defaults, name) for name in KNOB_NAMES} == BenchKnobs().to_dict() | {
        "generation": GenerationTest()}

    changed = dict(n_prompt=100, n_gen=20, reps=2, n_ctx=1024, n_batch=256, n_ubatch=128, n_threads=3,
                   n_gpu_layers=10, flash_attn="off", use_mmap=False, type_k="q8_0", type_v="q4_0", timeout_s=60.0,
                   host_memory_limit_mib=2048, gpus=2, split_mode="row", tensor_split="3,1")
    path.write_text(BASE + "quants: [Q4_K_M]\n" + "".join(f"{k}: {str(v).lower()}\n" for k, v in changed.items())
                    + "generation: null\n")
    matrix = load_matrix(path)
    (config,) = matrix.bench_configs(_model(model="a"), matrix.models[0])
    assert {name: getattr(config, name) for name in KNOB_NAMES} == {**changed, "generation": None}


def test_the_readme_example_prices_load_into_the_matrix(tmp_path):
    """The README's example `prices:` section is valid as written (its figures are examples, not facts)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```yaml\nprices:", 1)[1].split("```", 1)[0]
    path = tmp_path / "m.yaml"
    path.write_text(BASE + "quants: [Q2_K]\nprices:" + example)
    prices = load_matrix(path).prices
    assert prices.gpu_hour["NVIDIA H100 80GB HBM3"] == 2.5 and prices.host_hour == 0.4 and prices.kwh == 0.15
    assert load_matrix("seed").prices.gpu_hour == {}  # none shipped: prices are the user's
