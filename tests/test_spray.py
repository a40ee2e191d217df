"""SpRAy (Lapuschkin et al. 2019) over synthetic 7x7 maps with planted strategies: the clusters, the eigengap, the
Laplacian against scipy, the labels against scikit-learn, and the plain description of where relevance sits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import laplacian

from audit.measure.spray import (
    MIN_MAPS,
    N_EXEMPLARS,
    describe_where,
    eigengap,
    kmeans,
    knn_affinity,
    normalized_laplacian,
    preprocess,
    region_shares,
    spray,
    spray_by_class,
)

GRID = 7
_YY, _XX = np.mgrid[0:GRID, 0:GRID]


def _blob(cy: float, cx: float, sigma: float) -> np.ndarray:
    return np.exp(-((_YY - cy) ** 2 + (_XX - cx) ** 2) / (2.0 * sigma ** 2))


def centre_map(rng: np.random.Generator) -> np.ndarray:
    """The object strategy: relevance on a blob at the centre, plus noise."""
    return _blob(3, 3, 1.2) + rng.uniform(0.0, 0.05, (GRID, GRID))


def corner_map(rng: np.random.Generator) -> np.ndarray:
    """The shortcut: relevance on the top-left token, plus noise."""
    values = rng.uniform(0.0, 0.02, (GRID, GRID))
    values[0, 0] += 1.0
    return values


def bottom_map(rng: np.random.Generator) -> np.ndarray:
    """A third strategy: relevance on a blob at the middle of the bottom row, plus noise."""
    return _blob(6, 3, 0.8) + rng.uniform(0.0, 0.05, (GRID, GRID))


def two_strategies(seed: int = 0, n_centre: int = 20, n_corner: int = 12) -> list[np.ndarray]:
    # 12 shortcut maps, not 10: with the default k = 10, a strategy of at most 10 maps must link to others
    rng = np.random.default_rng(seed)
    return [centre_map(rng) for _ in range(n_centre)] + [corner_map(rng) for _ in range(n_corner)]


def three_strategies(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return ([centre_map(rng) for _ in range(15)] + [corner_map(rng) for _ in range(12)]
            + [bottom_map(rng) for _ in range(12)])


def _groups(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in set(labels.tolist()) if c >= 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_planted_strategies_are_found(seed):
    result = spray(two_strategies(seed))
    assert result.n_clusters == 2
    assert _groups(result.labels) == {frozenset(range(20)), frozenset(range(20, 32))}
    centre, corner = result.clusters  # largest first
    assert (centre.size, corner.size) == (20, 12)
    assert corner.members == tuple(range(20, 32))
    assert corner.where.startswith("top-left corner")
    assert centre.where.startswith("centre")
    for cluster in result.clusters:
        assert cluster.mean_map.shape == (GRID, GRID)
        assert cluster.mean_map.sum() == pytest.approx(1.0)
        assert len(cluster.exemplars) == N_EXEMPLARS and set(cluster.exemplars) <= set(cluster.members)
    assert result.left_out == () and result.note == ""
    assert result.eigenvalues.shape == (9,)
    assert eigengap(result.eigenvalues) == 2


def test_exemplars_are_the_maps_closest_to_the_cluster_mean():
    maps = two_strategies()
    vectors, _, _ = preprocess(maps)
    for cluster in spray(maps).clusters:
        members = np.array(cluster.members)
        distances = np.linalg.norm(vectors[members] - cluster.mean_map.ravel(), axis=1)
        expected = members[np.argsort(distances, kind="stable")[:N_EXEMPLARS]]
        assert cluster.exemplars == tuple(expected.tolist())


def test_a_small_strategy_is_separated_with_fewer_neighbours():
    maps = two_strategies(n_corner=10)
    result = spray(maps, k_neighbours=5)
    assert result.k_neighbours == 5
    assert _groups(result.labels) == {frozenset(range(20)), frozenset(range(20, 30))}


def test_three_planted_strategies_are_found():
    result = spray(three_strategies())
    assert result.n_clusters == 3
    assert _groups(result.labels) == {frozenset(range(15)), frozenset(range(15, 27)), frozenset(range(27, 39))}
    wheres = {cluster.members[0]: cluster.where for cluster in result.clusters}
    assert wheres[0].startswith("centre")
    assert wheres[15].startswith("top-left corner")
    assert wheres[27].startswith("bottom edge")
    assert np.allclose(result.eigenvalues[:3], 0.0, atol=1e-10)  # three components: three zero eigenvalues


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_strategy_gives_one_cluster(seed):
    rng = np.random.default_rng(seed)
    result = spray([centre_map(rng) for _ in range(30)])
    gaps = np.diff(result.eigenvalues)
    assert np.argmax(gaps) == 0 and gaps[0] > 1.5 * np.sort(gaps)[-2]  # the first gap stands out
    assert result.n_clusters == 1
    assert (result.labels == 0).all()
    (cluster,) = result.clusters
    assert cluster.size == 30 and cluster.where.startswith("centre")


def test_eigengap_indexing():
    assert eigengap(np.array([0.0, 0.5, 0.6, 0.7])) == 1  # the largest gap after the first eigenvalue
    assert eigengap(np.array([0.0, 0.05, 0.6, 0.7])) == 2
    assert eigengap(np.array([0.0, 0.0, 0.0, 0.8, 0.9])) == 3
    assert eigengap(np.array([0.0, 0.4, 0.8])) == 1  # equal gaps: the smallest k
    with pytest.raises(ValueError):
        eigengap(np.array([0.0]))


def test_max_clusters_caps_the_eigenvalues_and_the_clusters():
    result = spray(three_strategies(), max_clusters=2)
    assert result.eigenvalues.shape == (3,)
    assert 1 <= result.n_clusters <= 2


def test_same_seed_same_labels():
    maps = three_strategies(seed=4)
    first, second = spray(maps, seed=7), spray(maps, seed=7)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.eigenvalues, second.eigenvalues)
    assert [c.exemplars for c in first.clusters] == [c.exemplars for c in second.clusters]
    points = np.random.default_rng(0).normal(size=(40, 3))  # no structure: k-means depends on its seed alone
    labels_a, centres_a, inertia_a = kmeans(points, 4, seed=11)
    labels_b, centres_b, inertia_b = kmeans(points, 4, seed=11)
    assert np.array_equal(labels_a, labels_b) and np.array_equal(centres_a, centres_b) and inertia_a == inertia_b


def test_kmeans_recovers_separated_groups_and_edge_cases():
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.normal(loc, 0.1, size=(10, 2)) for loc in ([0, 0], [5, 0], [0, 5])])
    labels, centres, inertia = kmeans(points, 3, seed=0)
    assert _groups(labels) == {frozenset(range(10)), frozenset(range(10, 20)), frozenset(range(20, 30))}
    assert inertia == pytest.approx(sum(((points[labels == c] - centres[c]) ** 2).sum() for c in range(3)))
    assert (kmeans(points, 1)[0] == 0).all()
    assert sorted(kmeans(points[:5], 5)[0].tolist()) == [0, 1, 2, 3, 4]
    same = np.zeros((6, 2))  # every point equal: k-means++ draws uniformly, no cluster stays empty
    assert sorted(set(kmeans(same, 2)[0].tolist())) == [0, 1]


def test_maps_without_positive_relevance_are_left_out_and_counted():
    maps = two_strategies()
    plain = spray(maps)
    with_zeros = maps[:5] + [np.zeros((GRID, GRID))] + maps[5:] + [-np.ones((GRID, GRID))]
    result = spray(with_zeros)
    assert result.left_out == (5, 33)
    assert result.labels[5] == -1 and result.labels[33] == -1
    kept = np.delete(result.labels, [5, 33])
    assert np.array_equal(kept, plain.labels)
    assert sum(c.size for c in result.clusters) == 32
    assert 5 not in result.clusters[0].members and 6 in result.clusters[0].members  # positions in the input


def test_fewer_than_three_maps_make_one_cluster():
    rng = np.random.default_rng(0)
    maps = [centre_map(rng), corner_map(rng)]
    result = spray(maps)
    assert result.n_clusters == 1 and len(result.clusters) == 1
    assert result.labels.tolist() == [0, 0]
    assert result.eigenvalues.size == 0 and result.affinity is None
    assert "fewer than 3" in result.note
    assert result.clusters[0].mean_map.sum() == pytest.approx(1.0)
    with_zero = spray([maps[0], np.zeros((GRID, GRID)), maps[1]])
    assert with_zero.left_out == (1,) and with_zero.labels.tolist() == [0, -1, 0]
    assert with_zero.clusters[0].members == (0, 2)
    only_zero = spray([np.zeros((GRID, GRID))] * 3)
    assert only_zero.n_clusters == 0 and only_zero.clusters == [] and only_zero.left_out == (0, 1, 2)
    assert spray([]).n_clusters == 0


def test_k_is_capped_at_n_minus_one():
    rng = np.random.default_rng(0)
    result = spray([centre_map(rng) for _ in range(4)])
    assert result.k_neighbours == 3
    assert result.eigenvalues.shape == (4,)
    assert np.allclose(result.affinity, 1.0 - np.eye(4))  # everyone is everyone's neighbour


def _knn_by_loop(vectors: np.ndarray, k: int) -> np.ndarray:
    n = len(vectors)
    connectivity = np.zeros((n, n))
    for i in range(n):
        distances = [(float(np.sqrt(((vectors[i] - vectors[j]) ** 2).sum())), j) for j in range(n) if j != i]
        for _, j in sorted(distances)[:k]:
            connectivity[i, j] = 1.0
    return (connectivity + connectivity.T) / 2.0


def test_affinity_and_laplacian_eigenvalues_match_an_independent_computation():
    maps = two_strategies(seed=3)
    result = spray(maps)
    vectors, _, _ = preprocess(maps)
    affinity = _knn_by_loop(vectors, 10)
    assert np.array_equal(result.affinity, affinity)
    assert np.array_equal(knn_affinity(vectors, 10), affinity)
    assert set(np.unique(affinity).tolist()) == {0.0, 0.5, 1.0}
    reference = np.linalg.eigvalsh(laplacian(affinity, normed=True))[:9]
    np.testing.assert_allclose(result.eigenvalues, reference, rtol=0.0, atol=1e-10)
    np.testing.assert_allclose(normalized_laplacian(affinity), laplacian(affinity, normed=True), rtol=0.0, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # planted strategies: separate components
def test_labels_match_scikit_learn():
    pytest.importorskip("sklearn")
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score
    from sklearn.neighbors import kneighbors_graph

    for maps in (two_strategies(seed=5), three_strategies(seed=5)):
        result = spray(maps)
        vectors, _, _ = preprocess(maps)
        graph = kneighbors_graph(vectors, 10, mode="connectivity", include_self=False).toarray()
        np.testing.assert_array_equal(result.affinity, (graph + graph.T) / 2.0)
        theirs = SpectralClustering(n_clusters=result.n_clusters, affinity="precomputed", random_state=0,
                                    assign_labels="kmeans").fit_predict(result.affinity)
        assert adjusted_rand_score(result.labels, theirs) == 1.0


def test_spray_by_class_groups_by_predicted_class():
    maps = two_strategies()
    rng = np.random.default_rng(9)
    items: list[tuple[int, np.ndarray]] = []
    for m in maps:  # class 3's maps at even positions, two class-1 maps in between
        items.append((3, m))
        if len(items) in (5, 11):
            items.append((1, corner_map(rng)))
    results = spray_by_class(items)
    assert list(results) == [1, 3]
    assert results[1].indices == (5, 11) and results[1].n_clusters == 1 and results[1].note
    assert MIN_MAPS == 3
    three = results[3]
    assert three.indices == tuple(p for p, (c, _) in enumerate(items) if c == 3)
    assert three.n_clusters == 2
    shortcut = [p for p, m in zip(three.indices, maps) if m[0, 0] > 0.5]
    assert three.clusters[1].members == tuple(shortcut)
    assert np.array_equal(three.labels, spray(maps).labels)


def test_region_shares_cut_the_grid_in_symmetric_thirds():
    np.testing.assert_allclose(region_shares(np.ones((7, 7))), np.outer([2, 3, 2], [2, 3, 2]) / 49.0)
    np.testing.assert_allclose(region_shares(np.ones((14, 14))), np.outer([5, 4, 5], [5, 4, 5]) / 196.0)
    assert region_shares(np.zeros((7, 7))).sum() == 0.0


def test_describe_where():
    corner = np.zeros((7, 7))
    corner[0, 0] = 1.0
    assert describe_where(corner) == "top-left corner (100% of relevance; top token (0, 0) holds 100%, 1 of 49 tokens)"
    shortcut = np.full((7, 7), 0.41 / 48)
    shortcut[0, 0] = 0.59
    assert describe_where(shortcut).startswith("top-left corner (62% of relevance; top token (0, 0) holds 59%")
    centre = np.zeros((7, 7))
    centre[3, 3] = 1.0
    assert describe_where(centre).startswith("centre (100%")
    right = np.zeros((7, 7))
    right[2:5, 5:] = 1.0
    assert describe_where(right).startswith("right edge")
    spread = describe_where(np.ones((7, 7)))
    assert spread.startswith("spread (most in centre, 18% of relevance; top token")
    assert describe_where(-np.ones((7, 7))) == "no positive relevance"


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="shape"):
        spray([np.ones((7, 7)), np.ones((7, 6)), np.ones((7, 7))])
    with pytest.raises(ValueError, match="finite"):
        spray([np.ones((7, 7)), np.full((7, 7), np.nan), np.ones((7, 7))])
    with pytest.raises(ValueError, match="2-d"):
        spray([np.ones(49)] * 3)
    with pytest.raises(ValueError):
        spray(two_strategies(), k_neighbours=0)
