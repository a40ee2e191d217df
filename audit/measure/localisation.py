"""Localisation: where a map puts its relevance, against a known region, on the patch-token grid.

Inputs for one (image, map): ``values``, the raw map on the grid (gh, gw) (it may be negative), and ``region``, the
fraction of each token's area inside the region, in [0, 1] (fractional at the region's edges). ``void``, when
given, is each token's fraction of ignored area: tokens whose void fraction is above 0.5 are left out of every
metric. Every metric reads r = max(values, 0) (r+): a map's positive part is its evidence for the class. With
f_i the region fraction of token i and n the tokens kept:

- ``mass``, relevance mass accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): sum_i r_i f_i / sum_i r_i.
- ``rank_accuracy``, relevance rank accuracy (same paper): with K = round(sum_i f_i), at least 1, the mean of f over
  the K tokens of highest r, tokens tied at the K-th value taken in a uniformly random order (its expected value).
- ``auroc``: the map as a score of the region, each token a positive of weight f_i and a negative of weight
  1 - f_i: sum_{i,j} f_i (1 - f_j) [1(r_i > r_j) + 1/2 1(r_i = r_j)] / (sum_i f_i sum_j (1 - f_j)).
- ``pointing``, the pointing game (Zhang et al. 2018): f at the token of maximal r, the mean of f over the tokens
  tied at the maximum.

Fractional weights generalise the binary definitions and reduce to them exactly when ``region`` is 0/1: with every
f_i a multiple of 1/m, ``mass``, ``auroc`` and ``pointing`` equal the binary metrics on a finer grid that splits
each token into m sub-tokens of its relevance, m f_i of them inside the region. The chance level of ``mass``,
``rank_accuracy`` and ``pointing`` is the region's area fraction sum_i f_i / n (``area``: a map spread evenly, or a
random map, scores it in expectation), that of ``auroc`` 0.5. Higher is better for all four.

Where Quantus 0.6.0 (``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``AUC``, ``PointingGame``) differs, and
which is right (``tests/test_localisation.py`` shows each on a concrete map):

- Sign. Quantus scores the map as given (``abs=False`` by default), so on a map with negative values its mass
  sum_i a_i s_i / sum_i a_i is no fraction: [[3, -2], [1, 0]] with the region the top-left token gives 1.5, and
  ``abs=True`` counts negative evidence as mass (0.5). Arras et al. define both ratios on a non-negative pooled
  heatmap: their evaluation code pools the channels with ``sum,pos`` (the positive part, our r+), ``sum,abs``,
  ``max-norm`` or a norm, never into a signed map. On r+ the two agree to rounding.
- Ties in rank accuracy. The paper takes "the K highest relevance values" and does not say which of tied values;
  Quantus takes them in ``np.argsort`` order, so a map's score depends on how the tokens are numbered: the map
  [[1, 1], [0.5, 0.25]] scores 0 against the top-right token and 1 against the top-left (a mirrored image changes
  the score). The expected value under a random order is the only choice that does not depend on the numbering
  (0.5 for both); without ties at the K-th value the two agree exactly.
- Ties in the pointing game. Zhang et al. count a hit when "the maximum point" lies in the region, one point.
  Quantus counts a hit when any of the tied maxima does, so a flat map hits every region: an all-zero r+ map (an
  all-negative map) scores 1, and [[1, 1], [0.5, 0.25]] scores 1 against either top token. Here the hit is shared
  (0.5), and a map with no positive value points nowhere (not applicable). Quantus also scores an empty region as
  a hit: it writes NaN into a boolean array, which reads True. With a unique positive maximum the two agree.
  Zhang et al. allow a 15-pixel tolerance around the region; on a patch grid, whose tokens are 14-16 pixels wide,
  none is applied.
- AUROC. Quantus ranks the signed map, so the order among negative values counts; here all of them are tied at 0
  (r+), as for the other three metrics. No paper fixes this: the AUROC of a region is Fawcett's (2006) ROC area
  with the map as the score, and scoring r+ keeps it reading the same evidence as the other three (how strongly a
  token argues against the class says nothing about where the class is). On r+ the two agree exactly, ties
  included (``sklearn``'s trapezoids give a tied pair half, as the Mann-Whitney form does).

Not applicable (None): ``mass`` and ``rank_accuracy`` when the region is empty or sum r = 0; ``auroc`` when the
region is empty or covers every token (sum f = 0 or sum (1 - f) = 0); ``pointing`` when max r = 0 or the region is
empty; every metric, and ``area``, when no token is left (all void).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["auroc", "CHANCE", "DIRECTION", "localisation", "mass_in", "METRICS", "pointing_game", "relevance_mass",
           "relevance_rank_accuracy", "VOID_LIMIT"]

METRICS = ("mass", "rank_accuracy", "auroc", "pointing")
# The chance level of each metric: "area" (the region's area fraction, ``localisation(...)["area"]``) or a number.
CHANCE: dict[str, str | float] = {"mass": "area", "rank_accuracy": "area", "auroc": 0.5, "pointing": "area"}
# Which way is better for each metric (Quantus' convention of declaring it on every metric).
DIRECTION = {"mass": "higher", "rank_accuracy": "higher", "auroc": "higher", "pointing": "higher"}
VOID_LIMIT = 0.5  # tokens whose void fraction is above this are left out
_FRACTION_TOL = 1e-9  # how far outside [0, 1] a fraction may be from float rounding (it is clipped)

Grid = np.ndarray | torch.Tensor | Sequence


def _array(x: Grid, name: str) -> np.ndarray:
    """A float64 numpy copy of a grid given as a numpy array, a torch tensor or nested lists."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        out = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a grid of numbers ({exc})") from None
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: has values that are not finite")
    return out


