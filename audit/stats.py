"""Statistics over an image set: means (and medians) with seeded percentile-bootstrap 95% CIs, paired differences
between two models on the same images, and Spearman rank correlation.

A random map's expected ABPC is exactly 0 (its MoRF and LeRF removal orders have the same distribution), so a
mean-ABPC CI whose lower bound is above 0 says "better than a random map" over the images measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["bootstrap_ci", "PairedDifference", "paired_difference", "spearman", "Summary", "summarize", "N_BOOTSTRAP",
           "CI_LEVEL"]

N_BOOTSTRAP = 10_000
CI_LEVEL = 0.95


def bootstrap_ci(
    values: Sequence[float], seed: int = 0, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL,
    statistic: str = "mean",
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean (or median), resampling the values with replacement.

    The resamples depend only on the seed and the number of values: two series of the same length bootstrapped
    with the same seed resample the same images (a paired bootstrap, e.g. of MoRF, LeRF and ABPC differences).

    Args:
        values: one number per image.
        seed: seeds numpy's PCG64 generator; the same values and seed give the same interval.
        n_boot: bootstrap resamples.
        level: coverage, e.g. 0.95.
        statistic: ``"mean"`` or ``"median"``.

    Returns:
        (low, high). A single value gives (v, v); no values give (nan, nan).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence, got shape {data.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {statistic!r}")
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        stats[start:stop] = STATISTICS[statistic](data[rng.integers(0, data.size, size=(stop - start, data.size))],
                                                  axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


STATISTICS = {"mean": np.mean, "median": np.median}


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
    """Mean differences d_i = candidate_i - baseline_i over paired images, with a seeded paired bootstrap 95% CI."""
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

    ``*_ci`` are percentile-bootstrap 95% CIs of the mean, resampling images, seeded by ``seed``.
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
