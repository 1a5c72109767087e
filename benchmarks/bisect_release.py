"""Issue 18's GPU bisection, the CPU half: put the plan's result (benchmarks/gpu/bisect_releases.py) on the incident
it answers, and write what the report, the alert and the VRAM history page show under docs/results.

    python benchmarks/bisect_release.py RESULTS_DIR --nights docs/results/raw/2026-11-29-h200-two-releases \
        --date 2026-11-30 --out docs/results

RESULTS_DIR holds the plan's bisect.json, driver.log and rebuild JSONs. The incident is the one the two-release night
opened (benchmarks/two_releases.py: DeepSeek-MoE-16B Q4_K_M baseline, CUDA0 compute +24.13 MiB): its nights are
ingested again into a fresh SQLite warehouse, the bisection is stored on it through pipeline.store_bisection as the
llamacpp_bisect DAG stores it (which writes the night's report again), and the page is rendered by the UI app and
captured in headless Chromium (scripts/screenshots.py's: no host resolves but 127.0.0.1). Writes <date>-h200-bisect-release.md,
-report.{md,html} and -page.png, and copies RESULTS_DIR to raw/<date>-h200-bisect-release/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests"), str(REPO / "scripts"), str(Path(__file__).parent)]

from screenshots import Browser  # noqa: E402  (headless Chromium that resolves no host but 127.0.0.1)
from support.airflow_cluster import free_port  # noqa: E402
from two_releases import ingest_nights  # noqa: E402

from vramwatch import pipeline  # noqa: E402
from vramwatch.alerts.messages import bisection_alert  # noqa: E402
from vramwatch.bisect.run import write_result  # noqa: E402
from vramwatch.records import BisectRequest, BisectResult, MeasuredNight, config_name  # noqa: E402


def capture_page(out: Path) -> None:
    """The VRAM history page as the UI app serves it (uvicorn on loopback, the environment's warehouse and reports),
    captured by headless Chromium once it shows the culprit search."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "vramwatch.ui.app:create_app", "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(REPO / "include")})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/incidents", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the UI app did not start: run `make install`") from None
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as profile, Browser(Path(profile)) as browser:
            browser.open(f"http://127.0.0.1:{port}/", "Culprit searches")
            browser.capture(out)
    finally:
        server.terminate()
        server.wait(30)


