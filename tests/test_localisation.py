"""Localisation metrics (audit/measure/localisation.py) against plain references, hand-worked maps and Quantus 0.6.0."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import reference_localisation as ref
import torch

from audit.measure.localisation import (
    CHANCE,
    DIRECTION,
    METRICS,
    auroc,
    localisation,
    mass_in,
    pointing_game,
    relevance_mass,
    relevance_rank_accuracy,
)

EXACT = 1e-12
REFERENCES = {"mass": ref.mass, "auroc": ref.auroc, "pointing": ref.pointing}
SINGLE = {"mass": relevance_mass, "rank_accuracy": relevance_rank_accuracy, "auroc": auroc, "pointing": pointing_game}


def _close(got: float | None, want: float | None, tol: float = EXACT) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return abs(got - want) <= tol


def _random_values(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Continuous, heavily tied, mostly negative, all-zero or constant maps."""
    kind = rng.integers(6)
    if kind == 0:
        return rng.normal(size=shape)
    if kind == 1:
        return rng.integers(-2, 4, size=shape).astype(float)  # ties, zeros and negatives
    if kind == 2:
        return rng.normal(-1.0, 1.0, size=shape)  # mostly negative: r+ is mostly tied at 0
    if kind == 3:
        return np.round(rng.exponential(size=shape), 1)
    if kind == 4:
        return np.zeros(shape) if rng.random() < 0.5 else -rng.random(shape)  # points nowhere
    return np.full(shape, 0.7)


