"""Cost per million tokens (issue 27), at the user's prices (config.Prices): rental from the time the tokens take,
energy from the joules they take. Only the parts the matrix prices are counted, and each table says which.

The energy is the GPU's (NVML's counter) plus the host's where RAPL measured it; where it did not, the table says
"host energy not measured" beside the figure, so a GPU-only energy cost never stands as the whole machine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vramwatch.config import Prices
from vramwatch.records import NO_HOST_ENERGY, BenchResult
from vramwatch.report.tables import GPU_SIZES_GIB, NO_GPU, Table, field_heading, heading, needed_mib
from vramwatch.rows import MISSING

MTOK = 1e6
J_PER_KWH = 3.6e6
TESTS = ("pp", "tg")


@dataclass(frozen=True)
class TokenCost:
    """What a million tokens of one test cost; None where a price or a figure it needs is missing."""

    rental: float | None
    energy: float | None
    host_energy_measured: bool

    @property
    def total(self) -> float | None:
        """The priced parts together; None when neither could be priced."""
        parts = [part for part in (self.rental, self.energy) if part is not None]
        return sum(parts) if parts else None


def token_cost(result: BenchResult, test: str, prices: Prices) -> TokenCost:
    speed = getattr(result, test)
    energy = getattr(result.energy, test)
    on_gpu = result.memory.has_gpu
    gpu_price = prices.gpu_hour.get(result.fingerprint.gpu_name) if on_gpu else 0.0
    hour_price = None if gpu_price is None or (not on_gpu and prices.host_hour is None) else \
        gpu_price + (prices.host_hour or 0.0)
    rental = hour_price * MTOK / speed.avg_ts / 3600 if hour_price is not None and speed and speed.avg_ts else None
    gpu_j, host_j = (energy.j_per_tok, energy.host_j_per_tok) if energy else (None, None)
    joules = None if (on_gpu and gpu_j is None) or (not on_gpu and host_j is None) else (gpu_j or 0.0) + (host_j or 0.0)
    energy_cost = joules * MTOK / J_PER_KWH * prices.kwh if joules is not None and prices.kwh is not None else None
    return TokenCost(rental=rental, energy=energy_cost, host_energy_measured=host_j is not None)


def _priced(prices: Prices) -> bool:
    return bool(prices.gpu_hour) or prices.host_hour is not None or prices.kwh is not None


def _money(value: float | None, prices: Prices) -> str:
    return MISSING if value is None else f"{prices.currency}{value:.3f}"


def _note(prices: Prices) -> str:
    given = [f"GPU hour {', '.join(f'{name} {prices.currency}{price:g}' for name, price in prices.gpu_hour.items())}"
             if prices.gpu_hour else "", f"host hour {prices.currency}{prices.host_hour:g}" if prices.host_hour
             is not None else "", f"kWh {prices.currency}{prices.kwh:g}" if prices.kwh is not None else ""]
    return ("At the matrix's prices (the user's: " + "; ".join(g for g in given if g) + "). Rental = the hour's "
            f"price x the hours a million tokens take at the measured tok/s; energy = the measured joules per token "
            f"(GPU: NVML's counter; host: RAPL where the machine has it) at the kWh price. {MISSING}: no price for it, "
            "or not measured.")


def cost_table(results: Sequence[BenchResult], prices: Prices) -> Table | None:
    """Per ok config: rental and energy cost of a million pp and tg tokens; None when the matrix prices nothing."""
    ok = [r for r in results if r.ok]
    if not _priced(prices) or not ok:
        return None
    rows = []
    for result in ok:
        costs = {test: token_cost(result, test, prices) for test in TESTS}
        rows.append([result.config.config_name, result.fingerprint.gpu_name or NO_GPU,
                     *(_money(value, prices) for test in TESTS for value in (costs[test].rental, costs[test].energy)),
                     _money(costs["tg"].total, prices),
                     "measured" if costs["tg"].host_energy_measured else NO_HOST_ENERGY])
    header = [field_heading("config_name"), "Device", *(heading(test, part) for test in TESTS
                                                         for part in ("rental", "energy")), heading("tg", "total"),
              "Host Energy"]
    return Table("Cost per million tokens", header, rows, _note(prices))


def cheapest_table(results: Sequence[BenchResult], prices: Prices) -> Table | None:
    """Per model and GPU size (as the fits-on table sizes them), the quant and mode that fits and whose tg tokens
    cost least at the prices; None when the matrix prices nothing."""
    ok = [r for r in results if r.ok]
    if not _priced(prices) or not ok:
        return None
    has_gpu = any(r.memory.has_gpu for r in ok)
    rows = []
    for model in dict.fromkeys(r.config.model.model for r in ok):
        priced = [(cost, r) for r in ok if r.config.model.model == model
                  and (cost := token_cost(r, "tg", prices).total) is not None]
        cells = []
        for gib_size in GPU_SIZES_GIB:
            fitting = [(cost, r) for cost, r in priced
                       if (need := needed_mib(r)) is not None and need <= gib_size * 1024]
            cost, cheapest = min(fitting, key=lambda pair: pair[0]) if fitting else (None, None)
            cells.append(NO_GPU if not has_gpu else MISSING if cheapest is None else
                         f"{cheapest.config.model.quant} {cheapest.config.mode_label} {_money(cost, prices)}")
        rows.append([model, *cells])
    note = ("The cheapest tg million tokens among the quants and modes whose GPU memory fits the size (as in Fits on "
            f"a GPU of), at the prices of the GPU it was measured on. {MISSING}: none fits, or none is priced.")
    return Table("Cheapest config that fits, per million tg tokens", [field_heading("model"),
                 *(f"{gib_size} GiB" for gib_size in GPU_SIZES_GIB)], rows, note)
