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
