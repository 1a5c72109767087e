"""llama-bench built in the engine's own cmake tree, and the engine-vs-llama-bench benchmark, on the CPU engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny_models import cached_tiny_model

from vramwatch.builds.llama_bench import llama_bench_env

REPO = Path(__file__).resolve().parents[3]


def test_llama_bench_loads_the_engines_own_libraries(engine_build):
    assert engine_build.llama_bench, "the demo matrix builds llama-bench (build.build_llama_bench)"
    env = llama_bench_env(engine_build)
    ldd = subprocess.run(["ldd", engine_build.llama_bench], env=env, capture_output=True, text=True).stdout
    assert "not found" not in ldd, ldd
    venv = Path(engine_build.python).parent.parent.resolve()
    resolved = dict(re.findall(r"^\s*(lib(?:llama|ggml)\S*) => (\S+)", ldd, re.MULTILINE))
    assert "libllama.so" in " ".join(resolved) and any(n.startswith("libggml") for n in resolved), ldd
    for name, path in resolved.items():
        if name.startswith(("libllama.so", "libggml")):
            assert Path(path).resolve().is_relative_to(venv), f"{name} from {path}, not the engine venv {venv}"


def test_fidelity_benchmark_compares_both_modes(engine_build, vocab_dir, tmp_path):
    model = cached_tiny_model(vocab_dir, "tiny-moe")
    out = tmp_path / "fidelity.json"
    env = {**os.environ, "VRAMWATCH_HOST_BW_MIB": "64"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "engine_vs_llama_bench.py"), "--model", str(model),
                           "--build", str(Path(engine_build.python).parents[2] / "build.json"), "--reps", "1",
                           "--n-prompt", "32", "--n-gen", "8", "--n-batch", "32", "--n-ubatch", "32",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["llama_cpp_commit"] == engine_build.llama_cpp_commit and written["device"]
    assert written["command"].startswith("python benchmarks/engine_vs_llama_bench.py --model ")
    rows = written["rows"]
    assert {(r["mode"], r["test"]) for r in rows} == {(m, t) for m in ("baseline", "offload") for t in ("pp32", "tg8")}
    for row in rows:
        assert row["llama_bench_ts"] > 0 and row["engine_ts"] > 0
        assert row["ratio"] == pytest.approx(row["engine_ts"] / row["llama_bench_ts"], rel=1e-2)  # t/s rounded to 0.01
        assert row["quant"] == "F16" and row["n_threads"] >= 1
    assert "worst ratio" in proc.stdout
