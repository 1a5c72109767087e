"""The bench child: one BenchConfig in (JSON on stdin), one BenchResult out (a marked JSON line on stdout).

Run as `<engine python> -m vramwatch.bench.child` with PYTHONPATH=<repo>/include. It imports only the stdlib,
numpy, llama_cpp, vramwatch.records and vramwatch.gguf_file (plus this package's own modules) and, if present,
pynvml. It drives llama.cpp through the low-level API so that placement (tensor buffer-type overrides) and
timing (llama-bench's method: warm-up, then pp and tg repetitions with llama_synchronize) are ours, and it proves
placement from llama.cpp's own DEBUG log. Progress goes to stderr; the result line starts with RESULT_MARKER so nothing
else printed to stdout (a library's stray print) can be mistaken for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import os
import random
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# llama_cpp before numpy: with numpy 2.5 loaded first, a CUDA build's libllama crashed (SIGSEGV) in its first
# iostream call of every model load (H200, llama.cpp 0c1e57098, 2026-11-27). This module only runs in an engine venv.
import llama_cpp  # noqa: I001
import numpy as np

from vramwatch.bench import host, llama_log, placement, quality
from vramwatch.bench.energy import EnergyMeter
from vramwatch.bench.gpu import Ggml, Nvml, PeakSampler
from vramwatch.gguf_file import GGUFError, GGUFInfo, read_gguf
from vramwatch.progress import for_stage, to_stderr
from vramwatch.records import (
    BENCH_PARENT_ENV,
    KV_TYPES,
    RESULT_MARKER,
    SPLIT_MODES,
    BenchConfig,
    BenchResult,
    Energy,
    Fingerprint,
    GenerationResult,
    GenerationTest,
    Memory,
    QualityResult,
    Roofline,
    TestResult,
    error_line,
    expected_gpu_devices,
    split_shares,
)

# llama_flash_attn_type values
FLASH_ATTN_TYPE = {"auto": -1, "off": 0, "on": 1}
LOAD_MODE_NONE, LOAD_MODE_MMAP = 0, 1  # llama_load_mode, where the struct has it instead of use_mmap
TOKEN_SEED = 1234  # random prompt tokens, the same every run
say = for_stage("bench")


class BenchFailure(Exception):
    """A config that ends without measurements: status plus a one-line reason."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error_line(error)


