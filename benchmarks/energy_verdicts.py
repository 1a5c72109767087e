"""Energy per token judged by the same-night A/B: how often a planted J/token rise pages in one night's A/B, how often
engines that cost the same do (false pages), and how many processes a side it took. Prints the figures; asserts
nothing.

Each trial is one A/B asked about tg's J/token (regress.ab.sequential_night at the default policy: energy_page_pct
5 %, the night's budget and looks), whose processes are simulated (tests/support/samples.simulated_ab): each
process's figures off by gaussian relative noise, tonight's engine's J/token `rise` times the reference's.

Run: PYTHONPATH=include .venv/bin/python benchmarks/energy_verdicts.py [--trials 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "tests")]

from support.samples import simulated_ab  # noqa: E402

from vramwatch.config import ThroughputPolicy  # noqa: E402
from vramwatch.regress.ab import Ask, sequential_night  # noqa: E402

CASES = ((1.10, 0.05), (1.00, 0.05), (1.07, 0.05), (1.10, 0.10), (1.00, 0.10))  # (rise, process noise)


def trial(rise: float, noise: float, seed: int, policy: ThroughputPolicy) -> tuple[bool, int]:
    rng = np.random.default_rng(seed)
    levels = {"tg": (50.0, 50.0), "tg_j_per_tok": (5.0, 5.0 * rise)}

    def grow(ask, more, earlier):
        return simulated_ab(ask.config_id, ("a", "b"), levels, noise, rng, more, earlier)

    (ended,) = sequential_night([Ask("c", "a", ("tg_j_per_tok",))], grow, policy)
    return ended.verdicts[0].verdict == "slower", ended.run.processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    policy = ThroughputPolicy()
    print(f"energy_page_pct {policy.energy_page_pct:g} %, {args.trials} A/Bs per case (seeds 0..{args.trials - 1})")
    print(f"{'J/token':>8} {'noise':>6} {'paged':>8} {'processes a side (mean)':>24}")
    for rise, noise in CASES:
        out = [trial(rise, noise, seed, policy) for seed in range(args.trials)]
        paged = sum(p for p, _ in out)
        print(f"{rise - 1:>+8.0%} {noise:>6.0%} {paged:>4}/{args.trials} {statistics.fmean(n for _, n in out):>24.1f}")


if __name__ == "__main__":
    main()