def _random_fractions(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Binary, fractional, quarter-step, empty or full regions."""
    kind = rng.integers(6)
    if kind == 0:
        return (rng.random(shape) < rng.random()).astype(float)
    if kind == 1:
        f = rng.random(shape)
        f[f < 0.3] = 0.0  # outside
        f[f > 0.8] = 1.0  # inside
        return f
    if kind == 2:
        return rng.integers(0, 5, size=shape) / 4.0
    if kind == 3:
        return np.zeros(shape)
    if kind == 4:
        return np.ones(shape)
    return rng.random(shape)


def _random_void(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray | None:
    if rng.random() < 0.5:
        return None
    return rng.choice([0.0, 0.0, 0.25, 0.5, 0.75, 1.0], size=shape)  # 0.5 is kept, above it left out


def _cases(seed: int, n: int, max_side: int = 6):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = (int(rng.integers(1, max_side + 1)), int(rng.integers(1, max_side + 1)))
        yield _random_values(rng, shape), _random_fractions(rng, shape), _random_void(rng, shape)


# (a) every metric equals the reference on random maps


def test_random_maps_match_reference():
    exact_ranks = 0
    n = 500
    for values, region, void in _cases(seed=0, n=n):
        got = localisation(values, region, void)
        v, f = ref.keep_tokens(values.tolist(), region.tolist(), None if void is None else void.tolist())
        r = ref.positive_part(v)
        for name, reference in REFERENCES.items():
            assert _close(got[name], reference(r, f)), (name, values, region, void)
            assert _close(SINGLE[name](values, region, void), got[name])
        assert _close(got["area"], ref.area(f))
        if f and ref.rank_tied_subsets(r, f) <= 20_000:  # enumerable ties
            assert _close(got["rank_accuracy"], ref.rank_accuracy(r, f)), (values, region, void)
            exact_ranks += 1
        assert _close(relevance_rank_accuracy(values, region, void), got["rank_accuracy"])
        assert _close(mass_in(values, region, void), got["mass"])
    assert exact_ranks > 0.9 * n


def test_binary_regions_match_textbook_definitions():
    for values, region, void in _cases(seed=1, n=200):
        inside = (region > 0.5).astype(float)
        got = localisation(values, inside, void)
        v, f = ref.keep_tokens(values.tolist(), inside.tolist(), None if void is None else void.tolist())
        r, binary = ref.positive_part(v), [x == 1.0 for x in f]
        assert _close(got["mass"], ref.mass_binary(r, binary))
        assert _close(got["auroc"], ref.auroc_binary(r, binary))
        assert _close(got["pointing"], ref.pointing_binary(r, binary))
        if binary and ref.rank_tied_subsets(r, f) <= 20_000:
            assert _close(got["rank_accuracy"], ref.rank_accuracy_binary(r, binary))


def test_fractional_regions_are_binary_regions_on_a_finer_grid():
    # region fractions in quarters: each token is 4 sub-tokens of its value, 4 f of them inside
    rng = np.random.default_rng(7)
    for values, _, void in _cases(seed=2, n=150, max_side=5):
        region = rng.integers(0, 5, size=values.shape) / 4.0
        got = localisation(values, region, void)
        v, f = ref.keep_tokens(values.tolist(), region.tolist(), None if void is None else void.tolist())
        fine, inside = ref.split_tokens(ref.positive_part(v), f, 4)
        assert _close(got["mass"], ref.mass_binary(fine, inside))
        assert _close(got["auroc"], ref.auroc_binary(fine, inside))
        assert _close(got["pointing"], ref.pointing_binary(fine, inside))


def test_rank_accuracy_large_ties_match_sampled_tie_breaks():
    # 14 x 14 maps, most of r+ tied at 0 across the K-th value: too many subsets to enumerate; 4000 seeded random
    # tie-breaks, the mean within 5 standard errors (a per-draw share lies in [0, 1], so its sd is at most 0.5)
    rng = np.random.default_rng(3)
    draws = 4000
    for _ in range(4):
        values = rng.normal(-1.0, 1.0, size=(14, 14))
        region = np.zeros((14, 14))
        region[3:11, 2:12] = 1.0
        region[2, 2:12] = 0.5
        r, f = ref.positive_part(values.ravel().tolist()), region.ravel().tolist()
        assert ref.rank_tied_subsets(r, f) > 10**6
        sampled = ref.rank_accuracy_sampled(r, f, draws=draws, seed=int(rng.integers(2**31)))
        assert abs(relevance_rank_accuracy(values, region) - sampled) <= 5 * 0.5 / math.sqrt(draws)


def test_inputs_as_numpy_torch_or_lists():
    for values, region, void in _cases(seed=4, n=40):
        want = localisation(values, region, void)
        lists = localisation(values.tolist(), region.tolist(), None if void is None else void.tolist())
        tensors = localisation(torch.from_numpy(values), torch.from_numpy(region),
                               None if void is None else torch.from_numpy(void))
        assert lists == want
        assert tensors == want


def test_auroc_is_fast_on_a_large_grid():
    # O(n log n): 100,000 tokens with ties and fractional weights
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=(250, 400)), 2)
    region = np.clip(rng.normal(0.3, 0.4, size=(250, 400)), 0, 1)
    value = auroc(values, region)
    assert value is not None and 0.45 < value < 0.55


# (b) hand-worked 2 x 2 maps


def test_hand_binary():
    # r+ = [0.9, 0.1, 0, 0.3] (row-major), region = tokens 0 and 3
    # mass = (0.9 + 0.3) / 1.3 = 12/13; K = 2, top 2 = {0.9, 0.3} both inside: 1
    # AUROC: inside {0.9, 0.3} vs outside {0.1, 0}: all 4 pairs ordered: 1; pointing: max 0.9 inside: 1; area 1/2
    got = localisation([[0.9, 0.1], [-0.5, 0.3]], [[1, 0], [0, 1]])
    assert got == pytest.approx({"mass": 12 / 13, "rank_accuracy": 1.0, "auroc": 1.0, "pointing": 1.0, "area": 0.5})


def test_hand_ties():
    # r+ = [1, 1, 0.5, 0.25], region = token 1 only
    # mass = 1 / 2.75 = 4/11; K = 1: tokens 0 and 1 tied for the one place: expected 1 * mean(0, 1) = 1/2
    # AUROC: token 1 against 1 (tie: 1/2), 0.5 and 0.25 (wins): 2.5 / 3 = 5/6
    # pointing: maxima at tokens 0 and 1 share the hit: 1/2; area 1/4
    got = localisation([[1, 1], [0.5, 0.25]], [[0, 1], [0, 0]])
    assert got == pytest.approx({"mass": 4 / 11, "rank_accuracy": 0.5, "auroc": 5 / 6, "pointing": 0.5, "area": 0.25})


def test_hand_fractional():
    # r+ = [4, 0, 2, 2], f = [1, 0.5, 0, 0.75], 1 - f = [0, 0.5, 1, 0.25]
    # mass = (4 * 1 + 2 * 0.75) / 8 = 11/16; area = 2.25 / 4 = 9/16
    # K = round(2.25) = 2: token 0 (f = 1) above the K-th value 2, tokens 2 and 3 tied for 1 place:
    #   (1 + mean(0, 0.75)) / 2 = 11/16
    # AUROC numerator, sum over i of f_i * sum_j (1 - f_j) [r_i > r_j + 1/2 r_i = r_j]:
    #   i=0 (r 4): 1 * (0 * 1/2 + 0.5 + 1 + 0.25) = 1.75; i=1 (r 0): 0.5 * (0.5 * 1/2) = 0.125; i=2: f = 0
    #   i=3 (r 2): 0.75 * (0.5 + 1 * 1/2 + 0.25 * 1/2) = 0.84375; total 2.71875 over 2.25 * 1.75 = 3.9375: 29/42
    # pointing: max 4 at token 0, f = 1: 1
    got = localisation([[4, -1], [2, 2]], [[1, 0.5], [0, 0.75]])
    assert got == pytest.approx({"mass": 11 / 16, "rank_accuracy": 11 / 16, "auroc": 29 / 42, "pointing": 1.0,
                                 "area": 9 / 16}, abs=EXACT)


def test_hand_void():
    # void [[0.6, 0], [0.5, 1]]: tokens 0 (0.6) and 3 (1) are left out, token 2 (exactly 0.5) is kept
    # kept: r+ = [1, 2], f = [1, 1]: mass 1, K = 2: 1, AUROC: nothing outside: None, pointing: max 2 inside: 1
    values, region = [[5, 1], [2, 0]], [[0, 1], [1, 0]]
    got = localisation(values, region, void=[[0.6, 0], [0.5, 1]])
    assert got == {"mass": 1.0, "rank_accuracy": 1.0, "auroc": None, "pointing": 1.0, "area": 1.0}
    # without the void, the maximum 5 (token 0) is outside the region
    assert pointing_game(values, region) == 0.0


def test_rank_size_rounds_halves_to_even_and_is_at_least_one():
    values = [[4, 3], [2, 1]]
    # sum f = 2.5: K = 2 (half to even), the top 2 both inside: 1 (K = 3 would give 2.5 / 3)
    assert relevance_rank_accuracy(values, [[1, 1], [0.5, 0]]) == 1.0
    # sum f = 3.5: K = 4: (1 + 1 + 0.5 + 1) / 4
    assert relevance_rank_accuracy(values, [[1, 1], [0.5, 1]]) == 0.875
    # sum f = 0.2 rounds to 0: K = 1, the top token's f
    assert relevance_rank_accuracy(values, [[0.2, 0], [0, 0]]) == 0.2
    assert relevance_rank_accuracy(values, [[0, 0.2], [0, 0]]) == 0.0


def test_declarations():
    assert METRICS == ("mass", "rank_accuracy", "auroc", "pointing")
    assert set(CHANCE) == set(DIRECTION) == set(METRICS)
    assert all(DIRECTION[m] == "higher" for m in METRICS)
    assert CHANCE["auroc"] == 0.5 and all(CHANCE[m] == "area" for m in ("mass", "rank_accuracy", "pointing"))


def test_chance_levels():
    # a flat map scores chance: the area on mass, rank accuracy (all tied) and pointing (all tied), 0.5 on AUROC
    rng = np.random.default_rng(6)
    region = rng.random((5, 7))
    got = localisation(np.ones((5, 7)), region)
    assert got["mass"] == pytest.approx(got["area"], abs=EXACT)
    assert got["rank_accuracy"] == pytest.approx(got["area"], abs=EXACT)
    assert got["pointing"] == pytest.approx(got["area"], abs=EXACT)
    assert got["auroc"] == pytest.approx(0.5, abs=EXACT)


# (c) not applicable


def test_map_without_positive_values():
    region = [[1, 0], [0, 0]]
    for values in ([[0, 0], [0, 0]], [[-1, -2], [-3, -0.5]]):
        got = localisation(values, region)
        assert got["mass"] is None and got["rank_accuracy"] is None and got["pointing"] is None
        assert got["auroc"] == 0.5  # every token tied at 0: ranks nothing, chance
        assert got["area"] == 0.25


def test_empty_and_full_regions():
    values = [[1, 2], [3, -1]]
    assert localisation(values, np.zeros((2, 2))) == {"mass": None, "rank_accuracy": None, "auroc": None,
                                                      "pointing": None, "area": 0.0}
    full = localisation(values, np.ones((2, 2)))
    assert full == {"mass": 1.0, "rank_accuracy": 1.0, "auroc": None, "pointing": 1.0, "area": 1.0}


def test_all_tokens_void():
    got = localisation([[1, 2], [3, 4]], [[1, 0], [0, 1]], void=np.ones((2, 2)))
    assert got == {"mass": None, "rank_accuracy": None, "auroc": None, "pointing": None, "area": None}


# (d) bad input


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"region: shape \(3, 2\) does not match the map's shape \(2, 3\)") as info:
        localisation(np.zeros((2, 3)), np.zeros((3, 2)))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"void: shape \(2, 2\) does not match the map's shape \(2, 3\)"):
        relevance_mass(np.zeros((2, 3)), np.zeros((2, 3)), void=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"shape \(4,\) does not match the map's shape \(2, 2\)"):
        auroc(torch.zeros(2, 2), [0, 1, 0, 1])


def test_fractions_outside_unit_interval_and_non_finite_values():
    with pytest.raises(ValueError, match="region: fractions must lie in"):
        localisation([[1, 2]], [[0, 1.5]])
    with pytest.raises(ValueError, match="void: fractions must lie in"):
        localisation([[1, 2]], [[0, 1]], void=[[-0.2, 0]])
    with pytest.raises(ValueError, match="values: has values that are not finite"):
        localisation([[1, float("nan")]], [[0, 1]])
    # float rounding just outside [0, 1] is clipped
    assert relevance_mass([[1, 1]], [[1 + 1e-12, -1e-12]]) == 0.5


# (e) Quantus 0.6.0: RelevanceMassAccuracy, RelevanceRankAccuracy, AUC, PointingGame


def _quantus(metric, a: np.ndarray, s: np.ndarray, **init) -> np.ndarray:
    """One Quantus metric on precomputed maps a (N, H, W) and binary regions s (N, H, W), as floats."""
    init = {"abs": False, "normalise": False, "disable_warnings": True, **init}
    a, s = np.asarray(a, dtype=float)[:, None], np.asarray(s, dtype=float)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(**init)(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(len(a), dtype=int),
                                a_batch=a, s_batch=s)
    return np.asarray(scores, dtype=float)


def _binary_batch(seed: int, n: int, shape: tuple[int, int], quantised: bool = False):
    """n maps' r+ and binary regions that are neither empty nor full."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, *shape))
    if quantised:
        values = np.round(values)  # heavy ties
    regions = (rng.random((n, *shape)) < rng.uniform(0.1, 0.6, size=(n, 1, 1))).astype(float)
    regions[:, 0, 0], regions[:, -1, -1] = 1.0, 0.0
    values[:, 1, 1] = abs(values[:, 1, 1]) + 0.1  # some positive relevance in every map
    return np.maximum(values, 0.0), regions


def _ours(metric: str, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.array([np.nan if (x := SINGLE[metric](ai, si)) is None else x for ai, si in zip(a, s)])


@pytest.mark.peer
@pytest.mark.parametrize("shape", [(6, 6), (7, 5)])
def test_quantus_mass_and_auroc_agree_on_positive_part(shape):
    quantus = pytest.importorskip("quantus")
    for quantised in (False, True):
        a, s = _binary_batch(10 + shape[1], 150, shape, quantised)
        np.testing.assert_allclose(_quantus(quantus.RelevanceMassAccuracy, a, s), _ours("mass", a, s), atol=1e-9)
        # sklearn's ROC trapezoids give a tied (inside, outside) pair half, as the Mann-Whitney form does
        np.testing.assert_allclose(_quantus(quantus.AUC, a, s), _ours("auroc", a, s), atol=1e-9)


@pytest.mark.peer
def test_quantus_rank_accuracy_agrees_without_ties_at_the_kth_value():
    quantus = pytest.importorskip("quantus")
    a, s = _binary_batch(20, 300, (6, 6))
    untied = []
    for ai, si in zip(a, s):
        k = int(si.sum())
        ordered = np.sort(ai.ravel())[::-1]
        untied.append(k == ordered.size or ordered[k - 1] > ordered[k])
    untied = np.array(untied)
    assert untied.sum() >= 200
    a, s = a[untied], s[untied]
    np.testing.assert_allclose(_quantus(quantus.RelevanceRankAccuracy, a, s), _ours("rank_accuracy", a, s),
                               atol=1e-9)


@pytest.mark.peer
def test_quantus_pointing_game_agrees_with_a_unique_positive_maximum():
    quantus = pytest.importorskip("quantus")
    a, s = _binary_batch(30, 300, (6, 6))
    assert all((ai == ai.max()).sum() == 1 for ai in a)
    np.testing.assert_allclose(_quantus(quantus.PointingGame, a, s), _ours("pointing", a, s), atol=1e-9)


@pytest.mark.peer
def test_quantus_mass_on_a_signed_map_is_no_fraction():
    # Quantus scores the map as given: sum a s / sum a = 3 / (3 - 2 + 1 + 0) = 1.5 by default (abs=False; its
    # default normalise=True divides by the max |a|, which leaves the ratio), and |a| counts the negative evidence
    # as mass: 3 / 6 = 0.5. Arras et al. score a non-negative pooled heatmap; r+ (their "sum,pos") gives 3/4.
    quantus = pytest.importorskip("quantus")
    a, s = np.array([[[3.0, -2.0], [1.0, 0.0]]]), np.array([[[1.0, 0.0], [0.0, 0.0]]])
    assert _quantus(quantus.RelevanceMassAccuracy, a, s, normalise=True)[0] == pytest.approx(1.5)
    assert _quantus(quantus.RelevanceMassAccuracy, a, s, abs=True)[0] == pytest.approx(0.5)
    assert relevance_mass(a[0], s[0]) == 0.75
    assert _quantus(quantus.RelevanceMassAccuracy, np.maximum(a, 0), s)[0] == pytest.approx(0.75)


@pytest.mark.peer
def test_quantus_rank_accuracy_ties_depend_on_token_order():
    # [[1, 1], [0.5, 0.25]], K = 1, tokens 0 and 1 tied at the top: Quantus takes the first in np.argsort's order,
    # so the two mirrored regions (one token each) score 0 and 1 between them; the expected value is 1/2 for both
    quantus = pytest.importorskip("quantus")
    a = np.array([[[1.0, 1.0], [0.5, 0.25]]] * 2)
    s = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    got = _quantus(quantus.RelevanceRankAccuracy, a, s)
    assert sorted(got.tolist()) == [0.0, 1.0]
    assert relevance_rank_accuracy(a[0], s[0]) == relevance_rank_accuracy(a[1], s[1]) == 0.5


@pytest.mark.peer
def test_quantus_pointing_game_counts_any_tied_maximum_and_empty_regions():
    quantus = pytest.importorskip("quantus")
    # tied maxima at tokens 0 and 1: Quantus hits both one-token regions (any tied maximum inside); shared: 1/2
    a = np.array([[[1.0, 1.0], [0.5, 0.25]]] * 2)
    s = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    assert _quantus(quantus.PointingGame, a, s).tolist() == [1.0, 1.0]
    assert pointing_game(a[0], s[0]) == pointing_game(a[1], s[1]) == 0.5
    # an all-negative map has r+ = 0 everywhere: every token is "the maximum", a hit for Quantus; ours: points nowhere
    # (a second map keeps Quantus's check that the batch is not all zero quiet)
    a = np.array([np.maximum([[-1.0, -2.0], [-3.0, -4.0]], 0), [[1.0, 0.0], [0.0, 0.0]]])
    s = np.array([[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    assert _quantus(quantus.PointingGame, a, s)[0] == 1.0
    assert pointing_game([[-1.0, -2.0], [-3.0, -4.0]], s[0]) is None
    # an empty region: Quantus writes NaN into its boolean hits, which reads True (its mass says NaN)
    a = np.array([[[1.0, 0.5], [0.2, 0.1]]])
    s = np.zeros((1, 2, 2))
    assert _quantus(quantus.PointingGame, a, s)[0] == 1.0
    assert np.isnan(_quantus(quantus.RelevanceMassAccuracy, a, s)[0])
    assert pointing_game(a[0], s[0]) is None


@pytest.mark.peer
def test_quantus_auroc_on_a_signed_map_ranks_the_negatives():
    # [[2, -1], [-3, 0.5]], region = the -1 token. Quantus ranks the raw values: -1 beats -3 only: 1/3.
    # On r+ = [2, 0, 0, 0.5] the region's 0 ties the 0 (1/2) and loses to 2 and 0.5: 1/6, as Quantus gives on r+.
    quantus = pytest.importorskip("quantus")
    a, s = np.array([[[2.0, -1.0], [-3.0, 0.5]]]), np.array([[[0.0, 1.0], [0.0, 0.0]]])
    assert _quantus(quantus.AUC, a, s)[0] == pytest.approx(1 / 3)
    assert auroc(a[0], s[0]) == pytest.approx(1 / 6, abs=EXACT)
    assert _quantus(quantus.AUC, np.maximum(a, 0), s)[0] == pytest.approx(1 / 6)
