"""Issue 27's GPU energy run, the CPU half: turn what the plan (benchmarks/gpu/energy.py) brought back into the
committed figures: J/token per model and mode, the power around it, the checks, $/Mtok at the README's example
prices, the overhead of reading the energy on tok/s, and how much J/token moves between processes.

    python benchmarks/energy_report.py RESULTS_DIR --date 2026-12-08 --out docs/results

RESULTS_DIR holds what results.tgz unpacks to: energy-deepseek.json and energy-phi.json (MeasuredNight, as
`vramwatch measure` writes), overhead-<mode>.json (benchmarks/energy_overhead.py --out) and energy-noise-<mode>.json
(ABRun); any but one measured night may be missing, and the report says so. It writes <date>-<gpu>-energy.json and
.md, and copies the raw files under raw/<date>-<gpu>-energy/. A figure that was not measured is shown as such, with
its reason, never as 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

import yaml  # noqa: E402

from vramwatch.config import Prices  # noqa: E402
from vramwatch.records import ENERGY_AGREEMENT_PCT, NO_HOST_ENERGY, ABRun, BenchResult, MeasuredNight  # noqa: E402
from vramwatch.report.cost import TESTS, token_cost  # noqa: E402
from vramwatch.rows import AB_JUDGED, BY_NAME, MISSING  # noqa: E402

MEASURED = ("energy-deepseek.json", "energy-phi.json")
MODES = ("baseline", "offload")
DEVICE_COMMAND = "PLAN=energy bash benchmarks/gpu/seed_night.sh 560"
COMMAND = ("{device} (carry: device; chained calls while the plan runs), "
           "then python benchmarks/energy_report.py RESULTS_DIR --date {date} --out docs/results")
RESOLVES_PCT = 1.0  # the overhead target: a 95 % interval within ±1 % resolves it


def example_prices(readme: Path = ROOT / "README.md") -> Prices:
    """The README's example `prices:` section ("Energy and cost per token"): examples, not quotes."""
    block = readme.read_text().split("```yaml\nprices:", 1)[1].split("```", 1)[0]
    return Prices(**yaml.safe_load("prices:" + block)["prices"])


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def energy_row(result: BenchResult, prices: Prices) -> dict:
    """One config's energy figures, as measured (None where not, and energy_note says why), and its $/Mtok."""
    energy, row = result.energy, {"config": result.config.config_name, "status": result.status}
    for test in TESTS:
        window, speed = getattr(energy, test), getattr(result, test)
        above = (None if window is None or window.counter_j is None or energy.idle_w is None or not window.tokens
                 else (window.counter_j - energy.idle_w * window.window_s) / window.tokens)
        cost = token_cost(result, test, prices) if result.ok else None
        row |= {f"{test}_ts": speed and speed.avg_ts, f"{test}_j_per_tok": window and window.j_per_tok,
                f"{test}_above_idle_j_per_tok": _round(above, 6), f"{test}_power_avg_w": window and window.power_avg_w,
                f"{test}_window_s": window and window.window_s, f"{test}_samples": window and window.n_samples,
                f"{test}_agreement_pct": window and window.agreement_pct,
                f"{test}_host_j_per_tok": window and window.host_j_per_tok,
                f"{test}_usd_per_mtok_rental": _round(cost and cost.rental, 4),
                f"{test}_usd_per_mtok_energy": _round(cost and cost.energy, 4),
                f"{test}_usd_per_mtok_total": _round(cost and cost.total, 4)}
    agreement, limit, average = energy.agreement_pct, energy.power_limit_w, [
        w.power_avg_w for w in (energy.pp, energy.tg) if w and w.power_avg_w is not None]
    return row | {"power_source": energy.power_source, "power_peak_w": energy.power_peak_w, "idle_w": energy.idle_w,
                  "power_limit_w": limit,
                  "energy_agreement_pct": agreement,
                  "agreement_within_5_pct": None if agreement is None else agreement <= ENERGY_AGREEMENT_PCT,
                  "average_below_limit": None if limit is None or not average else max(average) < limit,
                  "host_energy": "measured" if energy.pp and energy.pp.host_j is not None else NO_HOST_ENERGY,
                  "energy_note": energy.note, "error": result.error}


def noise_rows(run: ABRun, mode: str) -> list[dict]:
    """How far one process's figure lies from another's (one config on one engine, every process alike)."""
    rows = []
    for metric, sides in run.samples_ts.items():
        samples = [x for side in sides.values() for x in side]
        if len(samples) >= 2:
            mean, sd = statistics.fmean(samples), statistics.stdev(samples)
            rows.append({"mode": mode, "metric": metric, "processes": len(samples),
                         "median": round(statistics.median(samples), 6), "cv_pct": round(100 * sd / mean, 2),
                         "min": round(min(samples), 6), "max": round(max(samples), 6), "samples": samples})
    return rows


