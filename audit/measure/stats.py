"""Statistics over an image set: means with seeded bootstrap 95% CIs (studentized by default, see :data:`CI_RULE`),
medians with percentile-bootstrap CIs, paired differences between two models on the same images, one-sided bootstrap
p-values with Holm's correction, the power arithmetic of a gate, and Spearman rank correlation.

A random map's expected ABPC is exactly 0 (its MoRF and LeRF removal orders have the same distribution), so a
mean-ABPC CI whose lower bound is above 0 says "better than a random map" over the images measured.

Why studentized: per-image numbers are skewed (an ABPC difference between two models has a long left tail), and the
plain percentile bootstrap of the mean under-covers on the long-tail side: on exponential data (skewness 2) at
n = 20 its 95% interval misses the true mean on that side 8.0% of the time instead of 2.5%, the studentized one
3.6%, and at n = 50 5.1-5.4% against 2.9-3.1% (``benchmarks/bench_coverage.py`` measures every method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

__all__ = ["bootstrap_ci", "CI_LEVEL", "CI_METHOD", "CI_METHODS", "CI_RULE", "coverage_misses",
           "detectable_difference", "family_false_fail_bound", "holm", "images_needed", "N_BOOTSTRAP",
           "one_sided_p", "PairedDifference", "paired_difference", "resampled_statistic_ci", "spearman", "Summary",
           "summarize"]

N_BOOTSTRAP = 10_000
CI_LEVEL = 0.95
CI_METHODS = ("bootstrap-t", "expanded-percentile", "percentile")
CI_METHOD = "bootstrap-t"
CI_RULE = "studentized (bootstrap-t) 95% interval of the mean, 10,000 seeded resamples of the images"
_RESAMPLE_CHUNK = 2_000_000  # resampled values drawn at a time
_NORMAL = NormalDist()
_SPREAD_FLOOR = 1e-12  # relative sum of squared deviations below which a resample is one repeated value
_MEAN_FLOOR = 1e-9  # relative distance below which such a resample's mean is the mean


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, seed: int = 0, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL,
    statistic: str = "mean", method: str | None = None,
) -> tuple[float, float]:
    """Bootstrap CI of the mean (or median), resampling the values with replacement.

    Methods (``method``; None picks :data:`CI_METHOD` for the mean, ``"percentile"`` for the median):

    - ``"bootstrap-t"`` (mean only): each resample's t* = (mean* - mean) / se*, se* = sd* / sqrt(n) (sd with n - 1);
      the interval is (mean - t*_hi se, mean - t*_lo se), t*_lo and t*_hi the resamples' (1 - level)/2 and
      (1 + level)/2 quantiles and se the sample's. It follows a skewed sample's long tail, which the percentile
      interval cuts short. A resample of one repeated value has se* 0 and an infinite t*: where more than a
      tail's share of the resamples are such (2 or 3 values, or values nearly all tied), that bound is infinite.
    - ``"expanded-percentile"``: percentiles of the resampled statistic at alpha'/2 and 1 - alpha'/2, with
      alpha'/2 = Phi(-sqrt(n / (n - 1)) t_{n-1, 1 - alpha/2}) and alpha = 1 - level (Hesterberg's widening for
      small n); always within the range of the values.
    - ``"percentile"``: percentiles at alpha/2 and 1 - alpha/2 of the resampled statistic.

    The resamples depend only on the seed and the number of values: two series of the same length bootstrapped
    with the same seed resample the same images (a paired bootstrap, e.g. of MoRF, LeRF and ABPC differences), and
    every method uses those resamples.

    Args:
        values: one number per image.
        seed: seeds numpy's PCG64 generator; the same values and seed give the same interval.
        n_boot: bootstrap resamples.
        level: coverage, e.g. 0.95.
        statistic: ``"mean"`` or ``"median"``.
        method: one of :data:`CI_METHODS`, or None for the statistic's default.

    Returns:
        (low, high). A single value, or values all equal to v, give (v, v); no values, or a value that is not
        finite, give (nan, nan).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence, got shape {data.shape}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {statistic!r}")
    method = _method(method, statistic)
    tail = _tail(level)
    if data.size == 0 or not np.isfinite(data).all():
        return (float("nan"), float("nan"))
    if data.min() == data.max():
        return (float(data[0]), float(data[0]))
    if statistic == "median":
        resampled = np.empty(n_boot, dtype=np.float64)
        start = 0
        for indices in _resamples(data.size, n_boot, seed):
            resampled[start:start + len(indices)] = np.median(data[indices], axis=1)
            start += len(indices)
        low, high = _quantiles(resampled[None, :], _percentile_tails(tail, data.size, method))
        return float(low[0]), float(high[0])
    low, high = _mean_intervals(data[None, :], seed, n_boot, tail, (method,))[method]
    return float(low[0]), float(high[0])


