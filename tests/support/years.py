"""Years of nightly history, stored through the Warehouse API: what benchmarks/bench_reads.py measures the reads on
(3 years x 100 configs, about 110k result rows) and what the tests that need a big warehouse fill a smaller one with.

Each night is one run (`scheduled__<night>`) storing every config through `Warehouse.store_run`, as the nightly does.
The llama.cpp commit changes every BUILD_EVERY nights; VRAM is exact (one model buffer grows with each build, as a
slow creep would) and tok/s jitters 1.5 % night to night. Rows carry every field a real GPU row has (buffers,
samples, NVML, roofline), so response sizes are honest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from support.samples import replace, result

from vramwatch.records import BenchResult, BuildRecord, BuildRequest, ValidatedNight
from vramwatch.warehouse.store import Warehouse

START = date(2023, 1, 1)
QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q6_K", "Q8_0")
MODES = ("baseline", "offload")
BUILD_EVERY = 7  # nights per llama.cpp commit


@dataclass(frozen=True)
class Years:
    """The shape of a filled history: `nights` nights of `models` x len(QUANTS) x len(MODES) configs."""

    nights: int = 3 * 365
    models: int = 10

    @property
    def configs(self) -> int:
        return self.models * len(QUANTS) * len(MODES)

    @property
    def rows(self) -> int:
        return self.nights * self.configs

    def night(self, i: int) -> str:
        return (START + timedelta(days=i)).isoformat()

    def run_id(self, i: int) -> str:
        return f"scheduled__{self.night(i)}"


def commit_of(night_index: int) -> str:
    return f"c{4000 + night_index // BUILD_EVERY:05d}"


def build_of(night_index: int) -> BuildRecord:
    commit = commit_of(night_index)
    return BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="",
                       source_dir="", llama_cpp_python_version="0.3.36", llama_cpp_commit=commit,
                       built_at=f"{commit}-built")


def templates(years: Years) -> list[BenchResult]:
    """One night's configs: a real-shaped GPU row per model x quant x mode, models renamed moe-0, moe-1, ..."""
    rows = []
    for m in range(years.models):
        for q, quant in enumerate(QUANTS):
            for mode in MODES:
                base = result("deepseek-moe-16b", "Q4_K_M", mode)
                scale = (m + 1) * (q + 1) / 6
                model = replace(base.config.model, model=f"moe-{m}", quant=quant,
                                file_bytes=int(base.config.model.file_bytes * scale))
                rows.append(replace(base, config__model=model,
                                    memory__gpu_model_mib=round(base.memory.gpu_model_mib * scale, 2)))
    return rows


def _tonight(template: BenchResult, night_index: int, rng: np.random.Generator) -> BenchResult:
    builds = night_index // BUILD_EVERY
    jitter = 1 + rng.normal(0, 0.015)
    pp, tg = template.pp, template.tg
    return replace(template, memory__gpu_compute_mib=template.memory.gpu_compute_mib + 0.25 * builds,
                   pp=replace(pp, avg_ts=round(pp.avg_ts * jitter, 2)), tg=replace(tg, avg_ts=round(tg.avg_ts * jitter, 2)))


def store_night(warehouse: Warehouse, years: Years, i: int, rng: np.random.Generator,
                configs: list[BenchResult] | None = None) -> str:
    """Store night i of the history (every config, as the nightly stores a night); returns its run id."""
    tonight = [_tonight(template, i, rng) for template in configs or templates(years)]
    return warehouse.store_run(years.run_id(i), years.night(i), build_of(i),
                               ValidatedNight(accepted=tonight, quarantined=[]), "scheduled")


def fill(warehouse: Warehouse, years: Years = Years(), progress: Callable[[int], None] | None = None) -> None:
    """Store `years` of nights into an empty warehouse, one store_run a night; progress(nights stored) now and then."""
    rng = np.random.default_rng(0)
    configs = templates(years)
    for i in range(years.nights):
        store_night(warehouse, years, i, rng, configs)
        if progress is not None and (i + 1) % 100 == 0:
            progress(i + 1)
