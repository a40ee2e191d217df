"""Right for the right reasons (audit.verdicts.reasons, audit.verdicts.classes): the regions and probe gates and the
class-by-class collapse gate, decided on records made by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from audit.verdicts.classes import class_agreement, class_table, mean_map_drift
from audit.verdicts.reasons import compare_probe, compare_regions, probe_limits, record_localisation, region_gate

N_BOOT = 2_000
OBJECT = np.zeros((4, 4))
OBJECT[1:3, 1:3] = 1.0  # 4 of 16 tokens: chance 0.25


def _run(image: str, grid: np.ndarray, artefact: np.ndarray | None = None) -> dict:
    regions = {"object": OBJECT, "artefact": artefact if artefact is not None else np.zeros((4, 4)), "void": None}
    record = {"image_id": image, "error": None, "maps": {"grad@0": {"grid": grid.tolist()}}, "regions": regions}
    record["localisation"] = record_localisation(record["maps"], regions, ["grad@0"])
    return record


def _map(rng: np.random.Generator, on_object: float) -> np.ndarray:
    grid = rng.random((4, 4)) * (1 - on_object)
    grid[1:3, 1:3] += on_object
    return grid


def test_a_map_on_the_object_passes_and_one_off_it_fails():
    rng = np.random.default_rng(0)
    good = [_run(f"i{i}", _map(rng, 1.0)) for i in range(25)]
    bad = [_run(f"i{i}", np.where(OBJECT > 0, 0.0, rng.random((4, 4)))) for i in range(25)]
    passed = region_gate(good, "grad@0", min_images=20, n_boot=N_BOOT)
    failed = region_gate(bad, "grad@0", min_images=20, n_boot=N_BOOT)
    assert passed["verdict"] == "pass" and passed["ci95"][0] > 0 and passed["means"]["area"] == 0.25
    assert failed["verdict"] == "fail" and failed["means"]["mass"] == 0.0 and failed["means"]["auroc"] < 0.5
    assert region_gate(good[:5], "grad@0", min_images=20, n_boot=N_BOOT)["verdict"] == "inconclusive"


def test_images_without_objects_are_counted_not_applicable():
    rng = np.random.default_rng(1)
    runs = [_run(f"i{i}", _map(rng, 1.0)) for i in range(22)]
    runs.append({"image_id": "none", "error": None, "maps": {}, "regions": {"problem": "no regions for this image"}})
    record = region_gate(runs, "grad@0", min_images=20, n_boot=N_BOOT)
    assert record["n_images"] == 22 and record["not_applicable"] == 1 and "not applicable on 1" in record["reason"]


def _paired(candidate_maps, baseline_maps, artefact=None, margin=0.05):
    cand = [_run(f"i{i}", g, artefact) for i, g in enumerate(candidate_maps)]
    base = {f"sha{i}": _run(f"i{i}", g, artefact) for i, g in enumerate(baseline_maps)}
    digests = {f"i{i}": f"sha{i}" for i in range(len(candidate_maps))}
    return compare_regions(cand, digests, base, "grad@0", "grad@0", margin=margin, min_images=20, n_boot=N_BOOT)


def test_paired_regions_same_maps_pass_and_a_drop_fails():
    rng = np.random.default_rng(2)
    maps = [_map(rng, 0.8) for _ in range(30)]
    same = _paired(maps, maps)
    assert same["verdict"] == "pass" and same["object"]["statistic"] == 0.0
    assert same["artefact"]["verdict"] == "not applicable"
    worse = _paired([_map(rng, 0.1) for _ in range(30)], maps)
    assert worse["verdict"] == "fail" and worse["object"]["ci95"][1] < -0.05


def test_paired_regions_a_rise_on_an_artefact_fails():
    rng = np.random.default_rng(3)
    artefact = np.zeros((4, 4))
    artefact[0, 0] = 1.0
    maps = [_map(rng, 0.8) for _ in range(30)]
    shifted = []
    for grid in maps:
        grid = grid.copy()
        grid[0, 0] += 3.0
        shifted.append(grid)
    record = _paired(shifted, maps, artefact=artefact)
    assert record["artefact"]["verdict"] == "fail" and record["verdict"] == "fail"
    assert record["artefact"]["statistic"] > 0.3


def test_the_baseline_mass_is_computed_from_its_grid_when_its_record_has_none():
    rng = np.random.default_rng(4)
    maps = [_map(rng, 0.8) for _ in range(25)]
    cand = [_run(f"i{i}", g) for i, g in enumerate(maps)]
    base = {f"sha{i}": {"image_id": f"i{i}", "error": None, "maps": {"grad@0": {"grid": g.tolist()}}}
            for i, g in enumerate(maps)}
    record = compare_regions(cand, {f"i{i}": f"sha{i}" for i in range(25)}, base, "grad@0", "grad@0", margin=0.05,
                             min_images=20, n_boot=N_BOOT)
    assert record["object"]["n_pairs"] == 25 and record["object"]["statistic"] == 0.0


def _probe_run(image: str, clean: int, stamped: int, mass: float) -> dict:
    return {"image_id": image, "error": None,
            "probes": {"square:white:4": {"clean_class": clean, "stamped_class": stamped,
                                          "stamped_class_name": f"c{stamped}", "mass": {"grad@0": mass}}}}


def _probe_pair(cand_rows, base_rows, **kwargs):
    cand = [_probe_run(f"i{i}", *row) for i, row in enumerate(cand_rows)]
    base = {f"sha{i}": _probe_run(f"i{i}", *row) for i, row in enumerate(base_rows)}
    digests = {f"i{i}": f"sha{i}" for i in range(len(cand_rows))}
    return compare_probe(cand, digests, base, "square:white:4", [("grad@0", "grad@0")], 10,
                         attraction_margin=kwargs.get("attraction_margin", 0.05),
                         stamp_margin=kwargs.get("stamp_margin", 0.05), min_images=20, n_boot=N_BOOT)


def test_a_stamp_that_moves_the_candidate_to_one_class_fails():
    rng = np.random.default_rng(5)
    clean = rng.integers(0, 10, 60)
    base_rows = [(c, c, 0.02 + 0.01 * rng.random()) for c in clean]
    shortcut = [(c, 6 if i % 2 else c, 0.02 + 0.01 * rng.random()) for i, c in enumerate(clean)]
    record = _probe_pair(shortcut, base_rows)
    attraction = record["attraction"]
    assert record["verdict"] == "fail" and attraction["verdict"] == "fail"
    assert attraction["candidate_class"] == 6 and attraction["baseline_max"] == 0.0
    moved = sum(1 for i, c in enumerate(clean) if i % 2 and c != 6)
    assert attraction["candidate_max"] == pytest.approx(moved / int((clean != 6).sum()))
    assert "c6" in record["reason"]
    same = _probe_pair(base_rows, base_rows)
    assert same["verdict"] == "pass" and same["attraction"]["statistic"] == 0.0


def test_a_map_that_looks_at_the_stamp_fails_and_a_small_rise_passes():
    rng = np.random.default_rng(6)
    clean = rng.integers(0, 10, 40)
    base = [(c, c, 0.02 + 0.01 * rng.random()) for c in clean]
    looks = [(c, c, 0.5 + 0.1 * rng.random()) for c in clean]
    record = _probe_pair(looks, base)
    assert record["mass"]["grad@0"]["verdict"] == "fail" and record["verdict"] == "fail"
    little = [(c, c, m + 0.001) for c, _, m in base]
    assert _probe_pair(little, base)["mass"]["grad@0"]["verdict"] == "pass"


def test_too_few_probe_pairs_are_inconclusive():
    rows = [(i % 10, i % 10, 0.02) for i in range(8)]
    assert _probe_pair(rows, rows)["verdict"] == "inconclusive"


def test_probe_limits_are_off_by_default_and_decide_when_set():
    runs = [_probe_run(f"i{i}", i % 10, 6, 0.3) for i in range(40)]
    off = probe_limits(runs, "square:white:4", ["grad@0"], 10, max_attraction=None, max_stamp_mass=None,
                       min_images=20, n_boot=N_BOOT)
    assert off["verdict"] == "not gated"
    on = probe_limits(runs, "square:white:4", ["grad@0"], 10, max_attraction=0.5, max_stamp_mass=0.1,
                      min_images=20, n_boot=N_BOOT)
    assert on["verdict"] == "fail" and [p["verdict"] for p in on["limits"]] == ["fail", "fail"]


def test_class_agreement_fails_a_collapsed_class_and_names_it():
    pairs = [(c, f"class{c}", c) for c in range(10) for _ in range(20)]
    collapsed = [(b, n, (c if b != 6 else 0)) for (b, n, c) in pairs]
    record = class_agreement(collapsed, 0.5)
    assert record["verdict"] == "fail" and record["failed"] == [6] and record["worst"]["class_name"] == "class6"
    assert "class6: 0/20" in record["reason"]
    row = next(r for r in record["classes"] if r["class"] == 6)
    assert row["p"] == pytest.approx(binomtest(0, 20, 0.5, alternative="less").pvalue)
    assert row["p_holm"] == pytest.approx(min(1.0, 10 * row["p"]))  # the smallest p is multiplied by all 10
    assert class_agreement(pairs, 0.5)["verdict"] == "pass"
    assert class_agreement(pairs, None)["verdict"] == "not gated"


def test_class_agreement_cannot_fail_a_class_of_few_images():
    pairs = [(0, "a", 0)] * 30 + [(1, "b", 0)] * 3  # class b: 0 of 3 agree, yet 0.5^3 > 0.05
    record = class_agreement(pairs, 0.5)
    assert record["verdict"] == "pass" and record["decidable_n"] == 5 and "fewer than 5 images" in record["reason"]
    low, high = next(r for r in record["classes"] if r["class"] == 1)["ci95"]
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 3))


def test_mean_map_drift():
    one = np.zeros((2, 2))
    one[0, 0] = 1.0
    other = np.zeros((2, 2))
    other[1, 1] = 1.0
    assert mean_map_drift([one], [one]) == pytest.approx(0.0)
    assert mean_map_drift([one], [other]) == pytest.approx(1.0)
    assert math.isnan(mean_map_drift([np.zeros((2, 2))], [one]))
    assert mean_map_drift([np.ones((4, 4))], [np.ones((2, 2))]) == pytest.approx(0.0)  # resampled to 4x4


def test_class_table_rows():
    pairs = [{"image": f"i{i}", "baseline_class": i % 2, "baseline_class_name": f"c{i % 2}",
              "candidate_class": 0, "d": float(i), "spearman": 0.5} for i in range(6)]
    grids = {f"i{i}": (np.eye(2), np.eye(2)) for i in range(6)}
    rows = {r["class"]: r for r in class_table(pairs, grids)}
    assert rows[0]["top1_agreement"] == 1.0 and rows[1]["top1_agreement"] == 0.0
    assert rows[0]["d"] == pytest.approx(2.0) and rows[1]["d"] == pytest.approx(3.0)
    assert rows[0]["drift"] == pytest.approx(0.0) and rows[0]["n"] == 3


def test_per_map_region_limits_are_decided_on_their_cis():
    from audit.verdicts.gates import GateLimits

    rng = np.random.default_rng(7)
    artefact = np.zeros((4, 4))
    artefact[0, 0] = 1.0
    runs = [_run(f"i{i}", _map(rng, 0.3), artefact) for i in range(25)]
    mass = region_gate(runs, "grad@0", min_images=20, threshold=None, n_boot=N_BOOT)["means"]["mass"]
    broken = region_gate(runs, "grad@0", min_images=20, threshold=None, n_boot=N_BOOT,
                         limits=GateLimits(min_object_mass=min(0.99, mass + 0.2)))
    assert broken["verdict"] == "fail" and "min_object_mass" in broken["reason"]
    met = region_gate(runs, "grad@0", min_images=20, threshold=None, n_boot=N_BOOT,
                      limits=GateLimits(min_object_mass=mass - 0.2, max_artefact_mass=0.5))
    assert met["verdict"] == "not gated" and "limit" not in met["reason"]
    across = region_gate(runs, "grad@0", min_images=20, threshold=None, n_boot=N_BOOT,
                         limits=GateLimits(min_object_mass=mass))
    assert across["verdict"] == "inconclusive" and "limit not decided" in across["reason"]
