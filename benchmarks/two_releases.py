"""Issue 15's two-release run, the CPU half: ingest the GPU plan's two measured nights (benchmarks/gpu/two_releases.py)
as consecutive nights through pipeline.ingest, with the same-night A/B the plan ran on the GPU, and write the
verdicts, the A/B figures and the second night's report under docs/results.

    python benchmarks/two_releases.py RESULTS_DIR --date 2026-11-29 --out docs/results

RESULTS_DIR holds measure-<older>.json, measure-<newer>.json and ab-<mode>.json (results.tgz, unpacked). The
warehouse is a fresh SQLite file in a temporary folder: the run is judged exactly as a first night and its successor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch import pipeline  # noqa: E402
from vramwatch.config import VRAM_COMPONENTS, load_matrix  # noqa: E402
from vramwatch.records import AB_METRICS, ABComparison, ABRun, BenchConfig, MeasuredNight, NightSummary  # noqa: E402
from vramwatch.regress.ab import compare  # noqa: E402
from vramwatch.warehouse.store import Warehouse  # noqa: E402

POLICY = load_matrix(Path(__file__).parent / "gpu" / "two-releases.yaml").policy  # the plan's matrix judges the nights


def _replayed(runs: dict[str, ABRun]):
    """The A/B runner detection calls, answering with what the GPU plan measured for that config."""
    def ab(config: BenchConfig, previous_commit: str, processes: int, earlier: ABRun | None) -> ABRun | str:
        run = runs.get(config.config_id)
        if run is None or run.llama_cpp_commit_a != previous_commit:
            return "the GPU plan did not run this A/B"
        return run if earlier is None else f"the GPU plan ran {run.processes} processes a side"
    return ab


def _all_comparisons(verdicts, runs: dict[str, ABRun], policy) -> list[tuple[ABComparison, bool]]:
    """Every A/B the plan ran, with whether detection asked for it (the others, judged by the same rule, answer
    the question of the issue even where the night gave no reason to rerun)."""
    asked = {c.run.config_id: c for c in verdicts.ab}
    found = []
    for config_id, run in sorted(runs.items()):
        comparison = asked.get(config_id) or ABComparison(run=run, verdicts=[
            compare(test, run.samples_ts[test]["A"], run.samples_ts[test]["B"], policy.page_pct / 100,
                    confidence=policy.ab_confidence) for test in AB_METRICS])
        found.append((comparison, config_id in asked))
    return found


def _first_lines(report_md: str) -> list[str]:
    """The report's verdict paragraph: the first after its title that is not a notice (a "> **Warning:**" quote)."""
    return next(p for p in report_md.split("\n\n")[1:] if not p.startswith(">")).splitlines()


