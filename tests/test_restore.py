"""Tokens back into pictures (Figs. 2-4): the paper's reshape and the least-squares inverse of the embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from audit import PatchInverse, capture, restore, restore_inverse, restore_paper
from audit.model.capture import STAGE_EMBED, STAGE_PATCH_EMBED

from conftest import input_size_of, make_tiny
from reference import ref_forward, ref_restore_inverse, ref_restore_paper

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _pixel(height, width, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def _normalised(pixel):
    return ((pixel - 0.5) / 0.5)[None]


def test_paper_reading_matches_the_reference_and_drops_prefix_tokens():
    model = make_tiny("dinov2_reg4")  # 5 prefix tokens, D = 48 -> 3 x 4 x 4
    pixel = _pixel(*input_size_of(model))
    cap = capture(model, _normalised(pixel))
    ref = ref_forward(model, _normalised(pixel))
    for stage in cap.map_stages:
        got = restore_paper(cap, stage)
        expected = ref_restore_paper(ref["tokens"][stage], 5, ref["grid"], 3)
        assert got.image.shape == (3, 4 * 4, 4 * 4)
        np.testing.assert_allclose(got.image.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_paper_reading_is_not_applicable_when_d_over_c_is_not_square():
    model = make_tiny("test_vit")
    cap = capture(model, torch.randn(1, 3, 160, 160))
    result = restore_paper(cap, "3")
    assert result.image is None and "64 / 3 is not a square" in result.reason


@pytest.mark.parametrize("key", ["square", "test_vit2", "dinov2_reg4"])
def test_inverse_matches_the_reference_at_every_stage(key):
    model = make_tiny(key)
    pixel = _pixel(*input_size_of(model))
    cap = capture(model, _normalised(pixel))
    ref = ref_forward(model, _normalised(pixel))
    inverse = PatchInverse(model)
    for stage in cap.map_stages:
        got = restore_inverse(cap, stage, inverse, pixel, MEAN, STD)
        expected = ref_restore_inverse(model, ref["tokens"][stage], ref["post_pos"], ref["pre_pos"], ref["grid"])
        expected = expected * 0.5 + 0.5  # back to pixel space
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got.image.numpy() / scale, expected / scale, atol=1e-4, err_msg=stage)
        assert math.isfinite(got.psnr)


def test_inverse_round_trips_a_vit_b16_shaped_embedding():
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1, num_classes=5).eval()
    pixel = _pixel(224, 224)
    cap = capture(model, _normalised(pixel))
    inverse = PatchInverse(model)
    assert inverse.exact  # D = 768 = 3 * 16 * 16
    for stage in (STAGE_PATCH_EMBED, STAGE_EMBED):
        result = restore_inverse(cap, stage, inverse, pixel, MEAN, STD)
        assert result.max_abs_error < 1e-4, (stage, result.max_abs_error)
        assert result.psnr > 80
        torch.testing.assert_close(result.image, pixel, rtol=0, atol=1e-4)


def test_inverse_error_is_reported_when_d_is_smaller_than_the_patch():
    model = make_tiny("test_vit")  # D = 64 < 3 * 16 * 16
    pixel = _pixel(160, 160)
    cap = capture(model, _normalised(pixel))
    inverse = PatchInverse(model)
    assert not inverse.exact
    result = restore_inverse(cap, STAGE_EMBED, inverse, pixel, MEAN, STD)
    assert result.image.shape == (3, 160, 160)
    assert 0 < result.psnr < 60 and result.max_abs_error > 1e-3


def test_restore_covers_every_captured_stage_in_both_readings():
    model = make_tiny("square")
    pixel = _pixel(32, 32)
    cap = capture(model, _normalised(pixel))
    result = restore(cap, model, pixel, MEAN, STD)
    assert set(result) == {"paper", "inverse"}
    for reading in result.values():
        assert list(reading) == cap.stages
        for restoration in reading.values():
            assert restoration.image is not None and torch.isfinite(restoration.image).all()
    # The embedding stage round-trips exactly because D = C * P * P here.
    assert result["inverse"][STAGE_EMBED].max_abs_error < 1e-4