STATISTICS = {"mean": np.mean, "median": np.median}


def one_sided_p(
    values: Sequence[float], bound: float, side: str, seed: int = 0, n_boot: int = N_BOOTSTRAP,
    method: str | None = None,
) -> float:
    """Bootstrap p-value that the mean lies on ``side`` of ``bound``, consistent with :func:`bootstrap_ci`.

    It is the smallest one-sided alpha at which the interval's bound on that side would exclude ``bound``, from the
    same seeded resamples: p < 0.025 exactly when the 95% CI lies wholly on ``side`` of ``bound`` (up to the
    resamples' granularity, a few times 1/n_boot). With ``side="below"`` it tests H0 "mean >= bound" (small p: the
    mean is below ``bound``, e.g. a gate's fail); with ``side="above"``, H0 "mean <= bound".

    Args:
        values: one number per image.
        bound: the value tested against, e.g. a gate's threshold.
        side: ``"below"`` or ``"above"``: the side the evidence is for.
        seed: as for :func:`bootstrap_ci`.
        n_boot: as for :func:`bootstrap_ci`.
        method: as for :func:`bootstrap_ci` with the mean; None for :data:`CI_METHOD`.

    Returns:
        p in [0, 1]; nan for no values or a value that is not finite. Values all equal to v (one value too) give
        0.0 when v is strictly on ``side`` of ``bound`` and 1.0 otherwise, as their interval (v, v) does.
    """
    if side not in ("below", "above"):
        raise ValueError(f"side: expected 'below' or 'above', got {side!r}")
    method = _method(method, "mean")
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence, got shape {data.shape}")
    bound = float(bound)
    if data.size == 0 or not np.isfinite(data).all() or math.isnan(bound):
        return float("nan")
    sign = 1.0 if side == "above" else -1.0  # evidence for "above" is a large (mean - bound)
    if data.min() == data.max():
        return 0.0 if sign * (data[0] - bound) > 0 else 1.0
    n = data.size
    mean = float(data.mean())
    se = float(data.std(ddof=1)) / math.sqrt(n)
    centred_means, t_stars = _resampled_means(data[None, :], seed, n_boot, studentize=method == "bootstrap-t")
    if method == "bootstrap-t":
        # the lower bound mean - t*_{1-a} se is above bound while t*_{1-a} < (mean - bound) / se
        observed = (mean - bound) / se
        return float(np.mean(sign * t_stars[0] >= sign * observed))
    # the share of resampled means on the other side of bound, f, is the percentile tail at which the bound sits
    share = float(np.mean(sign * (mean + centred_means[0] - bound) <= 0.0))
    if method == "percentile":
        return share
    # expanded: the percentile tail at one-sided alpha a is Phi(-c t_{n-1}(1 - a)); solve it for the a giving f
    widen = math.sqrt(n / (n - 1))
    return 0.0 if share == 0.0 else _t_cdf(_NORMAL.inv_cdf(share) / widen if share < 1.0 else math.inf, n - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order.

    With the m finite p-values sorted ascending p_(1) <= ... <= p_(m), the adjusted p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)): monotone in the sorted order and capped at 1. Rejecting every test whose
    adjusted p is below alpha keeps the chance of any false rejection at most alpha, under any dependence.

    Args:
        p_values: one p-value per test, each in [0, 1]; a nan marks a test not made (it stays nan and is not
            counted in m).

    Returns:
        The adjusted p-values, one per input, in input order.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    tested = np.flatnonzero(~np.isnan(p))
    if np.any((p[tested] < 0.0) | (p[tested] > 1.0)):
        raise ValueError("holm: p-values must lie in [0, 1] (or be nan for a test not made)")
    adjusted = np.full(p.shape, np.nan)
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(v) for v in adjusted]


