"""The ABI guard against the real engine venv's bindings and llama.h headers compiled with the real C compiler.

The headers are the ones the session engine was built from, copied (include/ and ggml/include/ are all the guard's
C program needs) and edited the way a llama.cpp commit changes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.llama_headers import headers_of

from vramwatch.builds.abi import GUARDED, MISMATCH, guard_bindings
from vramwatch.builds.process import StepFailed


def test_the_tree_the_engine_was_built_from_passes(engine_build, tmp_path):
    log = tmp_path / "build.log"
    verdict = guard_bindings(Path(engine_build.python), headers_of(engine_build, tmp_path / "llama.cpp"), log)
    assert verdict.startswith(f"ABI guard: bindings match llama.h ({len(GUARDED)} structs, ")
    assert "no difference" in log.read_text() and verdict in log.read_text()


def test_an_extra_field_in_llama_context_params_is_refused(engine_build, tmp_path):
    """Fault: llama.h grew a field the bindings lack; every later field would be read at the wrong offset."""
    tree = headers_of(engine_build, tmp_path / "llama.cpp",
                      ("uint32_t n_ctx;", "uint32_t n_ctx;\n        uint32_t n_planted;"))
    log = tmp_path / "build.log"
    with pytest.raises(StepFailed) as refused:
        guard_bindings(Path(engine_build.python), tree, log)
    error = refused.value.error
    assert error.startswith(MISMATCH) and "\n" not in error
    assert "llama_context_params: C size " in error
    assert "llama_context_params.n_batch: C offset 8 size 4, ctypes offset 4 size 4" in error
    assert "more in the build log" in error
    assert "llama_context_params.ctx_other" in log.read_text()  # every difference is in the log


def test_a_field_llama_h_dropped_is_refused_even_when_the_size_stays(engine_build, tmp_path):
    """Fault: a trailing bool removed from llama_model_params: padding keeps the size, the field check sees it."""
    tree = headers_of(engine_build, tmp_path / "llama.cpp", ("bool load_mtp;", ""))
    with pytest.raises(StepFailed, match="^" + MISMATCH + r"llama_model_params\.load_mtp: in the bindings, not in "
                                         r"llama\.h$"):
        guard_bindings(Path(engine_build.python), tree, tmp_path / "build.log")


def test_a_struct_llama_h_renamed_is_refused(engine_build, tmp_path):
    """Fault: the struct tag the bindings' functions pass is gone from llama.h."""
    tree = headers_of(engine_build, tmp_path / "llama.cpp",
                      ("typedef struct llama_sampler_chain_params {", "typedef struct llama_sampler_chain_params_v2 {"))
    with pytest.raises(StepFailed, match="^" + MISMATCH + "llama_sampler_chain_params: declared by the bindings, "
                                         "not in llama.h$"):
        guard_bindings(Path(engine_build.python), tree, tmp_path / "build.log")


def test_headers_that_do_not_compile_stop_the_build_with_the_reason(engine_build, tmp_path):
    """Fault: the guard cannot compile against llama.h at all; that is no pass."""
    tree = headers_of(engine_build, tmp_path / "llama.cpp",
                      ("struct llama_context_params {", "#error this llama.h is broken\nstruct llama_context_params {"))
    with pytest.raises(StepFailed, match="^ABI guard failed: cannot compile its probe against .*llama.h: "):
        guard_bindings(Path(engine_build.python), tree, tmp_path / "build.log")
