"""One BenchResult as one flat row: the columns of the results table, of history() and of the validation frame.

Names follow llama-bench where it has one (n_prompt, n_gen, avg_ts, stddev_ts, samples_ts, n_threads, ...), with a
pp_/tg_ prefix for its two tests. Missing measurements stay None, never 0, so "not measured" is not a number.
"""

from __future__ import annotations

from typing import Any

from vramwatch.records import BenchResult, TestResult


def _test_fields(prefix: str, test: TestResult | None) -> dict[str, Any]:
    return {
        f"{prefix}_n_prompt": test.n_prompt if test else None,
        f"{prefix}_n_gen": test.n_gen if test else None,
        f"{prefix}_avg_ts": test.avg_ts if test else None,
        f"{prefix}_stddev_ts": test.stddev_ts if test else None,
        f"{prefix}_samples_ts": list(test.samples_ts) if test else None,
    }


def flatten(result: BenchResult) -> dict[str, Any]:
    config, model, memory, roofline, gen, quality = (
        result.config, result.config.model, result.memory, result.roofline, result.generation, result.quality,
    )
    return {
        "config_id": config.config_id,
        "environment_id": result.fingerprint.environment_id,
        "model": model.model,
        "quant": model.quant,
        "mode": config.mode,
        "n_cpu_moe": config.n_cpu_moe,
        "status": result.status,
        "error": result.error,
        "arch": model.arch,
        "n_expert": model.n_expert,
        "synthetic": model.synthetic,
        "file_bytes": model.file_bytes,
        "file_sha256": model.sha256,
        "reps": config.reps,
        "n_ctx": config.n_ctx,
        "n_batch": config.n_batch,
        "n_ubatch": config.n_ubatch,
        "n_threads": result.n_threads,  # what the child used (config's 0 means "physical cores")
        "flash_attn": result.flash_attn or config.flash_attn,
        "use_mmap": config.use_mmap,
        **_test_fields("pp", result.pp),
        **_test_fields("tg", result.tg),
        "gen_tokens": gen.tokens if gen else None,
        "gen_tokens_per_s": gen.tokens_per_s if gen else None,
        "gen_text_sha256": gen.text_sha256 if gen else None,
        "perplexity": quality.perplexity if quality else None,
        "quality_tokens": quality.n_tokens if quality else None,
        "greedy_sha256": quality.greedy_sha256 if quality else None,
        "buffers_mib": dict(memory.buffers_mib),
        "gpu_model_mib": memory.gpu_model_mib,
        "gpu_kv_mib": memory.gpu_kv_mib,
        "gpu_compute_mib": memory.gpu_compute_mib,
        "gpu_output_mib": memory.gpu_output_mib,
        "host_model_mib": memory.host_model_mib,
        "host_kv_mib": memory.host_kv_mib,
        "host_compute_mib": memory.host_compute_mib,
        "gpu_total_mib": memory.gpu_total_mib,
        "nvml_device_used_before_mib": memory.nvml_device_used_before_mib,
        "nvml_device_used_after_mib": memory.nvml_device_used_after_mib,
        "nvml_process_mib": memory.nvml_process_mib,
        "nvml_peak_device_mib": memory.nvml_peak_device_mib,
        "cuda_context_mib": memory.cuda_context_mib,
        "host_rss_peak_mib": memory.host_rss_peak_mib,
        "vram_gib": memory.vram_gib,
        "n_overridden_tensors": result.n_overridden_tensors,
        "active_bytes_per_token": roofline.active_bytes_per_token,
        "gpu_bytes_per_token": roofline.gpu_bytes_per_token,
        "host_bytes_per_token": roofline.host_bytes_per_token,
        "gpu_bandwidth_gbs": roofline.gpu_bandwidth_gbs,
        "host_bandwidth_gbs": roofline.host_bandwidth_gbs,
        "bound_tg_ts": roofline.bound_tg_ts,
        "fraction_of_bound": roofline.fraction_of_bound,
        "started_at": result.started_at,
        "duration_s": result.duration_s,
        "load_s": result.load_s,
    }
