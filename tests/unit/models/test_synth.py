"""Synthetic GGUFs: llama.cpp loads and generates with every arch, shapes are upstream's, sizes match the seed."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from vramwatch.bench.runner import run_config
from vramwatch.errors import UserError
from vramwatch.models.inspect import active_bytes_per_token, inspect_gguf, read_header
from vramwatch.models.quantize import quantize_gguf
from vramwatch.models.specs import SPEC_NAMES, get_spec, tensor_plan
from vramwatch.models.synth import ensure_free_space, planned_file_bytes, write_gguf
from vramwatch.records import BenchConfig

GENERATE = """
import json, sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
out = llm.create_completion("Explain quantum computing in simple terms", max_tokens=8, temperature=0.7, seed=42)
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "text": out["choices"][0]["text"],
                  "n_vocab": llm.n_vocab()}))
"""


def generate(python: str, path: Path) -> dict:
    """A short completion in the engine's Python: the file loads and decodes on the CPU build."""
    proc = subprocess.run([python, "-c", GENERATE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ls_h(n: int) -> str:
    """A size as `ls -h` prints it: powers of 1024, rounded up, one decimal below 10."""
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            break
        n /= 1024
    if n < 10:
        value = math.ceil(n * 10) / 10
        return f"{value:.1f}{unit}" if value < 10 else f"10{unit}"
    return f"{math.ceil(n)}{unit}"


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory, vocab_dir) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synth")
    return {name: write_gguf(get_spec(name, "tiny"), out, vocab_dir) for name in SPEC_NAMES}


def test_ls_h_matches_gnu_rounding():
    assert [ls_h(n) for n in (1023, 6_706_696_608, 10_850_181_536, 10 * 2**30, 32_762_761_632)] == \
        ["1023", "6.3G", "11G", "10G", "31G"]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_tiny_model_loads_and_generates_on_cpu_engine(tiny_sources, name, engine_build):
    spec = get_spec(name, "tiny")
    result = generate(engine_build.python, tiny_sources[name])
    assert result["tokens"] > 0 and result["text"]
    assert result["n_vocab"] == spec.n_vocab


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_tiny_model_offloads_its_experts_on_cpu_engine(tiny_sources, name, engine_build):
    """The bench's offload mode finds every arch's expert tensors; a dense model has none to move."""
    model = inspect_gguf(tiny_sources[name], model=name, synthetic=True, scale="tiny")
    config = BenchConfig(model=model, mode="offload", n_prompt=16, n_gen=4, reps=1, n_ctx=128, n_batch=16,
                         n_ubatch=16, generation=None, timeout_s=240)
    result = run_config(config, engine_build)
    if model.is_moe:
        assert result.status == "ok", result.error
        assert result.n_overridden_tensors > 0 and result.tg.avg_ts > 0
    else:
        assert result.status == "not_applicable"


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_tiny_file_is_what_the_plan_says(tiny_sources, name, vocab_dir):
    spec = get_spec(name, "tiny")
    path = tiny_sources[name]
    header = read_header(path)
    plan = tensor_plan(spec)
    assert [(t.name, t.shape, t.type) for t in header.tensors] == [(p.name, p.shape, p.type) for p in plan]
    assert path.stat().st_size == planned_file_bytes(spec, vocab_dir)
    assert header.arch == spec.arch and header.metadata["tokenizer.ggml.tokens"]
    # K-quants apply to every matmul weight: input dims (ne0) are multiples of 256
    assert all(t.shape[0] % 256 == 0 for t in plan if len(t.shape) > 1)
    assert 1 * 2**20 < path.stat().st_size < 160 * 2**20


def test_tiny_archs_keep_their_structure():
    deepseek = [t.name for t in tensor_plan(get_spec("deepseek-moe-16b", "tiny"))]
    assert "blk.0.ffn_gate.weight" in deepseek and "blk.0.ffn_gate_exps.weight" not in deepseek  # leading dense
    assert "blk.1.ffn_gate_shexp.weight" in deepseek and "blk.1.ffn_gate_exps.weight" in deepseek
    phimoe = [t.name for t in tensor_plan(get_spec("phi-3.5-moe", "tiny"))]
    assert {"output_norm.bias", "output.bias", "blk.0.attn_norm.bias", "blk.0.ffn_norm.bias"} <= set(phimoe)
    gptoss = {t.name: t for t in tensor_plan(get_spec("gpt-oss-20b", "tiny"))}
    assert gptoss["blk.0.attn_sinks.weight"].shape == (8,)
    assert gptoss["blk.0.ffn_down_exps.weight"].type == GGMLQuantizationType.MXFP4
    assert "blk.0.ffn_gate_exps.bias" in gptoss and "blk.0.post_attention_norm.weight" in gptoss


@pytest.mark.parametrize("name,tensor,qtype,block_bytes,tolerance", [
    ("gpt-oss-20b", "blk.0.ffn_up_exps.weight", GGMLQuantizationType.MXFP4, 17, 2.0),  # a power-of-two scale
    ("phi-3.5-moe", "blk.0.ffn_up_exps.weight", GGMLQuantizationType.Q8_0, 34, 1.05),
    ("phi-3.5-moe", "blk.0.attn_q.weight", GGMLQuantizationType.Q8_0, 34, 1.05),
])
def test_directly_drawn_blocks_decode_to_weights_of_the_planned_scale(tiny_sources, name, tensor, qtype, block_bytes,
                                                                      tolerance):
    """Block types drawn as codes (not quantized from floats) still give variance 1/fan_in, like the F16 ones."""
    path = tiny_sources[name]
    header = read_header(path)
    info = next(t for t in header.tensors if t.name == tensor)
    assert info.type == qtype
    raw = np.fromfile(path, dtype=np.uint8, count=info.n_bytes, offset=header.data_offset + info.offset)
    values = dequantize(raw.reshape(-1, block_bytes * info.shape[0] // 32), qtype)
    assert np.isfinite(values).all()
    target = 1 / math.sqrt(info.shape[0])
    assert target / tolerance < values.std() < target * tolerance


def test_full_specs_match_upstream_parameter_counts():
    """Parameter counts of the upstream models (and REFERENCE.md's active-parameter figures)."""
    billions = {name: sum(t.n_elements for t in tensor_plan(get_spec(name, "full"))) / 1e9 for name in SPEC_NAMES}
    assert billions["deepseek-moe-16b"] == pytest.approx(16.38, abs=0.02)
    assert billions["phi-3.5-moe"] == pytest.approx(41.87, abs=0.05)
    assert billions["gpt-oss-20b"] == pytest.approx(20.91, abs=0.05)
    assert billions["llama-dense"] == pytest.approx(8.03, abs=0.02)


@pytest.fixture(scope="module")
def deepseek_full_layout(tmp_path_factory, vocab_dir) -> Path:
    """Full DeepSeek-MoE-16B as metadata + tensor layout over a hole: 30.5 GiB apparent, ~4 MB on disk."""
    return write_gguf(get_spec("deepseek-moe-16b", "full"), tmp_path_factory.mktemp("full"), vocab_dir,
                      shape_only=True)


def test_full_deepseek_f16_size_equals_the_seed(deepseek_full_layout, vocab_dir):
    spec = get_spec("deepseek-moe-16b", "full")
    size = planned_file_bytes(spec, vocab_dir)
    assert deepseek_full_layout.stat().st_size == size
    assert deepseek_full_layout.stat().st_blocks * 512 < 64 * 2**20  # sparse: nothing was really written
    assert ls_h(size) == "31G"


@pytest.mark.parametrize("quant,seed_size", [("Q8_0", "17G"), ("Q4_K_M", "11G"), ("Q2_K", "6.3G")])
def test_full_deepseek_quantized_sizes_equal_the_seed(deepseek_full_layout, quant, seed_size, engine_build):
    """llama_model_quantize's dry run picks each tensor's type; the file size follows from ggml type sizes."""
    result = quantize_gguf(deepseek_full_layout, quant, engine_build, dry_run=True)
    assert ls_h(result.file_bytes) == seed_size
    if quant != "Q8_0":  # ffn_down rows of 1408 and 10944 are not multiples of 256: llama.cpp falls back
        assert len(result.fallback_tensors) == 28 and "blk.1.ffn_down_exps.weight" in result.fallback_tensors


def test_full_deepseek_active_bytes_per_token(deepseek_full_layout):
    total, expert = active_bytes_per_token(deepseek_full_layout)
    assert expert / 2 / 1e9 == pytest.approx(1.40, abs=0.01)  # F16: 2 bytes a parameter
    assert total / 2 / 1e9 == pytest.approx(2.62, abs=0.02)


def test_inspect_reports_the_model(tiny_sources):
    record = inspect_gguf(tiny_sources["deepseek-moe-16b"], model="ds", synthetic=True, scale="tiny")
    spec = get_spec("deepseek-moe-16b", "tiny")
    assert (record.arch, record.n_layer, record.n_expert, record.n_expert_used) == ("deepseek", 4, 8, 2)
    assert record.quant == "F16" and record.is_moe and record.file_bytes == tiny_sources["deepseek-moe-16b"].stat().st_size
    assert record.n_params == sum(t.n_elements for t in tensor_plan(spec))
    assert len(record.sha256) == 64
    assert inspect_gguf(tiny_sources["gpt-oss-20b"]).quant == "MXFP4_MOE"
    assert inspect_gguf(tiny_sources["llama-dense"]).n_expert == 0


def test_bad_inputs_raise_user_errors(tmp_path, tiny_sources):
    with pytest.raises(UserError, match="unknown synthetic model"):
        get_spec("mixtral", "tiny")
    with pytest.raises(UserError, match="unknown scale"):
        get_spec("llama-dense", "huge")
    with pytest.raises(UserError, match="no such file"):
        inspect_gguf(tmp_path / "missing.gguf")
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(UserError, match="not a GGUF"):
        inspect_gguf(tmp_path / "notes.gguf")
    data = tiny_sources["phi-3.5-moe"].read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        inspect_gguf(tmp_path / "cut.gguf")
    (tmp_path / "cut-header.gguf").write_bytes(data[:5000])
    with pytest.raises(UserError, match="truncated"):
        inspect_gguf(tmp_path / "cut-header.gguf")
    with pytest.raises(UserError, match="free in"):
        ensure_free_space(tmp_path, 2**60, "a model")
    with pytest.raises(UserError, match="tokenizer file"):
        write_gguf(get_spec("llama-dense", "tiny"), tmp_path, tmp_path)
    assert not list(tmp_path.glob("*.partial"))


def test_seed_makes_files_reproducible(tmp_path, tiny_sources, vocab_dir):
    again = write_gguf(get_spec("phi-3.5-moe", "tiny"), tmp_path, vocab_dir)
    assert again.read_bytes() == tiny_sources["phi-3.5-moe"].read_bytes()
    other = write_gguf(get_spec("phi-3.5-moe", "tiny"), tmp_path / "s1", vocab_dir, seed=1)
    assert other.read_bytes() != again.read_bytes()
    assert os.path.getsize(other) == os.path.getsize(again)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a disk that fills while a model is written (root only: skipped where mount is refused)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_disk_that_fills_while_writing_a_model_is_one_line_naming_the_folder_and_the_space(small_disk, vocab_dir):
    """Fault: a full disk gave a raw OSError traceback while writing a synthetic model."""
    with pytest.raises(UserError) as full:
        write_gguf(get_spec("deepseek-moe-16b", "tiny"), small_disk, vocab_dir)

    assert str(small_disk) in full.value.message and "needs" in full.value.message and "\n" not in str(full.value)
    assert "VRAMWATCH_MODELS_DIR" in full.value.fix
    assert list(small_disk.iterdir()) == []  # no partial file left
