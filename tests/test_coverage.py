"""Coverage of the bootstrap 95% CI of the mean, each side on its own, by simulation (benchmarks/bench_coverage.py).

A gate passes when the CI's lower bound is above its threshold, so the lower side's miss rate is its false-pass
rate; the upper side's is its false-fail rate. Each should be 2.5%.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from audit.measure.stats import CI_METHOD, N_BOOTSTRAP, bootstrap_ci, coverage_misses

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_coverage.py"

# Each side's miss rate must lie in [1.0%, 4.5%] (target 2.5%). The band is the Monte-Carlo error plus the method's
# own error: 3 standard errors of a rate near 2.5% at 10,000 replications are 0.47 points; the studentized interval
# still errs by up to about 1.5 points at n = 20 on skewed data (its error shrinks as 1/n) and by up to 1.3 points
# on t with 3 df (a finite variance but no fourth moment, which studentizing relies on), so 2.5 + 1.5 + 0.5 = 4.5
# above, and 2.5 - 1.0 - 0.5 = 1.0 below (the short side of a skewed sample over-covers a little). The percentile
# interval, the former default, misses 8.1-8.2% on the long side at n = 20 and fails this band.
TOLERANCE = (0.010, 0.045)
REPLICATIONS = 10_000
N_BOOT = 1_000  # fewer than an audit's 10,000, which moves the rates by at most 0.15 points (measured at n = 20, 50)
SIZES = (20, 50, 200)
# The slow calibration: 4x the replications (standard error 0.08 points) at the audit's own resamples.
SLOW_TOLERANCE = (0.0125, 0.0425)
SLOW_REPLICATIONS = 40_000


def _bench() -> ModuleType:
    if "bench_coverage" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_coverage", SCRIPT)
        sys.modules["bench_coverage"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_coverage"]


TESTED = _bench().TESTED
SKEWED = TESTED[:2]


@lru_cache(maxsize=None)
def _rates(distribution: str, n: int) -> dict[str, tuple[float, float]]:
    methods = (CI_METHOD, "percentile") if n == 20 and distribution in SKEWED else (CI_METHOD,)
    return _bench().miss_rates(distribution, n, REPLICATIONS, N_BOOT, seed=0, methods=methods)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("distribution", TESTED)
def test_the_default_interval_misses_each_side_about_2_5_percent(distribution: str, n: int):
    low, high = _rates(distribution, n)[CI_METHOD]
    assert TOLERANCE[0] <= low <= TOLERANCE[1], f"{distribution}, n={n}: lower bound above the mean {low:.2%}"
    assert TOLERANCE[0] <= high <= TOLERANCE[1], f"{distribution}, n={n}: upper bound below the mean {high:.2%}"


@pytest.mark.parametrize("distribution", SKEWED)
def test_the_percentile_interval_fails_the_band_at_20_images_on_skewed_data(distribution: str):
    low, high = _rates(distribution, 20)["percentile"]
    long_side = high if distribution.startswith("right") else low
    assert long_side > TOLERANCE[1], f"{distribution}: percentile misses {long_side:.2%} on the long side"
    # and the studentized interval, on the same resamples, at least halves that side's excess over 2.5%
    chosen = _rates(distribution, 20)[CI_METHOD][1 if distribution.startswith("right") else 0]
    assert chosen - 0.025 < (long_side - 0.025) / 2


def test_the_simulation_measures_bootstrap_ci_itself():
    rng = np.random.default_rng(7)
    samples = -rng.exponential(1.0, (40, 12))
    lows, highs = zip(*(bootstrap_ci(row, seed=3, n_boot=500) for row in samples))
    for true_mean in (-1.4, -1.0, -0.6):
        below, above = coverage_misses(samples, true_mean, seed=3, n_boot=500, rows_at_once=7)[CI_METHOD]
        assert below == np.mean(np.array(lows) > true_mean)
        assert above == np.mean(np.array(highs) < true_mean)


@pytest.mark.slow
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("distribution", TESTED)
def test_calibration_at_the_audit_resamples(distribution: str, n: int):
    low, high = _bench().miss_rates(distribution, n, SLOW_REPLICATIONS, N_BOOTSTRAP, seed=1,
                                    methods=(CI_METHOD,))[CI_METHOD]
    print(f"{distribution} n={n}: low {low:.2%} high {high:.2%}")
    assert SLOW_TOLERANCE[0] <= low <= SLOW_TOLERANCE[1] and SLOW_TOLERANCE[0] <= high <= SLOW_TOLERANCE[1]
