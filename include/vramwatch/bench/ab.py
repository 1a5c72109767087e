"""Same-night A/B: the previous build's engine (A, the reference) and tonight's (B), in turn on one machine.

Throughput differs between processes of one config (offload tg about ±7 % on an H200), so tonight's single
process against last night's cannot tell a build's slowdown from that noise. Here each side runs `processes` child
processes, alternating A, B, A, B, ...: a drift of the machine during the A/B (heat, a busy neighbour) falls on both
sides alike instead of on whichever ran second. Each process is a plain nightly bench (`run_config`), so the samples
are measured exactly as the nightly's own. vramwatch.regress.ab turns the samples into a verdict, and asks for more
processes (`earlier`: the A/B so far, grown by `processes` a side) while its answer is open.
"""

from __future__ import annotations

import time

from vramwatch.bench.runner import run_config
from vramwatch.progress import for_stage
from vramwatch.records import AB_METRICS, AB_SIDES, ABRun, BenchConfig, BuildRecord, Status
from vramwatch.rows import AB_JUDGED

DEFAULT_PROCESSES = 5

_say = for_stage("bench")


def run_ab(a: tuple[BenchConfig, BuildRecord], b: tuple[BenchConfig, BuildRecord],
           processes: int = DEFAULT_PROCESSES, earlier: ABRun | None = None) -> ABRun:
    """Run `processes` child processes of A (the previous build: the reference) and of B (tonight's), interleaved,
    after those of `earlier` (the same A/B's processes so far, kept in the record returned).

    Each side is its own (config, build): both builds quantize their own model files. A failed process is
    recorded with its status and gives no sample. The record is named after tonight's (B's) config; its `seconds`
    is the wall time of all its processes.
    """
    if processes < 1:
        raise ValueError(f"an A/B needs at least 1 process per side, got {processes}")
    sides = dict(zip(AB_SIDES, (a, b)))
    config_id = b[0].config_id
    samples: dict[str, dict[str, list[float]]] = {
        metric: {side: list(earlier.samples_ts.get(metric, {}).get(side, [])) if earlier else [] for side in AB_SIDES}
        for metric in AB_JUDGED}
    statuses: dict[str, list[Status]] = {side: list(earlier.statuses[side]) if earlier else [] for side in AB_SIDES}
    failures: list[str] = list(earlier.failures) if earlier else []
    done = earlier.processes if earlier else 0
    started = time.monotonic()
    order = [side for _ in range(processes) for side in AB_SIDES]
    for number, side in enumerate(order, start=2 * done + 1):
        config, build = sides[side]
        result = run_config(config, build)
        statuses[side].append(result.status)
        which = f"process {number}/{2 * done + len(order)} ({side})"
        if not result.ok:
            failures.append(f"{which}: {result.status}: {result.error}")
            _say(f"A/B {config_id}: {failures[-1]}")
            continue
        measured = {metric: value for metric, field in AB_JUDGED.items() if (value := field.value(result)) is not None}
        for metric, value in measured.items():
            samples[metric][side].append(value)
        _say(f"A/B {config_id}: {which}: " + ", ".join(f"{AB_JUDGED[metric].words} {AB_JUDGED[metric].text(value)}"
                                                       for metric, value in measured.items()))
    build_a, build_b = a[1], b[1]
    return ABRun(config_id=config_id, llama_cpp_commit_a=build_a.llama_cpp_commit,
                 llama_cpp_python_version_a=build_a.llama_cpp_python_version,
                 llama_cpp_commit_b=build_b.llama_cpp_commit,
                 llama_cpp_python_version_b=build_b.llama_cpp_python_version,
                 processes=done + processes,
                 # the tests always; another figure (J/token) where a process measured it (not on a CPU host)
                 samples_ts={metric: sides for metric, sides in samples.items()
                             if metric in AB_METRICS or any(sides.values())},
                 statuses=statuses, failures=failures,
                 seconds=(earlier.seconds if earlier else 0.0) + time.monotonic() - started)