def _shown(name: str, value: object) -> str:
    return BY_NAME[name].number(value) if name in BY_NAME else MISSING if value is None else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _yes(value: bool | None) -> str:
    return MISSING if value is None else "yes" if value else "**no**"


def markdown(doc: dict) -> str:
    device, rows, prices = doc["device"], doc["configs"], doc["prices"]
    lines = [f"# Energy per token, {device['gpu']} ({doc['date']})", "",
             "The nightly's bench (pipeline.measure) of each model at Q4_K_M, baseline and offload, 3 repetitions of "
             "pp512 and tg128 in one process: NVML's energy counter around each test's window (repeated until it "
             "lasts a second, ten with only GetPowerUsage), the board's power sampled at 20 Hz beside it (\"power "
             "read\": `instant`, NVML's instant power field, or `power_usage`, nvmlDeviceGetPowerUsage, a 1-s "
             "average on Ampere and newer), the idle power with the model loaded before the tests, and the board's "
             "power limit.", "",
             f"Device: {device['gpu']}, driver {device['driver']}, CUDA {device['cuda']}, {device['cpu_cores']} CPU "
             f"cores ({device['cpu']}). Build: llama-cpp-python {device['llama_cpp_python']} (llama.cpp "
             f"{device['llama_cpp_commit'][:9]}), {device['backend']}. Date: {doc['date']}.", "",
             f"Command: `{doc['command']}`.", "", "## J/token and power", ""]
    lines += _table(
        ["config", "pp J/tok", "tg J/tok", "pp above idle", "tg above idle", "pp W", "tg W", "peak W", "idle W",
         "limit W", "power read", "counter vs samples %", "within 5 %", "below limit", "host"],
        [[r["config"], *(_shown(f"{t}_j_per_tok", r[f"{t}_j_per_tok"]) for t in TESTS),
          *(_shown(f"{t}_j_per_tok", r[f"{t}_above_idle_j_per_tok"]) for t in TESTS),
          *(_shown(f"{t}_power_avg_w", r[f"{t}_power_avg_w"]) for t in TESTS),
          _shown("gpu_power_peak_w", r["power_peak_w"]), _shown("gpu_idle_w", r["idle_w"]),
          _shown("gpu_power_limit_w", r["power_limit_w"]), r["power_source"] or MISSING,
          _shown("energy_agreement_pct", r["energy_agreement_pct"]),
          _yes(r["agreement_within_5_pct"]), _yes(r["average_below_limit"]), r["host_energy"]] for r in rows])
    notes = [f"- {r['config']}: {r['energy_note'] or r['error']}" for r in rows if r["energy_note"] or r["error"]]
    lines += ["", "Above idle: the window's counter joules less the idle power over the window, per token. "
              f"{MISSING}: not measured (the note says why)."] + (["", "Notes:", *notes] if notes else [])
    lines += ["", "## Cost per million tokens at the README's example prices", "",
              "**Example prices, not quotes** (README, \"Energy and cost per token\"): GPU hour "
              + ", ".join(f"{name} ${price:g}" for name, price in prices["gpu_hour"].items())
              + f"; host hour ${prices['host_hour']:g}; kWh ${prices['kwh']:g}. Rental = the hour's price x the hours "
              "a million tokens take at the measured tok/s; energy = the measured GPU joules (the host's only where "
              "RAPL measured them) at the kWh price.", ""]
    lines += _table(["config", "pp tok/s", "tg tok/s", "pp rental $", "pp energy $", "tg rental $", "tg energy $",
                     "tg total $", "host"],
                    [[r["config"], _shown("pp_avg_ts", r["pp_ts"]), _shown("tg_avg_ts", r["tg_ts"]),
                      *(MISSING if r[f"{t}_usd_per_mtok_{part}"] is None else f"{r[f'{t}_usd_per_mtok_{part}']:.3f}"
                        for t in TESTS for part in ("rental", "energy")),
                      MISSING if r["tg_usd_per_mtok_total"] is None else f"{r['tg_usd_per_mtok_total']:.3f}",
                      r["host_energy"]] for r in rows])
    lines += ["", "## What reading the energy costs tok/s", ""]
    if doc["overhead"]:
        lines += ["No energy reading against the full reading (counter at both ends of each window and the 20 Hz "
                  "sampler), interleaved round by round in one engine process, on the real NVML. Change = the "
                  "geometric mean of the rounds' paired ratios, with its 95 % t interval; resolved = the interval "
                  f"lies within ±{RESOLVES_PCT:g} %.", ""]
        lines += _table(["config", "test", "rounds", "none tok/s", "full tok/s", "change %", "95 % interval",
                         "under 1 %"],
                        [[o["config"], o["test"], str(o["rounds"]), f"{o['none_ts']:.2f}", f"{o['full_ts']:.2f}",
                          f"{o['change_pct']:+.2f}", MISSING if o["ci_low_pct"] is None else
                          f"[{o['ci_low_pct']:+.2f}, {o['ci_high_pct']:+.2f}]", o["verdict"]]
                         for o in doc["overhead"]])
    else:
        lines.append(f"{MISSING}: not measured (no overhead-<mode>.json in the results).")
    lines += ["", "## J/token between processes", ""]
    if doc["noise"]:
        lines += ["One config per mode in separate bench processes on one engine: the spread the energy A/B "
                  "(energy_page_pct) must see through.", ""]
        lines += _table(["mode", "metric", "processes", "median", "CV %", "min - max"],
                        [[n["mode"], AB_JUDGED[n["metric"]].words if n["metric"] in AB_JUDGED else n["metric"],
                          str(n["processes"]), f"{n['median']:g}", f"{n['cv_pct']:.2f}", f"{n['min']:g} - {n['max']:g}"]
                         for n in doc["noise"]])
    else:
        lines.append(f"{MISSING}: not measured (no energy-noise-<mode>.json in the results).")
    if doc["missing"]:
        lines += ["", "Not in the results (the plan did not reach or finish them): " + ", ".join(doc["missing"]) + "."]
    lines += ["", f"Raw files: `raw/{doc['stem']}/`."]
    return "\n".join(lines) + "\n"


