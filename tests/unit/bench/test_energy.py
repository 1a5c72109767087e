"""Energy of the bench's test windows, against a power trace replayed in NVML's shape (support.nvml_trace) and
RAPL counters laid out as the kernel's powercap tree."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.nvml_trace import RecordedNvml

from vramwatch.bench import energy as energy_module
from vramwatch.bench.energy import EnergyMeter, Rapl
from vramwatch.bench.gpu import Nvml
from vramwatch.records import ENERGY_AGREEMENT_PCT

REP_S = 0.05  # one repetition's work
TOKENS = 64


def meter_on(trace: RecordedNvml, min_window_s: float = 0.6, powercap: Path = Path("/nonexistent")) -> EnergyMeter:
    rapl, host_reason = Rapl.open(powercap)
    return EnergyMeter(Nvml(trace), 0, rapl, "", host_reason, min_window_s=min_window_s)


def work(index: int) -> float:
    time.sleep(REP_S)
    return REP_S


def test_a_window_is_repeated_until_long_enough_and_the_counter_agrees_with_the_samples():
    meter = meter_on(RecordedNvml(load_w=350.0))
    seconds, measured = meter.window(TOKENS, 3, work)
    assert seconds == [REP_S] * 3  # tok/s comes from the counted repetitions only
    assert measured.window_s >= 0.6 and measured.tokens % TOKENS == 0 and measured.tokens > 3 * TOKENS
    assert measured.flags == [] and measured.agreement_pct < ENERGY_AGREEMENT_PCT
    assert measured.j_per_tok == pytest.approx(measured.counter_j / measured.tokens, rel=1e-4)
    assert measured.power_avg_w == pytest.approx(350.0, rel=0.05)
    assert measured.power_peak_w >= measured.power_avg_w
    assert measured.n_samples >= 10 * measured.window_s  # at 10 Hz or more
    assert measured.host_j is None and measured.host_j_per_tok is None


def test_a_counter_that_disagrees_with_the_samples_is_flagged():
    _, measured = meter_on(RecordedNvml(counter_scale=1.2)).window(TOKENS, 3, work)
    assert measured.agreement_pct > ENERGY_AGREEMENT_PCT
    assert any("differ by" in flag for flag in measured.flags)
    assert measured.j_per_tok is not None  # flagged, still shown


def test_a_window_that_stays_short_is_flagged(monkeypatch):
    monkeypatch.setattr(energy_module, "MAX_WINDOW_REPS", 4)
    _, measured = meter_on(RecordedNvml(), min_window_s=5.0).window(TOKENS, 3, work)
    assert measured.tokens == 4 * TOKENS
    assert any("shorter than 5 s" in flag for flag in measured.flags)


def test_a_gpu_without_an_energy_counter_has_no_joules_and_says_why():
    meter = meter_on(RecordedNvml(counter=False))
    _, measured = meter.window(TOKENS, 3, work)
    assert measured.counter_j is None and measured.j_per_tok is None and measured.agreement_pct is None
    assert measured.power_avg_w == pytest.approx(350.0, rel=0.05)  # power is still sampled
    energy = meter.energy(measured, measured, None)
    assert "no energy counter" in energy.gpu_reason and energy.gpu_reason in energy.note


def test_idle_power_and_the_board_limit_are_recorded():
    meter = meter_on(RecordedNvml(idle_w=62.0, load_from_s=60.0, limit_w=700.0))
    energy = meter.energy(None, None, meter.idle_w())
    assert energy.idle_w == pytest.approx(62.0) and energy.power_limit_w == 700.0


def test_without_nvml_or_gpu_every_figure_is_absent_with_a_reason():
    no_nvml = EnergyMeter.open(None, 0, has_gpu=True, powercap=Path("/nonexistent"))
    assert no_nvml.gpu_reason == "NVML not available: GPU energy not measured"
    no_gpu = EnergyMeter.open(Nvml(RecordedNvml()), 0, has_gpu=False, powercap=Path("/nonexistent"))
    assert no_gpu.gpu_reason == "no GPU: GPU energy not measured" and not no_gpu.measures
    seconds, measured = no_gpu.window(TOKENS, 2, work)
    assert seconds == [REP_S, REP_S] and measured is None
    energy = no_gpu.energy(None, None, no_gpu.idle_w())
    assert energy.idle_w is None and energy.power_limit_w is None and energy.agreement_pct is None
    assert energy.note == "no GPU: GPU energy not measured; host energy not measured: no RAPL under /nonexistent"


def _package(root: Path, name: str, energy_uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_sums_the_packages_over_a_wrap_and_leaves_out_sub_zones(tmp_path):
    package0 = _package(tmp_path, "intel-rapl:0", 999_000_000, 1_000_000_000)
    _package(tmp_path, "intel-rapl:1", 5_000_000, 1_000_000_000)
    _package(tmp_path, "intel-rapl:0:0", 1, 1_000_000_000)  # the cores of package 0: already in its figure
    rapl, reason = Rapl.open(tmp_path)
    assert reason == "" and len(rapl.zones) == 2
    start = rapl.read_uj()
    (package0 / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the end of the range, 2 J after
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("9000000\n")
    assert rapl.joules_since(start) == pytest.approx(3.0 + 4.0)


def test_rapl_that_cannot_be_read_says_host_energy_not_measured(tmp_path):
    (tmp_path / "intel-rapl:0").mkdir()
    rapl, reason = Rapl.open(tmp_path)
    assert rapl is None and reason.startswith("host energy not measured: cannot read RAPL")


def test_host_energy_is_read_over_the_same_window(tmp_path):
    _package(tmp_path, "intel-rapl:0", 0, 1_000_000_000)
    meter = meter_on(RecordedNvml(), min_window_s=0.1, powercap=tmp_path)
    counter = tmp_path / "intel-rapl:0" / "energy_uj"

    def host_work(index: int) -> float:
        counter.write_text(str(int(counter.read_text()) + 2_000_000))  # the host spends 2 J per repetition
        return work(index)

    _, measured = meter.window(TOKENS, 3, host_work)
    reps = measured.tokens // TOKENS
    assert measured.host_j == pytest.approx(2.0 * reps) and measured.host_j_per_tok == pytest.approx(2.0 / TOKENS)


def test_a_board_without_power_readings_still_has_its_counter_and_says_it_was_not_cross_checked():
    trace = RecordedNvml(instant_field=False)

    def no_power(handle):
        raise trace.NVMLError("Not Supported")

    trace.nvmlDeviceGetPowerUsage = no_power
    meter = meter_on(trace)
    _, measured = meter.window(TOKENS, 3, work)
    assert meter.power_source == "" and meter.min_window_s == 0.6  # nothing to sample: no averaging to outlast
    assert measured.n_samples == 0 and measured.sampled_j is None and measured.power_peak_w is None
    assert measured.j_per_tok is not None and measured.power_avg_w == pytest.approx(350.0, rel=0.05)
    assert any("not cross-checked" in flag for flag in measured.flags)


# A board like the H100 of 2026-12-07: GetPowerUsage is a 1-s trailing average, the instant field is the power now.
# The load starts with the window, from idle, as a test's repetitions start after the idle reading.
H100_LIKE = dict(load_w=350.0, idle_w=62.0, average_s=1.0)


def test_on_a_one_second_burst_the_instant_field_agrees_with_the_counter():
    meter = meter_on(RecordedNvml(**H100_LIKE), min_window_s=1.0)
    _, measured = meter.window(TOKENS, 3, work)
    assert meter.power_source == "instant" and measured.window_s < 1.5
    assert measured.agreement_pct < ENERGY_AGREEMENT_PCT and measured.flags == []
    assert meter.energy(measured, None, None).power_source == "instant"


def test_on_a_one_second_burst_the_averaged_reading_lags_and_is_flagged(monkeypatch):
    monkeypatch.setattr(energy_module, "POWER_AVERAGE_S", 0.0)  # as the code before the fix: a 1-s window regardless
    meter = meter_on(RecordedNvml(**H100_LIKE, instant_field=False), min_window_s=1.0)
    _, measured = meter.window(TOKENS, 3, work)
    assert meter.power_source == "power_usage"
    assert measured.sampled_j < measured.counter_j  # the average under-reads the burst's ramp, as on the H100's pp
    assert measured.agreement_pct > ENERGY_AGREEMENT_PCT
    assert any("power samples (power_usage)" in flag and "differ by" in flag for flag in measured.flags)


def test_with_only_the_averaged_reading_the_window_is_stretched_until_the_lag_fits(monkeypatch):
    monkeypatch.setattr(energy_module, "POWER_AVERAGE_S", 0.1)  # a tenth of NVML's averaging, to keep the test short
    meter = meter_on(RecordedNvml(**{**H100_LIKE, "average_s": 0.1}, instant_field=False), min_window_s=0.2)
    assert meter.min_window_s == pytest.approx(1.0)  # half the averaging over the 5 % agreement
    _, measured = meter.window(TOKENS, 3, work)
    assert measured.window_s >= 1.0
    assert measured.agreement_pct < ENERGY_AGREEMENT_PCT and measured.flags == []
    assert meter.energy(measured, None, None).power_source == "power_usage"
