"""Aggregate faithfulness over an image set: means with seeded percentile-bootstrap 95% CIs.

A random map's expected ABPC is exactly 0 (its MoRF and LeRF removal orders have the same distribution), so a
mean-ABPC CI whose lower bound is above 0 says "better than a random map" over the images measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["bootstrap_ci", "Summary", "summarize", "N_BOOTSTRAP", "CI_LEVEL"]

N_BOOTSTRAP = 10_000
CI_LEVEL = 0.95


def bootstrap_ci(
    values: Sequence[float], seed: int = 0, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean, resampling the values with replacement.

    Args:
        values: one number per image.
        seed: seeds numpy's PCG64 generator; the same values and seed give the same interval.
        n_boot: bootstrap resamples.
        level: coverage, e.g. 0.95.

    Returns:
        (low, high). A single value gives (v, v); no values give (nan, nan).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence, got shape {data.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


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
