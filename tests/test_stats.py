"""Seeded bootstrap CIs over an image set, their one-sided p-values, Holm's correction and the power arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit import bootstrap_ci, summarize
from audit.measure.stats import (
    CI_METHOD,
    CI_METHODS,
    CI_RULE,
    N_BOOTSTRAP,
    detectable_difference,
    family_false_fail_bound,
    holm,
    images_needed,
    one_sided_p,
)


def test_bootstrap_is_reproducible_and_seed_dependent():
    values = np.random.default_rng(0).normal(0.1, 0.2, size=41)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


@pytest.mark.parametrize("method", CI_METHODS)
def test_bootstrap_ci_brackets_the_mean_and_matches_the_normal_approximation(method: str):
    values = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    low, high = bootstrap_ci(values, seed=0, method=method)
    assert low < values.mean() < high
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_the_default_is_the_studentized_interval_and_the_rule_says_so():
    assert CI_METHOD == "bootstrap-t" and CI_METHOD in CI_METHODS
    assert "bootstrap-t" in CI_RULE and "95%" in CI_RULE and f"{N_BOOTSTRAP:,}" in CI_RULE
    values = np.random.default_rng(4).exponential(1.0, size=30)
    assert bootstrap_ci(values, seed=2) == bootstrap_ci(values, seed=2, method=CI_METHOD)
    assert bootstrap_ci(values, statistic="median") == bootstrap_ci(values, statistic="median", method="percentile")


def test_percentile_interval_is_the_quantiles_of_the_seeded_resampled_means():
    values = np.random.default_rng(5).exponential(1.0, size=30)
    indices = np.random.default_rng(0).integers(0, values.size, size=(4000, values.size))
    expected = np.quantile(values[indices].mean(axis=1), [0.025, 0.975])
    assert bootstrap_ci(values, seed=0, n_boot=4000, method="percentile") == pytest.approx(tuple(expected), rel=1e-12)


def test_bootstrap_t_is_the_studentized_interval_on_the_same_resamples():
    values = np.random.default_rng(5).exponential(1.0, size=30)
    n = values.size
    resampled = values[np.random.default_rng(0).integers(0, n, size=(4000, n))]
    t_stars = (resampled.mean(axis=1) - values.mean()) / (resampled.std(axis=1, ddof=1) / math.sqrt(n))
    t_low, t_high = np.quantile(t_stars, [0.025, 0.975])
    se = values.std(ddof=1) / math.sqrt(n)
    expected = (values.mean() - t_high * se, values.mean() - t_low * se)
    low, high = bootstrap_ci(values, seed=0, n_boot=4000)
    assert (low, high) == pytest.approx(expected, rel=1e-9)
    # a right-skewed sample's interval reaches further up than the percentile one
    assert high > bootstrap_ci(values, seed=0, n_boot=4000, method="percentile")[1]


def test_expanded_percentile_uses_hesterbergs_widened_tail():
    from scipy import stats

    values = np.random.default_rng(6).normal(size=20)
    tail = stats.norm.cdf(-math.sqrt(20 / 19) * stats.t.ppf(0.975, df=19))
    assert tail == pytest.approx(0.0159, abs=1e-4)
    resampled = values[np.random.default_rng(0).integers(0, 20, size=(3000, 20))].mean(axis=1)
    expected = np.quantile(resampled, [tail, 1 - tail])
    assert bootstrap_ci(values, n_boot=3000, method="expanded-percentile") == pytest.approx(tuple(expected), rel=1e-9)
    low, high = bootstrap_ci(values, n_boot=3000, statistic="median", method="expanded-percentile")
    p_low, p_high = bootstrap_ci(values, n_boot=3000, statistic="median")
    assert low <= p_low and high >= p_high


@pytest.mark.parametrize("method", CI_METHODS)
def test_same_length_and_seed_resample_the_same_images(method: str):
    # shifting or scaling a series moves its interval exactly so only when the resampled images are the same ones
    a = np.random.default_rng(8).gamma(2.0, size=25)
    low, high = bootstrap_ci(a, seed=9, n_boot=2000, method=method)
    shifted = bootstrap_ci(a - 3.0, seed=9, n_boot=2000, method=method)
    scaled = bootstrap_ci(2.5 * a, seed=9, n_boot=2000, method=method)
    assert shifted == pytest.approx((low - 3.0, high - 3.0), rel=1e-9)
    assert scaled == pytest.approx((2.5 * low, 2.5 * high), rel=1e-9)


def test_bootstrap_coverage_is_about_95_percent():
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        sample = rng.exponential(1.0, size=41)  # skewed, true mean 1
        low, high = bootstrap_ci(sample, seed=trial, n_boot=2000)
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / 200 <= 0.99


@pytest.mark.parametrize("method", [None, *CI_METHODS])
def test_bootstrap_edge_cases(method: str | None):
    assert bootstrap_ci([0.3], method=method) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([], method=method))
    assert bootstrap_ci([0.3] * 12, method=method) == (0.3, 0.3)  # sd 0: the value itself, not nan
    assert all(math.isnan(v) for v in bootstrap_ci([0.1, float("nan"), 0.3], method=method))
    with pytest.raises(ValueError, match="level: expected a number in \\(0, 1\\)"):
        bootstrap_ci([1.0, 2.0], level=95, method=method)


def test_bootstrap_argument_errors():
    assert bootstrap_ci([0.3] * 5, statistic="median") == (0.3, 0.3)
    with pytest.raises(ValueError, match="method: expected one of"):
        bootstrap_ci([1.0, 2.0], method="bca")
    with pytest.raises(ValueError, match="'bootstrap-t' studentizes a mean"):
        bootstrap_ci([1.0, 2.0, 4.0], statistic="median", method="bootstrap-t")
    with pytest.raises(ValueError, match="statistic: expected one of"):
        bootstrap_ci([1.0, 2.0], statistic="mode")


def test_bootstrap_t_is_unbounded_where_too_many_resamples_repeat_one_value():
    # two values: half the resamples are one value twice (se* 0, t* infinite); nineteen zeros and a one: 36%
    assert bootstrap_ci([0.0, 0.4]) == (-math.inf, math.inf)
    low, high = bootstrap_ci([0.0] * 19 + [1.0])
    assert math.isfinite(low) and high == math.inf
    assert bootstrap_ci([0.0] * 19 + [1.0], method="percentile") == pytest.approx((0.0, 0.15))
    # a repeated value's resample has se* 0 after any shift: its rounding error never passes for a spread
    for values in ([0.0, 0.0, 0.25], [0.0] * 19 + [1.0], [0.0, 0.0, 1.0, 0.5, 0.2]):
        low, high = bootstrap_ci(values)
        for shift in (0.5, -3.0, 1e6):
            moved = bootstrap_ci(np.asarray(values) + shift)
            assert moved == pytest.approx((low + shift, high + shift), rel=1e-12, abs=1e-9)


def test_summarize_groups_by_method_and_stage_and_computes_abpc():
    records = [("cam", "3", 0.2, 0.6), ("cam", "3", 0.4, 0.4), ("grad", "encoder", 0.5, 0.5)]
    summaries = {(s.method, s.stage): s for s in summarize(records, seed=0)}
    cam = summaries[("cam", "3")]
    assert cam.n_images == 2
    assert cam.morf_auc == pytest.approx(0.3) and cam.lerf_auc == pytest.approx(0.5)
    assert cam.abpc == pytest.approx(0.2)
    assert cam.abpc_ci == (-math.inf, math.inf)  # two images: the studentized interval is unbounded
    assert bootstrap_ci([0.4, 0.0], method="percentile") == pytest.approx((0.0, 0.4))  # the range, 50% coverage
    assert summaries[("grad", "encoder")].abpc_ci == (0.0, 0.0)


@pytest.mark.parametrize("method", CI_METHODS)
def test_one_sided_p_agrees_with_the_interval(method: str):
    n_boot = 2000
    for seed, values in enumerate([np.random.default_rng(10).exponential(1.0, 30) - 1.0,
                                   -np.random.default_rng(11).lognormal(0.0, 1.0, 20),
                                   np.random.default_rng(12).standard_t(3, 50)]):
        low, high = bootstrap_ci(values, seed=seed, n_boot=n_boot, method=method)
        spread = high - low
        for bound in np.linspace(low - spread / 4, high + spread / 4, 61):
            above = one_sided_p(values, bound, "above", seed=seed, n_boot=n_boot, method=method)
            below = one_sided_p(values, bound, "below", seed=seed, n_boot=n_boot, method=method)
            for p, excluded in ((above, low > bound), (below, high < bound)):
                assert 0.0 <= p <= 1.0
                if abs(p - 0.025) > 3 / n_boot:  # resample granularity
                    assert (p < 0.025) == excluded, (method, seed, bound, p, low, high)
        # the p-values of the interval's own bounds sit at the tail
        assert one_sided_p(values, low, "above", seed=seed, n_boot=n_boot, method=method) == pytest.approx(
            0.025, abs=3 / n_boot)
        assert one_sided_p(values, high, "below", seed=seed, n_boot=n_boot, method=method) == pytest.approx(
            0.025, abs=3 / n_boot)


def test_one_sided_p_defaults_and_edge_cases():
    values = np.random.default_rng(13).normal(-0.2, 0.2, 40)
    assert one_sided_p(values, 0.0, "below") == one_sided_p(values, 0.0, "below", method=CI_METHOD)
    assert one_sided_p(values, 0.0, "below") < 0.025 < one_sided_p(values, 0.0, "above")
    assert math.isnan(one_sided_p([], 0.0, "below"))
    assert one_sided_p([0.2] * 8, 0.0, "above") == 0.0 and one_sided_p([0.2] * 8, 0.0, "below") == 1.0
    assert one_sided_p([0.2], 0.2, "above") == 1.0
    with pytest.raises(ValueError, match="side: expected 'below' or 'above'"):
        one_sided_p(values, 0.0, "less")


def test_holm_against_a_hand_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped: 0.5 * 2
    assert holm([0.02]) == [0.02] and holm([]) == []
    adjusted = holm([0.01, float("nan"), 0.04])  # a test not made: nan, and not counted
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="p-values must lie in"):
        holm([0.5, 1.5])


def test_detectable_difference_against_hand_computed_values():
    # (t_{19, 0.975} + z_{0.8}) * sd / sqrt(n) = (2.093024 + 0.841621) / sqrt(20)
    assert detectable_difference(1.0, 20) == pytest.approx(0.656206, rel=1e-5)
    # (t_{197, 0.975} + z_{0.8}) * 0.25 / sqrt(198) = (1.972079 + 0.841621) * 0.25 / 14.071247
    assert detectable_difference(0.25, 198) == pytest.approx(0.049990, rel=1e-4)
    assert detectable_difference(0.25, 198, power=0.5) == pytest.approx(1.972079 * 0.25 / math.sqrt(198), rel=1e-5)
    assert math.isnan(detectable_difference(0.25, 1)) and math.isnan(detectable_difference(float("nan"), 30))
    assert math.isnan(detectable_difference(float("inf"), 30))
    with pytest.raises(ValueError, match="power"):
        detectable_difference(0.25, 30, power=80)


def test_images_needed_against_hand_computed_values():
    # with t: 198 (at 197 the distance is 0.050118); the normal quantile's (1.959964 + 0.841621)^2 * 25 = 196.2 -> 197
    assert images_needed(0.25, 0.05) == 198
    assert detectable_difference(0.25, 198) <= 0.05 < detectable_difference(0.25, 197)
    assert images_needed(1.0, 0.656207) == 20
    assert images_needed(0.0, 0.05) == 2
    for margin in (0.0, -0.05):
        with pytest.raises(ValueError, match="margin: expected a finite distance > 0"):
            images_needed(0.25, margin)


def test_family_false_fail_bound():
    assert family_false_fail_bound(0) == 0.0
    assert family_false_fail_bound(1) == pytest.approx(0.025)
    assert family_false_fail_bound(2) == pytest.approx(1 - 0.975 ** 2)  # 0.049375
    assert family_false_fail_bound(5) == pytest.approx(0.118904, rel=1e-5)
    assert family_false_fail_bound(3, level=0.9) == pytest.approx(1 - 0.95 ** 3)
