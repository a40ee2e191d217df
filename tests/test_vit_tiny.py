"""Integration on the real pretrained ImageNet ViT-Ti/16 (../shared/models) with real photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from audit import audit_image, capture, compute_maps, normalize, prepare_image

from reference import ref_auc, ref_curve, ref_forward, ref_maps

EGYPTIAN_CAT = 285


@pytest.fixture(scope="module")
def chelsea(vit_tiny):
    return prepare_image(skimage.data.chelsea(), vit_tiny.data_config, name="chelsea")


@pytest.fixture(scope="module")
def chelsea_capture(vit_tiny, chelsea):
    return capture(vit_tiny.model, normalize(chelsea.pixel, vit_tiny.mean, vit_tiny.std))


@pytest.mark.shared
def test_chelsea_is_an_egyptian_cat(vit_tiny, chelsea_capture):
    assert chelsea_capture.target == EGYPTIAN_CAT
    assert vit_tiny.class_name(chelsea_capture.target) == "Egyptian cat"
    assert chelsea_capture.prob == pytest.approx(0.813, abs=0.005)


@pytest.mark.shared
def test_grad_is_degenerate_at_the_last_block_and_encoder(vit_tiny, chelsea_capture):
    maps = compute_maps(vit_tiny.model, chelsea_capture, methods=["grad"])
    for stage, where in (("11", "block 11"), ("encoder", "the encoder output")):
        result = maps[f"grad@{stage}"]
        assert result.degenerate and torch.count_nonzero(result.values) == 0
        assert result.reason == f"gradient does not reach patch tokens at {where}: the head reads only the class token"
    assert maps["grad@10"].degenerate and "cancels to float rounding" in maps["grad@10"].reason
    assert not any(maps[f"grad@{k}"].degenerate for k in range(10))


@pytest.mark.shared
def test_every_map_agrees_with_the_reference(vit_tiny, chelsea, chelsea_capture):
    x = normalize(chelsea.pixel, vit_tiny.mean, vit_tiny.std)
    ref = ref_maps(vit_tiny.model, ref_forward(vit_tiny.model, x))
    maps = compute_maps(vit_tiny.model, chelsea_capture)
    assert len(ref) == 4 * 13  # cam, cam_hidden, grad and grad_cls at 12 blocks + the encoder
    for (method, stage), expected in ref.items():
        got = maps[f"{method}@{stage}"]
        if got.degenerate:
            continue  # zero or pure rounding noise: compared by the test above
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got.values.numpy() / scale, expected / scale, atol=1e-5, err_msg=got.key)


@pytest.mark.shared
@pytest.mark.parametrize("key", ["cam@encoder", "grad@6", "cam_hidden@encoder", "grad_cls@3"])
def test_morf_lerf_curves_agree_with_the_reference(vit_tiny, chelsea, key):
    result = audit_image(vit_tiny, chelsea, methods=[key.split("@")[0]], stages=[key.split("@")[1]])
    values = result.maps[key].values.numpy()
    for order in ("morf", "lerf"):
        expected = ref_curve(vit_tiny.model, chelsea.pixel, vit_tiny.mean, vit_tiny.std, values, result.target, order,
                             interp_dtype=torch.float64)
        got = getattr(result.curves[key], order)
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"{key} {order}")
        assert getattr(result.curves[key], f"{order}_auc") == pytest.approx(ref_auc(expected), abs=2e-5)


@pytest.mark.shared
def test_restorations_of_the_real_model(vit_tiny, chelsea):
    result = audit_image(vit_tiny, chelsea, methods=["random"], stages=["encoder"])
    paper = result.restorations["paper"]
    inverse = result.restorations["inverse"]
    assert paper["embed"].image.shape == (3, 14 * 8, 14 * 8)  # 192 = 3 x 8 x 8
    assert inverse["embed"].image.shape == (3, 224, 224)
    # D = 192 < 3 * 16 * 16: the inverse is a least-squares view; its error is reported, not hidden.
    assert 15 < inverse["embed"].psnr < 40
    assert inverse["embed"].psnr == pytest.approx(inverse["patch_embed"].psnr, abs=1e-6)
    assert inverse["5"].psnr < inverse["embed"].psnr
