"""Coverage of the bootstrap 95% CIs of the mean, side by side: how often each interval misses the true mean.

Example (about a minute on two cores)::

    python benchmarks/bench_coverage.py --replications 10000 --n-boot 2000

Draws ``--replications`` image sets of n values from each distribution, bootstraps every set with the audit's own code
(:func:`audit.measure.stats.coverage_misses`: the seeded resamples of :func:`audit.measure.stats.bootstrap_ci`), and
prints a Markdown table of each method's per-side miss rate: "low" is the share of sets whose lower bound lies above the
true mean (for a gate on the mean, a false pass), "high" the share whose upper bound lies below it (a false fail). Each
should be 2.5%; the Monte-Carlo standard error of a rate near 2.5% is 0.16 points at 10,000 replications.

The distributions: right-skewed (exponential, skewness 2), left-tailed (its negative: the shape of a paired ABPC
difference, whose long tail is the images a candidate explains worse), heavy-tailed (Student's t with 3 df), and, for
information, the harder lognormal with sigma 1 (skewness 6.2) and its negative. ``tests/test_coverage.py`` runs the
first three.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from audit.measure.stats import CI_LEVEL, coverage_misses

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]

# name -> (draw (rng, shape) -> values, true mean)
DISTRIBUTIONS: dict[str, tuple[Draw, float]] = {
    "right-skewed (exponential)": (lambda rng, shape: rng.exponential(1.0, shape), 1.0),
    "left-tailed (-exponential)": (lambda rng, shape: -rng.exponential(1.0, shape), -1.0),
    "heavy-tailed (t, 3 df)": (lambda rng, shape: rng.standard_t(3, shape), 0.0),
    "right-skewed (lognormal, sigma 1)": (lambda rng, shape: rng.lognormal(0.0, 1.0, shape), math.exp(0.5)),
    "left-tailed (-lognormal, sigma 1)": (lambda rng, shape: -rng.lognormal(0.0, 1.0, shape), -math.exp(0.5)),
}
TESTED = tuple(DISTRIBUTIONS)[:3]
SIZES = (5, 20, 50, 200)
SHOWN = ("percentile", "expanded-percentile", "bootstrap-t")  # the former default, its widening, the default now


def miss_rates(
    distribution: str, n: int, replications: int, n_boot: int, seed: int = 0,
    methods: Sequence[str] = SHOWN,
) -> dict[str, tuple[float, float]]:
    """Per-side miss rates of each method's interval on ``replications`` sets of n values from ``distribution``.

    Args:
        distribution: a key of :data:`DISTRIBUTIONS`.
        n: values per set (images).
        replications: sets drawn.
        n_boot: bootstrap resamples of each set.
        seed: seeds the draws (with the distribution and n) and the bootstrap, as an audit's ``--seed`` does.
        methods: names from :data:`audit.measure.stats.CI_METHODS`, measured on the same resamples.

    Returns:
        method -> (low, high): the shares of sets whose lower bound is above the true mean, and whose upper bound
        is below it.
    """
    draw, true_mean = DISTRIBUTIONS[distribution]
    rng = np.random.default_rng([seed, tuple(DISTRIBUTIONS).index(distribution), n])
    return coverage_misses(draw(rng, (replications, n)), true_mean, seed=seed, n_boot=n_boot, level=CI_LEVEL,
                           methods=methods)


def table(distributions: Sequence[str], sizes: Sequence[int], replications: int, n_boot: int, seed: int = 0,
          methods: Sequence[str] = SHOWN) -> str:
    """The Markdown table of :func:`miss_rates`: one row per (distribution, n), low / high per method, in %."""
    lines = ["| distribution | n | " + " | ".join(f"{m} low / high" for m in methods) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in methods) + " |"]
    for distribution in distributions:
        for n in sizes:
            rates = miss_rates(distribution, n, replications, n_boot, seed, methods)
            cells = " | ".join(f"{100 * rates[m][0]:.2f} / {100 * rates[m][1]:.2f}" for m in methods)
            lines.append(f"| {distribution} | {n} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=10_000, help="image sets per (distribution, n)")
    parser.add_argument("--n-boot", type=int, default=2_000, help="bootstrap resamples of each set")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tested-only", action="store_true", help="only the distributions the tests check")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(table(TESTED if args.tested_only else tuple(DISTRIBUTIONS), sizes, args.replications, args.n_boot,
                args.seed))
    print(f"\n{args.replications:,} replications a row, {args.n_boot:,} resamples each, seed {args.seed}; "
          f"miss rates in %, target 2.5 per side ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
