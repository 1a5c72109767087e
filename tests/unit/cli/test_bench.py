"""`vramwatch bench MODEL.gguf`: one config on the real CPU engine, printed, its exit code by status."""

from __future__ import annotations

import pytest
from support.tiny_models import cached_tiny_model

from vramwatch.cli.main import main
from vramwatch.records import BenchResult


@pytest.fixture(scope="module")
def moe(vocab_dir):
    return cached_tiny_model(vocab_dir, "tiny-moe")


def test_it_prints_the_record_and_exits_by_status(engine_build, moe, tmp_path, capsys):
    engine = ["--python", engine_build.python]
    assert main(["bench", str(moe), "--mode", "offload", "--reps", "1", "--n-prompt", "8", "--n-gen", "2",
                 "--n-ctx", "64", "--no-generation", "--json", *engine]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and BenchResult.from_json(out[0]).n_overridden_tensors == 6

    foreign = tmp_path / "foreign.gguf"
    foreign.write_text("hello")
    assert main(["bench", str(foreign), *engine]) == 1
    captured = capsys.readouterr()
    assert "invalid_model" in captured.out and "Traceback" not in captured.out + captured.err
    assert captured.err.strip().splitlines() == [f"error: invalid_model: not a GGUF file (magic b'hell', "
                                                 f"expected b'GGUF'): {foreign}"]


@pytest.mark.parametrize("options, field", [
    (["--mode", "partial"], "n_cpu_moe"),
    (["--n-prompt", "512", "--n-ctx", "512"], "n_prompt"),
    (["--reps", "0"], "reps"),
])
def test_settings_that_cannot_run_are_refused_before_the_engine_starts(moe, options, field, capsys):
    assert main(["bench", str(moe), "--python", "/nonexistent/python", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}: ") and "fix:" in err


def test_the_printed_table_takes_its_words_and_units_from_the_field_list():
    """cli/bench.py listed its own columns and units; now each figure is printed as rows.FIELDS says."""
    from support.samples import result

    from vramwatch.cli.bench import format_result
    from vramwatch.rows import BY_NAME

    measured = result(mode="partial")
    lines = format_result(measured).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == [BY_NAME[name].words for name in ("model", "quant", "mode", "file_bytes")]
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first[2] == measured.config.mode_label and first[3].endswith(" GiB")  # a binary size, said so
    assert first[-2:] == [f"pp{measured.pp.n_prompt}", f"{measured.pp.avg_ts:.1f} ± {measured.pp.stddev_ts:.2f}"]
    compared = next(line for line in lines if line.startswith("GPU model "))  # the figures builds are compared on
    assert f"GPU model {measured.memory.gpu_model_mib:.2f} MiB, GPU KV" in compared
    assert "host KV" not in compared  # a buffer that is empty says nothing
    assert not any("gpu_model_mib" in line for line in lines)  # words, never raw names
