"""The randomisation check: images spread over classes, seeds, the |Spearman| statistic and its sign, the verdict."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from audit.errors import ImageError
from audit.measure.curves import PerturbationConfig
from audit.measure.randomisation import (
    choose_images,
    map_verdict,
    randomisation_record,
    randomisation_scores,
    randomisation_seeds,
    round_robin,
    summarise_map,
    unit_ranks,
)
from audit.measure.stats import spearman
from audit.model.capture import capture, capture_batch

from conftest import make_tiny


def test_round_robin_takes_one_image_per_class_in_turn():
    assert round_robin([3, 3, 3, 1, 1, 2], 4) == [0, 3, 5, 1]
    assert round_robin([3, 3, 3, 1, 1, 2], 10) == [0, 3, 5, 1, 4, 2]
    assert round_robin([7, 7], 1) == [0]
    assert round_robin([], 3) == []


def test_choose_images_passes_over_unreadable_images_and_stops_at_enough_classes():
    classes = {"a": 0, "b": 0, "c": 1, "bad": 5, "d": 2, "e": 3, "f": 4}
    read = []

    def reader(image_id, path):
        read.append(image_id)
        if image_id == "bad":
            raise ImageError("bad: not an image")
        return torch.zeros(1)

    images = [(name, name) for name in classes]
    chosen = choose_images(images, 3, reader, lambda path, _x: classes[path])
    assert [(image_id, label) for image_id, _, label in chosen] == [("a", 0), ("c", 1), ("d", 2)]
    assert read == ["a", "b", "c", "bad", "d"]  # three classes seen: the rest is not read


def test_choose_images_equals_a_round_robin_over_every_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        labels = [int(v) for v in rng.integers(0, int(rng.integers(1, 6)), size=int(rng.integers(0, 15)))]
        count = int(rng.integers(1, 12))
        images = [(str(i), str(i)) for i in range(len(labels))]
        chosen = choose_images(images, count, lambda _i, path: torch.zeros(1), lambda path, _x: labels[int(path)])
        assert [int(image_id) for image_id, _, _ in chosen] == round_robin(labels, count)
        assert all(image is not None for _, image, _ in chosen)


def test_the_seeds_follow_the_run_seed_and_wrap():
    assert randomisation_seeds(5, 3) == [5, 6, 7]
    assert randomisation_seeds(2**32 - 1, 2) == [2**32 - 1, 0]


def test_unit_ranks_give_spearman_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = torch.from_numpy(rng.integers(0, 4, size=(5, 5)).astype(np.float32))
        b = torch.from_numpy(rng.normal(size=(5, 5)).round(1).astype(np.float32))
        assert float(unit_ranks(a) @ unit_ranks(b)) == pytest.approx(spearman(a, b), abs=1e-12)
    assert unit_ranks(torch.ones(3, 3)) is None
    assert unit_ranks(torch.tensor([1.0, float("nan")])) is None


def _rho(per_image: list[float], seeds: int = 3, steps: int = 4, step: int = 2) -> np.ndarray:
    """rho (images, seeds, steps) equal to ``per_image`` at ``step`` for every seed, 1 at step 0."""
    rho = np.full((len(per_image), seeds, steps), 0.0)
    rho[:, :, 0] = 1.0
    rho[:, :, step] = np.asarray(per_image)[:, None]
    return rho


def test_the_statistic_is_the_mean_absolute_rho_and_the_sign_is_reported():
    negative = summarise_map("grad@0", _rho([-0.8] * 10), 2, "block 0", 0.5)
    positive = summarise_map("grad@0", _rho([0.8] * 10), 2, "block 0", 0.5)
    assert negative["abs_spearman"] == pytest.approx(0.8) == positive["abs_spearman"]
    assert negative["signed_spearman"] == pytest.approx(-0.8) and positive["signed_spearman"] == pytest.approx(0.8)
    assert (negative["negative_images"], positive["negative_images"], negative["n_images"]) == (10, 0, 10)
    assert negative["verdict"] == positive["verdict"] == "fail"  # -0.8 depends on the parameters as little as +0.8
    reason = negative["reason"]
    for part in ("grad@0", "mean |Spearman| 0.800", "threshold 0.5", "block 0", "signed mean -0.800",
                 "10 of 10 images negative", "10 images x 3 seeds"):
        assert part in reason, reason
    assert negative["spearman"][0] == 1.0 and negative["spearman"][2] == pytest.approx(0.8)


def test_per_image_values_are_means_over_seeds_of_absolute_rho():
    rho = _rho([0.0, 0.0], seeds=2)
    rho[0, :, 2] = [0.4, -0.2]  # |rho| 0.3 on average, signed 0.1
    rho[1, :, 2] = [np.nan, -0.6]  # a degenerate seed is left out
    record = summarise_map("cam@encoder", rho, 2, "block 0", 0.5)
    assert record["image_abs_spearman"] == pytest.approx([0.3, 0.6])
    assert record["abs_spearman"] == pytest.approx(0.45)
    assert record["signed_spearman"] == pytest.approx((0.1 - 0.6) / 2)
    assert record["negative_images"] == 1


@pytest.mark.parametrize("values, verdict", [
    ([0.05, 0.1, 0.08, 0.12, 0.07, 0.09, 0.11, 0.06, 0.1, 0.08], "pass"),
    ([0.9, 0.85, 0.95, 0.88, 0.92, 0.9, 0.87, 0.93, 0.91, 0.89], "fail"),
    ([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.15, 0.85, 0.5, 0.45], "inconclusive"),
])
def test_the_ci_over_images_decides_three_ways(values, verdict):
    record = summarise_map("chefer@encoder", _rho(values), 2, "block 0", 0.5)
    assert record["verdict"] == verdict, record["reason"]
    low, high = record["ci95"]
    assert low <= record["abs_spearman"] <= high
    assert f"[95% CI {low:.3f}, {high:.3f}]" in record["reason"]


def test_a_map_degenerate_on_every_image_is_inconclusive_with_the_reason():
    record = summarise_map("grad@encoder", np.full((4, 3, 5), np.nan), 3, "block 0", 0.5)
    assert (record["verdict"], record["n_images"]) == ("inconclusive", 0)
    assert "no rankable map" in record["reason"] and "grad@encoder" in record["reason"]


def test_map_verdict_edges():
    assert map_verdict(0.1, 0.4999, 0.5) == "pass"
    assert map_verdict(0.5, 0.7, 0.5) == "fail"  # a lower bound at the threshold fails
    assert map_verdict(0.3, 0.5, 0.5) == "inconclusive"
    assert map_verdict(float("nan"), float("nan"), 0.5) == "inconclusive"
    assert map_verdict(-float("inf"), float("inf"), 0.5) == "inconclusive"
    assert map_verdict(0.6, float("inf"), 0.5) == "fail"


def test_capture_batch_equals_one_capture_per_image():
    model = make_tiny("test_vit")
    images = torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    batch = capture_batch(model, images, [None, 4, None], attention=True)
    for image, target, cap in zip(images, [None, 4, None], batch):
        alone = capture(model, image, target=target, attention=True)
        assert cap.target == alone.target
        for stage in alone.tokens:
            torch.testing.assert_close(cap.tokens[stage], alone.tokens[stage], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(cap.grads[stage], alone.grads[stage], atol=1e-5, rtol=1e-4)
        for mine, theirs in zip(cap.attention_grads, alone.attention_grads):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_scores_per_image_and_seed_leave_the_model_untouched():
    model = make_tiny("test_vit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = list(torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1)))
    scores = randomisation_scores(model, images, ["cam", "random"], seeds=[0, 1])
    again = randomisation_scores(model, images, ["cam", "random"], seeds=[1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    depth = len(model.blocks)
    assert scores.labels[0] == "trained" and len(scores.labels) == depth + 3
    rho = scores.rho["cam@encoder"]
    assert rho.shape == (2, 2, depth + 3) and np.all(rho[:, :, 0] == 1.0)
    assert not np.allclose(rho[:, 0, 1:], rho[:, 1, 1:])  # the seeds randomise differently
    np.testing.assert_allclose(again.rho["cam@encoder"][:, 0], rho[:, 1], atol=1e-6)  # seed 1 is seed 1
    assert np.allclose(scores.rho["random@encoder"], 1.0)  # a baseline does not depend on the model
    assert scores.maps["cam@encoder"] == ("cam", "encoder", 1 + depth)


def _embedded(tmp_path):
    from audit import load_model
    from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

    loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())
    paths = sorted(embedded_images().glob("*.png"))[:6]  # ankle boots, bags and coats, two each
    (tmp_path / "broken.png").write_bytes(b"not an image")
    images = [("broken", str(tmp_path / "broken.png"))] + [(p.stem, str(p)) for p in paths]
    return loaded, images


def _embedded_record(tmp_path, labels=None, count=4, seeds=2):
    loaded, images = _embedded(tmp_path)
    settings = SimpleNamespace(methods=["cam", "random"], act="gelu", seed=7, randomisation_images=count,
                               randomisation_seeds=seeds, randomisation_threshold=0.5)
    return randomisation_record(loaded, "fmnist", images, settings, PerturbationConfig(), "cpu", labels=labels)


def test_the_record_names_images_classes_and_seeds(tmp_path):
    from audit.model.images import normalize, prepare_image

    loaded, images = _embedded(tmp_path)
    readable = images[1:]
    with torch.no_grad():
        top1 = [int(loaded.model(normalize(prepare_image(path, loaded.data_config).pixel, loaded.mean,
                                           loaded.std)[None])[0].argmax()) for _, path in readable]
    expected = round_robin(top1, 4)
    record = _embedded_record(tmp_path)
    assert record["images"] == [readable[i][0] for i in expected]  # the broken file is passed over
    assert record["classes"] == [top1[i] for i in expected] == record["explained"]
    assert record["seeds"] == [7, 8] and record["classes_from"] == "top-1" and record["threshold"] == 0.5
    curve = record["curves"]["cam@encoder"]
    for key in ("method", "stage", "labels", "spearman", "dependency_step", "abs_spearman", "ci95",
                "signed_spearman", "negative_images", "n_images", "image_abs_spearman", "verdict", "reason"):
        assert key in curve, key
    assert curve["n_images"] == 4 and curve["spearman"][0] == 1.0 and "4 images x 2 seeds" in curve["reason"]


def test_labels_choose_the_images_by_their_true_class(tmp_path):
    truth = {"ankle_boot_0": 9, "ankle_boot_1": 9, "bag_0": 8, "bag_1": 8, "coat_0": 4, "coat_1": 4}

    def labels(path, num_classes):
        from pathlib import Path

        stem = Path(path).stem
        if stem not in truth:
            raise ImageError(f"image {path!r} has no row in labels")
        return truth[stem]

    record = _embedded_record(tmp_path, labels=labels, count=5, seeds=1)
    assert record["classes_from"] == "labels"
    assert record["images"] == ["ankle_boot_0", "bag_0", "coat_0", "ankle_boot_1", "bag_1"]
    assert record["classes"] == [9, 8, 4, 9, 8]


class _Session:
    """What the check reads of the session: the record of one map, whether it is gated, and --strict."""

    def __init__(self, curve, gated, strict=False):
        self.curve, self.gated = curve, gated
        self.settings = SimpleNamespace(strict=strict)

    def randomisation(self, model_id):
        return {"curves": {"cam@encoder": self.curve}}

    def is_gated(self, model_id, method, stage):
        return self.gated


def _check():
    from audit.plugin import _checks_dir

    spec = importlib.util.spec_from_file_location("layer_checks", _checks_dir() / "test_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.test_randomisation


@pytest.mark.parametrize("verdict, gated, strict, outcome", [
    ("pass", True, False, None),
    ("fail", True, False, "failed"),
    ("inconclusive", True, False, "skipped"),
    ("inconclusive", True, True, "failed"),
    ("fail", False, False, "skipped"),
    ("inconclusive", False, True, "skipped"),
])
def test_the_check_fails_skips_or_passes_as_the_gates_do(verdict, gated, strict, outcome):
    values = {"pass": [0.1] * 10, "fail": [0.9] * 10, "inconclusive": [0.1, 0.9] * 5}[verdict]
    curve = summarise_map("cam@encoder", _rho(values), 2, "block 0", 0.5)
    assert curve["verdict"] == verdict
    session, check = _Session(curve, gated, strict), _check()
    properties = {}
    if outcome is None:
        check(("m", "cam", "encoder"), session, properties.__setitem__)
        assert properties["verdict"] == "pass"
        return
    expected = pytest.fail.Exception if outcome == "failed" else pytest.skip.Exception
    with pytest.raises(expected) as err:
        check(("m", "cam", "encoder"), session, properties.__setitem__)
    assert curve["reason"] in str(err.value)
    if not gated:
        assert str(err.value).startswith(f"not gated, {verdict}: ")
    elif verdict == "inconclusive":
        assert str(err.value).startswith("inconclusive (--strict): " if strict else "inconclusive: ")