def detectable_difference(sd: float, n: int, power: float = 0.8, level: float = CI_LEVEL) -> float:
    """The smallest true distance between the mean and a bound that the CI separates from the bound with ``power``.

    Normal approximation with Student's t for the interval's half-width:
    (t_{n-1, 1-(1-level)/2} + z_{power}) * sd / sqrt(n). At n = 20 the t quantile is 2.09 where z is 1.96; from
    n = 200 on the two agree within 0.6%.

    Args:
        sd: the per-image standard deviation (n - 1 in the denominator).
        n: images.
        power: the chance of separating the CI from the bound, e.g. 0.8.
        level: two-sided coverage of the CI (each side (1 - level) / 2).

    Returns:
        The distance, in the units of the values; nan for n < 2 or an sd that is not finite.
    """
    _check_power(power, level)
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd < 0:
        raise ValueError(f"sd: expected a number >= 0, got {sd!r}")
    return (_t_ppf(1.0 - (1.0 - level) / 2.0, n - 1) + _NORMAL.inv_cdf(power)) * sd / math.sqrt(n)


def images_needed(sd: float, margin: float, power: float = 0.8, level: float = CI_LEVEL) -> int:
    """The smallest n (at least 2) at which :func:`detectable_difference` is at most ``margin``.

    Args:
        sd: the per-image standard deviation.
        margin: the true distance between the mean and the bound to be resolved, > 0.
        power: as for :func:`detectable_difference`.
        level: as for :func:`detectable_difference`.

    Returns:
        Images needed.
    """
    _check_power(power, level)
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin: expected a finite distance > 0, got {margin!r}")
    if not math.isfinite(sd) or sd < 0:
        raise ValueError(f"sd: expected a finite number >= 0, got {sd!r}")
    z_sum = _NORMAL.inv_cdf(1.0 - (1.0 - level) / 2.0) + _NORMAL.inv_cdf(power)
    n = max(2, math.ceil((z_sum * sd / margin) ** 2))  # the normal quantile's n; t's is never smaller
    while detectable_difference(sd, n, power, level) > margin:
        n += 1
    return n


def family_false_fail_bound(k: int, level: float = CI_LEVEL) -> float:
    """The chance that at least one of k independent gates fails by chance when none should.

    Each gate fails when its CI lies wholly on the failing side of its threshold, which a gate whose true mean is
    at the threshold does with chance (1 - level) / 2 (one-sided), and one on the passing side with less. For k
    independent gates: 1 - (1 - (1 - level) / 2) ** k, e.g. 0.025 for one gate, 0.049 for two, 0.119 for five.
    For dependent gates Bonferroni's k (1 - level) / 2 bounds it. Failing only the gates whose :func:`holm`-adjusted
    one-sided p is below (1 - level) / 2 holds it at (1 - level) / 2 under any dependence.

    Args:
        k: gates, >= 0.
        level: two-sided coverage of each gate's CI.

    Returns:
        The bound, in [0, 1].
    """
    if k < 0:
        raise ValueError(f"k: expected a number of gates >= 0, got {k!r}")
    _tail(level)
    return 1.0 - (1.0 - (1.0 - level) / 2.0) ** k


