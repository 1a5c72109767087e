"""Cost per million tokens at the user's prices: rental from tok/s, energy from joules, and the absent said so."""

from __future__ import annotations

import pytest
from support.samples import night, replace, result

from vramwatch.config import Prices
from vramwatch.records import NO_HOST_ENERGY
from vramwatch.report.cost import cheapest_table, cost_table, token_cost
from vramwatch.report.tables import GPU_SIZES_GIB, NO_GPU
from vramwatch.rows import MISSING

H100 = result().fingerprint.gpu_name
PRICES = Prices(gpu_hour={H100: 2.0}, host_hour=0.5, kwh=0.3)


def test_rental_comes_from_the_time_and_energy_from_the_joules_a_token_takes():
    measured = result()
    cost = token_cost(measured, "tg", PRICES)
    assert cost.rental == pytest.approx((2.0 + 0.5) * 1e6 / measured.tg.avg_ts / 3600)
    assert cost.energy == pytest.approx(measured.energy.tg.j_per_tok * 1e6 / 3.6e6 * 0.3)
    assert cost.total == pytest.approx(cost.rental + cost.energy) and not cost.host_energy_measured


def test_host_energy_is_added_where_rapl_measured_it():
    measured = result()
    with_host = replace(measured, energy__tg=replace(measured.energy.tg, host_j=measured.energy.tg.tokens * 1.5))
    cost, gpu_only = token_cost(with_host, "tg", PRICES), token_cost(measured, "tg", PRICES)
    assert cost.host_energy_measured
    assert cost.energy - gpu_only.energy == pytest.approx(1.5 * 1e6 / 3.6e6 * 0.3)


def test_what_is_not_priced_or_not_measured_costs_nothing_it_is_absent():
    unpriced_gpu = token_cost(result(), "tg", Prices(kwh=0.3))  # no price for the H100's hour
    assert unpriced_gpu.rental is None and unpriced_gpu.energy is not None
    cpu = token_cost(result(gpu=False), "tg", PRICES)  # no GPU joules, and this host's were not measured
    assert cpu.energy is None and cpu.rental == pytest.approx(0.5 * 1e6 / result(gpu=False).tg.avg_ts / 3600)
    assert token_cost(result(gpu=False), "tg", Prices(kwh=0.3)).total is None


def test_the_cost_table_says_host_energy_not_measured_and_is_absent_without_prices():
    results = night()
    assert cost_table(results, Prices()) is None and cheapest_table(results, Prices()) is None
    table = cost_table(results, PRICES)
    assert table.title == "Cost per million tokens" and len(table.rows) == len(results)
    assert all(row[-1] == NO_HOST_ENERGY for row in table.rows)
    assert all(cell.startswith("$") for row in table.rows for cell in row[2:-1])
    assert "$2" in table.note and "kWh $0.3" in table.note
    unpriced = cost_table(results, Prices(kwh=0.3))
    assert all(row[2] == MISSING and row[3].startswith("$") for row in unpriced.rows)  # pp rental, pp energy


def test_the_cheapest_config_that_fits_each_gpu_size():
    """DeepSeek Q4_K_M needs ~11.6 GiB in baseline, ~2.4 GiB offloaded; baseline is faster, so cheaper where it
    fits. Phi-3.5 Q4_K_M baseline needs ~24.6 GiB."""
    table = cheapest_table(night(quants=("Q4_K_M",)), PRICES)
    cells = {row[0]: dict(zip(GPU_SIZES_GIB, row[1:])) for row in table.rows}
    assert cells["deepseek-moe-16b"][8].startswith("Q4_K_M offload $")
    assert cells["deepseek-moe-16b"][16].startswith("Q4_K_M baseline $")
    assert cells["phi-3.5-moe"][24].startswith("Q4_K_M offload $") and cells["phi-3.5-moe"][48].startswith(
        "Q4_K_M baseline $")
    cpu = cheapest_table(night(gpu=False, quants=("Q4_K_M",)), PRICES)
    assert all(cell == NO_GPU for row in cpu.rows for cell in row[1:])
