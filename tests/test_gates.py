"""Gate verdicts: the CI rule, the minimum image count, absolute limits and the explanation."""

from __future__ import annotations

import numpy as np
import pytest

from audit.measure.stats import detectable_difference, images_needed
from audit.verdicts.gates import GateInput, GateLimits, apply_holm, evaluate_gate


def _input(abpc, morf=0.2, seed=0):
    rng = np.random.default_rng(seed)
    morf_auc = list(morf + 0.01 * rng.standard_normal(len(abpc)))
    return GateInput(images=[f"img{i}" for i in range(len(abpc))], morf_auc=morf_auc,
                     lerf_auc=[m + a for m, a in zip(morf_auc, abpc)])


SMALL = 5  # the logic of the rule, on a handful of images (the default minimum is MIN_IMAGES)


def test_ci_above_threshold_passes():
    gate = evaluate_gate("m", "cam", "encoder", _input([0.1, 0.12, 0.09, 0.11, 0.1, 0.13]), min_images=SMALL)
    assert gate["verdict"] == "pass" and gate["ci95"][0] > 0
    assert gate["statistic"] == pytest.approx(np.mean([0.1, 0.12, 0.09, 0.11, 0.1, 0.13]))
    assert "above the threshold +0.000" in gate["reason"]


def test_ci_below_threshold_fails_naming_the_worst_images():
    gate = evaluate_gate("m", "cam", "3", _input([-0.1, -0.3, -0.05, -0.2, -0.15]), min_images=SMALL)
    assert gate["verdict"] == "fail"
    assert [w["image"] for w in gate["worst_images"]] == ["img1", "img3", "img4"]
    assert "below the threshold +0.000" in gate["reason"] and "img1 (-0.300)" in gate["reason"]


def test_ci_straddling_the_threshold_is_inconclusive():
    gate = evaluate_gate("m", "cam", "3", _input([0.2, -0.2, 0.1, -0.1, 0.05, -0.05]), min_images=SMALL)
    assert gate["verdict"] == "inconclusive" and "straddles the threshold" in gate["reason"]


def test_fewer_than_min_images_is_inconclusive_even_when_clear():
    gate = evaluate_gate("m", "cam", "3", _input([0.3, 0.31, 0.29, 0.3]),
                         limits=GateLimits(min_abpc=0.5), min_images=SMALL)
    assert gate["verdict"] == "inconclusive" and "only 4 images, at least 5" in gate["reason"]
    assert "at least 20" in evaluate_gate("m", "cam", "3", _input([0.3] * 19))["reason"]  # the default: MIN_IMAGES
    assert evaluate_gate("m", "cam", "3", _input([0.3, 0.31, 0.29, 0.3]), min_images=4)["verdict"] == "pass"


def test_absolute_limits_fail_a_gate_whose_ci_passes():
    data = _input([0.1, 0.12, 0.09, 0.11, 0.1, 0.13], morf=0.4)
    gate = evaluate_gate("m", "cam", "encoder", data, limits=GateLimits(max_morf_auc=0.3, min_abpc=0.2),
                         min_images=SMALL)
    assert gate["verdict"] == "fail"
    assert "mean MoRF AUC 0.4" in gate["reason"] and "> max_morf_auc 0.300" in gate["reason"]
    assert "mean ABPC 0.108 [95% CI" in gate["reason"] and "< min_abpc 0.200" in gate["reason"]
    assert evaluate_gate("m", "cam", "encoder", data, limits=GateLimits(max_morf_auc=0.5),
                         min_images=SMALL)["verdict"] == "pass"


def test_absolute_limits_are_decided_on_their_ci_not_the_point_estimate():
    """A model at its limit is undecided, not failed half the time: a limit is broken only when its whole CI is on the
    wrong side of it, and met only when its whole CI is on the right side."""
    abpc = list(np.random.default_rng(1).normal(0.2, 0.05, 30))
    mean = float(np.mean(abpc))
    at_limit = evaluate_gate("m", "cam", "encoder", _input(abpc), limits=GateLimits(min_abpc=mean + 0.005))
    assert at_limit["verdict"] == "inconclusive" and "across min_abpc" in at_limit["reason"]
    assert at_limit["statistic"] < mean + 0.005  # the point estimate is below the limit: the old rule failed it
    assert evaluate_gate("m", "cam", "encoder", _input(abpc), limits=GateLimits(min_abpc=0.1))["verdict"] == "pass"
    assert evaluate_gate("m", "cam", "encoder", _input(abpc), limits=GateLimits(min_abpc=0.3))["verdict"] == "fail"