def _markdown(nights: list[MeasuredNight], summary: NightSummary, verdicts, comparisons, command: str,
              day: str) -> str:
    old, new = (n.build for n in nights)
    machine = nights[1].results[0].fingerprint
    lines = [f"# Two llama-cpp-python releases, consecutive nights: {old.llama_cpp_python_version} -> "
             f"{new.llama_cpp_python_version}", "",
             f"**Date**: {day}  ",
             f"**Device**: {machine.gpu_name}, driver {machine.gpu_driver}, CUDA {machine.cuda_version}  ",
             f"**Builds**: llama-cpp-python {old.llama_cpp_python_version} (llama.cpp {old.llama_cpp_commit[:9]}) and "
             f"{new.llama_cpp_python_version} (llama.cpp {new.llama_cpp_commit[:9]}), CUDA sm_90, built by "
             f"pipeline.measure from the slim bundle  ",
             "**Commands**: on the GPU machine `PLAN=two_releases bash benchmarks/gpu/seed_night.sh 560` (carry: "
             f"device); here `{command}`", "",
             "## The report's first lines (night 2)", "",
             *_first_lines(Path(summary.report_md).read_text()), "",
             "## Buffers, night 1 -> night 2 (llama.cpp's own accounting, MiB)", "",
             "| Config | Component | Night 1 | Night 2 | Change |", "|---|---|---|---|---|"]
    for before, after in zip(nights[0].results, nights[1].results):
        for component in VRAM_COMPONENTS:
            a, b = getattr(before.memory, component), getattr(after.memory, component)
            change = ("unchanged" if round(b - a, 2) == 0 else f"{b - a:+.2f} ({100 * (b - a) / a:+.1f}%)" if a
                      else "-")
            lines.append(f"| {after.config.config_name} | {component} | {a:.2f} | {b:.2f} | {change} |")
    lines += ["", "## tok/s per night (one process each, N=3)", "", "| Config | Test | Night 1 | Night 2 | Change |",
              "|---|---|---|---|---|"]
    for before, after in zip(nights[0].results, nights[1].results):
        for test in ("pp", "tg"):
            a, b = getattr(before, test), getattr(after, test)
            if a and b:
                lines.append(f"| {after.config.config_name} | {test} | {a.avg_ts:.1f} | {b.avg_ts:.1f} | "
                             f"{100 * (b.avg_ts / a.avg_ts - 1):+.1f}% |")
    lines += ["", "## Same-night A/B (night 2's config on both engines, interleaved A B A B)", "",
              "A = llama-cpp-python " + nights[0].build.llama_cpp_python_version + ", B = "
              + nights[1].build.llama_cpp_python_version + "; one sample per process (its mean of N=3 reps). Asked = "
              "whether night 2's detection asked for it (tok/s moved beyond noise); the plan ran both modes anyway.",
              "", "| Config | Test | Asked | Processes | A t/s (median) | B t/s (median) | Ratio B/A | 95% interval "
              "| p | Verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for comparison, asked in comparisons:
        for v in comparison.verdicts:
            interval = f"[{v.ci_low:.3f}, {v.ci_high:.3f}]" if v.ci_low is not None else "-"
            lines.append(f"| {comparison.run.config_id.split('@')[0]} | {v.metric} | {'yes' if asked else 'no'} | "
                         f"{v.n_a} v {v.n_b} | {v.median_a:.1f} | {v.median_b:.1f} | {v.ratio:.3f} | {interval} | "
                         f"{v.p_value:.3f} | {v.verdict} |")
    lines += ["", "## Incidents of night 2", ""]
    lines += [f"- [{i.kind}{', pages' if i.pages else ''}] {i.summary}" for i in verdicts.incidents] or ["- none"]
    lines += ["", "## Not judged on night 2", ""] + ([f"- {line}" for line in verdicts.not_judged] or ["- nothing"])
    return "\n".join(lines) + "\n"


def ingest_nights(results: Path, second_night: str) -> tuple[list[MeasuredNight], dict[str, ABRun], NightSummary]:
    """Ingest the plan's measured nights, oldest release first, as consecutive nights ending on `second_night` into
    the warehouse and reports folder the environment names, with the plan's A/Bs replayed; returns the nights, the
    A/Bs and the last night's summary."""
    measured = sorted((MeasuredNight.from_json(p.read_text()) for p in results.glob("measure-*.json")),
                      key=lambda m: [int(x) for x in m.build.llama_cpp_python_version.split(".")])
    runs = {run.config_id: run for run in (ABRun.from_json(p.read_text()) for p in results.glob("ab-*.json"))}
    second = date.fromisoformat(second_night)
    for i, night in enumerate(measured):
        day = (second - timedelta(days=len(measured) - 1 - i)).isoformat()
        summary = pipeline.ingest(night, f"gpu__{day}", day, trigger="gpu-run", policy=POLICY, ab=_replayed(runs))
    return measured, runs, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the GPU plan's results folder (results.tgz unpacked)")
    parser.add_argument("--date", required=True, help="the second night's date, YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="docs/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["VRAMWATCH_WAREHOUSE_URL"] = f"sqlite:///{scratch}/warehouse.db"
        os.environ["VRAMWATCH_REPORTS_DIR"] = f"{scratch}/reports"
        measured, runs, summary = ingest_nights(args.results, args.date)
        warehouse = Warehouse()
        verdicts = warehouse.verdicts(summary.run_id)
        warehouse.close()
        stem = f"{args.date}-h200-two-releases"
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary.report_md, args.out / f"{stem}-report.md")
        shutil.copyfile(summary.report_html, args.out / f"{stem}-report.html")
        (args.out / f"{stem}-verdicts.json").write_text(json.dumps(verdicts.to_dict(), indent=1) + "\n")
        command = "python benchmarks/two_releases.py " + " ".join(sys.argv[1:])
        comparisons = _all_comparisons(verdicts, runs, POLICY.throughput)
        (args.out / f"{stem}.md").write_text(_markdown(measured, summary, verdicts, comparisons, command, args.date))
    print(f"wrote {args.out / stem}.md, -report.{{md,html}} and -verdicts.json")


if __name__ == "__main__":
    main()
