"""`vramwatch models quantize|inspect` on a tiny synthetic model, with the real CPU engine."""

from __future__ import annotations

import json

from vramwatch.cli.main import main
from vramwatch.models.specs import get_spec
from vramwatch.models.synth import write_gguf


def test_quantize_then_inspect(engine_build, vocab_dir, tmp_path, capsys):
    source = write_gguf(get_spec("deepseek-moe-16b", "tiny"), tmp_path, vocab_dir)
    out = tmp_path / "cli.gguf"

    assert main(["models", "quantize", str(source), "--type", "Q8_0", "--out", str(out),
                 "--python", engine_build.python, "--nthread", "2"]) == 0
    assert main(["models", "inspect", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["quant"] == "Q8_0" and shown["arch"] == "deepseek" and shown["active_bytes_per_token"] > 0
    assert main(["models", "inspect", str(tmp_path / "nope.gguf")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_prepare_fails_when_a_model_file_was_not_made(engine_build, tmp_path, monkeypatch, capsys):
    """Fault: `models prepare` exited 0 saying "1 model files ready" when none was made (its source was missing)."""
    monkeypatch.setenv("VRAMWATCH_MODELS_DIR", str(tmp_path / "models"))
    matrix = tmp_path / "missing.yaml"
    matrix.write_text(f"name: missing\nmodels:\n  - name: gone\n    source: {{path: {tmp_path / 'gone.gguf'}}}\n"
                      "    quants: [native]\nquants: [Q4_K_M]\nmodes: [baseline]\n")
    assert main(["models", "prepare", "--matrix", str(matrix), "--python", engine_build.python]) == 1
    captured = capsys.readouterr()
    assert "0 of 1 model files ready" in captured.out
    assert "not made: gone native:" in captured.err
