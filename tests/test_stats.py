"""Seeded bootstrap CIs over an image set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit import bootstrap_ci, summarize


def test_bootstrap_is_reproducible_and_seed_dependent():
    values = np.random.default_rng(0).normal(0.1, 0.2, size=41)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_ci_brackets_the_mean_and_matches_the_normal_approximation():
    values = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    low, high = bootstrap_ci(values, seed=0)
    assert low < values.mean() < high
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_coverage_is_about_95_percent():
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        sample = rng.exponential(1.0, size=41)  # skewed, true mean 1
        low, high = bootstrap_ci(sample, seed=trial, n_boot=2000)
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ValueError, match="level: expected a number in \\(0, 1\\)"):
        bootstrap_ci([1.0, 2.0], level=95)


def test_summarize_groups_by_method_and_stage_and_computes_abpc():
    records = [("cam", "3", 0.2, 0.6), ("cam", "3", 0.4, 0.4), ("grad", "encoder", 0.5, 0.5)]
    summaries = {(s.method, s.stage): s for s in summarize(records, seed=0)}
    cam = summaries[("cam", "3")]
    assert cam.n_images == 2
    assert cam.morf_auc == pytest.approx(0.3) and cam.lerf_auc == pytest.approx(0.5)
    assert cam.abpc == pytest.approx(0.2)
    assert cam.abpc_ci[0] == pytest.approx(0.0) and cam.abpc_ci[1] == pytest.approx(0.4)
    assert summaries[("grad", "encoder")].abpc_ci == (0.0, 0.0)
