"""Same-night A/B statistics on fixed samples: each verdict of the stated rule, a reproducible interval, the trigger."""

from __future__ import annotations

import numpy as np
import pytest

from vramwatch.records import ABVerdict
from vramwatch.regress.ab import compare, needs_ab

# tg t/s of five processes a side, shaped like the offload tg of issue 15 (52.1 -> 42.1 t/s)
PREVIOUS = [52.1, 50.8, 53.0, 51.5, 49.9]
SLOWER = [42.1, 41.0, 43.2, 40.5, 42.6]
POLICY = 0.05


def test_a_clear_slowdown_is_slower_with_its_interval_below_one():
    verdict = compare("tg", PREVIOUS, SLOWER, POLICY)
    assert verdict.verdict == "slower"
    geometric = np.exp(np.mean(np.log(SLOWER)) - np.mean(np.log(PREVIOUS)))
    assert verdict.ratio == pytest.approx(geometric)
    assert verdict.ci_low <= verdict.ratio <= verdict.ci_high < 1 - POLICY
    assert verdict.p_value < 1e-4  # one-sided: of "slower than the policy allows"
    assert (verdict.n_a, verdict.n_b) == (5, 5)
    assert verdict.describe() == ("tg 0.81x [0.78, 0.84] (95% CI, 5 v 5 processes, p=0.000, could detect -9.7%): "
                                  "slower")


def test_a_clear_speed_up_is_faster():
    verdict = compare("tg", SLOWER, PREVIOUS, POLICY)
    assert verdict.verdict == "faster"
    assert 1 + POLICY < verdict.ci_low <= verdict.ratio <= verdict.ci_high


def test_identical_distributions_are_no_change():
    verdict = compare("pp", PREVIOUS, list(reversed(PREVIOUS)), POLICY)
    assert verdict.verdict == "no change"
    assert verdict.ratio == pytest.approx(1.0) and verdict.p_value > 0.99
    assert 1 - POLICY <= verdict.ci_low <= 1 <= verdict.ci_high <= 1 + POLICY


def test_too_few_samples_on_a_side_is_inconclusive_with_what_could_be_measured():
    verdict = compare("tg", PREVIOUS, SLOWER[:2], POLICY)
    assert verdict.verdict == "inconclusive"
    assert verdict.reason == "too few ok processes: 2 on side B, at least 3 a side needed"
    assert verdict.ratio == pytest.approx(np.exp(np.mean(np.log(SLOWER[:2])) - np.mean(np.log(PREVIOUS))))
    assert verdict.ci_low is verdict.ci_high is verdict.p_value is None
    assert verdict.describe().startswith("tg 0.81x (5 v 2 processes): inconclusive (too few")
    nothing = compare("tg", [], SLOWER, POLICY)
    assert nothing.median_a is None and nothing.ratio is None and nothing.verdict == "inconclusive"
    assert nothing.describe().startswith("tg (0 v 5 processes): inconclusive")


def test_noisy_overlapping_samples_are_inconclusive():
    verdict = compare("tg", [50, 44, 56, 47, 53], [46, 52, 41, 49, 55], POLICY)
    assert verdict.verdict == "inconclusive"
    assert verdict.ci_low < 1 - POLICY and verdict.ci_high > 1 + POLICY and verdict.p_value > 0.5
    assert "too noisy" in verdict.reason and verdict.min_detectable > 0.2  # it could only have seen a big slowdown


def test_a_real_change_smaller_than_the_interval_can_bound_is_inconclusive_not_slower():
    verdict = compare("tg", [50.0, 50.5, 49.5, 50.2, 49.8], [48.0, 46.5, 49.0, 47.0, 48.5], POLICY)
    assert verdict.ci_high < 1 and verdict.ratio > 1 - POLICY  # real (the interval excludes 1), within the policy
    assert verdict.verdict == "inconclusive" and "not shown to exceed" in verdict.reason


def test_the_confidence_level_is_a_parameter():
    narrow = compare("tg", PREVIOUS, SLOWER, POLICY, confidence=0.5)
    wide = compare("tg", PREVIOUS, SLOWER, POLICY)
    assert wide.ci_low <= narrow.ci_low <= narrow.ci_high <= wide.ci_high
    assert "(50% CI," in narrow.describe()


def test_a_verdict_round_trips_through_json():
    for verdict in (compare("tg", PREVIOUS, SLOWER, POLICY), compare("tg", PREVIOUS, SLOWER[:1], POLICY)):
        assert ABVerdict.from_json(verdict.to_json()) == verdict


@pytest.mark.parametrize("previous, tonight, noise, expected", [
    (52.1, 42.1, 0.035, True),  # -19 %: beyond 5 % and beyond twice a 3.5 % noise
    (52.1, 42.1, 0.12, False),  # the same drop on a config whose nights vary by 12 %: noise
    (50.0, 48.0, None, False),  # -4 %: within the policy, whatever the noise
    (50.0, 47.0, None, True),  # -6 % and the noise unknown: the policy alone decides
    (50.0, 53.0, 0.01, True),  # faster counts too: a speed-up is confirmed the same way
    (50.0, 52.0, 0.01, False),
])
def test_an_ab_is_worth_running_beyond_both_the_policy_and_twice_the_noise(previous, tonight, noise, expected):
    assert needs_ab(previous, tonight, noise, POLICY) is expected
