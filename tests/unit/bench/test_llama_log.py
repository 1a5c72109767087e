"""The bench's readers, without llama.cpp: GGUF tensor table, llama.cpp log lines, placement, CPU topology."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.tiny_models import cached_tiny_model
from support.two_gpu import log_lines

from vramwatch.bench import llama_log, placement
from vramwatch.bench.host import physical_cores
from vramwatch.gguf_file import GGML_BLOCKS, GGUFError, GGUFInfo, TensorInfo, read_gguf
from vramwatch.records import BenchKnobs, expected_gpu_devices, gpu_buffers_by_device

# Real llama.cpp 0c1e570 (llama-cpp-python 0.3.36, CPU build) output, captured by the child's LogCapture.
CPU_OFFLOAD_LOG = """\
llama_model_loader: tensor overrides to CPU are used with mmap enabled - consider using --load-mode none for better performance
tensor blk.0.ffn_gate_exps.weight (0 MiB f16) buffer type overridden to CPU
tensor blk.0.ffn_down_exps.weight (0 MiB f16) buffer type overridden to CPU
tensor blk.0.ffn_up_exps.weight (0 MiB f16) buffer type overridden to CPU
tensor blk.1.ffn_gate_exps.weight (0 MiB f16) buffer type overridden to CPU
tensor blk.1.ffn_down_exps.weight (0 MiB f16) buffer type overridden to CPU
tensor blk.1.ffn_up_exps.weight (0 MiB f16) buffer type overridden to CPU
done_getting_tensors: tensor 'token_embd.weight' (f16) (and 28 others) cannot be used with preferred buffer type CPU_REPACK, using CPU instead
load_tensors:   CPU_Mapped model buffer size =    54.76 MiB
llama_context: flash_attn            = auto
llama_context:        CPU  output buffer size =     0.39 MiB
llama_kv_cache:        CPU KV buffer size =     0.50 MiB
sched_reserve: reserving ...
resolve_fused_ops: Flash Attention enabled
sched_reserve:        CPU compute buffer size =    12.59 MiB
sched_reserve: graph: nodes = 100, splits = 1, input objects = 4, input tensors = 6
~llama_context:        CPU compute buffer size is  12.5939 MiB, matches expectation of  12.5939 MiB
""".splitlines()

# Real lines of a CUDA build of the same llama.cpp on an H100 (offload mode, mmap on, then mmap off), captured by the
# child; the second CUDA0 compute line stands for a re-reservation, which llama.cpp logs again in full.
CUDA_LOG = """\
tensor blk.0.ffn_gate_exps.weight (0 MiB f16) buffer type overridden to CUDA_Host
load_tensors: offloaded 3/3 layers to GPU
load_tensors:   CPU_Mapped model buffer size =    54.39 MiB
load_tensors:        CUDA0 model buffer size =    51.76 MiB
llama_context:  CUDA_Host  output buffer size =     0.39 MiB
llama_kv_cache:      CUDA0 KV buffer size =     4.00 MiB
resolve_fused_ops: Flash Attention enabled
sched_reserve:      CUDA0 compute buffer size =   201.53 MiB
sched_reserve:  CUDA_Host compute buffer size =     3.01 MiB
~llama_context:      CUDA0 compute buffer size is 201.5293 MiB, matches expectation of 201.5293 MiB
load_tensors:    CUDA_Host model buffer size =    53.00 MiB
sched_reserve:      CUDA0 compute buffer size =   202.03 MiB
""".splitlines()
LEGACY_CUDA_LOG = """\
llm_load_tensors:        CUDA0 buffer size =  8000.00 MiB
llm_load_tensors:   CPU_Mapped buffer size =   100.00 MiB
llama_kv_cache_init:      CUDA0 KV buffer size =   512.00 MiB
llama_new_context_with_model:      CUDA0 compute buffer size =   164.01 MiB
""".splitlines()


@pytest.fixture(scope="module")
def tiny_moe(vocab_dir) -> Path:
    return cached_tiny_model(vocab_dir, "tiny-moe")


def test_tensor_table_matches_gguf_py(tiny_moe):
    import gguf

    info = read_gguf(tiny_moe)
    theirs = gguf.GGUFReader(str(tiny_moe))
    assert [t.name for t in info.tensors] == [t.name for t in theirs.tensors]
    for mine, ref in zip(info.tensors, theirs.tensors):
        assert mine.n_bytes == ref.n_bytes, mine.name
        assert info.data_offset + mine.offset == ref.data_offset, mine.name
    assert (info.arch, info.n_layer, info.n_expert, info.n_expert_used, info.n_vocab) == ("deepseek", 2, 4, 2, 102400)
    assert len(info.expert_tensors()) == 6


def test_block_table_matches_gguf_py():
    import gguf

    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert GGML_BLOCKS[int(qtype)] == (block, size), qtype.name


def test_missing_foreign_and_truncated_files_are_refused_in_one_line(tmp_path, tiny_moe):
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n")
    cut_tensors = tmp_path / "cut-data.gguf"
    cut_tensors.write_bytes(tiny_moe.read_bytes()[: tiny_moe.stat().st_size // 2])
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(tiny_moe.read_bytes()[:1000])
    cases = {tmp_path / "absent.gguf": "not found", text: "not a GGUF", cut_tensors: "truncated",
             cut_header: "truncated"}
    for path, reason in cases.items():
        with pytest.raises(GGUFError) as caught:
            read_gguf(path)
        assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_real_cpu_log_gives_buffers_placement_and_flash_attn():
    buffers = llama_log.parse_buffers(CPU_OFFLOAD_LOG).mib
    assert buffers == {"CPU_Mapped/model": 54.76, "CPU/output": 0.39, "CPU/kv": 0.5, "CPU/compute": 12.59}
    assert llama_log.sum_buffers(buffers, "model", gpu=False) == 54.76
    assert llama_log.sum_buffers(buffers, "model", gpu=True) == 0
    placed = llama_log.overridden_tensors(CPU_OFFLOAD_LOG)
    assert len(placed) == 6 and set(placed.values()) == {"CPU"}
    assert llama_log.flash_attn_used(CPU_OFFLOAD_LOG, "auto") == "on"
    assert llama_log.flash_attn_used(CPU_OFFLOAD_LOG, "off") == "off"
    assert llama_log.classify_failure(CPU_OFFLOAD_LOG) == "crashed"  # nothing in it says memory or file


def test_cuda_buffers_split_into_vram_and_host():
    buffers = llama_log.parse_buffers(CUDA_LOG).mib
    assert buffers["CUDA0/model"] == 51.76 and buffers["CUDA_Host/model"] == 53.0
    assert buffers["CUDA0/compute"] == 202.03  # re-reserved: the last figure holds, not the sum
    assert llama_log.sum_buffers(buffers, "model", gpu=True) == 51.76
    assert llama_log.sum_buffers(buffers, "model", gpu=False) == 107.39  # CPU_Mapped + pinned CUDA_Host
    assert llama_log.sum_buffers(buffers, "kv", gpu=True) == 4.0
    assert llama_log.sum_buffers(buffers, "compute", gpu=False) == 3.01
    assert llama_log.sum_buffers(buffers, "output", gpu=False) == 0.39
    assert llama_log.overridden_tensors(CUDA_LOG) == {"blk.0.ffn_gate_exps.weight": "CUDA_Host"}
    assert llama_log.flash_attn_used(CUDA_LOG, "auto") == "on"
    legacy = llama_log.parse_buffers(LEGACY_CUDA_LOG).mib
    assert legacy == {"CUDA0/model": 8000.0, "CPU_Mapped/model": 100.0, "CUDA0/kv": 512.0, "CUDA0/compute": 164.01}


def test_each_buffer_figure_keeps_the_lines_it_was_read_from():
    for log in (CPU_OFFLOAD_LOG, CUDA_LOG, LEGACY_CUDA_LOG):
        parsed = llama_log.parse_buffers(log)
        assert parsed.source_lines.keys() == parsed.mib.keys()
        for key, lines in parsed.source_lines.items():
            assert all(line in log for line in lines), key
            # the figure is what its lines say: summed for weights and KV, the one in force for compute and output
            assert sum(_mib_on(line) for line in lines) == pytest.approx(parsed.mib[key]), key
    cuda = llama_log.parse_buffers(CUDA_LOG).source_lines
    assert cuda["CUDA_Host/model"] == ["load_tensors:    CUDA_Host model buffer size =    53.00 MiB"]
    assert cuda["CUDA0/compute"] == ["sched_reserve:      CUDA0 compute buffer size =   202.03 MiB"]  # re-reserved
    assert llama_log.parse_buffers(LEGACY_CUDA_LOG).source_lines["CUDA0/model"] == [LEGACY_CUDA_LOG[0]]


def _mib_on(line: str) -> float:
    return float(line.split("=")[1].split("MiB")[0])


# The same CUDA run as a llama.cpp whose buffer lines changed wording: nothing of it parses any more.
CHANGED_FORMAT_CUDA_LOG = [line.replace("buffer size =", "buffer:") for line in CUDA_LOG]
# Only the weights lines changed ("model buffer" -> "weights buffer"): KV and compute still parse, the model does not.
CHANGED_MODEL_LINE_CUDA_LOG = [line.replace("model buffer", "weights buffer") for line in CUDA_LOG]


def test_a_measurement_whose_buffers_did_not_parse_is_named_invalid():
    def problem(log: list[str], backend: str, n_gpu_layers: int = 999) -> str | None:
        return llama_log.measurement_problem(llama_log.parse_buffers(log).mib, backend, n_gpu_layers)

    # real logs are measurements
    assert problem(CUDA_LOG, "cuda") is None
    assert problem(LEGACY_CUDA_LOG, "cuda") is None
    assert problem(CPU_OFFLOAD_LOG, "cpu") is None
    # nothing parsed: invalid on any backend
    assert llama_log.parse_buffers(CHANGED_FORMAT_CUDA_LOG).mib == {}
    for backend in ("cuda", "cpu"):
        assert "no llama.cpp buffer line parsed" in problem(CHANGED_FORMAT_CUDA_LOG, backend)
    # KV and compute parsed, the GPU weights did not: a GPU backend with layers offloaded must have them
    assert llama_log.parse_buffers(CHANGED_MODEL_LINE_CUDA_LOG).mib["CUDA0/compute"] == 202.03
    reason = problem(CHANGED_MODEL_LINE_CUDA_LOG, "cuda")
    assert "no GPU model buffer parsed on backend cuda with n_gpu_layers=999" in reason and "\n" not in reason
    # ... but not where no layer was offloaded, nor on the CPU backend (whose weights are host buffers)
    assert problem(CHANGED_MODEL_LINE_CUDA_LOG, "cuda", n_gpu_layers=0) is None
    assert problem(CPU_OFFLOAD_LOG, "cuda", n_gpu_layers=0) is None
    assert "no GPU model buffer" in problem(CPU_OFFLOAD_LOG, "cuda")


# The buffer lines of a real night: llama.cpp 0.3.36 on an H200, DeepSeek-MoE-16B baseline and offload, as the child
# stored them with their figures (docs/results/raw, the two-release case).
RECORDED_NIGHT = Path(__file__).parents[3] / "docs/results/raw/2026-11-29-h200-two-releases/measure-0.3.36.json"
RECORDED_TWO_GPUS = RECORDED_NIGHT.parents[1] / "2026-11-29-h200-bisect-attempt/measure-0.3.36-two-gpus.json"


def _recorded_gpu_logs() -> dict[str, list[str]]:
    results = json.loads(RECORDED_NIGHT.read_text())["results"]
    return {r["config"]["mode"]: [line for lines in r["memory"]["source_lines"].values() for line in lines]
            for r in results}


@pytest.mark.parametrize("mode", ["baseline", "offload"])
def test_each_missing_gpu_buffer_line_of_a_recorded_night_is_named_invalid(mode):
    """Fault: with only the compute (or only the KV) line unread, the row was stored ok with that component at 0:
    "VRAM improved -100%" that night, a false +260 MiB page the next. Remove each buffer line in turn."""
    log = _recorded_gpu_logs()[mode]
    assert llama_log.measurement_problem(llama_log.parse_buffers(log).mib, "cuda", 999) is None
    named = {}
    for line in log:
        without = [other for other in log if other != line]
        named[line.split("buffer size")[0].split(":", 1)[1].strip()] = llama_log.measurement_problem(
            llama_log.parse_buffers(without).mib, "cuda", 999)
    assert "no GPU model buffer parsed on backend cuda" in named["CUDA0 model"]
    assert "no GPU KV buffer parsed on backend cuda" in named["CUDA0 KV"]
    assert "no GPU compute buffer parsed on backend cuda" in named["CUDA0 compute"]
    # pinned host buffers are not expected on the GPU: a run without them is still a measurement
    assert {device for device, problem in named.items() if problem is None} == {
        "CPU_Mapped model", "CUDA_Host  output", "CUDA_Host compute"}
    # the CPU backend keeps everything in host memory: nothing is expected on a GPU there
    assert llama_log.measurement_problem(llama_log.parse_buffers(log[:1]).mib, "cpu", 999) is None


def test_log_capture_joins_pieces_and_judges_failures():
    echoed = []
    capture = llama_log.LogCapture(echo=echoed.append)
    capture.write(llama_log.LEVEL_INFO, "load_tensors:   CPU_Mapped model buffer size = ")
    capture.write(llama_log.LEVEL_CONT, "   54.76 MiB\nnext")
    capture.write(llama_log.LEVEL_ERROR, "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000.00 MiB on "
                                         "device 0: cudaMalloc failed: out of memory\n")
    capture.write(llama_log.LEVEL_DEBUG, "tensor blk.0.ffn_up_exps.weight (1 MiB q4_K) buffer type overridden to CPU_REPACK\n")
    lines = capture.text()
    assert lines[0] == "load_tensors:   CPU_Mapped model buffer size =    54.76 MiB" and lines[1] == "next"
    assert llama_log.parse_buffers(lines).mib == {"CPU_Mapped/model": 54.76}
    assert echoed == [lines[2]]  # only WARN/ERROR go to stderr
    assert llama_log.classify_failure(capture.problems()) == "oom"
    assert "out of memory" in llama_log.last_error(capture.problems(), "")
    assert llama_log.overridden_tensors(lines) == {"blk.0.ffn_up_exps.weight": "CPU_REPACK"}
    # the H200 run of a 60M-token context: the first OOM line names the allocation, the last only the consequence
    oom = ["llama_context: n_ctx_seq (60000000) > n_ctx_train (2048) -- possible training context overflow",
           "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 58598.26 MiB on device 0: cudaMalloc failed: "
           "out of memory",
           "graph_reserve: failed to allocate compute buffers",
           "llama_init_from_model: failed to initialize the context: failed to allocate compute pp buffers"]
    assert llama_log.classify_failure(oom) == "oom" and "58598.26 MiB" in llama_log.last_error(oom, "")
    bad = ["llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'x'"]
    assert llama_log.classify_failure(bad) == "invalid_model"


def _info(layers: list[bool], n_expert: int = 4, k: int = 2) -> GGUFInfo:
    """A hand-made tensor table: per layer, True = MoE (3 expert tensors of 400 bytes), False = dense FFN."""
    tensors = [TensorInfo("token_embd.weight", (8, 10), 0, 0, 320), TensorInfo("output.weight", (8, 10), 0, 0, 320)]
    for i, moe in enumerate(layers):
        tensors.append(TensorInfo(f"blk.{i}.attn_q.weight", (8, 8), 0, 0, 256))
        names = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] if moe else ["ffn_gate", "ffn_up", "ffn_down"]
        tensors += [TensorInfo(f"blk.{i}.{n}.weight", (8, 8, n_expert), 0, 0, 400) for n in names]
    metadata = {"general.architecture": "deepseek", "deepseek.expert_count": n_expert if any(layers) else 0,
                "deepseek.expert_used_count": k, "deepseek.block_count": len(layers)}
    return GGUFInfo("x.gguf", 3, metadata, tensors, 0, 0)


def test_modes_move_what_llama_cpp_flags_move():
    moe = _info([True, True, True])
    assert placement.moved_tensors(moe, "baseline") == []
    assert len(placement.moved_tensors(moe, "offload")) == 9
    assert {t.layer for t in placement.moved_tensors(moe, "partial", 1)} == {0}
    assert {t.layer for t in placement.moved_tensors(moe, "partial", 2)} == {0, 1}
    # DeepSeek's layer 0 is dense: --n-cpu-moe 1 moves nothing there (REFERENCE.md)
    assert placement.moved_tensors(_info([False, True]), "partial", 1) == []
    assert placement.override_patterns("partial", 2) == [r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps",
                                                         r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps"]
    with pytest.raises(ValueError):
        placement.override_patterns("sideways")


def test_active_bytes_count_k_of_e_experts_and_split_by_memory():
    moe = _info([True, True])  # per layer: 256 attention + 3 x 400 experts; embedding row 32, output 320
    base = placement.active_bytes_per_token(moe, "baseline", 0, gpu_offload=True)
    assert base.total == 32 + 320 + 2 * (256 + 3 * 400 * 2 // 4)
    assert base.host == 32  # the token embedding stays in CPU memory
    off = placement.active_bytes_per_token(moe, "offload", 0, gpu_offload=True)
    assert off.total == base.total and off.host == 32 + 2 * 3 * 200
    part = placement.active_bytes_per_token(moe, "partial", 1, gpu_offload=True)
    assert part.host == 32 + 3 * 200
    cpu_only = placement.active_bytes_per_token(moe, "baseline", 0, gpu_offload=False)
    assert cpu_only.gpu == 0 and cpu_only.host == base.total


def test_physical_cores_count_unique_core_ids():
    two_sockets_ht = "".join(
        f"processor\t: {n}\nphysical id\t: {n // 4}\ncore id\t\t: {n % 2}\n\n" for n in range(8)
    )
    assert physical_cores(two_sockets_ht) == 4
    assert physical_cores("") >= 1  # no topology (containers, ARM): os.cpu_count()


# Recorded two-GPU loads (constructed: each file's header says from what; the DeepSeek one's buffer lines are real)
DEEPSEEK_LAYER, PHI_LAYER, PHI_ROW, PHI_ROW_UNSUPPORTED = (log_lines(name) for name in (
    "deepseek-moe-16b-Q4_K_M-2gpu-layer", "phi-3.5-moe-Q8_0-2gpu-layer", "phi-3.5-moe-Q8_0-2gpu-row",
    "phi-3.5-moe-Q8_0-2gpu-row-unsupported"))
TWO_GPUS = BenchKnobs(gpus=2)


def test_a_two_gpu_layer_split_gives_each_gpus_components_and_their_sum():
    parsed = llama_log.parse_buffers(DEEPSEEK_LAYER)
    assert gpu_buffers_by_device(parsed.mib) == {
        "CUDA0": {"model": 5196.66, "kv": 480.0, "compute": 104.16},
        "CUDA1": {"model": 5034.58, "kv": 416.0, "compute": 292.43}}
    figures = llama_log.memory_figures(parsed)
    assert (figures["gpu_model_mib"], figures["gpu_kv_mib"], figures["gpu_compute_mib"]) == (10231.24, 896.0, 396.59)
    assert (figures["host_model_mib"], figures["host_compute_mib"]) == (112.5, 36.05)  # CPU_Mapped, CUDA_Host
    # the figures the child stored that night, from the same lines
    (stored,) = json.loads(RECORDED_TWO_GPUS.read_text())["results"]
    assert parsed.mib == stored["memory"]["buffers_mib"] and parsed.source_lines == stored["memory"]["source_lines"]
    assert llama_log.measurement_problem(parsed.mib, "cuda", 999, expected_gpu_devices(TWO_GPUS)) is None
    phi = llama_log.memory_figures(llama_log.parse_buffers(PHI_LAYER))
    assert phi["gpu_model_mib"] == 42304.49 and phi["gpu_kv_mib"] == 512.0  # 17 + 15 layers of 16 MiB


def test_a_row_split_keeps_its_split_buffers_apart_from_the_gpu_they_are_named_after():
    mib = llama_log.parse_buffers(PHI_ROW).mib
    assert mib["CUDA0_Split/model"] == 722.5 and mib["CUDA0/model"] == 21680.98 and mib["CUDA1_Split/model"] == 770.58
    assert llama_log.sum_buffers(mib, "model", gpu=True) == 42304.49  # the same weights as the layer split
    assert llama_log.measurement_problem(mib, "cuda", 999, expected_gpu_devices(BenchKnobs(gpus=2, split_mode="row"))) \
        is None
    # a GPU whose only weights are its split buffer still holds weights
    only_split = {k: v for k, v in mib.items() if k != "CUDA1/model"}
    assert llama_log.measurement_problem(only_split, "cuda", 999, ["CUDA0", "CUDA1"]) is None


@pytest.mark.parametrize("log", ["deepseek-moe-16b-Q4_K_M-2gpu-layer", "phi-3.5-moe-Q8_0-2gpu-layer"])
def test_each_missing_buffer_line_of_the_second_gpu_is_named_invalid(log):
    """Fault: with one GPU's KV or compute line unread, the sums over the GPUs stay above 0 and the old check passed:
    the row would store CUDA1's KV as 0. Each GPU must show weights, KV and compute."""
    lines = log_lines(log)
    named = {}
    for line in [line for line in lines if "CUDA1 " in line and "buffer size" in line]:
        without = llama_log.parse_buffers([other for other in lines if other != line]).mib
        assert llama_log.measurement_problem(without, "cuda", 999) is None  # any GPU: blind to it
        named[line.split(":")[1].split("buffer")[0].strip()] = llama_log.measurement_problem(
            without, "cuda", 999, expected_gpu_devices(TWO_GPUS))
    assert set(named) == {"CUDA1 model", "CUDA1 KV", "CUDA1 compute"}
    for what, problem in named.items():
        assert f"no {what} buffer parsed on backend cuda with n_gpu_layers=999 over 2 GPUs" in problem, what
        assert "\n" not in problem
    # a split that gives CUDA1 no layer expects nothing of it
    cuda0_only = llama_log.parse_buffers([line for line in lines if "CUDA1" not in line]).mib
    assert llama_log.measurement_problem(cuda0_only, "cuda", 999, expected_gpu_devices(
        BenchKnobs(gpus=2, tensor_split="1,0"))) is None


def test_a_row_split_the_build_cannot_do_is_not_applicable_not_a_crash():
    assert llama_log.parse_buffers(PHI_ROW_UNSUPPORTED).mib == {}
    problems = [line for line in PHI_ROW_UNSUPPORTED if "error" in line or "failed" in line]
    assert llama_log.classify_failure(problems) == "not_applicable"
    assert llama_log.last_error(problems, "") == "llama_model_load_from_file_impl: failed to load model"
    assert llama_log.classify_failure(problems + ["cudaMalloc failed: out of memory"]) == "oom"
