"""Throughput verdicts on planted histories: false pages on quiet nights, how soon a real step pages, what the
same-night A/Bs cost, and how often a quiet night's top line is not "All clear". Prints the figures; asserts nothing.

Each history is nights of a matrix (tests/support/years.py's real-shaped GPU rows: 100 configs, or the first 12),
one new llama.cpp build a night (the worst case for the A/B's cost: every night's drop has a build to blame). Every
config's pp and tg tok/s is its level times (1 + gaussian noise); a planted step multiplies one config's tg level
from its build on. Each judged night goes through the real flat rows (rows.flatten, the warehouse's history shape)
and the real night judge (regress.detect.judge_night: every check, the sequential same-night A/Bs, Holm over the
night, incidents, attribution; the last night's A/Bs passed on, as detect_for_run reads them from the warehouse)
and the report's top line (report.tables.top_lines). The A/B's processes are
simulated from the same noise (process noise = night noise, as issue 25 measured it on the H200), each
AB_PROCESS_SECONDS long (the median bench process of docs/results).

Run: PYTHONPATH=include .venv/bin/python benchmarks/verdicts.py [--quick] [--noise SIGMA ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

from support.samples import AB_PROCESS_SECONDS, simulated_ab  # noqa: E402
from support.years import Years, templates  # noqa: E402

from vramwatch.config import Policy  # noqa: E402
from vramwatch.records import Incident, NightVerdicts  # noqa: E402
from vramwatch.regress.detect import judge_night  # noqa: E402
from vramwatch.report.tables import top_lines  # noqa: E402
from vramwatch.rows import flatten, split_tonight  # noqa: E402

NOISES = (0.015, 0.035, 0.07)
STEPS = (-0.05, -0.08, -0.12)
WARM_UP = 30  # nights of history before the first judged one: the drift check needs min_history (20)
POLICY = Policy()


@dataclasses.dataclass(frozen=True)
class Plant:
    config: int  # index into the matrix
    factor: float  # tg level multiplier from night `at` (its build) on
    at: int


class History:
    """One simulated history: its rows (all nights, drawn up front) and the engines' true levels per build."""

    def __init__(self, configs: int, nights: int, noise: float, seed: int, plant: Plant | None = None) -> None:
        self.results = templates(Years(models=10))[:configs]
        self.noise, self.plant, self.rng = noise, plant, np.random.default_rng(seed)
        flat = [flatten(r) for r in self.results]
        rows = []
        for night in range(nights):
            for index, row in enumerate(flat):
                jitter = 1 + self.rng.normal(0, noise, size=2)
                pp, tg = self.level(index, night)
                rows.append({**row, "pp_avg_ts": pp * jitter[0], "tg_avg_ts": tg * jitter[1], "night": _night(night),
                             "run_id": f"run{night:03d}", "llama_cpp_commit": _commit(night),
                             "gpu_name": self.results[index].fingerprint.gpu_name,
                             "cpu_model": self.results[index].fingerprint.cpu_model})
        self.frame = pd.DataFrame(rows)
        self.configs = {r.config.config_id: r.config for r in self.results}
        self.index = {r.config.config_id: i for i, r in enumerate(self.results)}
        self.environments = {r.config.config_id: r.fingerprint.environment_id for r in self.results}

    def level(self, index: int, night: int) -> tuple[float, float]:
        """The true (pp, tg) tok/s of config `index` on the build of `night`."""
        r = self.results[index]
        step = self.plant is not None and index == self.plant.config and night >= self.plant.at
        return r.pp.avg_ts, r.tg.avg_ts * (self.plant.factor if step else 1.0)

    def ab(self, config, reference_commit: str, processes: int, earlier):
        index, tonight = self.index[config.config_id], self.tonight
        a, b = self.level(index, _built(reference_commit)), self.level(index, tonight)
        return simulated_ab(config.config_id, (reference_commit, _commit(tonight)),
                            {"pp": (a[0], b[0]), "tg": (a[1], b[1])}, self.noise, self.rng, processes, earlier)

    def judge(self, nights: range) -> list[NightVerdicts]:
        """The verdicts of each night in `nights`, each night's open incidents carried to the next."""
        open_now: list[Incident] = []
        out: list[NightVerdicts] = []
        next_id = 1
        window = 2 + max(POLICY.throughput.window, POLICY.vram.window)
        for night in nights:
            self.tonight = night
            rows = self.frame[(self.frame["night"] <= _night(night)) & (self.frame["night"] > _night(night - window))]
            tonight, before = split_tonight(rows, f"run{night:03d}")
            verdicts = judge_night(tonight, before, self.configs, self.environments, open_now, POLICY, ab=self.ab,
                                   earlier_ab=out[-1].ab if out else ())
            stored = []
            for incident in verdicts.incidents:
                if incident.incident_id is None:
                    incident, next_id = dataclasses.replace(incident, incident_id=next_id), next_id + 1
                stored.append(incident)
            open_now = [i for i in stored if not i.is_closed]
            out.append(dataclasses.replace(verdicts, incidents=stored))
        return out


