"""Same-night A/B with the real CPU engine and a tiny MoE: two engine configurations whose speed truly differs
(prompt processing a token at a time against in batches of 256) are told apart, and a config against itself is
never called slower or faster.

Why not one thread against two: on this 2-core machine, while another process runs, a two-thread llama.cpp process
loses up to 10x (its threads spin at every op's barrier waiting for a descheduled sibling) and one thread then wins;
one-thread processes only share the core, on both sides alike.
"""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from support.tiny_models import cached_tiny_model

from vramwatch.bench.ab import run_ab
from vramwatch.records import RESULT_MARKER, ABRun, BenchConfig, BuildRecord, BuildRequest, ModelFile
from vramwatch.regress.ab import compare

PROCESSES = 5


@pytest.fixture(scope="module", autouse=True)
def small_bandwidth_probe():
    """Each bench process probes host bandwidth with 1 GiB by default: 64 MiB keeps ten processes quick."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VRAMWATCH_HOST_BW_MIB", "64")
        yield


def pp_config(path: Path, n_ubatch: int) -> BenchConfig:
    """A pp bench on one thread: one rep, a one-token tg and no generation test, to keep ten processes quick."""
    model = ModelFile(model=path.stem, quant="F16", path=str(path), file_bytes=path.stat().st_size, sha256="",
                      arch="deepseek", n_params=0, n_layer=2, n_expert=4, n_expert_used=2, synthetic=True,
                      scale="tiny")
    return BenchConfig(model=model, mode="baseline", n_prompt=1024, n_gen=1, reps=1, n_ctx=1040, n_batch=1024,
                       n_ubatch=n_ubatch, n_threads=1, generation=None, timeout_s=120)


@pytest.fixture(scope="module")
def moe(vocab_dir) -> Path:
    return cached_tiny_model(vocab_dir, "tiny-moe")


@pytest.fixture(scope="module")
def token_at_a_time_against_batched(engine_build: BuildRecord, moe: Path) -> ABRun:
    return run_ab((pp_config(moe, n_ubatch=256), engine_build), (pp_config(moe, n_ubatch=1), engine_build), PROCESSES)


def test_a_token_at_a_time_is_confirmed_slower_than_batched(token_at_a_time_against_batched, engine_build):
    run = token_at_a_time_against_batched
    assert run.statuses == {"A": ["ok"] * PROCESSES, "B": ["ok"] * PROCESSES} and run.failures == []
    assert run.llama_cpp_commit_a == run.llama_cpp_commit_b == engine_build.llama_cpp_commit
    assert all(len(run.samples_ts[metric][side]) == PROCESSES for metric in ("pp", "tg") for side in ("A", "B"))
    verdict = compare("pp", run.samples_ts["pp"]["A"], run.samples_ts["pp"]["B"], min_effect=0.05)
    print(verdict.describe())
    assert verdict.verdict == "slower", verdict.describe()
    assert verdict.ci_high < 0.9


def test_a_config_against_itself_is_neither_slower_nor_faster(engine_build, moe):
    config = pp_config(moe, n_ubatch=256)
    run = run_ab((config, engine_build), (config, engine_build), PROCESSES)
    verdict = compare("pp", run.samples_ts["pp"]["A"], run.samples_ts["pp"]["B"], min_effect=0.10)
    print(verdict.describe())
    assert verdict.verdict not in ("slower", "faster"), verdict.describe()


# A stand-in engine for the bookkeeping tests: it answers every config with the same ok result, as a child would.
FAKE_CHILD = f"""#!{sys.executable}
import json, sys
config = json.load(sys.stdin)
test = dict(samples_ts=[100.0], avg_ts=100.0, stddev_ts=0.0)
result = dict(config=config, status="ok", pp=dict(test, n_prompt=256, n_gen=0), tg=dict(test, n_prompt=0, n_gen=1))
print({RESULT_MARKER!r} + json.dumps(result))
"""


def fake_build(tmp_path: Path, status: str = "ok") -> BuildRecord:
    child = tmp_path / "fake_child.py"
    child.write_text(FAKE_CHILD)
    child.chmod(child.stat().st_mode | stat.S_IEXEC)
    return BuildRecord(request=BuildRequest(version="0.3.36"), status=status, python=str(child), source_dir="",
                       llama_cpp_python_version="0.3.36", llama_cpp_commit="0c1e5709", error="nvcc not found")


def one_tensor_gguf(tmp_path: Path) -> Path:
    """A GGUF of one small tensor: enough for the parent's check of the model file, which runs before the child (a
    header without tensors is no model: invalid_model)."""
    path = tmp_path / "one-tensor.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_failed_process_keeps_its_status_and_gives_no_sample(tmp_path, caplog):
    config = pp_config(one_tensor_gguf(tmp_path), n_ubatch=256)
    reference, broken = fake_build(tmp_path), fake_build(tmp_path, status="failed")
    with caplog.at_level(logging.INFO, logger="vramwatch"):
        run = run_ab((config, reference), (config, broken), processes=3)
    assert run.statuses == {"A": ["ok"] * 3, "B": ["crashed"] * 3}
    assert run.samples_ts == {"pp": {"A": [100.0] * 3, "B": []}, "tg": {"A": [100.0] * 3, "B": []}}
    assert [line.split(":")[0] for line in run.failures] == ["process 2/6 (B)", "process 4/6 (B)", "process 6/6 (B)"]
    assert "crashed: build 0.3.36-cpu-" in run.failures[0] and "nvcc not found" in run.failures[0]
    said = [r.getMessage() for r in caplog.records  # progress: INFO records on the bench stage's logger
            if r.name == "vramwatch.bench" and r.levelno == logging.INFO and r.getMessage().startswith("A/B")]
    assert said[:2] == [f"A/B {config.config_id}: process 1/6 (A): pp 100.0 tok/s, tg 100.0 tok/s",
                        f"A/B {config.config_id}: {run.failures[0]}"]
    assert len(said) == 6  # one line per process, in the order they ran
    assert compare("pp", run.samples_ts["pp"]["A"], run.samples_ts["pp"]["B"], 0.05).verdict == "inconclusive"


def test_an_ab_run_round_trips_through_json(tmp_path):
    config = pp_config(one_tensor_gguf(tmp_path), n_ubatch=256)
    run = run_ab((config, fake_build(tmp_path)), (config, fake_build(tmp_path, status="failed")), processes=1)
    assert ABRun.from_json(run.to_json()) == run
    assert (run.config_id, run.processes, run.llama_cpp_commit_b, run.llama_cpp_python_version_a) == (
        config.config_id, 1, "0c1e5709", "0.3.36")


def test_an_ab_needs_a_process_a_side(tmp_path):
    config = pp_config(one_tensor_gguf(tmp_path), n_ubatch=256)
    with pytest.raises(ValueError, match="at least 1 process"):
        run_ab((config, fake_build(tmp_path)), (config, fake_build(tmp_path)), processes=0)


def test_an_ab_grows_on_the_processes_it_already_ran(tmp_path):
    """The sequential A/B adds processes while its answer is open: the samples, statuses and time of the first
    look are kept, and the processes are numbered on from them."""
    config = pp_config(one_tensor_gguf(tmp_path), n_ubatch=256)
    a, b = (config, fake_build(tmp_path)), (config, fake_build(tmp_path))
    first = run_ab(a, b, processes=1)
    grown = run_ab(a, b, processes=2, earlier=first)
    assert grown.processes == 3 and grown.statuses == {"A": ["ok"] * 3, "B": ["ok"] * 3}
    assert grown.samples_ts["pp"] == {"A": [100.0] * 3, "B": [100.0] * 3}
    assert grown.seconds > first.seconds > 0
    broken = run_ab(a, (config, fake_build(tmp_path, status="failed")), processes=1, earlier=first)
    assert [line.split(":")[0] for line in broken.failures] == ["process 4/4 (B)"]
