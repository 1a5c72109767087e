"""Quantization with the real CPU engine, and the model cache of prepare_models."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vramwatch.bench.runner import run_config
from vramwatch.config import Matrix, Paths
from vramwatch.errors import UserError
from vramwatch.models.inspect import read_header
from vramwatch.models.prepare import NATIVE, prepare_models
from vramwatch.models.quantize import file_types, quantize_gguf
from vramwatch.models.specs import get_spec
from vramwatch.models.synth import DISK_MARGIN, write_gguf
from vramwatch.records import QUANT_TYPES, BuildRecord

GENERATE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_threads=2, verbose=False)
print(llm.create_completion("Hello", max_tokens=4, seed=1)["usage"]["completion_tokens"])
"""


@pytest.fixture(scope="module")
def deepseek_tiny(tmp_path_factory, vocab_dir) -> Path:
    return write_gguf(get_spec("deepseek-moe-16b", "tiny"), tmp_path_factory.mktemp("src"),
                      vocab_dir)


def _types(path: Path) -> dict[str, str]:
    from gguf import GGMLQuantizationType

    return {t.name: GGMLQuantizationType(t.type).name for t in read_header(path).tensors}


def test_q4_k_m_file_holds_k_quants_and_generates(deepseek_tiny, tmp_path, engine_build):
    result = quantize_gguf(deepseek_tiny, "q4_k_m", engine_build, tmp_path / "ds-q4km.gguf", nthread=2)
    types = _types(result.path)
    assert result.ftype == 15 and result.quant == "Q4_K_M"
    assert types["blk.1.ffn_gate_exps.weight"] == "Q4_K"
    assert types["output.weight"] == "Q6_K"  # Q4_K_M's mix: output in Q6_K
    assert types["blk.1.ffn_gate_inp.weight"] == "F32"  # routers are never quantized
    assert result.fallback_tensors == []  # tiny widths are multiples of 256
    assert result.file_bytes == result.path.stat().st_size < deepseek_tiny.stat().st_size / 2
    assert read_header(result.path).metadata["general.file_type"] == 15
    assert not list(tmp_path.glob("*.partial"))
    proc = subprocess.run([engine_build.python, "-c", GENERATE, str(result.path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and int(proc.stdout.split()[-1]) > 0, proc.stderr[-2000:]


@pytest.mark.parametrize("quant,weight_type", [("Q8_0", "Q8_0"), ("Q2_K", "Q2_K")])
def test_requested_type_lands_in_the_file(deepseek_tiny, tmp_path, quant, weight_type, engine_build):
    result = quantize_gguf(deepseek_tiny, quant, engine_build, tmp_path / f"ds-{quant}.gguf", nthread=2)
    types = _types(result.path)
    assert types["blk.1.ffn_up_exps.weight"] == weight_type
    assert {t for name, t in types.items() if name.endswith("norm.weight")} == {"F32"}
    assert result.tensor_types["blk.1.ffn_up_exps.weight"] == weight_type.lower()


def test_dry_run_predicts_the_real_size(deepseek_tiny, tmp_path, engine_build):
    predicted = quantize_gguf(deepseek_tiny, "Q8_0", engine_build, dry_run=True)
    assert predicted.path is None and not list(deepseek_tiny.parent.glob("*Q8_0*"))
    real = quantize_gguf(deepseek_tiny, "Q8_0", engine_build, tmp_path / "real.gguf", nthread=2)
    assert abs(predicted.file_bytes - real.file_bytes) <= 64  # header differs by the file_type value at most


def test_shape_fallbacks_are_reported(tmp_path, engine_build, vocab_dir):
    """gpt-oss's 2880-wide rows are not multiples of 256: K-quants fall back, and we say which tensors."""
    from dataclasses import replace

    tiny = get_spec("gpt-oss-20b", "tiny")
    widths = {"expert_feed_forward_length": 288, "attention.key_length": 72, "attention.value_length": 72}
    spec = replace(tiny, n_embd=288, n_ff=288, n_ff_exp=288, n_head=4, head_dim=72,
                   extra_kv=tuple((k, widths.get(k, v), t) for k, v, t in tiny.extra_kv))
    src = write_gguf(spec, tmp_path, vocab_dir, shape_only=True)
    result = quantize_gguf(src, "Q4_K_M", engine_build, dry_run=True)
    assert "blk.0.attn_q.weight" in result.fallback_tensors
    assert result.tensor_types["blk.0.attn_q.weight"] not in ("q4_k", "q6_k")


def test_bad_quantize_inputs(deepseek_tiny, tmp_path, engine_build):
    with pytest.raises(UserError, match="unknown file type 'Q9_Z'") as err:
        quantize_gguf(deepseek_tiny, "Q9_Z", engine_build, tmp_path / "x.gguf")
    assert "Q4_K_M" in err.value.fix
    with pytest.raises(UserError, match="no such file"):
        quantize_gguf(tmp_path / "missing.gguf", "Q8_0", engine_build)
    broken = BuildRecord.from_dict({**engine_build.to_dict(), "python": str(tmp_path / "no-python")})
    with pytest.raises(UserError, match="engine python"):
        quantize_gguf(deepseek_tiny, "Q8_0", broken, tmp_path / "x.gguf")
    with pytest.raises(UserError, match="is the source"):
        quantize_gguf(deepseek_tiny, "Q8_0", engine_build, deepseek_tiny)


def test_prepare_makes_every_file_once_then_reuses_them(tmp_path, monkeypatch, engine_build):
    for var in ("VRAMWATCH_MODELS_DIR", "VRAMWATCH_BUILDS_DIR"):
        monkeypatch.delenv(var, raising=False)
    matrix = Matrix.model_validate({
        "name": "t", "quants": ["Q4_K_M"], "modes": ["baseline"],
        "models": [
            {"name": "ds-tiny", "source": {"synth": "deepseek-moe-16b"}, "quants": ["Q4_K_M", "native"]},
            {"name": "phi-tiny", "source": {"synth": "phi-3.5-moe"}, "quants": ["Q8_0", "Q2_K"]},
        ],
    })
    paths = Paths(tmp_path)
    first = prepare_models(matrix, engine_build, paths)
    assert [(e.name, m.quant) for e, m in first] == [
        ("ds-tiny", "Q4_K_M"), ("ds-tiny", "F16"), ("phi-tiny", "Q8_0"), ("phi-tiny", "Q2_K")]
    assert all(m.synthetic and m.scale == "tiny" and Path(m.path).is_file() for _, m in first)
    assert "synth" in Path(first[2][1].path).parts  # phi's source already is Q8_0: benched as is
    files = sorted(p for p in paths.models.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}

    second = prepare_models(matrix, engine_build, paths)
    assert [m.to_dict() for _, m in second] == [m.to_dict() for _, m in first]
    assert sorted(p for p in paths.models.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing regenerated or requantized

    record = json.loads(next(paths.models.glob("quantized/*Q2_K*.json")).read_text())
    assert record["quant"] == "Q2_K" and record["fallback_tensors"] == 0


def test_the_quant_names_a_matrix_may_ask_for_are_the_engines_own(engine_build):
    assert set(QUANT_TYPES) - {NATIVE} == set(file_types(engine_build))


def test_a_missing_model_source_costs_its_own_configs_not_the_night(tmp_path, monkeypatch, engine_build):
    """Fault: one missing model source aborted prepare_models, and the healthy configs were lost with it."""
    for var in ("VRAMWATCH_MODELS_DIR", "VRAMWATCH_BUILDS_DIR"):
        monkeypatch.delenv(var, raising=False)
    matrix = Matrix.model_validate({
        "name": "t", "quants": ["Q8_0"], "modes": ["baseline"],
        "models": [{"name": "gone", "source": {"path": str(tmp_path / "nowhere.gguf")}},
                   {"name": "ds-tiny", "source": {"synth": "deepseek-moe-16b"}}],
    })

    prepared = prepare_models(matrix, engine_build, Paths(tmp_path))

    (gone, _), (healthy, made) = prepared
    assert gone.name == "gone" and healthy.name == "ds-tiny" and Path(made.path).is_file()
    (config,) = matrix.bench_configs(prepared[0][1], gone)
    result = run_config(config, engine_build)  # refused before any child starts
    assert result.status == "invalid_model" and "nowhere.gguf" in result.error and result.duration_s == 0


def test_a_truncated_quantize_record_is_made_again_not_a_crash_loop(tmp_path, monkeypatch, engine_build):
    """Fault: the .gguf.json record was written in place; a truncated one crashed every later prepare."""
    for var in ("VRAMWATCH_MODELS_DIR", "VRAMWATCH_BUILDS_DIR"):
        monkeypatch.delenv(var, raising=False)
    matrix = Matrix.model_validate({"name": "t", "quants": ["Q8_0"], "modes": ["baseline"],
                                    "models": [{"name": "ds-tiny", "source": {"synth": "deepseek-moe-16b"}}]})
    paths = Paths(tmp_path)
    ((_, first),) = prepare_models(matrix, engine_build, paths)
    (record,) = paths.models.glob("quantized/*.gguf.json")
    record.write_text(record.read_text()[:40])  # what a crash mid-write left

    ((_, again),) = prepare_models(matrix, engine_build, paths)

    assert again == first and json.loads(record.read_text())["quant"] == "Q8_0"
    assert not list(paths.models.glob("quantized/*.partial"))


def _writer_of(path: Path) -> int | None:
    """The pid of the process that holds `path` open (the quantize child), from /proc."""
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(path):
                return int(fd.parts[2])
        except OSError:  # a process or descriptor gone meanwhile
            continue
    return None


def _fill_once_the_write_starts(folder: Path, stop: threading.Event) -> None:
    """Another writer takes the disk mid-quantize: catch the child's partial file, pause the child, fill the disk
    with a file of our own, let the child go on into a full disk."""
    while not stop.is_set():
        partial = next(folder.glob("*.partial"), None)
        writer = _writer_of(partial) if partial else None
        if writer:
            break
        time.sleep(0.001)
    else:
        return
    os.kill(writer, signal.SIGSTOP)
    try:
        with open(folder / "other-writer.bin", "wb") as filler:
            chunk = b"\0" * 2**20
            with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                while True:
                    filler.write(chunk)
                    filler.flush()
    finally:
        os.kill(writer, signal.SIGCONT)


@pytest.fixture
def disk_for(tmp_path):
    """A tmpfs of a given size (root only: skipped where mount is refused), unmounted after."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / "disk"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_disk_that_fills_during_quantize_is_one_line_naming_the_folder_and_the_space(deepseek_tiny, disk_for,
                                                                                        engine_build):
    """Fault: the disk filled while llama.cpp wrote the quantized file: "could not quantize ... pick another --type".

    A real tmpfs with room for the file (and the free-space check before it), filled by another writer once the
    quantize child has its partial file open; llama.cpp's write fails with only "iostream error"."""
    folder = disk_for(deepseek_tiny.stat().st_size + DISK_MARGIN + 16 * 2**20)
    stop = threading.Event()
    filler = threading.Thread(target=_fill_once_the_write_starts, args=(folder, stop), daemon=True)
    filler.start()
    try:
        with pytest.raises(UserError) as full:
            quantize_gguf(deepseek_tiny, "Q4_K_M", engine_build, folder / "ds-q4km.gguf", nthread=1)
    finally:
        stop.set()
        filler.join(timeout=60)

    assert full.value.message.startswith(f"{folder} is full: ds-q4km.gguf needs ")
    assert "MiB free there" in full.value.message and "\n" not in str(full.value)
    assert "--type" not in str(full.value) and "VRAMWATCH_MODELS_DIR" in full.value.fix
    assert sorted(p.name for p in folder.iterdir()) == ["other-writer.bin"]  # no partial file left