class _BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class Bench:
    """One config, start to finish. Fields fill in as the run goes, so a failure still reports what was known."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.memory: dict[str, Any] = {}
        self.fingerprint = Fingerprint(
            cpu_model=host.cpu_model(), cpu_cores=host.physical_cores(), ram_gib=host.ram_gib(), host=host.hostname(),
            llama_cpp_commit=os.environ.get("VRAMWATCH_LLAMA_CPP_COMMIT", ""),
            build_flags=os.environ.get("VRAMWATCH_BUILD_FLAGS", ""),
        )
        self.n_threads = config.n_threads or host.physical_cores()
        self.flash_attn = ""
        self.n_overridden = 0
        self.load_s = 0.0
        self.log = llama_log.LogCapture()
        self.meter: EnergyMeter | None = None
        self.gpu_names: list[str] = []  # llama.cpp's names of the pinned GPUs (CUDA0, CUDA1), in its order

    # ------------------------------------------------------------------------------------------- the run

    def run(self) -> BenchResult:
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        start = time.perf_counter()
        try:
            fields = self._run()
            status, error = "ok", ""
        except BenchFailure as failure:
            fields, status, error = {}, failure.status, failure.error
        except Exception as exc:  # a bug or an API this build lacks: still one record, never a traceback
            fields, status, error = {}, "crashed", f"{type(exc).__name__}: {exc}"
        finally:
            self._write_log()
        say(f"{self.config.config_id}: {status}" + (f" ({error})" if error else ""))
        return BenchResult(
            config=self.config, status=status, error=error_line(error),
            memory=Memory(**self.memory).with_cuda_context(), n_overridden_tensors=self.n_overridden,
            n_threads=self.n_threads, flash_attn=self.flash_attn, fingerprint=self.fingerprint, started_at=started_at,
            duration_s=round(time.perf_counter() - start, 3), load_s=round(self.load_s, 3), **fields,
        )

    def _run(self) -> dict[str, Any]:
        config = self.config
        problems = config.problems()  # the matrix loader checked these too; a hand-written config may not have been
        if problems:
            raise BenchFailure("crashed", "; ".join(problems))
        nvml = Nvml.open()  # before llama.cpp touches the GPU: "before" is the device without us
        used_before = [nvml.used_mib(i) for i in range(len(nvml.handles))] if nvml else []
        info = self._read_model()
        moved = self._check_mode(info)

        self.fingerprint = _replace(self.fingerprint, llama_cpp_python_version=getattr(llama_cpp, "__version__", ""))
        self._install_log(llama_cpp)
        llama_cpp.llama_backend_init()
        ggml = Ggml(llama_cpp.llama_cpp._lib)
        gpus = ggml.gpus()
        if config.gpus > 1 and len(gpus) < config.gpus:  # the runner pinned what the worker had; it had too few
            raise BenchFailure("not_applicable", f"gpus={config.gpus}: the bench sees {len(gpus)} GPU(s) "
                                                 f"({', '.join(map(ggml.name, gpus)) or 'none'})")
        gpu_offload = bool(gpus) and bool(llama_cpp.llama_supports_gpu_offload())
        self.fingerprint = _replace(self.fingerprint, backend=_backend_name(ggml, gpus))
        device = self._identify_gpu(ggml, gpus, nvml, used_before)
        self.gpu_names = [ggml.name(g) for g in gpus]
        self.meter = EnergyMeter.open(nvml, device, has_gpu=bool(gpus))

        sampler = PeakSampler(nvml, device) if nvml and gpus else None
        with sampler or contextlib.nullcontext():
            model, overrides = self._load(llama_cpp, ggml)
            try:
                self._check_placement(moved)
                ctx = self._new_context(llama_cpp, model)
                try:
                    parsed = llama_log.parse_buffers(self.log.text())
                    self._fill_buffers(parsed)
                    expected = (expected_gpu_devices(config, self.gpu_names[0].rstrip("0123456789"))
                                if config.gpus > 1 else [])
                    problem = llama_log.measurement_problem(parsed.mib, self.fingerprint.backend, config.n_gpu_layers,
                                                            expected)
                    if problem:  # a figure we could not read must not pass for a 0 MiB measurement
                        raise BenchFailure("invalid_measurement", problem)
                    pp, tg, energy = self._time(llama_cpp, ctx)
                    generation = config.generation and self._generate(llama_cpp, ctx, model, config.generation)
                    quality_result = self._quality(llama_cpp, ctx, model) if config.quality else None
                    self._fill_nvml_after(nvml, gpus, device)
                finally:
                    llama_cpp.llama_free(ctx)
            finally:
                llama_cpp.llama_model_free(model)
                del overrides  # the override array had to outlive the model
        if sampler:
            self.memory["nvml_peak_device_mib"] = round(sampler.peak_mib, 1)
        self.memory["host_rss_peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        roofline = self._roofline(info, ggml, gpus, gpu_offload, tg)
        if nvml:
            nvml.close()
        return {"pp": pp, "tg": tg, "generation": generation, "quality": quality_result, "roofline": roofline,
                "energy": energy}

    # ------------------------------------------------------------------------------------------- steps

    def _read_model(self) -> GGUFInfo:
        try:
            info = read_gguf(self.config.model.path)
        except GGUFError as exc:
            raise BenchFailure("invalid_model", str(exc)) from None
        say(f"model {Path(info.path).name}: {info.arch}, {info.n_layer} layers, {info.n_expert} experts "
            f"(top-{info.n_expert_used}), {len(info.tensors)} tensors")
        return info

    def _check_mode(self, info: GGUFInfo) -> set[str]:
        """Names of the tensors this mode must move to CPU memory; not_applicable when there are none."""
        config = self.config
        if config.mode == "baseline":
            return set()
        if not info.expert_tensors():
            raise BenchFailure("not_applicable", f"{config.mode}: dense model ({info.arch}) has no expert tensors")
        moved = {t.name for t in placement.moved_tensors(info, config.mode, config.n_cpu_moe)}
        if not moved:
            raise BenchFailure("not_applicable", f"partial: no expert tensors in layers 0..{config.n_cpu_moe - 1} "
                                                 f"(n_cpu_moe={config.n_cpu_moe})")
        return moved

    def _install_log(self, llama_cpp: Any) -> None:
        def on_log(level: int, text: bytes, _user_data: Any) -> None:
            self.log.write(level, text.decode("utf-8", "replace") if text else "")

        self._log_callback = llama_cpp.llama_log_callback(on_log)  # kept: C holds the pointer for the process
        llama_cpp.llama_log_set(self._log_callback, ctypes.c_void_p(0))

    def _identify_gpu(self, ggml: Ggml, gpus: list[int], nvml: Nvml | None, used_before: list[float]) -> int:
        """Record the GPU's size, what was used on it before us and its fingerprint; return the NVML index of our
        device. (The CUDA context's cost is taken after the run, in Memory.with_cuda_context.)"""
        if not gpus:
            return 0
        _free, total = ggml.memory_mib(gpus[0])  # cudaMemGetInfo: creates the primary context, so NVML sees our device
        if not nvml:
            self.memory["gpu_total_mib"] = round(total, 1)
            self.fingerprint = _replace(self.fingerprint, gpu_name=ggml.description(gpus[0]), gpu_count=len(gpus))
            return 0
        device = nvml.device_of(os.getpid())
        self.memory.update(gpu_total_mib=round(nvml.total_mib(device), 1),
                           nvml_device_used_before_mib=round(used_before[device], 1))
        self.fingerprint = _replace(self.fingerprint, **nvml.fingerprint(device))
        say(f"GPU {self.fingerprint.gpu_name}: {used_before[device]:.0f} MiB used before")
        return device

    def _load(self, llama_cpp: Any, ggml: Ggml) -> tuple[int, Any]:
        config = self.config
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = config.n_gpu_layers
        params.split_mode, params.main_gpu = SPLIT_MODES.index(config.split_mode), 0  # llama_split_mode's order
        # explicit shares on every GPU: llama.cpp's default (free memory) would move layers with what else runs
        self._tensor_split = (ctypes.c_float * llama_cpp.llama_max_devices())(*split_shares(config))  # kept alive
        params.tensor_split = self._tensor_split
        names = {name for name, _ in params._fields_}
        if "use_mmap" in names:
            params.use_mmap = config.use_mmap
        else:
            params.load_mode = LOAD_MODE_MMAP if config.use_mmap else LOAD_MODE_NONE
        patterns = placement.override_patterns(config.mode, config.n_cpu_moe)
        overrides = None
        if patterns:
            cpu = ggml.cpu_buffer_type()
            say(f"override {len(patterns)} pattern(s) -> CPU buffer type {cpu:#x} from {ggml.cpu_buffer_type_origin()}")
            overrides = (_BuftOverride * (len(patterns) + 1))()  # zeroed last entry = NULL terminator
            for entry, pattern in zip(overrides, patterns):
                entry.pattern, entry.buft = pattern.encode(), cpu
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        say(f"loading {config.model.path} ({config.mode}, n_gpu_layers={config.n_gpu_layers}, mmap={config.use_mmap}, "
            f"gpus={config.gpus} split={config.split_mode} shares={split_shares(config)})")
        start = time.perf_counter()
        model = llama_cpp.llama_model_load_from_file(config.model.path.encode(), params)
        self.load_s = time.perf_counter() - start
        if not model:
            problems = self.log.problems()
            raise BenchFailure(llama_log.classify_failure(problems),
                               llama_log.last_error(problems, "llama_model_load_from_file failed"))
        return model, overrides

    def _check_placement(self, expected: set[str]) -> None:
        """llama.cpp's DEBUG lines name every tensor an override placed: at least one, and none but expected ones.

        An expected tensor may go unnamed when llama.cpp does not load it at all (e.g. skipped MTP layers): that is
        reported, not failed. Nothing placed means the override never reached llama.cpp: no result then.
        """
        placed = llama_log.overridden_tensors(self.log.text())
        self.n_overridden = len(placed)
        if expected and not placed:
            raise BenchFailure("crashed", f"{self.config.mode}: llama.cpp placed no tensor by override (expected "
                                          f"{len(expected)}): the override did not reach llama.cpp")
        unexpected = sorted(set(placed) - expected)
        if unexpected:
            raise BenchFailure("crashed", f"{self.config.mode}: override placed {len(unexpected)} tensors it should "
                                          f"not have, e.g. {unexpected[:3]}")
        if placed:
            say(f"placement proven: {len(placed)} expert tensors overridden to {', '.join(sorted(set(placed.values())))}")
        not_loaded = sorted(expected - set(placed))
        if not_loaded:
            say(f"{len(not_loaded)} expert tensors of the file were not loaded by llama.cpp, e.g. {not_loaded[:3]}")

    def _new_context(self, llama_cpp: Any, model: int) -> int:
        config = self.config
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = config.n_ctx, config.n_batch, config.n_ubatch
        params.n_threads = params.n_threads_batch = self.n_threads
        names = {name for name, _ in params._fields_}
        if "flash_attn_type" in names:
            params.flash_attn_type = FLASH_ATTN_TYPE[config.flash_attn]
        else:  # older llama.cpp: a bool, no auto
            params.flash_attn = config.flash_attn == "on"
        params.type_k, params.type_v = KV_TYPES[config.type_k], KV_TYPES[config.type_v]
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            problems = self.log.problems()
            raise BenchFailure(llama_log.classify_failure(problems),
                               llama_log.last_error(problems, "llama_init_from_model failed"))
        self.flash_attn = llama_log.flash_attn_used(self.log.text(), config.flash_attn)
        say(f"context: n_ctx={config.n_ctx} n_batch={config.n_batch} n_ubatch={config.n_ubatch} "
            f"threads={self.n_threads} flash_attn={self.flash_attn}")
        return ctx

    def _fill_buffers(self, parsed: llama_log.ParsedBuffers) -> None:
        self.memory.update(llama_log.memory_figures(parsed))
        say("buffers: " + ", ".join(f"{k} {v:.2f} MiB" for k, v in sorted(parsed.mib.items())))

    def _time(self, llama_cpp: Any, ctx: int) -> tuple[TestResult, TestResult, Energy]:
        """llama-bench's method: one uncounted pp + tg warm-up, then `reps` of each from an empty cache, each test's
        repetitions inside one energy window (bench.energy)."""
        config, meter = self.config, self.meter
        assert meter is not None  # opened with the GPU
        decoder = _Decoder(llama_cpp, ctx, max(config.n_batch, 1))

        def timed(test: str, tokens: int, run: Callable[[], None]) -> Callable[[int], float]:
            def rep(index: int) -> float:  # index -1: an uncounted repetition that lengthens the energy window
                decoder.clear()
                start = time.perf_counter()
                run()
                seconds = time.perf_counter() - start
                if index >= 0:
                    say(f"{test}{tokens} rep {index + 1}/{config.reps}: {tokens / seconds:.2f} t/s")
                return seconds
            return rep

        try:
            idle_w = meter.idle_w()
            say("warm-up")
            decoder.clear()
            decoder.prompt(config.n_prompt, config.n_batch)
            decoder.generate(1, start_pos=config.n_prompt)
            pp_seconds, pp_energy = meter.window(config.n_prompt, config.reps, timed(
                "pp", config.n_prompt, lambda: decoder.prompt(config.n_prompt, config.n_batch)))
            tg_seconds, tg_energy = meter.window(config.n_gen, config.reps, timed(
                "tg", config.n_gen, lambda: decoder.generate(config.n_gen, start_pos=0)))
        except BenchFailure as failure:
            problems = self.log.problems()
            status = llama_log.classify_failure(problems)
            raise BenchFailure(status if status != "invalid_model" else "crashed",
                               f"{failure.error}: {llama_log.last_error(problems, 'no log')}") from None
        finally:
            decoder.free()
        energy = meter.energy(pp_energy, tg_energy, idle_w)
        if energy.note:
            say(f"energy: {energy.note}")
        return (_test_result(config.n_prompt, 0, [config.n_prompt / s for s in pp_seconds]),
                _test_result(0, config.n_gen, [config.n_gen / s for s in tg_seconds]), energy)

    def _generate(self, llama_cpp: Any, ctx: int, model: int, test: GenerationTest) -> GenerationResult:
        """The seed's test: real prompt, sampled with temperature and seed (greedy at temperature 0), stopped at
        end of generation."""
        vocab = llama_cpp.llama_model_get_vocab(model)
        tokens = _tokenize(llama_cpp, vocab, test.prompt)
        n_prompt = len(tokens)
        max_tokens = min(test.max_tokens, self.config.n_ctx - n_prompt)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if test.temperature > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(test.temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(test.seed))
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        decoder = _Decoder(llama_cpp, ctx, max(n_prompt, 1))
        piece = ctypes.create_string_buffer(256)
        out, n_generated = bytearray(), 0
        try:
            decoder.clear()
            start = time.perf_counter()
            decoder.decode(tokens, 0)
            pos = n_prompt
            while n_generated < max_tokens:
                token = llama_cpp.llama_sampler_sample(chain, ctx, -1)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                n = llama_cpp.llama_token_to_piece(vocab, token, piece, len(piece), 0, False)
                out += piece.raw[:max(n, 0)]
                n_generated += 1
                decoder.decode([token], pos)
                pos += 1
            elapsed = time.perf_counter() - start
        finally:
            decoder.free()
            llama_cpp.llama_sampler_free(chain)
        say(f"generation: {n_generated} tokens in {elapsed:.2f} s")
        return GenerationResult(tokens=n_generated, tokens_per_s=round(n_generated / elapsed, 3) if elapsed else 0.0,
                                text_sha256=hashlib.sha256(bytes(out)).hexdigest())

    def _quality(self, llama_cpp: Any, ctx: int, model: int) -> QualityResult:
        """Perplexity of the fixed text from every position's logits, in n_ctx-sized windows (each from an empty
        cache and opening with BOS where the model wants one, as llama.cpp's perplexity tool does), then the greedy
        continuation of the fixed prompt. After the timing, so it cannot disturb it."""
        config = self.config
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        tokens = _tokenize(llama_cpp, vocab, quality.TEXT, add_special=False)
        bos = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
        per_window = config.n_ctx - len(bos)
        step = max(1, min(config.n_batch, config.n_ubatch, quality.LOGITS_BATCH))
        decoder = _Decoder(llama_cpp, ctx, step)
        total, scored = 0.0, 0
        start = time.perf_counter()
        try:
            for begin in range(0, len(tokens), per_window):
                window = bos + tokens[begin:begin + per_window]
                decoder.clear()
                for at in range(0, len(window), step):
                    part = window[at:at + step]
                    decoder.decode(part, at, all_logits=True)
                    targets = window[at + 1:at + 1 + len(part)]  # the window's last position has nothing to predict
                    if not targets:
                        continue
                    # every position was asked for, so the logits are len(part) contiguous rows of n_vocab
                    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(len(part), n_vocab))
                    logits = logits[:len(targets)]
                    total += float(quality.target_log_probs(logits, targets).sum())
                    scored += len(targets)
        finally:
            decoder.free()
        if not scored:
            raise BenchFailure("crashed", f"quality: the text gave {len(tokens)} token(s), nothing to score")
        ppl = quality.perplexity(total, scored)
        say(f"quality: perplexity {ppl:.3f} over {scored} tokens in {time.perf_counter() - start:.2f} s")
        greedy = self._generate(llama_cpp, ctx, model, quality.GREEDY)
        return QualityResult(perplexity=round(ppl, 4), n_tokens=scored, greedy_sha256=greedy.text_sha256,
                             greedy_tokens=greedy.tokens)

    def _fill_nvml_after(self, nvml: Nvml | None, gpus: list[int], device: int) -> None:
        if nvml and gpus:
            self.memory["nvml_device_used_after_mib"] = round(nvml.used_mib(device), 1)
            own = nvml.process_mib(device, os.getpid())
            self.memory["nvml_process_mib"] = round(own, 1) if own is not None else None
            if self.config.gpus > 1:  # the process on each pinned GPU; the need is their sum, unknown if one is
                mine = {name: nvml.process_mib(index, os.getpid())
                        for name, index in zip(self.gpu_names, nvml.pinned_indices())}
                self.memory["nvml_process_by_device_mib"] = {k: round(v, 1) for k, v in mine.items() if v is not None}
                self.memory["nvml_process_mib"] = (round(sum(mine.values()), 1)  # type: ignore[arg-type]
                                                   if None not in mine.values() else None)

    def _roofline(self, info: GGUFInfo, ggml: Ggml, gpus: list[int], gpu_offload: bool, tg: TestResult) -> Roofline:
        config = self.config
        active = placement.active_bytes_per_token(info, config.mode, config.n_cpu_moe, gpu_offload)
        host_gbs = host.host_copy_bandwidth_gbs(self.n_threads, int(os.environ.get("VRAMWATCH_HOST_BW_MIB", 1024)))
        gpu_gbs = ggml.copy_bandwidth_gbs(gpus[0]) if gpus else None
        seconds = active.host / (host_gbs * 1e9) if host_gbs else None
        if seconds is not None and active.gpu:
            seconds = seconds + active.gpu / (gpu_gbs * 1e9) if gpu_gbs else None
        bound = round(1 / seconds, 2) if seconds else None
        say(f"roofline: {active.total / 1e6:.1f} MB/token ({active.gpu / 1e6:.1f} GPU, {active.host / 1e6:.1f} host), "
            f"bandwidth GPU {gpu_gbs} GB/s host {host_gbs} GB/s -> bound {bound} t/s")
        return Roofline(
            active_bytes_per_token=active.total, gpu_bytes_per_token=active.gpu, host_bytes_per_token=active.host,
            gpu_bandwidth_gbs=gpu_gbs, host_bandwidth_gbs=host_gbs, bound_tg_ts=bound,
            fraction_of_bound=round(tg.avg_ts / bound, 6) if bound else None,
        )

    def _write_log(self) -> None:
        """VRAMWATCH_LLAMA_LOG=<file>: keep llama.cpp's whole log (all levels) for a human."""
        target = os.environ.get("VRAMWATCH_LLAMA_LOG")
        if target:
            try:
                Path(target).write_text(self.log.dump())
            except OSError as exc:  # the log is a convenience: never lose the result over it
                say(f"cannot write the llama.cpp log to {target}: {exc}")


