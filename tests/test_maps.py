"""The paper's maps (eqs. 1-4) and their code's readings, against an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit import METHODS, capture, compute_maps
from audit.maps import DEFAULT_METHODS, is_constant

from conftest import input_size_of, make_tiny
from reference import ref_forward, ref_maps


def _input(model, seed=0):
    height, width = input_size_of(model)
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("act", ["gelu", "relu", "identity"])
def test_maps_match_the_reference_for_every_layout(tiny, act):
    key, model = tiny
    x = _input(model)
    maps = compute_maps(model, capture(model, x), act=act)
    expected = ref_maps(model, ref_forward(model, x), act=act)
    for (method, stage), ref in expected.items():
        got = maps[f"{method}@{stage}"]
        assert got.values is not None, (key, method, stage, got.reason)
        scale = np.abs(ref).max() + 1e-12
        np.testing.assert_allclose(got.values.numpy() / scale, ref / scale, atol=2e-5,
                                   err_msg=f"{key} {method}@{stage}")
    # Everything the reference leaves out is reported as not applicable, with a reason.
    for result in maps.values():
        if result.method in ("random", "center"):
            continue
        if (result.method, result.stage) not in expected and result.method != "cam":
            assert result.values is None and result.reason.startswith("not applicable"), result


def test_grad_map_is_zero_for_patch_tokens_when_head_reads_only_cls():
    model = make_tiny("test_vit")  # class token, 'token' pooling
    maps = compute_maps(model, capture(model, _input(model)), methods=["grad", "grad_cls"])
    last = str(len(model.blocks) - 1)
    for stage, where in ((last, f"block {last}"), ("encoder", "the encoder output")):
        result = maps[f"grad@{stage}"]
        assert result.degenerate and not result.rankable
        assert torch.count_nonzero(result.values) == 0
        assert result.reason == f"gradient does not reach patch tokens at {where}: the head reads only the class token"
        assert not maps[f"grad_cls@{stage}"].degenerate  # the class token's own gradient is there
    assert not maps["grad@0"].degenerate


def test_grad_cls_is_degenerate_where_an_average_pooled_head_ignores_the_prefix():
    model = make_tiny("test_vit2")  # no class token: grad_cls does not apply
    maps = compute_maps(model, capture(model, _input(model)))
    assert maps["grad_cls@0"].reason == "not applicable: the model has no class token"
    assert not maps["grad@encoder"].degenerate  # average pooling reads every patch token


def test_cam_hidden_not_applicable_when_d_over_c_is_not_square():
    model = make_tiny("test_vit")  # D = 64
    maps = compute_maps(model, capture(model, _input(model)), methods=["cam_hidden"])
    assert maps["cam_hidden@encoder"].values is None
    assert "D / C = 64 / 3 is not a square" in maps["cam_hidden@encoder"].reason


def test_cam_hidden_is_a_p_by_p_map_over_hidden_dimensions():
    model = make_tiny("square")  # D = 48 = 3 * 4 * 4
    maps = compute_maps(model, capture(model, torch.randn(1, 3, 32, 32)), methods=["cam_hidden"])
    assert maps["cam_hidden@0"].values.shape == (4, 4)


def test_cam_uses_the_attention_pooling_head_on_each_token_alone():
    model = make_tiny("test_vit3")  # global_pool='map'
    cap = capture(model, _input(model))
    maps = compute_maps(model, cap, methods=["cam"], stages=["encoder"])
    tokens = cap.layout.patch_tokens(cap.tokens["encoder"])
    with torch.no_grad():
        expected = torch.stack([model.fc_norm(model.attn_pool(t[None, None]))[0] @ model.head.weight[cap.target]
                                for t in tokens])
    torch.testing.assert_close(maps["cam@encoder"].values.flatten(), expected, rtol=1e-5, atol=1e-6)


def test_baselines_are_seeded_and_differ_per_image_and_stage():
    model = make_tiny("test_vit")
    cap = capture(model, _input(model))
    first = compute_maps(model, cap, methods=["random", "center"], seed=1, image="a")
    again = compute_maps(model, cap, methods=["random", "center"], seed=1, image="a")
    other = compute_maps(model, cap, methods=["random"], seed=1, image="b")
    assert torch.equal(first["random@3"].values, again["random@3"].values)
    assert not torch.equal(first["random@3"].values, other["random@3"].values)
    assert not torch.equal(first["random@3"].values, first["random@4"].values)
    assert 0 <= float(first["random@0"].values.min()) and float(first["random@0"].values.max()) < 1
    center = first["center@0"].values
    assert center.shape == cap.layout.grid
    peak = divmod(int(center.argmax()), center.shape[1])
    assert peak in {(4, 4), (4, 5), (5, 4), (5, 5)}  # 10 x 10 grid: the four middle cells tie


def test_stage_subset_and_unknown_names():
    model = make_tiny("test_vit")
    cap = capture(model, _input(model))
    maps = compute_maps(model, cap, methods=["cam"], stages=[-1, "encoder"])
    assert list(maps) == ["cam@5", "cam@encoder"]
    with pytest.raises(ValueError, match="methods: unknown \\['gradcam'\\]"):
        compute_maps(model, cap, methods=["gradcam"])
    with pytest.raises(ValueError, match="act: unknown 'tanh'"):
        compute_maps(model, cap, act="tanh")
    assert set(DEFAULT_METHODS) == {"cam", "cam_hidden", "grad", "grad_cls", "random", "center"}  # the paper's
    assert set(METHODS) == set(DEFAULT_METHODS) | {"attention", "rollout", "chefer", "attn_gradcam", "ig"}


def test_constant_detection_is_relative_to_the_map_scale():
    assert is_constant(torch.zeros(3, 3))
    assert is_constant(torch.full((3, 3), 5.0))
    assert not is_constant(torch.tensor([1e-9, 2e-9]))
    assert not is_constant(torch.tensor([1.0, 1.001]))
    assert not is_constant(torch.tensor([0.0, float("nan")]))


def test_grad_map_before_the_last_block_cancels_because_the_last_block_sees_patches_through_layernorm():
    """Block L-2's patch tokens reach the class token only through block L-1's LayerNorm, which is scale-invariant,
    so sum_j T_ij dy/dT_ij = 0 exactly (Euler) and the float map is rounding noise: degenerate, not ranked."""
    model = make_tiny("test_vit")
    x = _input(model)
    cap = capture(model, x)
    stage = str(len(model.blocks) - 2)
    result = compute_maps(model, cap, methods=["grad"], stages=[stage])[f"grad@{stage}"]
    assert result.degenerate and "cancels to float rounding at block 4" in result.reason
    # The claim behind it: rescaling every patch token at that stage leaves the class logit unchanged.
    tokens = cap.tokens[stage].clone()[None]
    scaled = tokens.clone()
    scaled[:, 1:] *= 3.0
    with torch.no_grad():
        logits = [model.forward_head(model.norm(model.blocks[-1](t)))[0, cap.target] for t in (tokens, scaled)]
    assert float(logits[0]) == pytest.approx(float(logits[1]), rel=1e-5)
    earlier = compute_maps(model, cap, methods=["grad"], stages=["3"])["grad@3"]
    assert not earlier.degenerate


def test_maps_on_one_thread_equal_the_maps_on_every_thread_and_the_count_is_restored():
    from audit.measure.image_audit import one_thread

    model = make_tiny("test_vit")
    cap = capture(model, _input(model, 4), attention=True)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        wide = compute_maps(model, cap, methods=METHODS)
        with one_thread():
            assert torch.get_num_threads() == 1
            narrow = compute_maps(model, cap, methods=METHODS)
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with one_thread():
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert wide.keys() == narrow.keys()
    for key, result in wide.items():
        if result.values is not None:
            torch.testing.assert_close(narrow[key].values, result.values, rtol=1e-6, atol=1e-7, msg=key)