def coverage_misses(
    samples: np.ndarray, true_mean: float, seed: int = 0, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL,
    methods: Sequence[str] = (CI_METHOD,), rows_at_once: int = 1000,
) -> dict[str, tuple[float, float]]:
    """Per-side miss rates of the mean's intervals over many samples drawn from one distribution.

    Each row of ``samples`` is one simulated image set; its intervals are the ones :func:`bootstrap_ci` gives with
    this seed (every row resamples the same image positions, as every image set of that length does in an audit).

    Args:
        samples: (replications, n) values, n >= 2.
        true_mean: the distribution's mean.
        seed: as for :func:`bootstrap_ci`.
        n_boot: as for :func:`bootstrap_ci`.
        level: as for :func:`bootstrap_ci`.
        methods: the methods to measure on the same resamples.
        rows_at_once: rows bootstrapped together (memory: about 3 * rows_at_once * n_boot floats).

    Returns:
        method -> (share of rows whose lower bound is above ``true_mean``, share whose upper bound is below it);
        each should be (1 - level) / 2.
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"samples: expected (replications, n >= 2) values, got shape {data.shape}")
    methods = tuple(_method(m, "mean") for m in methods)
    tail = _tail(level)
    below = dict.fromkeys(methods, 0)
    above = dict.fromkeys(methods, 0)
    for start in range(0, data.shape[0], rows_at_once):
        intervals = _mean_intervals(data[start:start + rows_at_once], seed, n_boot, tail, methods)
        for method, (low, high) in intervals.items():
            below[method] += int(np.sum(low > true_mean))
            above[method] += int(np.sum(high < true_mean))
    return {m: (below[m] / data.shape[0], above[m] / data.shape[0]) for m in methods}


def _method(method: str | None, statistic: str) -> str:
    if method is None:
        return CI_METHOD if statistic == "mean" else "percentile"
    if method not in CI_METHODS:
        raise ValueError(f"method: expected one of {', '.join(CI_METHODS)}, got {method!r}")
    if method == "bootstrap-t" and statistic != "mean":
        raise ValueError(f"method: 'bootstrap-t' studentizes a mean; the {statistic} takes 'percentile' or "
                         "'expanded-percentile'")
    return method


def _tail(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return (1.0 - level) / 2.0


def _t_ppf(q: float, df: int) -> float:
    from scipy.special import stdtrit  # imported here: scipy is slow to import, and only these numbers need it

    return float(stdtrit(df, q))


def _t_cdf(x: float, df: int) -> float:
    from scipy.special import stdtr

    return float(stdtr(df, x))


def _check_power(power: float, level: float) -> None:
    _tail(level)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power: expected a number in (0, 1), got {power!r}")


def resampled_statistic_ci(
    statistic: Callable[[np.ndarray], float], n: int, seed: int = 0, n_boot: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Expanded-percentile bootstrap CI of a statistic of n images that is not a mean (a maximum over classes, a
    ratio), on the same seeded resamples as :func:`bootstrap_ci`: paired where the statistic reads two models' values
    of the same resampled images.

    Args:
        statistic: takes an array of n image indices (a resample, with repeats) and returns the statistic; it is
            called once with ``arange(n)`` and once per resample; non-finite resamples are left out.
        n: images.
        seed, n_boot, level: as for :func:`bootstrap_ci`.

    Returns:
        (low, high); (nan, nan) for fewer than 2 images or no finite resample.
    """
    if n < 2:
        return float("nan"), float("nan")
    values = np.asarray([statistic(index) for chunk in _resamples(n, n_boot, seed) for index in chunk])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = _percentile_tails((1.0 - level) / 2.0, n, "expanded-percentile")
    return float(np.quantile(values, low)), float(np.quantile(values, high))