class _Decoder:
    """llama_decode on one sequence through a llama_batch, llama-bench style (random tokens, synchronize)."""

    def __init__(self, llama_cpp: Any, ctx: int, capacity: int) -> None:
        self.lib, self.ctx, self.capacity = llama_cpp, ctx, capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        vocab = llama_cpp.llama_model_get_vocab(llama_cpp.llama_get_model(ctx))
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.bos = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
        self.rng = random.Random(TOKEN_SEED)

    def clear(self) -> None:
        lib = self.lib
        if hasattr(lib, "llama_get_memory"):
            lib.llama_memory_clear(lib.llama_get_memory(self.ctx), False)
        else:  # before the memory API (mid 2025)
            lib.llama_kv_self_clear(self.ctx)

    def _random(self, n: int) -> list[int]:
        return [self.rng.randrange(self.n_vocab) for _ in range(n)]

    def prompt(self, n_prompt: int, n_batch: int) -> None:
        done = 0
        while done < n_prompt:
            n = min(n_prompt - done, n_batch, self.capacity)
            tokens = self._random(n)
            if done == 0 and self.bos is not None:
                tokens[0] = self.bos
            self.decode(tokens, done)
            done += n
        self.lib.llama_synchronize(self.ctx)

    def generate(self, n_gen: int, start_pos: int) -> None:
        token = self.bos if self.bos is not None else self._random(1)[0]
        for i in range(n_gen):
            self.decode([token], start_pos + i)
            self.lib.llama_synchronize(self.ctx)
            token = self._random(1)[0]

    def decode(self, tokens: list[int], pos: int, all_logits: bool = False) -> None:
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits or i == len(tokens) - 1
        rc = self.lib.llama_decode(self.ctx, batch)
        if rc != 0:
            raise BenchFailure("crashed", f"llama_decode returned {rc}")

    def free(self) -> None:
        self.lib.llama_batch_free(self.batch)