def _night(i: int) -> str:
    return (pd.Timestamp("2026-01-01") + pd.Timedelta(days=i)).date().isoformat()


def _commit(i: int) -> str:
    return f"c{i:05d}"


def _built(commit: str) -> int:
    return int(commit[1:])


def ab_minutes(verdicts: NightVerdicts) -> float:
    return sum(c.run.seconds for c in verdicts.ab) / 60


def quiet(configs: int, nights: int, noise: float, seed: int) -> dict[str, float]:
    history = History(configs, WARM_UP + nights, noise, seed)
    judged = history.judge(range(WARM_UP, WARM_UP + nights))
    pages = [i for v in judged for i in v.incidents if i.pages]
    states = [top_lines(v)[0] for v in judged]
    return {"false_pages": len(pages),
            "not_clear": sum(not s.startswith("**All clear") for s in states) / len(states),
            "ab_minutes": float(np.mean([ab_minutes(v) for v in judged])),
            "ab_max": max(ab_minutes(v) for v in judged)}


def caught(step: float, noise: float, histories: int, configs: int = 12) -> tuple[int, int]:
    """(histories whose step paged on its first night, by its second night)."""
    first = second = 0
    for h in range(histories):
        plant = Plant(config=h % configs, factor=1 + step, at=WARM_UP)
        history = History(configs, WARM_UP + 2, noise, seed=1000 + h, plant=plant)
        config_id = history.results[plant.config].config.config_id
        nights = history.judge(range(WARM_UP, WARM_UP + 2))
        paged = [any(i.pages and i.kind == "throughput" and config_id in i.configs for i in v.incidents)
                 for v in nights]
        first += paged[0]
        second += paged[0] or paged[1]
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 quiet nights and 5 histories per step")
    parser.add_argument("--noise", type=float, action="append", metavar="SIGMA",
                        help=f"only this noise (a fraction, repeatable; default {', '.join(map(str, NOISES))}): one "
                             "row each, so the rows can run as processes side by side")
    args = parser.parse_args()
    quiet_nights, histories = (30, 5) if args.quick else (90, 20)
    started = time.monotonic()
    print(f"Policy: page {POLICY.throughput.page_pct:g} %, A/B {POLICY.throughput.ab_processes}-"
          f"{POLICY.throughput.ab_max_processes} processes a side, {POLICY.throughput.ab_budget_minutes:g} GPU min a "
          f"night, trigger {POLICY.throughput.ab_trigger_z:g} sigma, night false-page rate "
          f"{1 - POLICY.throughput.ab_confidence:.0%}; {AB_PROCESS_SECONDS:g} s a process; a new build every night\n")
    print(f"| Noise (1 sigma) | False pages, {quiet_nights} quiet nights x 100 configs x pp+tg | Quiet nights not "
          f"'All clear' (100 configs) | Not 'All clear' (12 configs) | A/B GPU min/night, 12 configs (mean, max) | "
          + " | ".join(f"{step:+.0%} caught night 1 / by night 2" for step in STEPS) + " |")
    print("|---" * (5 + len(STEPS)) + "|")
    for noise in args.noise or NOISES:
        big = quiet(100, quiet_nights, noise, seed=7)
        small = quiet(12, quiet_nights, noise, seed=8)
        steps = [caught(step, noise, histories) for step in STEPS]
        print(f"| ±{noise:.1%} | {big['false_pages']} | {big['not_clear']:.1%} | {small['not_clear']:.1%} | "
              f"{small['ab_minutes']:.1f}, {small['ab_max']:.1f} | "
              + " | ".join(f"{a}/{histories} / {b}/{histories}" for a, b in steps) + " |", flush=True)
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
