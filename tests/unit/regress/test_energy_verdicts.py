"""Energy per token judged by the same-night A/B, through the whole CPU half of a night (pipeline.ingest: the
measured night's JSON, validation, the warehouse, detection, the report): a build whose token costs 10 % more energy
pages on top of ±5 % process noise; a night whose J/token moved by noise alone, on engines that cost the same, does
not. The A/B's processes are replayed (support.samples.simulated_ab, seeded): no GPU here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.samples import energy, night, replace, simulated_ab
from support.warehouses import store_nights

from vramwatch import pipeline
from vramwatch.records import BenchResult, BuildRecord, BuildRequest, Energy, IncidentKind, MeasuredNight
from vramwatch.regress.detect import detect_for_run
from vramwatch.warehouse.store import Warehouse

PROCESS_NOISE = 0.05  # relative sigma of one A/B process's figures (issue 27: "±5 % noise")
RISE = 1.10
JUDGED = "deepseek-moe-16b/Q4_K_M/offload"


@pytest.fixture
def warehouse_url(sqlite_warehouse_url, tmp_path, monkeypatch) -> str:
    url = sqlite_warehouse_url
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    for channel in ("WEBHOOK", "SMTP", "EMAIL_TO", "SLACK_WEBHOOK"):
        monkeypatch.delenv(f"VRAMWATCH_ALERT_{channel}", raising=False)
    return url


def tg_energy_scaled(r: BenchResult, factor: float) -> BenchResult:
    """The same tok/s, its tg drawing `factor` times the power: J/token of tg times `factor`."""
    if r.config.config_name != JUDGED:
        return r
    watts = r.energy.tg.power_avg_w * factor
    return replace(r, energy=energy(r.pp.avg_ts, r.tg.avg_ts, True, r.energy.pp.power_avg_w, watts))


def measured(commit: str, day: str, tg_energy: float, tmp_path: Path) -> MeasuredNight:
    """DeepSeek Q4_K_M baseline and offload on an H100, through the JSON file `vramwatch ingest` reads."""
    build = BuildRecord(request=BuildRequest(version="0.3.36", backend="cuda"), status="ok", python="", source_dir="",
                        llama_cpp_python_version="0.3.36", llama_cpp_commit=commit, built_at=f"{day}T01:00:00+00:00")
    results = [tg_energy_scaled(r, tg_energy) for r in night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))]
    path = tmp_path / f"{commit}.json"
    path.write_text(MeasuredNight(build=build, results=results).to_json())
    return MeasuredNight.from_json(path.read_text())


def replayed_ab(energy_ratio: float, seed: int):
    """An A/B runner whose engines run at one speed and whose tg costs `energy_ratio` times the energy on tonight's
    build (B), each process off by PROCESS_NOISE."""
    rng = np.random.default_rng(seed)

    def run(config, previous_commit, processes, earlier):
        tonight = night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))
        (r,) = [x for x in tonight if x.config.config_id == config.config_id]
        levels = {"pp": (r.pp.avg_ts,) * 2, "tg": (r.tg.avg_ts,) * 2, "pp_j_per_tok": (r.energy.pp.j_per_tok,) * 2,
                  "tg_j_per_tok": (r.energy.tg.j_per_tok, r.energy.tg.j_per_tok * energy_ratio)}
        return simulated_ab(config.config_id, (previous_commit, "c2" * 4), levels, PROCESS_NOISE, rng, processes,
                            earlier)

    return run


def two_nights(tmp_path: Path, tg_energy_tonight: float, ab) -> pipeline.NightSummary:
    pipeline.ingest(measured("c1" * 4, "2026-01-01", 1.0, tmp_path), "run1", "2026-01-01", trigger="test")
    return pipeline.ingest(measured("c2" * 4, "2026-01-02", tg_energy_tonight, tmp_path), "run2", "2026-01-02",
                           trigger="test", ab=ab)


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
@pytest.mark.parametrize("seed", [1, 2])
def test_a_build_whose_token_costs_ten_percent_more_energy_pages_through_the_ab(warehouse_url, tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    tonight = RISE * (1 + rng.normal(0, PROCESS_NOISE))  # tonight's one process, as noisy as any

    summary = two_nights(tmp_path, tonight, replayed_ab(RISE, seed))

    (paged,) = [i for i in summary.incidents if i.pages]
    assert (paged.kind, paged.metric) == (IncidentKind.ENERGY, "tg_j_per_tok")
    assert paged.summary.startswith("energy per token: tg energy +")
    (change,) = paged.changes
    assert change.startswith(f"{JUDGED}: tg energy ") and " J/tok (+" in change and ", same-night A/B 1." in change
    report = Path(summary.report_md).read_text()
    assert "| tg energy |" in report and "| higher |" in report  # the A/B table, in J/token as measured


@pytest.mark.slow  # whole nights through validation, the warehouse and the report
@pytest.mark.parametrize("seed", [1, 2])
def test_a_quiet_history_whose_energy_moved_by_noise_does_not_page(warehouse_url, tmp_path, seed):
    summary = two_nights(tmp_path, 1.04, replayed_ab(1.0, seed))  # +4 %: enough to ask the A/B, nothing behind it

    assert [i for i in summary.incidents if i.pages] == []
    report = Path(summary.report_md).read_text()
    assert "| tg energy |" in report  # the A/B ran and judged tg's energy
    assert "energy per token judged" in report


def test_a_first_night_with_energy_after_nights_without_asks_no_ab_and_raises_nothing(sqlite_warehouse_url):
    """Nights stored before energy was measured (their J/token NULL in the warehouse) are no level to compare with:
    the first night that measures it starts the series, without an A/B or an error."""
    warehouse = Warehouse(sqlite_warehouse_url)
    before = [replace(r, energy=Energy()) for r in night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))]
    store_nights(warehouse, [before] * 5 + [night(models=("deepseek-moe-16b",), quants=("Q4_K_M",))])

    def no_ab(config, previous_commit, processes, earlier):
        raise AssertionError(f"no A/B was needed, one was asked for {config.config_name}")

    verdicts = detect_for_run(warehouse, "run005", ab=no_ab, save=False)
    assert verdicts.incidents == [] and verdicts.ab == []
