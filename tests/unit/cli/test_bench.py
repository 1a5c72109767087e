"""`vramwatch bench MODEL.gguf`: one config on the real CPU engine, printed, its exit code by status."""

from __future__ import annotations

import dataclasses

import pytest
from support.tiny_models import cached_tiny_model

from vramwatch.cli.common import record_fields
from vramwatch.cli.main import build_parser, main
from vramwatch.records import BenchKnobs, BenchResult


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


def test_the_printed_result_shows_energy_and_says_why_a_figure_is_absent():
    from support.samples import result

    from vramwatch.cli.bench import format_result

    gpu = format_result(result()).splitlines()
    assert any(f"tg energy {result().energy.tg.j_per_tok:.4f} J/tok" in line for line in gpu)
    energy = next(line for line in gpu if line.startswith("energy: "))
    assert "tg GPU power 310 W" in energy and "GPU power limit 700 W" in energy
    assert energy.endswith("host energy not measured: no RAPL under /sys/class/powercap")
    cpu = format_result(result(gpu=False)).splitlines()
    assert not any("J/tok" in line for line in cpu)  # never a 0 for what was not measured
    assert "energy: no GPU: GPU energy not measured; host energy not measured" in "\n".join(cpu)


def test_each_knob_has_its_flag_named_as_the_matrix_names_it_and_the_old_spellings_still_work():
    knobs = [field.name for field in dataclasses.fields(BenchKnobs)]
    defaults = record_fields(build_parser().parse_args(["bench", "m.gguf"]), BenchKnobs)
    assert defaults == {name: getattr(BenchKnobs(), name) for name in knobs}

    matrix_names = ["--n-threads", "3", "--type-k", "q8_0", "--type-v", "q4_0", "--timeout-s", "60",
                    "--host-memory-limit-mib", "512", "--no-use-mmap", "--no-generation", "--n-gpu-layers", "7"]
    before = ["--threads", "3", "--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--timeout", "60",
              "--host-memory-limit", "512", "--no-mmap", "--no-generation", "--n-gpu-layers", "7"]
    (new, old) = (record_fields(build_parser().parse_args(["bench", "m.gguf", *flags]), BenchKnobs)
                  for flags in (matrix_names, before))
    assert new == old == defaults | {"n_threads": 3, "type_k": "q8_0", "type_v": "q4_0", "timeout_s": 60.0,
                                     "host_memory_limit_mib": 512, "use_mmap": False, "generation": None,
                                     "n_gpu_layers": 7}


def test_a_knob_the_flags_lacked_before_is_checked_like_the_others(moe, capsys):
    assert main(["bench", str(moe), "--python", "/nonexistent/python", "--n-ubatch", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: n_ubatch: must be at least 1")
