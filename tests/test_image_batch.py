"""Batches across images: several images' perturbed copies share the curves' forward passes (``--image-batch``),
with the numbers of each image audited on its own, a bad image in a group leaving the others whole, and ``auto``
filling one batch (one image per batch on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audit import load_model
from audit.config.settings import AuditSettings
from audit.measure.curves import PerturbationConfig, curve_work, evaluate_curve_work, faithfulness_curves
from audit.measure.image_audit import audit_group, audit_image
from audit.run.plan import auto_image_batch, plan_model

from conftest import audit_files, make_tiny, nested_audit, save_tiny

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
FAST = ["--methods", "cam,grad,random", "--gate", "cam@encoder", "--steps", "10", "--batch-size", "32",
        "--no-cache", "-k", "test_faithfulness"]
TOLERANCE = 1e-6
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _inputs(seed: int, size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    pixel = torch.rand(3, *size, generator=generator)
    maps = {"a@0": torch.rand(4, 4, generator=generator), "b@0": torch.rand(4, 4, generator=generator)}
    return pixel, maps


@pytest.mark.parametrize("fill", ["grey", "road"])
def test_images_sharing_batches_score_as_each_does_alone(fill):
    model = make_tiny("square")  # 32 x 32 inputs, 8 x 8 patches of 4 pixels
    config = PerturbationConfig(steps=5, fill=fill, batch_size=7)
    inputs = [_inputs(seed) for seed in range(3)]
    targets = [1, 4, 6]
    alone = [faithfulness_curves(model, pixel, maps, target, MEAN, STD, patch=(4, 4), grid=(8, 8), config=config,
                                 seed=3)
             for (pixel, maps), target in zip(inputs, targets)]
    works = [curve_work(pixel, maps, target, MEAN, STD, patch=(4, 4), grid=(8, 8), config=config, seed=3)
             for (pixel, maps), target in zip(inputs, targets)]
    seen = []
    evaluate_curve_work(model, works, 7, progress=lambda done, total: seen.append((done, total)))
    per_image = 2 + 2 * 2 * (5 - 1)  # clean, all removed, and 4 interior steps of 2 maps x 2 orders
    assert [total for _, total in seen] == [3 * per_image] * -(-3 * per_image // 7)  # one queue: 8 shared batches
    assert per_image % 7 != 0  # so batches hold the end of one image and the start of the next
    for work, (curves, shared) in zip(works, alone):
        together, shared_together = work.curves()
        assert shared_together["clean"] == pytest.approx(shared["clean"], abs=TOLERANCE)
        assert shared_together["removed"] == pytest.approx(shared["removed"], abs=TOLERANCE)
        for key in curves:
            assert together[key].morf == pytest.approx(curves[key].morf, abs=TOLERANCE)
            assert together[key].lerf == pytest.approx(curves[key].lerf, abs=TOLERANCE)


def test_a_work_that_is_not_evaluated_has_no_curves():
    pixel, maps = _inputs(0)
    work = curve_work(pixel, maps, 0, MEAN, STD, patch=(4, 4), grid=(8, 8), config=PerturbationConfig(steps=5))
    with pytest.raises(ValueError, match="non-finite probability for the clean image"):
        work.curves()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return audit_files(tmp_path_factory.mktemp("image-batch-data"), PHOTOS)


def test_an_audit_group_equals_each_image_audited_alone_and_keeps_going_past_a_bad_image(files, tmp_path):
    loaded = load_model("test_vit", files["checkpoint"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    photos = sorted(files["photos"].glob("*.png"))[:2]
    options = dict(methods=["cam", "grad", "random"], stages=["encoder"], config=PerturbationConfig(steps=6,
                   batch_size=5), seed=1)
    group = audit_group(loaded, [photos[0], broken, photos[1]], **options)
    assert isinstance(group[1], Exception) and "broken.png" in str(group[1])
    for result, photo in zip((group[0], group[2]), photos):
        alone = audit_image(loaded, photo, **options)
        assert result.target == alone.target and result.batch_size == alone.batch_size == 5
        assert set(result.curves) == set(alone.curves) and result.curves
        for key, curve in alone.curves.items():
            assert result.curves[key].morf == pytest.approx(curve.morf, abs=TOLERANCE)
            assert result.curves[key].lerf == pytest.approx(curve.lerf, abs=TOLERANCE)
        assert set(result.restorations) == set(alone.restorations)


def _runs(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"]


@pytest.mark.e2e
def test_a_run_in_image_groups_gives_the_numbers_of_a_run_image_by_image(pytester, files, monkeypatch):
    monkeypatch.chdir(pytester.path)
    photos = pytester.path / "photos"
    photos.mkdir()
    for photo in sorted(files["photos"].glob("*.png")):
        (photos / photo.name).write_bytes(photo.read_bytes())
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    common = [*nested_audit(), "--model", "test_vit", "--checkpoint", str(files["checkpoint"]), "--images",
              str(photos), *FAST]
    alone = pytester.runpytest(*common, "--image-batch", "1", "--audit-json", "alone.json")
    grouped = pytester.runpytest(*common, "--image-batch", "4", "--audit-json", "grouped.json")
    assert grouped.ret == alone.ret
    one, four = _runs(pytester.path / "alone.json"), _runs(pytester.path / "grouped.json")
    assert [r["image_id"] for r in one] == [r["image_id"] for r in four] and len(four) == len(PHOTOS) + 1
    errors = [r for r in four if r.get("error")]
    assert len(errors) == 1 and "broken.png" in errors[0]["error"]
    assert {r["image_batch"] for r in one if not r.get("error")} == {1}
    # 6 cases in groups of 4 and 2; the broken image fails before its group's model work, so its group audits 3
    assert sorted(r["image_batch"] for r in four if not r.get("error")) == [2, 2, 3, 3, 3]
    for a, b in zip(one, four):
        if a.get("error"):
            assert a["error"] == b["error"]
            continue
        assert a["class"] == b["class"] and set(a["maps"]) == set(b["maps"])
        for key, m in a["maps"].items():
            for part in ("morf", "lerf"):
                if m.get(part) is not None:
                    assert b["maps"][key][part] == pytest.approx(m[part], abs=TOLERANCE), (a["image_id"], key)


def test_auto_fills_one_batch_and_is_one_image_on_a_cpu(tmp_path):
    loaded = load_model("test_vit", save_tiny("test_vit", tmp_path / "m.safetensors"))
    settings = AuditSettings(model=["test_vit"], checkpoint=["m"], methods=["cam", "grad", "random"],
                             gate=["grad@0", "cam@encoder"])
    plan = plan_model(settings, loaded)
    copies = 2 + 2 * 19 * 4  # 4 maps with curves: the two gated ones and random at their stages
    for batch, expected in ((64, 1), (copies, 1), (copies + 1, 2), (1024, 7), (10**6, 64)):
        config = PerturbationConfig(batch_size=batch)
        assert auto_image_batch(plan, settings, loaded, config, "cpu") == expected, batch
    assert auto_image_batch(plan, settings, loaded, PerturbationConfig(), "cpu") == 1  # auto: at most 64 on a CPU