def overhead_rows(data: dict) -> list[dict]:
    rows = []
    by_way = {(r["way"], r["test"]): r for r in data["rows"]}
    for test in TESTS:
        full, none = by_way.get(("full", test)), by_way[("none", test)]
        if full is None:
            continue
        low, high = full["ci_low_pct"], full["ci_high_pct"]
        verdict = (MISSING if low is None else "yes" if -RESOLVES_PCT <= low and high <= RESOLVES_PCT else
                   "**no**" if low > RESOLVES_PCT or high < -RESOLVES_PCT else "not resolved")
        rows.append({"config": data["config_name"], "test": test, "rounds": data["rounds"], "nvml": data["nvml"],
                     "none_ts": none["median_ts"], "full_ts": full["median_ts"], "change_pct": full["change_pct"],
                     "ci_low_pct": low, "ci_high_pct": high, "verdict": verdict})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--date", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--device-command", default=DEVICE_COMMAND,
                        help="the device call as it ran (its SECONDS and --only STEP...), for the record")
    args = parser.parse_args()
    nights = [MeasuredNight.from_json((args.results / name).read_text()) for name in MEASURED
              if (args.results / name).is_file()]
    if not nights:
        raise SystemExit(f"no measured night in {args.results}: expected {' or '.join(MEASURED)} "
                         "(unpack the plan's results.tgz there)")
    first, build = nights[0].results[0].fingerprint, nights[0].build
    device = {"gpu": first.gpu_name or "no GPU", "driver": first.gpu_driver, "cuda": first.cuda_version,
              "cpu": first.cpu_model, "cpu_cores": first.cpu_cores,
              "llama_cpp_python": build.llama_cpp_python_version, "llama_cpp_commit": build.llama_cpp_commit,
              "backend": build.request.backend}
    prices = example_prices()
    overhead = [row for mode in MODES if (path := args.results / f"overhead-{mode}.json").is_file()
                for row in overhead_rows(json.loads(path.read_text()))]
    noise = [row for mode in MODES if (path := args.results / f"energy-noise-{mode}.json").is_file()
             for row in noise_rows(ABRun.from_json(path.read_text()), mode)]
    expected = [*MEASURED, *(f"overhead-{m}.json" for m in MODES), *(f"energy-noise-{m}.json" for m in MODES)]
    slug = device["gpu"].replace("NVIDIA ", "").split()[0].lower() if first.gpu_name else "cpu"
    stem = f"{args.date}-{slug}-energy"
    command = COMMAND.format(device=args.device_command, date=args.date)
    doc = {"date": args.date, "stem": stem, "device": device, "command": command,
           "prices": {"gpu_hour": prices.gpu_hour, "host_hour": prices.host_hour, "kwh": prices.kwh,
                      "currency": prices.currency, "note": "the README's example prices, not quotes"},
           "configs": [energy_row(r, prices) for night in nights for r in night.results],
           "overhead": overhead, "noise": noise,
           "missing": [name for name in expected if not (args.results / name).is_file()]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(doc))
    raw = args.out / "raw" / stem
    raw.mkdir(parents=True, exist_ok=True)
    for name in [*expected, "driver.log"]:
        if (args.results / name).is_file():
            shutil.copy(args.results / name, raw / name)
    print(f"wrote {args.out / stem}.md and .json ({len(doc['configs'])} configs)")


if __name__ == "__main__":
    main()