def _tokenize(llama_cpp: Any, vocab: int, text: str, add_special: bool = True) -> list[int]:
    """Tokens of text; add_special: with the model's BOS where it wants one."""
    raw = text.encode()
    tokens = (llama_cpp.llama_token * (len(raw) + 16))()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), tokens, len(tokens), add_special, False)
    if n <= 0:
        raise BenchFailure("crashed", f"tokenizing {text[:40]!r}... failed ({n})")
    return list(tokens[:n])


def _test_result(n_prompt: int, n_gen: int, samples: list[float]) -> TestResult:
    return TestResult(
        n_prompt=n_prompt, n_gen=n_gen, samples_ts=[round(s, 3) for s in samples],
        avg_ts=round(statistics.fmean(samples), 3),
        stddev_ts=round(statistics.stdev(samples), 3) if len(samples) > 1 else 0.0,
    )


def _backend_name(ggml: Ggml, gpus: list[int]) -> str:
    """cuda / rocm / vulkan from the first GPU device's name (CUDA0, ROCm0, Vulkan0), else cpu."""
    if not gpus:
        return "cpu"
    return ggml.name(gpus[0]).rstrip("0123456789").lower() or "gpu"


def _replace(record: Fingerprint, **changes: Any) -> Fingerprint:
    return dataclasses.replace(record, **changes)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies (a kill -9 of the nightly, which no handler sees): otherwise
    this process lives on under PID 1, holding VRAM through the next config's bench. Linux only; elsewhere the
    parent's process group kill is all there is. A parent already gone is noticed at once (getppid changed)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = os.environ.get(BENCH_PARENT_ENV)
    if parent and os.getppid() != int(parent):
        os._exit(1)


def main() -> int:
    die_with_parent()
    to_stderr()  # the parent reads this process's stderr as its progress
    try:
        config = BenchConfig.from_json(sys.stdin.read())
    except Exception as exc:
        say(f"cannot read the BenchConfig JSON on stdin: {exc}")
        return 2
    result = Bench(config).run()
    print(RESULT_MARKER + result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
