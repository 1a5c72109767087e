"""Issue 29's two-GPU run, as one detached plan: per-GPU buffers and tok/s of configs split over two GPUs, against
the same configs on one GPU. NOT RUN YET (no two-GPU machine lent); rehearsed on the CPU (`--rehearse`), where every
two-GPU config ends not_applicable ("the bench sees 0 GPU(s)") and the one-GPU ones run.

seed_night.py cannot run it: its steps are fixed, and a matrix gives every config one gpus/split_mode, so the
one-GPU reference and the row split are this plan's own copies of benchmarks/gpu/two_gpu.yaml (gpus 1; split_mode
row). Steps, each <out>/two-gpu-<step>.json (a MeasuredNight): one-gpu, layer, row; then <out>/two-gpu.md, the
per-GPU buffers and the tok/s of each split over its one-GPU figure.

Started by `PLAN=two_gpu bash benchmarks/gpu/seed_night.sh 560` on an nvidia-h100-x2 (carry: device), chained while
warm; results.tgz brings back the JSON and the Markdown for docs/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_night as plan  # noqa: E402  (the plan machinery: logs, steps, sources)

from vramwatch import pipeline  # noqa: E402
from vramwatch.config import Paths  # noqa: E402
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name  # noqa: E402
from vramwatch.records import MeasuredNight, gpu_buffers_by_device  # noqa: E402

STEPS = {"one-gpu": {"gpus": 1}, "layer": {}, "row": {"split_mode": "row"}}  # two_gpu.yaml with these knobs


def summary(nights: dict[str, MeasuredNight]) -> str:
    """Markdown: each config's GPUs and buffers, and its tok/s over the same model and quant on one GPU."""
    reference = nights["one-gpu"].results if "one-gpu" in nights else []
    one_gpu = {(r.config.model.model, r.config.model.quant): r for r in reference if r.ok}
    lines = ["| config | status | GPU: model / KV / compute MiB | needed per GPU MiB | pp tok/s (x one GPU) | "
             "tg tok/s (x one GPU) |", "|---|---|---|---|---|---|"]
    for night in nights.values():
        for r in night.results:
            ref = one_gpu.get((r.config.model.model, r.config.model.quant))
            gpus = "; ".join(f"{d}: {k.get('model', 0):.2f} / {k.get('kv', 0):.2f} / {k.get('compute', 0):.2f}"
                             for d, k in gpu_buffers_by_device(r.memory.buffers_mib).items())
            need = r.memory.needed_by_device() if r.ok else None

            def speed(test: str) -> str:
                mine, theirs = getattr(r, test), ref and getattr(ref, test)
                if mine is None:
                    return "–"
                return f"{mine.avg_ts:.1f}" + (f" ({mine.avg_ts / theirs.avg_ts:.2f}x)" if theirs else "")
            lines.append(f"| {r.config.config_name} | {r.status}{': ' + r.error[:120] if r.error else ''} | "
                         f"{gpus or '–'} | {need or '–'} | {speed('pp')} | {speed('tg')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the demo engine, here")
    if parser.parse_args().rehearse:
        plan.SCALE = "tiny"
    matrix = plan.load("two_gpu")
    version = plan.VERSION if plan.SCALE == "full" else matrix.build.version
    (plan.OUT / "logs").mkdir(parents=True, exist_ok=True)
    synth_dir = Paths().models / "synth"
    synth_dir.mkdir(parents=True, exist_ok=True)
    plan.log(f"plan start: {', '.join(STEPS)}; models in {Paths().models}")
    with plan.step("build"):
        vocab = plan.vocab_files(matrix, version)
        writers = {m.source.synth: plan.synthesize(m.source.synth, synth_dir, vocab) for m in matrix.models
                   if not (synth_dir / file_name(get_spec(m.source.synth, plan.SCALE))).is_file()}
        build = pipeline.build_engine(matrix, version, record_build=False)
        plan.log(f"  build {build.status} {build.duration_s} s, llama.cpp {build.llama_cpp_commit[:12]}")
        for model, writer in writers.items():
            plan.wait_synth(writer, model)
    nights: dict[str, MeasuredNight] = {}
    for name, knobs in STEPS.items():
        with plan.step(name):
            nights[name] = plan.measure(f"two-gpu-{name}", matrix.model_copy(update=knobs), version)
    (plan.OUT / "two-gpu.md").write_text(summary(nights))
    (plan.OUT / "DONE").touch()


if __name__ == "__main__":
    main()
