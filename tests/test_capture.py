"""One forward + one backward pass: every stage's tokens and the class logit's gradient, hooks cleaned up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit import capture
from audit.model.capture import STAGE_EMBED, STAGE_PATCH_EMBED

from conftest import input_size_of, make_tiny
from reference import ref_forward


def _input(model, seed=0, size=None):
    height, width = size or input_size_of(model)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, height, width, generator=generator)


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_matches_an_independent_forward_and_backward(tiny):
    key, model = tiny
    x = _input(model)
    cap = capture(model, x)
    ref = ref_forward(model, x)
    assert cap.target == ref["class"]
    np.testing.assert_allclose(cap.logits.numpy(), ref["logits"], rtol=1e-5, atol=1e-5)
    assert cap.prob == pytest.approx(ref["prob"], abs=1e-6)
    for stage in cap.map_stages:
        np.testing.assert_allclose(cap.tokens[stage].numpy(), ref["tokens"][stage], rtol=1e-5, atol=1e-5)
        scale = np.abs(ref["grads"][stage]).max() + 1e-12
        np.testing.assert_allclose(cap.grads[stage].numpy() / scale, ref["grads"][stage] / scale, atol=1e-5)
    np.testing.assert_allclose(cap.tokens[STAGE_PATCH_EMBED].numpy(), ref["pre_pos"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cap.tokens[STAGE_EMBED].numpy(), ref["post_pos"], rtol=1e-5, atol=1e-5)


def test_every_stage_keeps_the_token_shape(tiny):
    key, model = tiny
    cap = capture(model, _input(model))
    layout = cap.layout
    assert cap.tokens[STAGE_PATCH_EMBED].shape == (layout.num_patches, layout.embed_dim)
    for stage in [STAGE_EMBED, *cap.map_stages]:
        assert cap.tokens[stage].shape == (layout.num_tokens, layout.embed_dim)
        assert cap.grads[stage].shape == cap.tokens[stage].shape
        assert torch.isfinite(cap.tokens[stage]).all() and torch.isfinite(cap.grads[stage]).all()


def test_explicit_target_is_explained():
    model = make_tiny("test_vit")
    cap = capture(model, _input(model), target=3)
    ref = ref_forward(model, _input(model), target=3)
    assert cap.target == 3
    np.testing.assert_allclose(cap.grads["0"].numpy(), ref["grads"]["0"], rtol=1e-4, atol=1e-6)


def test_parameters_grad_untouched_and_hooks_removed():
    model = make_tiny("test_vit")
    sentinel = {name: torch.full_like(p, 7.0) for name, p in model.named_parameters()}
    for name, param in model.named_parameters():
        param.grad = sentinel[name].clone()
    before = _hook_count(model)
    capture(model, _input(model))
    assert _hook_count(model) == before
    for name, param in model.named_parameters():
        assert torch.equal(param.grad, sentinel[name]), name


def test_hooks_are_removed_when_the_pass_fails():
    model = make_tiny("test_vit")
    before = _hook_count(model)
    with pytest.raises(ValueError, match="target: class 99 is out of range"):
        capture(model, _input(model), target=99)
    assert _hook_count(model) == before


def test_non_square_input_is_captured_on_its_own_grid():
    model = make_tiny("test_vit")  # dynamic_img_size=True
    x = _input(model, size=(96, 160))
    cap = capture(model, x)
    assert cap.layout.grid == (6, 10)
    ref = ref_forward(model, x)
    np.testing.assert_allclose(cap.tokens["encoder"].numpy(), ref["tokens"]["encoder"], rtol=1e-5, atol=1e-5)


def test_capture_restores_training_mode_and_refuses_batches():
    model = make_tiny("test_vit").train()
    capture(model, _input(model))
    assert model.training
    with pytest.raises(ValueError, match="expected one image"):
        capture(model, torch.zeros(2, 3, 160, 160))


def test_attention_is_captured_on_the_explicit_path_and_the_fused_path_is_restored(tiny):
    key, model = tiny
    x = _input(model, seed=4)
    fused = [block.attn.fused_attn for block in model.blocks]
    cap = capture(model, x, attention=True)
    assert [block.attn.fused_attn for block in model.blocks] == fused  # restored
    assert _hook_count(model) == 0
    with torch.no_grad():
        plain = model(x)[0]
    torch.testing.assert_close(cap.logits, plain, atol=1e-5, rtol=0)  # explicit path vs the model's own (fused)
    layout = cap.layout
    assert len(cap.attentions) == len(cap.attention_grads) == layout.depth
    for attn, grad in zip(cap.attentions, cap.attention_grads):
        assert attn.shape == grad.shape == (model.blocks[0].attn.num_heads, layout.num_tokens, layout.num_tokens)
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]), atol=1e-5, rtol=0)
    assert float(cap.attention_grads[-1].abs().max()) > 0
    assert capture(model, x).attentions is None  # only when asked for


def test_the_fused_path_is_restored_when_the_capture_fails():
    model = make_tiny("test_vit")
    for block in model.blocks:
        block.attn.fused_attn = True
    with pytest.raises(ValueError, match="out of range"):
        capture(model, _input(model), target=10_000, attention=True)
    assert all(block.attn.fused_attn for block in model.blocks) and _hook_count(model) == 0
