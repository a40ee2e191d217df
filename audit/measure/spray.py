"""SpRAy: spectral relevance analysis of a run's explanation maps, one predicted class at a time.

Lapuschkin et al. (2019), "Unmasking Clever Hans predictors and assessing what machines really learn", Nature
Communications 10:1096, cluster the relevance maps of the images a model assigns to one class: each cluster is one
of the model's strategies for that class, and a cluster whose maps all light up the same corner (a watermark, a
border, a source tag) is a shortcut a reviewer sees without any mask. It is a report view, not a gate.

The pipeline follows the spectral defaults of CoRelAy (Anders et al. 2022, "Finding and removing Clever Hans: using
explanation methods to debug and improve deep models", Information Fusion 77:261-295):

1. preprocess: r+ = max(map, 0), divided by its sum (a map with no positive relevance is left out and counted),
   flattened to a vector of gh * gw values;
2. affinity: the k-nearest-neighbour graph on Euclidean distances (k = 10 by default, at most n - 1; a map is not
   its own neighbour), binary connectivity C (C_ij = 1 when j is among the k nearest of i), symmetrised as
   A = (C + C^T) / 2: an edge wherever either map is a neighbour of the other, weight 1 when both are, 1/2 when
   one is (as ``SpectralClustering(affinity="nearest_neighbors")`` of scikit-learn does);
3. the symmetric normalised Laplacian L = I - D^{-1/2} A D^{-1/2}, D the diagonal of A's row sums;
4. its smallest eigenvalues 0 = lambda_1 <= lambda_2 <= ..., and the eigengap heuristic (von Luxburg 2007, "A
   tutorial on spectral clustering", Statistics and Computing 17:395-416, section 8.3): among the first
   ``max_clusters`` + 1 eigenvalues, k* is the k maximising lambda_{k+1} - lambda_k (1-based), so k* = 1 when the
   largest gap is the first one, and k* <= ``max_clusters``; equal gaps pick the smallest k;
5. the spectral embedding of Ng, Jordan & Weiss (2002, "On spectral clustering: analysis and an algorithm", NIPS
   14): the eigenvectors of the k* smallest eigenvalues as columns, each row scaled to unit length;
6. k-means on the embedding, seeded k-means++ (Arthur & Vassilvitskii 2007, "k-means++: the advantages of careful
   seeding", SODA) with several restarts, the lowest within-cluster sum of squares kept.

A strategy shown by at most k maps cannot be a component of the graph on its own: each of its maps has fewer than
k others to link to, so the graph ties it to the nearest other maps, and k-means may hand the map they share to
either side. Lower ``k_neighbours`` to separate strategies that few images show.

Clusters are numbered by size, largest first (equal sizes: the one holding the earliest map first), so the labels
do not depend on k-means' arbitrary numbering. Each cluster carries its mean normalised map, a plain description of
where that mean sits on the grid (:func:`describe_where`), and up to :data:`N_EXEMPLARS` exemplars: the cluster's
maps closest, in Euclidean distance between normalised maps, to the cluster's mean map (map space rather than the
embedding, whose rows are all alike within a tight cluster and say nothing about which map is typical).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist

__all__ = ["Cluster", "describe_where", "eigengap", "K_NEIGHBOURS", "kmeans", "knn_affinity", "MAX_CLUSTERS",
           "MIN_MAPS", "N_EXEMPLARS", "N_INIT", "normalized_laplacian", "preprocess", "REGIONS", "region_shares",
           "spray", "spray_by_class", "SprayResult", "WHERE_SHARE"]

K_NEIGHBOURS = 10
MAX_CLUSTERS = 8
MIN_MAPS = 3  # fewer maps than this are one cluster, without clustering
N_EXEMPLARS = 4
N_INIT = 10  # k-means restarts
MAX_ITER = 300  # Lloyd iterations per restart
WHERE_SHARE = 0.5  # the share of relevance a region needs for :func:`describe_where` to name it
# The 3x3 regions of a grid (thirds of rows, thirds of columns), row by row.
REGIONS = (("top-left corner", "top edge", "top-right corner"),
           ("left edge", "centre", "right edge"),
           ("bottom-left corner", "bottom edge", "bottom-right corner"))


@dataclass(frozen=True)
class Cluster:
    """One strategy of the model for a class: a cluster of its maps.

    Attributes:
        size: maps in the cluster.
        members: the positions of its maps (in the input of :func:`spray`, or :attr:`SprayResult.indices`).
        mean_map: (gh, gw) mean of the members' normalised r+ maps; it sums to 1.
        exemplars: up to :data:`N_EXEMPLARS` members, closest first to ``mean_map`` in Euclidean distance between
            normalised maps (equal distances: the earlier position first).
        where: :func:`describe_where` of ``mean_map``.
    """

    size: int
    members: tuple[int, ...]
    mean_map: np.ndarray
    exemplars: tuple[int, ...]
    where: str


@dataclass(frozen=True)
class SprayResult:
    """SpRAy over one set of maps (one class).

    Attributes:
        indices: the input position of each map, in order (0..n-1 from :func:`spray`; positions in ``items`` from
            :func:`spray_by_class`). ``members``, ``exemplars`` and ``left_out`` are such positions.
        eigenvalues: the smallest ``max_clusters`` + 1 eigenvalues of the normalised Laplacian, ascending (fewer
            when fewer maps were clustered; empty when none were).
        n_clusters: k*, the clusters found (1 when fewer than :data:`MIN_MAPS` maps were kept; 0 when none was).
        labels: one per map of ``indices``: its cluster's position in ``clusters``, or -1 for a left-out map.
        clusters: the clusters, largest first.
        left_out: the positions of the maps with no positive relevance (r+ sums to 0), left out of the clustering.
        k_neighbours: the k of the k-nearest-neighbour graph actually used (at most n - 1; 0 when not clustered).
        note: why no clustering was made, or "".
        affinity: the (n_kept, n_kept) affinity A over the maps kept, in order; None when no clustering was made.
    """

    indices: tuple[int, ...]
    eigenvalues: np.ndarray
    n_clusters: int
    labels: np.ndarray
    clusters: list[Cluster]
    left_out: tuple[int, ...]
    k_neighbours: int = 0
    note: str = ""
    affinity: np.ndarray | None = field(default=None, repr=False)


def preprocess(maps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Each map's r+ = max(map, 0), normalised to sum 1 and flattened.

    Args:
        maps: (gh, gw) maps, all the same shape, finite (numpy arrays or anything ``numpy.asarray`` reads).

    Returns:
        (vectors, kept, grid): vectors (n_kept, gh * gw) of the maps whose r+ sums to more than 0, ``kept`` their
        positions in ``maps`` (a boolean mask of length n), and the grid (gh, gw). An empty input gives grid (0, 0).
    """
    arrays = [np.asarray(m, dtype=np.float64) for m in maps]
    if not arrays:
        return np.zeros((0, 0)), np.zeros(0, dtype=bool), (0, 0)
    grid = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape != grid:
            raise ValueError(f"maps[{i}]: expected a 2-d map of shape {grid}, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"maps[{i}]: the map has values that are not finite")
    positive = np.maximum(np.stack(arrays).reshape(len(arrays), -1), 0.0)
    sums = positive.sum(axis=1)
    kept = sums > 0.0
    return positive[kept] / sums[kept, None], kept, (int(grid[0]), int(grid[1]))


def knn_affinity(vectors: np.ndarray, k: int) -> np.ndarray:
    """The symmetrised binary k-nearest-neighbour graph, A = (C + C^T) / 2.

    C_ij = 1 when j is one of the k nearest vectors of i in Euclidean distance (i itself excluded; equal distances:
    the earlier position first). A_ij is 1 when each is a neighbour of the other, 1/2 when one is, 0 otherwise.

    Args:
        vectors: (n, d) points.
        k: neighbours per point, 1 <= k <= n - 1.

    Returns:
        (n, n) symmetric affinity with a zero diagonal.
    """
    n = vectors.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k: expected 1 <= k <= n - 1 = {n - 1}, got {k}")
    distances = cdist(vectors, vectors)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    connectivity = np.zeros((n, n))
    connectivity[np.arange(n)[:, None], nearest] = 1.0
    return (connectivity + connectivity.T) / 2.0


def normalized_laplacian(affinity: np.ndarray) -> np.ndarray:
    """L = I - D^{-1/2} A D^{-1/2}, D = diag of A's row sums (von Luxburg 2007, L_sym).

    Args:
        affinity: (n, n) symmetric, non-negative, zero diagonal; every row sum must be above 0 (a k-NN graph's is).

    Returns:
        (n, n) symmetric L with eigenvalues in [0, 2].
    """
    degrees = affinity.sum(axis=1)
    if np.any(degrees <= 0.0):
        raise ValueError("affinity: every node needs at least one edge")
    scale = 1.0 / np.sqrt(degrees)
    return np.eye(affinity.shape[0]) - scale[:, None] * affinity * scale[None, :]


def eigengap(eigenvalues: np.ndarray) -> int:
    """The eigengap heuristic's number of clusters (von Luxburg 2007, section 8.3).

    With the eigenvalues ascending, lambda_1 <= ... <= lambda_m (1-based), k* is the k in 1..m-1 maximising
    lambda_{k+1} - lambda_k: k clusters are suggested when the first k eigenvalues are small and the (k+1)-th is
    well above them. The 0-based index i of the largest gap ``numpy.diff(eigenvalues)[i]`` gives k* = i + 1. Equal
    gaps: the smallest k.

    Args:
        eigenvalues: at least 2, ascending.

    Returns:
        k*, 1 <= k* <= m - 1.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"eigenvalues: expected at least 2 in a 1-d array, got shape {values.shape}")
    return int(np.argmax(np.diff(values))) + 1


def kmeans(points: np.ndarray, k: int, seed: int = 0, n_init: int = N_INIT,
           max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means from k-means++ seeding (Arthur & Vassilvitskii 2007), the best of ``n_init`` restarts.

    k-means++: the first centre is a point drawn uniformly, each next one a point drawn with probability
    proportional to its squared distance to the nearest centre so far (uniformly when all are 0). Lloyd's
    iterations run until no label changes or ``max_iter``; a cluster left empty takes the point farthest from its
    centre. The restart with the lowest inertia (within-cluster sum of squared distances) is kept, the earliest
    among equals.

    Args:
        points: (n, d).
        k: clusters, 1 <= k <= n.
        seed: seeds one numpy PCG64 generator shared by the restarts: the same points and seed give the same result.
        n_init: restarts.
        max_iter: Lloyd iterations per restart.

    Returns:
        (labels (n,) in 0..k-1, centres (k, d), inertia).
    """
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(max(1, n_init)):
        centres = _kmeans_pp(points, k, rng)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            squared = cdist(points, centres, "sqeuclidean")
            new = np.argmin(squared, axis=1)
            for c in range(k):
                if not np.any(new == c):  # empty: take the point farthest from its centre among shared clusters
                    counts = np.bincount(new, minlength=k)
                    spare = np.where(counts[new] > 1, squared[np.arange(n), new], -1.0)
                    far = int(np.argmax(spare))
                    new[far] = c
            if np.array_equal(new, labels):
                break
            labels = new
            centres = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
        inertia = float(cdist(points, centres, "sqeuclidean")[np.arange(n), labels].sum())
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    assert best is not None
    return best


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = points.shape[0]
    chosen = [int(rng.integers(n))]
    nearest = cdist(points, points[chosen], "sqeuclidean")[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        probabilities = nearest / total if total > 0.0 else np.full(n, 1.0 / n)
        chosen.append(int(rng.choice(n, p=probabilities)))
        nearest = np.minimum(nearest, cdist(points, points[chosen[-1:]], "sqeuclidean")[:, 0])
    return points[chosen].copy()


def region_shares(mean_map: np.ndarray) -> np.ndarray:
    """The share of relevance in each of the 3x3 regions of the grid, from max(map, 0).

    Rows are cut at round(gh / 3) and round(2 gh / 3), columns likewise: a 7-token side splits 2, 3, 2, a 14-token
    side 5, 4, 5, symmetric about the centre (a side below 3 leaves its middle third empty).

    Args:
        mean_map: (gh, gw) map.

    Returns:
        (3, 3) shares, rows top to bottom and columns left to right (:data:`REGIONS`), summing to 1; all 0 when the
        map has no positive relevance.
    """
    values = np.maximum(np.asarray(mean_map, dtype=np.float64), 0.0)
    if values.ndim != 2:
        raise ValueError(f"mean_map: expected a 2-d map, got shape {values.shape}")
    total = values.sum()
    shares = np.zeros((3, 3))
    if total <= 0.0:
        return shares
    rows, cols = (np.rint(np.array([0.0, s / 3.0, 2.0 * s / 3.0, s])).astype(int) for s in values.shape)
    for r in range(3):
        for c in range(3):
            shares[r, c] = values[rows[r]:rows[r + 1], cols[c]:cols[c + 1]].sum() / total
    return shares


def describe_where(mean_map: np.ndarray) -> str:
    """Where a cluster's relevance sits on the grid, in a few words.

    The region of :func:`region_shares` holding the most relevance is named when it holds at least
    :data:`WHERE_SHARE` of it, otherwise the relevance is "spread"; the top token's share follows. E.g.
    ``"top-left corner (62% of relevance; top token (0, 0) holds 58%, 1 of 49 tokens)"`` or
    ``"spread (most in centre, 31% of relevance; top token (3, 3) holds 6%, 1 of 49 tokens)"``.

    Args:
        mean_map: (gh, gw) map; negative values count as 0.

    Returns:
        The description; ``"no positive relevance"`` for a map without any.
    """
    shares = region_shares(mean_map)
    if shares.sum() == 0.0:
        return "no positive relevance"
    values = np.maximum(np.asarray(mean_map, dtype=np.float64), 0.0)
    r, c = divmod(int(np.argmax(shares)), 3)
    top_r, top_c = np.unravel_index(int(np.argmax(values)), values.shape)
    top = (f"top token ({top_r}, {top_c}) holds {values[top_r, top_c] / values.sum():.0%}, "
           f"1 of {values.size} tokens")
    if shares[r, c] >= WHERE_SHARE:
        return f"{REGIONS[r][c]} ({shares[r, c]:.0%} of relevance; {top})"
    return f"spread (most in {REGIONS[r][c]}, {shares[r, c]:.0%} of relevance; {top})"


def spray(maps: Sequence[np.ndarray], *, k_neighbours: int = K_NEIGHBOURS, max_clusters: int = MAX_CLUSTERS,
          seed: int = 0, n_init: int = N_INIT, indices: Sequence[int] | None = None) -> SprayResult:
    """SpRAy over one class's maps: the model's strategies, as clusters of its maps (see the module docstring).

    Args:
        maps: (gh, gw) explanation maps, all the same shape, finite.
        k_neighbours: k of the k-nearest-neighbour graph; at most n - 1 is used, n the maps kept.
        max_clusters: the most clusters the eigengap may pick; ``max_clusters`` + 1 eigenvalues are looked at.
        seed: seeds k-means; the same maps and seed give the same result.
        n_init: k-means restarts.
        indices: the input position of each map, reported in members, exemplars and ``left_out``; 0..n-1 if None.

    Returns:
        The :class:`SprayResult`. With fewer than :data:`MIN_MAPS` maps kept, they are one cluster without
        clustering (no eigenvalues), and ``note`` says so.
    """
    if k_neighbours < 1:
        raise ValueError(f"k_neighbours: expected >= 1, got {k_neighbours}")
    if max_clusters < 1:
        raise ValueError(f"max_clusters: expected >= 1, got {max_clusters}")
    positions = tuple(range(len(maps))) if indices is None else tuple(int(i) for i in indices)
    if len(positions) != len(maps):
        raise ValueError(f"indices: expected {len(maps)} positions, got {len(positions)}")
    vectors, kept, grid = preprocess(maps)
    kept_positions = [p for p, keep in zip(positions, kept) if keep]
    left_out = tuple(p for p, keep in zip(positions, kept) if not keep)
    labels = np.full(len(positions), -1)
    n = vectors.shape[0]
    if n < MIN_MAPS:
        clusters = [_cluster(vectors, np.arange(n), kept_positions, grid)] if n else []
        labels[kept] = 0
        note = (f"{n} map{'s' if n != 1 else ''} with positive relevance: fewer than {MIN_MAPS}, "
                f"{'one cluster' if n else 'no cluster'} without clustering")
        return SprayResult(positions, np.zeros(0), len(clusters), labels, clusters, left_out, note=note)
    k = min(k_neighbours, n - 1)
    affinity = knn_affinity(vectors, k)
    m = min(max_clusters + 1, n)
    eigenvalues, eigenvectors = scipy.linalg.eigh(normalized_laplacian(affinity), subset_by_index=[0, m - 1])
    n_clusters = eigengap(eigenvalues)
    if n_clusters == 1:
        kept_labels = np.zeros(n, dtype=int)
    else:
        embedding = eigenvectors[:, :n_clusters]
        norms = np.linalg.norm(embedding, axis=1, keepdims=True)
        embedding = embedding / np.where(norms > 0.0, norms, 1.0)
        kept_labels = _by_size(kmeans(embedding, n_clusters, seed=seed, n_init=n_init)[0])
    clusters = [_cluster(vectors, np.flatnonzero(kept_labels == c), kept_positions, grid) for c in range(n_clusters)]
    labels[kept] = kept_labels
    return SprayResult(positions, eigenvalues, n_clusters, labels, clusters, left_out, k_neighbours=k,
                       affinity=affinity)


def spray_by_class(items: Sequence[tuple[int, np.ndarray]], *, k_neighbours: int = K_NEIGHBOURS,
                   max_clusters: int = MAX_CLUSTERS, seed: int = 0, n_init: int = N_INIT) -> dict[int, SprayResult]:
    """:func:`spray` over the maps of each predicted class.

    Args:
        items: (predicted class index, (gh, gw) map) per image.
        k_neighbours: as for :func:`spray`.
        max_clusters: as for :func:`spray`.
        seed: as for :func:`spray`, the same for every class.
        n_init: as for :func:`spray`.

    Returns:
        {class index: its result}, classes ascending; positions in each result are positions in ``items``. A class
        with fewer than :data:`MIN_MAPS` maps kept is one cluster, with a note.
    """
    by_class: dict[int, list[int]] = {}
    for position, (label, _) in enumerate(items):
        by_class.setdefault(int(label), []).append(position)
    return {label: spray([items[p][1] for p in by_class[label]], k_neighbours=k_neighbours,
                         max_clusters=max_clusters, seed=seed, n_init=n_init, indices=by_class[label])
            for label in sorted(by_class)}


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters largest first; equal sizes: the cluster holding the earliest point first."""
    found = np.unique(labels)
    order = sorted(found, key=lambda c: (-int(np.sum(labels == c)), int(np.flatnonzero(labels == c)[0])))
    renumbered = np.empty_like(labels)
    for new, old in enumerate(order):
        renumbered[labels == old] = new
    return renumbered


def _cluster(vectors: np.ndarray, rows: np.ndarray, positions: Sequence[int], grid: tuple[int, int]) -> Cluster:
    members = vectors[rows]
    mean = members.mean(axis=0)
    distances = np.linalg.norm(members - mean, axis=1)
    closest = rows[np.argsort(distances, kind="stable")[:N_EXEMPLARS]]
    mean_map = mean.reshape(grid)
    return Cluster(size=len(rows), members=tuple(positions[r] for r in rows), mean_map=mean_map,
                   exemplars=tuple(positions[r] for r in closest), where=describe_where(mean_map))
