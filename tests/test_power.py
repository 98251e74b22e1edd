"""The seeds-needed advice against independent references: statsmodels' power classes and a simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.power import TTestIndPower, TTestPower

from xentlab.report.power import paired_power, seeds_needed, welch_power
from xentlab.report.statistics import Difference, paired_difference, welch_difference


@pytest.mark.parametrize("effect", [0.3, 0.6, 0.9, 1.5, 2.5])
@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.05 / 3])
def test_paired_seeds_match_statsmodels_ttestpower(effect, alpha):
    diff = Difference(-effect * 0.02, math.nan, math.nan, 0.2, "paired", 3, 3, sd=0.02)
    needed = seeds_needed(diff, alpha, cap=200)
    exact = TTestPower().solve_power(effect_size=effect, alpha=alpha, power=0.8, alternative="two-sided")
    assert needed == max(2, math.ceil(exact))
    for n in (needed - 1, needed):
        if n >= 2:
            ours = paired_power(diff.mean, diff.sd, n, alpha)
            assert ours == pytest.approx(TTestPower().power(effect, n, alpha, alternative="two-sided"), abs=1e-9)
    assert paired_power(diff.mean, diff.sd, needed, alpha) >= 0.8
    if needed > 2:
        assert paired_power(diff.mean, diff.sd, needed - 1, alpha) < 0.8


@pytest.mark.parametrize("effect", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.05, 0.0125])
def test_welch_seeds_with_equal_spreads_match_statsmodels_ttestindpower(effect, alpha):
    diff = Difference(effect * 0.1, math.nan, math.nan, 0.3, "welch", 3, 4, sd=0.1, sd_baseline=0.1)
    needed = seeds_needed(diff, alpha, cap=200)
    exact = TTestIndPower().solve_power(effect_size=effect, alpha=alpha, power=0.8, ratio=1.0)
    assert needed == max(2, math.ceil(exact))
    reference = TTestIndPower().power(effect, needed, alpha, ratio=1.0)
    assert welch_power(diff.mean, 0.1, 0.1, needed, alpha) == pytest.approx(reference, abs=1e-9)


def test_welch_power_with_unequal_spreads_matches_a_simulation():
    rng = np.random.default_rng(0)
    delta, sd_a, sd_b, n, alpha, trials = 0.5, 0.3, 0.9, 12, 0.05, 20000
    from scipy import stats

    a = rng.normal(delta, sd_a, size=(trials, n))
    b = rng.normal(0.0, sd_b, size=(trials, n))
    p = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue
    simulated = float(np.mean(p < alpha))
    assert welch_power(delta, sd_a, sd_b, n, alpha) == pytest.approx(simulated, abs=0.015)  # 3 binomial SEs


def test_spreads_come_from_the_report_tests():
    paired = paired_difference([0.50, 0.42, 0.61], [0.55, 0.50, 0.60])
    d = np.array([0.50, 0.42, 0.61]) - np.array([0.55, 0.50, 0.60])
    assert paired.sd == pytest.approx(d.std(ddof=1))
    welch = welch_difference([1.0, 1.2, 0.9], [0.7, 0.8, 0.75, 0.6])
    assert (welch.sd, welch.sd_baseline) == pytest.approx((np.std([1.0, 1.2, 0.9], ddof=1),
                                                          np.std([0.7, 0.8, 0.75, 0.6], ddof=1)))


def test_too_small_an_effect_is_not_chased_and_zero_is_never_detected():
    tiny = Difference(0.001, math.nan, math.nan, 0.8, "paired", 3, 3, sd=0.05)  # effect 0.02: thousands of pairs
    assert seeds_needed(tiny, 0.05) is None
    assert seeds_needed(Difference(0.0, 0, 0, 1.0, "paired", 3, 3, sd=0.01), 0.05) is None
    with pytest.raises(ValueError, match="untested"):
        seeds_needed(Difference(0.1, math.nan, math.nan, math.nan, "untested", 1, 1), 0.05)