def _markdown(result: BisectResult, nights: list[MeasuredNight], incident_id: int, alert_text: str,
              report_section: str, rebuilds: dict[str, str], command: str, day: str) -> str:
    machine = nights[-1].results[0].fingerprint
    good, bad = (n.build for n in nights)
    lines = [f"# Issue 18 on the GPU: which release grew {config_name(result.config_id)}'s {result.metric}?", "",
             f"**Answer: llama-cpp-python {result.culprit.ref if result.culprit else '(none)'}.** "
             f"{result.headline()}.", "",
             f"**Date**: {day}  ",
             f"**Device**: {machine.gpu_name} (one of an `nvidia-h200-x2` pair, pinned with CUDA_VISIBLE_DEVICES=0), "
             f"driver {machine.gpu_driver}, CUDA {machine.cuda_version}  ",
             f"**Builds**: every llama-cpp-python release {result.good} ... {result.bad} from the slim bundle, CUDA sm_90, "
             f"by the nightly's build stage in one persistent build tree  ",
             f"**Incident**: #{incident_id}, opened by the two-release night ({good.llama_cpp_python_version} -> "
             f"{bad.llama_cpp_python_version}, `2026-11-29-h200-two-releases.md`)  ",
             "**Commands**: on the GPU machine, chained calls while it stayed warm:", "",
             "    PLAN=bisect_releases bash benchmarks/gpu/seed_night.sh 40    # carry device/wheels device/bundle-a",
             "    PLAN=bisect_releases bash benchmarks/gpu/seed_night.sh 550   # carry device/wheels device/bundle-b",
             "    PLAN=bisect_releases bash benchmarks/gpu/seed_night.sh 555   # carry device/wheels",
             "    PLAN=bisect_releases bash benchmarks/gpu/seed_night.sh 150   # carry device/wheels (the rebuild step)",
             "",
             f"  The plan called `run_bisect(matrix, BisectRequest(\"deepseek-moe-16b/Q4_K_M/baseline\", "
             f"\"{result.good}\", \"{result.bad}\", metric=\"{result.metric}\", bad_figure=260.39))` on "
             "`benchmarks/gpu/bisect-release.yaml`, as `vramwatch bisect` does. Here: `" + command + "`", "",
             "## Steps", "",
             "| Step | Release | llama.cpp | " + result.metric + f" {result.unit} | Verdict | Build s | Bench s |",
             "|---|---|---|---|---|---|---|"]
    for i, step in enumerate(result.steps):
        name = {"good": "good end", "bad": "bad end (measured after the candidates)"}.get(step.role, f"{i - 1}")
        figure = "-" if step.figure is None else f"{step.figure:.2f}"
        lines.append(f"| {name} | {step.ref} | {step.llama_cpp_commit[:12] or '-'} | {figure} | {step.verdict} | "
                     f"{step.build_s:.1f} | {step.bench_s:.1f} |")
    lines += ["",
              f"- {result.candidates} releases lay between the ends; the search measured "
              f"{sum(s.role == 'candidate' for s in result.steps)} of them. Every candidate measured the good end's "
              "figure, so the bisection built and measured the bad end itself before naming it (the given 260.39 "
              "alone named nothing).",
              f"- The whole search took {result.duration_s:.0f} s after the good build: quantizing the good build's "
              "model file (held fixed for every candidate), four release builds and five benches. The good build "
              "itself (cold) took 203.1 s while the full-scale synthetic source was written beside it.",
              f"- The culprit leaves llama.cpp {result.commit_range} to a commit-level bisection "
              f"(`vramwatch bisect --level commit --good {result.last_good_commit} --bad {result.first_bad_commit}`).",
              "", "## Rebuild times (issue 18's target: under 90 s for a commit next to a built one)", ""]
    lines += [f"- {what}: {figure}" for what, figure in rebuilds.items()]
    lines += ["", "## What the incident shows", "", f"The alert that follows the regression alert (incident #{incident_id}):",
              "", *[f"    {line}" for line in alert_text.splitlines()], "",
              "The report of the incident's night, rendered again (`" + day + "-h200-bisect-release-report.md`):", "",
              report_section.strip(), "",
              f"The VRAM history page: `{day}-h200-bisect-release-page.png` (its \"Culprit searches\" table).", "",
              f"Raw: `raw/{day}-h200-bisect-release/` (the BisectResult the plan wrote, its driver log, the rebuild "
              "figures)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the GPU plan's results folder (bisect.json, rebuild JSONs)")
    parser.add_argument("--nights", type=Path, required=True, help="the two-release run's raw folder")
    parser.add_argument("--date", required=True, help="the bisection's date, YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="docs/results")
    args = parser.parse_args()
    result = BisectResult.from_json((args.results / "bisect.json").read_text())
    stem = f"{args.date}-h200-bisect-release"
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["VRAMWATCH_WAREHOUSE_URL"] = f"sqlite:///{scratch}/warehouse.db"
        os.environ["VRAMWATCH_REPORTS_DIR"] = f"{scratch}/reports"
        nights, _, summary = ingest_nights(args.nights, "2026-11-29")
        (incident,) = [i for i in summary.incidents
                       if config_name(result.config_id) in {config_name(c) for c in i.configs}]
        # as the bisect DAG's store task does: on the incident, and in its night's report written again
        request = BisectRequest(result.config_id, result.good, result.bad, result.level, result.metric,
                                incident_id=incident.incident_id, run_id=summary.run_id)
        pipeline.store_bisection(result, request)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary.report_md, args.out / f"{stem}-report.md")
        shutil.copyfile(summary.report_html, args.out / f"{stem}-report.html")
        capture_page(args.out / f"{stem}-page.png")
        section = Path(summary.report_md).read_text().split("## Culprit search (bisection)", 1)[1]
        section = "#### Culprit search (bisection)" + section.split("\n---\n", 1)[0]
    raw = args.out / "raw" / stem
    raw.mkdir(parents=True, exist_ok=True)
    if raw.resolve() != args.results.resolve():  # run again on the committed raw files, nothing to copy
        for name in ("driver.log", "rebuild-after-switch.json", "rebuild-one-file.json"):
            if (args.results / name).is_file():
                shutil.copyfile(args.results / name, raw / name)
        write_result(result, raw / "bisect.json")
    rebuilds = {}
    for name, what in (("rebuild-one-file.json", "one CUDA file changed (`ggml-cuda/norm.cu`), the tree otherwise "
                                                  "as built"),
                       ("rebuild-after-switch.json", "the plan's first try: the same change, but the tree held the "
                                                     "next release (0.3.36), so every object was compiled")):
        if (args.results / name).is_file():
            figures = json.loads((args.results / name).read_text())
            rebuilds[what] = (f"**{figures['rebuild_s']} s** for the whole build_engine (sync, ninja, wheel, venv, "
                              f"install) of {figures['version']}, {figures['objects_compiled']} object(s) compiled")
    command = "python benchmarks/bisect_release.py " + " ".join(sys.argv[1:])
    alert = bisection_alert(result, incident.incident_id)
    (args.out / f"{stem}.md").write_text(_markdown(result, nights, incident.incident_id, f"{alert.subject}\n\n"
                                                   f"{alert.text}", section, rebuilds, command, args.date))
    print(f"wrote {args.out / stem}.md, -report.{{md,html}}, -page.png and {raw}/")


if __name__ == "__main__":
    main()
