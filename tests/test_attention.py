"""Attention-based maps (audit/attention.py): their algebra, and every map against an independent reference."""

from __future__ import annotations

import pytest
import torch

from audit import capture
from audit.attention import ATTENTION_METHODS, chefer, rollout
from audit.maps import compute_maps
from audit.sanity import dependency_step

from conftest import input_size_of, make_tiny


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
    assert dependency_step("encoder", 4, "chefer") == 2 and dependency_step("encoder", 4, "cam") == 5
    assert dependency_step("1", 4, "rollout") == dependency_step("1", 4, "cam") == 4


def test_attention_maps_need_an_attention_capture():
    model = make_tiny("test_vit")
    cap = capture(model, torch.randn(3, *input_size_of(model)))
    with pytest.raises(ValueError, match="attention=True"):
        compute_maps(model, cap, methods=["rollout"])