def _fraction(x: Grid, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A per-token fraction grid of the map's shape, checked to lie in [0, 1] (up to rounding) and clipped there."""
    out = _array(x, name)
    if out.shape != shape:
        raise ValueError(f"{name}: shape {out.shape} does not match the map's shape {shape}")
    if out.size and (out.min() < -_FRACTION_TOL or out.max() > 1 + _FRACTION_TOL):
        raise ValueError(f"{name}: fractions must lie in [0, 1], got values in [{out.min():g}, {out.max():g}]")
    return np.clip(out, 0.0, 1.0)


def _prepare(values: Grid, region: Grid, void: Grid | None) -> tuple[np.ndarray, np.ndarray]:
    """(r+, f) as flat float64 arrays over the tokens kept (void fraction at most :data:`VOID_LIMIT`)."""
    v = _array(values, "values")
    f = _fraction(region, "region", v.shape)
    r = np.maximum(v, 0.0).ravel()
    f = f.ravel()
    if void is not None:
        keep = _fraction(void, "void", v.shape).ravel() <= VOID_LIMIT
        r, f = r[keep], f[keep]
    return r, f


def _mass(r: np.ndarray, f: np.ndarray) -> float | None:
    total = float(r.sum())
    if total == 0.0 or not f.any():
        return None
    return float(np.dot(r, f) / total)


def _rank_accuracy(r: np.ndarray, f: np.ndarray) -> float | None:
    if float(r.sum()) == 0.0 or not f.any():
        return None
    k = max(1, round(float(f.sum())))  # Python's round: halves to even
    kth = np.sort(r)[::-1][k - 1]
    above, tied = r > kth, r == kth
    slots = k - int(above.sum())  # places in the top K left to the tokens tied at the K-th value
    return float((f[above].sum() + slots * f[tied].mean()) / k)


def _auroc(r: np.ndarray, f: np.ndarray) -> float | None:
    g = 1.0 - f
    positive, negative = float(f.sum()), float(g.sum())
    if positive == 0.0 or negative == 0.0:
        return None
    # weighted midranks: each distinct value's negative weight strictly below it plus half its own
    levels, index = np.unique(r, return_inverse=True)
    negative_at = np.bincount(index.ravel(), weights=g, minlength=levels.size)
    below = np.cumsum(negative_at) - negative_at
    credit = (below + 0.5 * negative_at)[index.ravel()]
    return float(np.dot(f, credit) / (positive * negative))


def _pointing(r: np.ndarray, f: np.ndarray) -> float | None:
    if r.size == 0 or not f.any():
        return None
    top = float(r.max())
    if top == 0.0:
        return None
    return float(f[r == top].mean())


def relevance_mass(values: Grid, region: Grid, void: Grid | None = None) -> float | None:
    """Relevance mass accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): the share of r+ inside the region.

    sum_i r_i f_i / sum_i r_i with r = max(values, 0). Chance: the region's area fraction. Higher is better.

    Args:
        values: the raw map (gh, gw): numpy, torch or nested lists; negative values count as 0.
        region: per-token fraction of the token's area inside the region, in [0, 1], the map's shape.
        void: per-token fraction of ignored area, or None; tokens above :data:`VOID_LIMIT` are left out.

    Returns:
        The mass in [0, 1]; None when sum r = 0 or the region is empty.

    Raises:
        ValueError: a grid whose shape differs from the map's, a fraction outside [0, 1], a non-finite value.
    """
    return _mass(*_prepare(values, region, void))


def mass_in(values: Grid, region: Grid, void: Grid | None = None) -> float | None:
    """Relevance mass on a stamp (or any region): :func:`relevance_mass`, the share of r+ inside ``region``."""
    return relevance_mass(values, region, void)


def relevance_rank_accuracy(values: Grid, region: Grid, void: Grid | None = None) -> float | None:
    """Relevance rank accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): the region's share of the top-K tokens.

    K = round(sum_i f_i) (Python's round, halves to even), at least 1; the accuracy is the sum of f over the K
    tokens of highest r+ divided by K. Tokens tied at the K-th value fill the places left in a uniformly random
    order: the expected value, (sum of f above the K-th value + places left * mean f of the tied tokens) / K, which
    does not depend on how the tokens are numbered. Chance: the region's area fraction. Higher is better.

    Args:
        values: the raw map (gh, gw); negative values count as 0.
        region: per-token region fraction in [0, 1], the map's shape.
        void: per-token void fraction, or None.

    Returns:
        The accuracy in [0, 1]; None when sum r = 0 or the region is empty.

    Raises:
        ValueError: as for :func:`relevance_mass`.
    """
    return _rank_accuracy(*_prepare(values, region, void))


def auroc(values: Grid, region: Grid, void: Grid | None = None) -> float | None:
    """Area under the ROC curve of r+ as a score of the region (Fawcett 2006), weighted Mann-Whitney form.

    Each token is a positive of weight f_i and a negative of weight 1 - f_i:
    sum_{i,j} f_i (1 - f_j) [1(r_i > r_j) + 1/2 1(r_i = r_j)] / (sum_i f_i sum_j (1 - f_j)), computed in
    O(n log n) from weighted midranks. With a 0/1 region it is the ROC area, ties counted as half a pair. Chance:
    0.5. Higher is better.

    Args:
        values: the raw map (gh, gw); negative values count as 0 (tied with each other).
        region: per-token region fraction in [0, 1], the map's shape.
        void: per-token void fraction, or None.

    Returns:
        The AUROC in [0, 1]; None when the region is empty or covers every token fully.

    Raises:
        ValueError: as for :func:`relevance_mass`.
    """
    return _auroc(*_prepare(values, region, void))


def pointing_game(values: Grid, region: Grid, void: Grid | None = None) -> float | None:
    """Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop"): is the maximum inside?

    The score is f at the token of maximal r+; tokens tied at the maximum share the hit (the mean of their f, the
    expected hit of one of them picked at random). No tolerance around the region (the paper's is 15 pixels, about
    one token). Chance: the region's area fraction. Higher is better.

    Args:
        values: the raw map (gh, gw); negative values count as 0.
        region: per-token region fraction in [0, 1], the map's shape.
        void: per-token void fraction, or None.

    Returns:
        The hit in [0, 1]; None when max r+ = 0 (the map points nowhere) or the region is empty.

    Raises:
        ValueError: as for :func:`relevance_mass`.
    """
    return _pointing(*_prepare(values, region, void))


def localisation(values: Grid, region: Grid, void: Grid | None = None) -> dict[str, float | None]:
    """All four localisation metrics of one map against one region, and the region's area fraction.

    Args:
        values: the raw map (gh, gw): numpy, torch or nested lists; negative values count as 0.
        region: per-token fraction of the token's area inside the region, in [0, 1], the map's shape.
        void: per-token fraction of ignored area, or None; tokens above :data:`VOID_LIMIT` are left out of all.

    Returns:
        ``{"mass", "rank_accuracy", "auroc", "pointing", "area"}``: floats, or None where not applicable (see the
        module docstring). ``area`` = sum_i f_i / n over the tokens kept, the chance level of every metric whose
        :data:`CHANCE` is ``"area"``; None when no token is kept.

    Raises:
        ValueError: a grid whose shape differs from the map's, a fraction outside [0, 1], a non-finite value.
    """
    r, f = _prepare(values, region, void)
    return {
        "mass": _mass(r, f),
        "rank_accuracy": _rank_accuracy(r, f),
        "auroc": _auroc(r, f),
        "pointing": _pointing(r, f),
        "area": float(f.sum() / f.size) if f.size else None,
    }
