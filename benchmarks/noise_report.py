"""Issue 25's noise measurement, the CPU half: turn the GPU plan's processes (benchmarks/gpu/noise.py) into the
committed figures: per mode and test, how far one process's tok/s lies from another's.

    python benchmarks/noise_report.py RESULTS_DIR --date 2026-12-07 --out docs/results

RESULTS_DIR holds noise-measure.json and noise-<mode>.json (results.tgz, unpacked). It writes
<date>-<gpu>-noise.json (the figures and every process's tok/s) and .md, and copies the raw files under raw/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from vramwatch.records import ABRun, MeasuredNight  # noqa: E402

COMMAND = ("PLAN=noise bash benchmarks/gpu/seed_night.sh 560 (carry: device; chained calls while the plan runs), "
           "then python benchmarks/noise_report.py RESULTS_DIR --date {date} --out docs/results")


def spread(samples: list[float]) -> dict[str, float | int]:
    """One test's process-to-process spread: each sample is one process's avg_ts."""
    mean = statistics.fmean(samples)
    sd = statistics.stdev(samples)
    median = statistics.median(samples)
    return {"processes": len(samples), "median_ts": round(median, 2), "mean_ts": round(mean, 2),
            "stdev_ts": round(sd, 3), "cv_pct": round(100 * sd / mean, 2),
            "min_ts": round(min(samples), 2), "max_ts": round(max(samples), 2),
            "half_range_pct": round(50 * (max(samples) - min(samples)) / median, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--date", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    measured = MeasuredNight.from_json((args.results / "noise-measure.json").read_text())
    first = measured.results[0]
    gpu = first.fingerprint.gpu_name or "cpu"
    device = {"gpu": gpu, "driver": first.fingerprint.gpu_driver, "cuda": first.fingerprint.cuda_version,
              "cpu": first.fingerprint.cpu_model, "cpu_cores": first.fingerprint.cpu_cores,
              "llama_cpp_python": measured.build.llama_cpp_python_version,
              "llama_cpp_commit": measured.build.llama_cpp_commit, "backend": measured.build.request.backend}
    rows = []
    for result in measured.results:
        path = args.results / f"noise-{result.config.mode}.json"
        if not path.is_file():
            continue
        run = ABRun.from_json(path.read_text())
        for test, sides in run.samples_ts.items():
            samples = [x for side in sides.values() for x in side]
            if len(samples) >= 2:
                rows.append({"config_id": result.config.config_id, "config": result.config.config_name,
                             "mode": result.config.mode, "test": test, **spread(samples), "samples_ts": samples,
                             "failures": run.failures})
    slug = gpu.replace("NVIDIA ", "").split()[0].lower() if gpu != "cpu" else "cpu"
    stem = f"{args.date}-{slug}-noise"
    command = COMMAND.format(date=args.date)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"date": args.date, "device": device, "command": command, "rows": rows}, indent=1) + "\n")
    raw = args.out / "raw" / stem
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("noise-measure.json", *(f"noise-{r.config.mode}.json" for r in measured.results)):
        if (args.results / name).is_file():
            shutil.copy(args.results / name, raw / name)
    lines = [f"# Process-to-process throughput noise, {gpu} ({args.date})", "",
             f"One config per mode, benched in {rows[0]['processes'] if rows else 0} separate processes on one engine "
             "(each exactly the nightly's bench: load, warm-up, 3 repetitions, avg_ts), alternating as a same-night "
             "A/B does. The spread between processes is the noise a throughput verdict must see through.", "",
             f"Device: {gpu}, driver {device['driver']}, CUDA {device['cuda']}, {device['cpu_cores']} CPU cores "
             f"({device['cpu']}); llama-cpp-python {device['llama_cpp_python']} (llama.cpp "
             f"{device['llama_cpp_commit'][:9]}), {device['backend']}.", "",
             "| config | test | processes | median t/s | stdev t/s | CV % | min - max t/s | half range % |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['test']} | {r['processes']} | {r['median_ts']} | {r['stdev_ts']} | {r['cv_pct']} "
              f"| {r['min_ts']} - {r['max_ts']} | {r['half_range_pct']} |" for r in rows]
    lines += ["", f"Command: `{command}`.", f"Raw files: `raw/{stem}/`."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