def test_every_gate_states_its_power_and_the_images_an_undecided_one_needs():
    abpc = list(np.random.default_rng(2).normal(0.03, 0.2, 25))
    gate = evaluate_gate("m", "cam", "encoder", _input(abpc))
    power = gate["power"]
    assert power["sd"] == pytest.approx(np.std(abpc, ddof=1)) and power["n"] == 25
    assert power["detectable"] == pytest.approx(detectable_difference(power["sd"], 25))
    assert power["images_needed"] == images_needed(power["sd"], abs(gate["statistic"]))
    assert gate["verdict"] == "inconclusive" and f"needs n={power['images_needed']}" in gate["reason"]


def test_holm_turns_a_marginal_fail_of_several_gates_into_inconclusive_and_keeps_a_clear_one():
    rng = np.random.default_rng(5)
    clear = evaluate_gate("m", "cam", "encoder", _input(list(rng.normal(-0.3, 0.1, 30))))
    marginal = evaluate_gate("m", "grad", "0", _input(list(rng.normal(-0.03, 0.12, 30))))  # p 0.014
    passing = [evaluate_gate("m", "chefer", str(k), _input(list(rng.normal(0.3, 0.1, 30)))) for k in range(3)]
    assert clear["verdict"] == marginal["verdict"] == "fail" and 0 < marginal["p_fail"] < 0.025
    records = [clear, marginal, *passing]
    apply_holm(records)
    assert clear["verdict"] == "fail" and clear["p_fail_holm"] < 0.025
    assert marginal["verdict"] == "inconclusive" and "Holm's correction over 5 gates" in marginal["reason"]
    assert all(r["verdict"] == "pass" for r in passing)  # passes are never corrected


def test_a_map_degenerate_on_every_image_fails_with_its_reason():
    reason = "gradient does not reach patch tokens"
    data = GateInput(degenerate={"a": reason, "b": reason})
    gate = evaluate_gate("m", "grad", "encoder", data)
    assert gate["verdict"] == "fail" and gate["n_images"] == 0
    assert "could not be scored on any image: gradient does not reach patch tokens" in gate["reason"]


def test_random_baseline_is_reported_beside_the_gate():
    gate = evaluate_gate("m", "cam", "encoder", _input([0.1] * 6), baseline=_input([0.01, -0.01] * 3))
    assert gate["random_baseline"]["n_images"] == 6
    assert gate["random_baseline"]["statistic"] == pytest.approx(0.0, abs=1e-12)
    assert "random baseline at this stage +0.000" in gate["reason"]


def test_gate_is_reproducible_with_its_seed():
    data = _input(list(np.random.default_rng(3).normal(0.05, 0.1, 20)))
    assert evaluate_gate("m", "cam", "3", data, seed=7)["ci95"] == evaluate_gate("m", "cam", "3", data, seed=7)["ci95"]


def test_unknown_limit_is_refused():
    with pytest.raises(ValueError, match="limits.cam@3: unknown limits \\['max_abpc'\\]"):
        GateLimits.from_mapping({"max_abpc": 1.0}, "limits.cam@3")


@pytest.mark.parametrize("value", [True, "0.2", float("nan"), float("inf"), 10**400, {"a": 1}])
def test_a_limit_that_is_not_a_finite_number_is_refused_by_gate_limits_itself(value):
    with pytest.raises(ValueError, match=r"^limits\.cam@encoder\.min_abpc: expected a finite number, got "):
        GateLimits.from_mapping({"min_abpc": value}, "limits.cam@encoder")
    assert GateLimits.from_mapping({"min_abpc": 1}, "limits.cam@encoder").min_abpc == 1.0