def _resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The seeded resamples of n images, as (resamples, n) indices in chunks; they depend on n and seed only."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_CHUNK // n)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _resampled_means(data: np.ndarray, seed: int, n_boot: int, studentize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each row's resampled means less its mean, and (``studentize``) its t* = (mean* - mean) / se*, (rows, n_boot).

    The rows are centred first, so that the resamples' variances lose no precision to a large common offset. A
    resample of one repeated value has se* 0: its t* is +-inf, or 0 where its mean* equals the mean. Its computed
    variance is rounding error, so a resample whose sum of squared deviations is below ``_SPREAD_FLOOR`` n times the
    row's largest squared deviation (an sd* under about 1e-6 of the values' spread) counts as one repeated value,
    and its mean* as the mean within ``_MEAN_FLOOR`` times the largest deviation: the same values shifted or scaled
    give the same t*.
    """
    rows, n = data.shape
    centred = data - data.mean(axis=1, keepdims=True)
    squares = centred * centred
    largest = squares.max(axis=1, keepdims=True)
    means = np.empty((rows, n_boot), dtype=np.float64)
    t_stars = np.empty((rows, n_boot), dtype=np.float64) if studentize else means[:0]
    start = 0
    for indices in _resamples(n, n_boot, seed):
        size = len(indices)
        offsets = (indices + n * np.arange(size)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=size * n).reshape(size, n).T.astype(np.float64)
        stop = start + size
        sums = centred @ counts
        block = np.divide(sums, n, out=means[:, start:stop])
        if studentize:  # se*^2 = (sum of squares - sum * mean*) / (n (n - 1)), in place: these arrays are large
            se = squares @ counts
            se -= np.multiply(sums, block, out=sums)
            se[se <= _SPREAD_FLOOR * n * largest] = 0.0
            se *= 1.0 / (n * (n - 1))
            np.sqrt(se, out=se)
            t = t_stars[:, start:stop]
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(block, se, out=t)
            repeated = se == 0.0
            if repeated.any():
                t[repeated & (block * block <= _MEAN_FLOOR**2 * largest)] = 0.0
        start = stop
    return means, t_stars


def _mean_intervals(
    data: np.ndarray, seed: int, n_boot: int, tail: float, methods: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each row's interval of the mean by each method, from one set of resamples; rows of n >= 2 values."""
    rows, n = data.shape
    mean = data.mean(axis=1)
    constant = data.min(axis=1) == data.max(axis=1)
    means, t_stars = _resampled_means(data, seed, n_boot, studentize="bootstrap-t" in methods)
    percentile_levels = {m: _percentile_tails(tail, n, m) for m in methods if m != "bootstrap-t"}
    levels = sorted({level for pair in percentile_levels.values() for level in pair})
    quantiles = dict(zip(levels, _quantiles(means, levels))) if levels else {}  # one partition for both methods
    out = {}
    for method in methods:
        if method == "bootstrap-t":
            t_low, t_high = _quantiles(t_stars, (tail, 1.0 - tail))
            se = data.std(axis=1, ddof=1) / math.sqrt(n)
            with np.errstate(invalid="ignore"):
                low, high = mean - t_high * se, mean - t_low * se
        else:
            low, high = (mean + quantiles[level] for level in percentile_levels[method])
        out[method] = (np.where(constant, mean, low), np.where(constant, mean, high))
    return out


def _percentile_tails(tail: float, n: int, method: str) -> tuple[float, float]:
    if method == "expanded-percentile" and n > 1:
        widened = _NORMAL.cdf(-math.sqrt(n / (n - 1)) * _t_ppf(1.0 - tail, n - 1))
        return widened, 1.0 - widened
    return tail, 1.0 - tail


def _quantiles(values: np.ndarray, levels: Sequence[float]) -> list[np.ndarray]:
    """Each row's quantiles at ``levels``, interpolated linearly between order statistics (numpy's default).

    Reorders each row of ``values`` in place. Where an order statistic next to a quantile is infinite, the quantile
    is the outer one of the two (the lower for a level below 1/2, the upper above): an infinite t* makes that bound
    infinite, never nan.
    """
    size = values.shape[1]
    positions = [level * (size - 1) for level in levels]
    below = [math.floor(p) for p in positions]
    above = [min(b + 1, size - 1) for b in below]
    values.partition(sorted(set(below + above)), axis=1)
    out = []
    for level, position, b, a in zip(levels, positions, below, above):
        lower, upper = values[:, b], values[:, a]
        fraction = position - b
        if fraction == 0:
            out.append(lower.copy())
            continue
        with np.errstate(invalid="ignore"):
            value = lower + fraction * (upper - lower)
        outer = lower if level < 0.5 else upper
        out.append(np.where(np.isfinite(lower) & np.isfinite(upper), value, outer))
    return out


