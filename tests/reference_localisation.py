"""Plain reference implementations of the localisation metrics, used only by tests.

Written from the definitions (Arras, Osman & Samek 2022 for relevance mass and rank accuracy; Zhang et al. 2018 for
the pointing game; the ROC area as the share of correctly ordered (inside, outside) pairs), to be checked line by
line, not to be fast: plain Python loops over lists of floats, pairs enumerated one by one, ties of the rank
accuracy enumerated subset by subset (or sampled). Every function takes flat lists (or 1-d arrays) of the tokens
kept and returns a float, or None where the metric is not applicable.

Two families:
    * ``*_binary``: the textbook definitions on a 0/1 region (a list of booleans).
    * the weighted ones: a fractional region f in [0, 1] per token, each token counting f_i inside and 1 - f_i
      outside.
"""

from __future__ import annotations

import itertools
import math
import random


def keep_tokens(values, region, void=None):
    """Flatten the grids and drop the tokens whose void fraction is above 0.5; returns (values, region) lists."""
    flat_values = [float(v) for row in values for v in row]
    flat_region = [float(f) for row in region for f in row]
    if void is None:
        return flat_values, flat_region
    flat_void = [float(w) for row in void for w in row]
    kept_values, kept_region = [], []
    for v, f, w in zip(flat_values, flat_region, flat_void):
        if w <= 0.5:
            kept_values.append(v)
            kept_region.append(f)
    return kept_values, kept_region


def positive_part(values):
    """r+ = max(v, 0) token by token."""
    out = []
    for v in values:
        out.append(v if v > 0 else 0.0)
    return out


# -- binary region: the textbook definitions --------------------------------------------------------------------


def mass_binary(r, inside):
    """Relevance inside the region over all relevance."""
    within, total = 0.0, 0.0
    for value, is_in in zip(r, inside):
        total += value
        if is_in:
            within += value
    if total == 0 or not any(inside):
        return None
    return within / total


def rank_accuracy_binary(r, inside):
    """K = region size; the share of the region among the K highest values, averaged over every way of taking
    the tokens tied at the K-th value (all subsets of the tied tokens that fill the top K, equally likely)."""
    k = sum(1 for is_in in inside if is_in)
    if k == 0 or sum(r) == 0:
        return None
    kth = sorted(r, reverse=True)[k - 1]
    sure = [i for i in range(len(r)) if r[i] > kth]
    tied = [i for i in range(len(r)) if r[i] == kth]
    hits, count = 0.0, 0
    for chosen in itertools.combinations(tied, k - len(sure)):
        top = sure + list(chosen)
        hits += sum(1 for i in top if inside[i]) / k
        count += 1
    return hits / count


def auroc_binary(r, inside):
    """Share of (inside, outside) pairs where the inside token has the higher value, ties counting a half."""
    good, pairs = 0.0, 0
    for i in range(len(r)):
        if not inside[i]:
            continue
        for j in range(len(r)):
            if inside[j]:
                continue
            pairs += 1
            if r[i] > r[j]:
                good += 1.0
            elif r[i] == r[j]:
                good += 0.5
    if pairs == 0:
        return None
    return good / pairs


def pointing_binary(r, inside):
    """Hit if the maximum lies in the region; tied maxima each count for an equal share of one hit."""
    if not r or not any(inside):
        return None
    top = max(r)
    if top == 0:
        return None
    at_top = [i for i in range(len(r)) if r[i] == top]
    return sum(1 for i in at_top if inside[i]) / len(at_top)


# -- fractional region --------------------------------------------------------------------------------------------


def mass(r, f):
    """sum r_i f_i / sum r_i."""
    within, total = 0.0, 0.0
    for value, weight in zip(r, f):
        within += value * weight
        total += value
    if total == 0 or sum(f) == 0:
        return None
    return within / total


def rank_size(f):
    """K = round(sum f) (Python's round), at least 1."""
    return max(1, round(sum(f)))


def rank_accuracy(r, f, max_subsets=200_000):
    """Sum of f over the K tokens of highest value, over K, averaged over every subset of the tokens tied at the
    K-th value that fills the top K. Returns None too when the subsets are more than ``max_subsets``."""
    if sum(f) == 0 or sum(r) == 0:
        return None
    k = rank_size(f)
    kth = sorted(r, reverse=True)[k - 1]
    sure = [i for i in range(len(r)) if r[i] > kth]
    tied = [i for i in range(len(r)) if r[i] == kth]
    if math.comb(len(tied), k - len(sure)) > max_subsets:
        return None
    total, count = 0.0, 0
    for chosen in itertools.combinations(tied, k - len(sure)):
        top_sum = 0.0
        for i in sure + list(chosen):
            top_sum += f[i]
        total += top_sum / k
        count += 1
    return total / count


def rank_tied_subsets(r, f):
    """How many subsets :func:`rank_accuracy` enumerates (1 when nothing is tied at the K-th value)."""
    k = rank_size(f)
    kth = sorted(r, reverse=True)[k - 1]
    n_sure = sum(1 for v in r if v > kth)
    n_tied = sum(1 for v in r if v == kth)
    return math.comb(n_tied, k - n_sure)


def rank_accuracy_sampled(r, f, draws, seed=0):
    """Monte Carlo version: sort by (value, random key) descending ``draws`` times, average the top-K share."""
    if sum(f) == 0 or sum(r) == 0:
        return None
    k = rank_size(f)
    rng = random.Random(seed)
    total = 0.0
    for _ in range(draws):
        keys = [(r[i], rng.random(), i) for i in range(len(r))]
        keys.sort(reverse=True)
        total += sum(f[i] for _, _, i in keys[:k]) / k
    return total / draws


def auroc(r, f):
    """sum_{i,j} f_i (1 - f_j) [1(r_i > r_j) + 0.5 1(r_i == r_j)] / (sum f * sum (1 - f)), a double loop."""
    numerator = 0.0
    for i in range(len(r)):
        for j in range(len(r)):
            if r[i] > r[j]:
                numerator += f[i] * (1 - f[j])
            elif r[i] == r[j]:
                numerator += 0.5 * f[i] * (1 - f[j])
    positive = sum(f)
    negative = sum(1 - w for w in f)
    if positive == 0 or negative == 0:
        return None
    return numerator / (positive * negative)


def pointing(r, f):
    """Mean of f over the tokens at the maximum value; None when the maximum is 0 or the region is empty."""
    if not r or sum(f) == 0:
        return None
    top = max(r)
    if top == 0:
        return None
    tied = [f[i] for i in range(len(r)) if r[i] == top]
    return sum(tied) / len(tied)


def area(f):
    """The region's area fraction sum f / n; None with no token."""
    return sum(f) / len(f) if f else None


def split_tokens(r, f, m):
    """The finer binary grid of a region whose fractions are multiples of 1/m: each token becomes m sub-tokens of
    its value, round(m f_i) of them inside the region. Returns (values, inside)."""
    values, inside = [], []
    for value, weight in zip(r, f):
        n_in = round(m * weight)
        for s in range(m):
            values.append(value)
            inside.append(s < n_in)
    return values, inside
