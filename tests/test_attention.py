"""Attention-based maps (audit/maps/attention.py): their algebra, and every map against an independent reference."""

from __future__ import annotations

import pytest
import torch

from audit import capture
from audit.maps import compute_maps
from audit.maps.attention import ATTENTION_METHODS, chefer, rollout
from audit.measure.curves import PerturbationConfig
from audit.measure.fills import fill_baseline
from audit.measure.image_audit import input_map
from audit.measure.randomisation import dependency_step
from audit.model.images import normalize, prepare_image

from conftest import input_size_of, make_tiny
from reference import (
    reference_attention_map,
    reference_attn_gradcam_map,
    reference_chefer_map,
    reference_ig_map,
    reference_rollout_map,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_rollout_of_one_block_with_identity_attention_is_the_identity():
    eye = torch.eye(7).expand(3, 7, 7)
    torch.testing.assert_close(rollout([eye]), torch.eye(7, dtype=torch.float64))
    torch.testing.assert_close(rollout([eye, eye, eye]), torch.eye(7, dtype=torch.float64))


def test_chefer_with_zero_gradient_is_the_identity():
    attn = torch.rand(2, 5, 5).softmax(-1)
    result = chefer([attn, attn], [torch.zeros_like(attn), torch.zeros_like(attn)])
    torch.testing.assert_close(result, torch.eye(5, dtype=torch.float64))


def test_chefer_adds_the_positive_part_of_gradient_times_attention():
    attn = torch.rand(2, 4, 4).softmax(-1)
    grad = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    weighted = (grad.double() * attn.double()).clamp(min=0).mean(0)
    torch.testing.assert_close(chefer([attn], [grad]), torch.eye(4, dtype=torch.float64) + weighted)


def test_without_a_class_token_the_attention_maps_are_not_applicable():
    model = make_tiny("test_vit2")  # average pooling, a register token, no class token
    cap = capture(model, torch.randn(3, *input_size_of(model)), attention=True)
    maps = compute_maps(model, cap, methods=ATTENTION_METHODS)
    assert maps and all(m.values is None and "no class token" in m.reason for m in maps.values())


def test_encoder_attention_maps_are_the_last_blocks():
    model = make_tiny("test_vit")
    cap = capture(model, torch.randn(3, *input_size_of(model)), attention=True)
    maps = compute_maps(model, cap, methods=ATTENTION_METHODS)
    last = str(len(model.blocks) - 1)
    for method in ATTENTION_METHODS:
        assert torch.equal(maps[f"{method}@encoder"].values, maps[f"{method}@{last}"].values)
    # attention and attn_gradcam read one block's attention; rollout and chefer that of every block from 0 up
    assert dependency_step("encoder", 4, "attention") == dependency_step("encoder", 4, "attn_gradcam") == 2
    assert dependency_step("encoder", 4, "chefer") == dependency_step("encoder", 4, "cam") == 5
    assert dependency_step("1", 4, "attention") == dependency_step("1", 4, "cam") == 4
    assert dependency_step("1", 4, "rollout") == dependency_step("1", 4, "chefer") == dependency_step("0", 4, "cam")


def test_attention_maps_need_an_attention_capture():
    model = make_tiny("test_vit")
    cap = capture(model, torch.randn(3, *input_size_of(model)))
    with pytest.raises(ValueError, match="attention=True"):
        compute_maps(model, cap, methods=["rollout"])


# -- against the independent references of tests/reference.py (their own forward pass, float64) ----------------------

REFERENCES = {"attention": reference_attention_map, "rollout": reference_rollout_map,
              "chefer": reference_chefer_map, "attn_gradcam": reference_attn_gradcam_map}


def _close_to_reference(mine: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """Equal to 1e-5 of the map's own scale (attention maps sum to about 1 over N tokens, Chefer's to 1 + ...)."""
    scale = max(float(reference.abs().max()), 1e-12)
    torch.testing.assert_close(mine.double() / scale, reference / scale, atol=1e-5, rtol=0,
                               msg=lambda message: f"{what}: {message}")


def _check_against_references(model, x, stages):
    cap = capture(model, x, attention=True)
    maps = compute_maps(model, cap, methods=ATTENTION_METHODS, stages=stages)
    for stage in stages:
        block = len(model.blocks) - 1 if stage == "encoder" else int(stage)
        for method, reference in REFERENCES.items():
            expected = reference(model, x, cap.target, block)
            result = maps[f"{method}@{stage}"]
            _close_to_reference(result.values, expected, f"{method}@{stage}")


@pytest.mark.parametrize("key", ["test_vit", "deit_distilled", "dinov2_reg4", "square"])
def test_attention_maps_equal_the_reference_on_random_init_models(key):
    model = make_tiny(key)
    x = torch.randn(1, 3, *input_size_of(model), generator=torch.Generator().manual_seed(3))
    _check_against_references(model, x, [str(k) for k in range(len(model.blocks))] + ["encoder"])


@pytest.mark.shared
def test_attention_maps_equal_the_reference_on_the_real_vit_tiny(vit_tiny, imagenet_photos):
    x = normalize(prepare_image(imagenet_photos[0], vit_tiny.data_config).pixel, vit_tiny.mean, vit_tiny.std)[None]
    _check_against_references(vit_tiny.model, x, ["0", "5", "11", "encoder"])


@pytest.mark.parametrize("fill", [127 / 255, "black", "blur"])
def test_integrated_gradients_equals_the_reference(fill):
    model = make_tiny("test_vit")
    pixel = torch.rand(3, *input_size_of(model), generator=torch.Generator().manual_seed(5))
    config = PerturbationConfig(fill=fill)
    cap = capture(model, normalize(pixel, MEAN, STD))
    mine = input_map("ig", model, pixel, config, MEAN, STD, cap.target, cap.layout)
    expected = reference_ig_map(model, pixel, fill_baseline(pixel, config.fill, MEAN), MEAN, STD, cap.target,
                                cap.layout.patch_size)
    _close_to_reference(mine, expected, f"ig with fill {fill}")


@pytest.mark.shared
def test_integrated_gradients_equals_the_reference_on_the_real_vit_tiny(vit_tiny, imagenet_photos):
    pixel = prepare_image(imagenet_photos[1], vit_tiny.data_config).pixel
    config = PerturbationConfig()
    cap = capture(vit_tiny.model, normalize(pixel, vit_tiny.mean, vit_tiny.std))
    mine = input_map("ig", vit_tiny.model, pixel, config, vit_tiny.mean, vit_tiny.std, cap.target, cap.layout)
    expected = reference_ig_map(vit_tiny.model, pixel, fill_baseline(pixel, config.fill, vit_tiny.mean), vit_tiny.mean,
                                vit_tiny.std, cap.target, cap.layout.patch_size)
    _close_to_reference(mine, expected, "ig on the real ViT-Ti")


def test_every_stage_of_rollout_and_chefer_is_the_product_up_to_its_block():
    """The maps share one pass over the blocks; each stage must still be R after blocks 0..b."""
    model = make_tiny("test_vit")
    cap = capture(model, torch.randn(3, *input_size_of(model)), attention=True)
    maps = compute_maps(model, cap, methods=["rollout", "chefer"])
    first = cap.layout.num_prefix_tokens
    for block in range(len(model.blocks)):
        expected = {"rollout": rollout(cap.attentions[:block + 1])[0],
                    "chefer": chefer(cap.attentions[:block + 1], cap.attention_grads[:block + 1])[0]}
        for method, row in expected.items():
            torch.testing.assert_close(maps[f"{method}@{block}"].values, cap.layout.to_grid(row[first:].float()))