def spearman(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation with average ranks for ties; nan when either input is constant."""
    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).ravel()
            for v in (a, b))
    if x.shape != y.shape:
        raise ValueError(f"spearman: shapes differ, {x.shape} vs {y.shape}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, values.size + 1):
        if end == values.size or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return ranks


@dataclass
class PairedDifference:
    """Per-image differences candidate - baseline of MoRF AUC, LeRF AUC and ABPC, their means and paired CIs.

    The three CIs resample the same images (one seed, one length), so they describe one bootstrap.
    """

    n_pairs: int
    abpc: float
    abpc_ci: tuple[float, float]
    morf_auc: float
    morf_auc_ci: tuple[float, float]
    lerf_auc: float
    lerf_auc_ci: tuple[float, float]
    seed: int
    n_boot: int


def paired_difference(
    candidate_morf: Sequence[float], candidate_lerf: Sequence[float], baseline_morf: Sequence[float],
    baseline_lerf: Sequence[float], seed: int = 0, n_boot: int = N_BOOTSTRAP,
) -> PairedDifference:
    """Mean differences d_i = candidate_i - baseline_i over paired images, with seeded paired bootstrap 95% CIs
    (:data:`CI_RULE`)."""
    cm, cl, bm, bl = (np.asarray(v, dtype=np.float64) for v in (candidate_morf, candidate_lerf, baseline_morf,
                                                                 baseline_lerf))
    if not cm.shape == cl.shape == bm.shape == bl.shape or cm.ndim != 1:
        raise ValueError("paired_difference: the four series must be 1-d and of one length (one value per pair)")
    d_morf, d_lerf = cm - bm, cl - bl
    d_abpc = (cl - cm) - (bl - bm)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    return PairedDifference(
        n_pairs=int(cm.size), abpc=mean(d_abpc), abpc_ci=bootstrap_ci(d_abpc, seed, n_boot),
        morf_auc=mean(d_morf), morf_auc_ci=bootstrap_ci(d_morf, seed, n_boot),
        lerf_auc=mean(d_lerf), lerf_auc_ci=bootstrap_ci(d_lerf, seed, n_boot), seed=seed, n_boot=n_boot)


@dataclass
class Summary:
    """Faithfulness of one (method, stage) over an image set.

    ``*_ci`` are bootstrap 95% CIs of the mean (:data:`CI_RULE`), resampling images, seeded by ``seed``.
    Better is lower for MoRF AUC, higher for LeRF AUC and ABPC.
    """

    method: str
    stage: str
    n_images: int
    morf_auc: float
    morf_auc_ci: tuple[float, float]
    lerf_auc: float
    lerf_auc_ci: tuple[float, float]
    abpc: float
    abpc_ci: tuple[float, float]
    seed: int
    n_boot: int


def summarize(
    records: Iterable[tuple[str, str, float, float]], seed: int = 0, n_boot: int = N_BOOTSTRAP
) -> list[Summary]:
    """Group per-image (method, stage, morf_auc, lerf_auc) records and summarise each group.

    The same seed is used for every statistic of a group, so the three CIs resample the same images.
    """
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    morf: float | np.ndarray  # a record's value, then a group's values
    lerf: float | np.ndarray
    for method, stage, morf, lerf in records:
        groups.setdefault((method, stage), []).append((float(morf), float(lerf)))
    out = []
    for (method, stage), pairs in groups.items():
        morf = np.array([p[0] for p in pairs])
        lerf = np.array([p[1] for p in pairs])
        abpc = lerf - morf
        out.append(Summary(
            method=method, stage=stage, n_images=len(pairs),
            morf_auc=float(morf.mean()), morf_auc_ci=bootstrap_ci(morf, seed, n_boot),
            lerf_auc=float(lerf.mean()), lerf_auc_ci=bootstrap_ci(lerf, seed, n_boot),
            abpc=float(abpc.mean()), abpc_ci=bootstrap_ci(abpc, seed, n_boot),
            seed=seed, n_boot=n_boot,
        ))
    return out
