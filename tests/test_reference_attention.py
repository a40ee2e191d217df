"""Tests of the reference attention maps and Integrated Gradients in ``reference.py`` (not of the audit package).

Each test checks the reference against something written independently of it: timm's own forward pass, finite
differences, hand-computed closed forms, numpy products written out here, or captum.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention

from reference import (
    reference_attention_from,
    reference_attention_map,
    reference_attention_probs,
    reference_attn_gradcam_from,
    reference_attn_gradcam_map,
    reference_chefer_from,
    reference_chefer_map,
    reference_ig_attribution,
    reference_ig_map,
    reference_ig_weights,
    reference_manual_forward,
    reference_rollout_from,
    reference_rollout_map,
)


class _GatedAttention(Attention):
    """timm's Attention with its optional sigmoid gate on the attention output switched on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, gated=True, **kwargs)


MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TARGET = 3

# Small random-weight models (name, create_model kwargs); all with img_size=32, patch_size=8 (a 4 x 4 grid).
MODELS = {
    # class token only
    "vit": ("vit_tiny_patch16_224", dict(depth=3)),
    # class + distillation token, two heads averaged
    "distilled": ("deit_tiny_distilled_patch16_224", dict(depth=3)),
    # class token + 4 register tokens, layer scale, no position embedding on the prefix
    "reg4": ("vit_small_patch14_reg4_dinov2", dict(depth=2, embed_dim=64, num_heads=4)),
    # q/k norms, the attention output norm, a gated attention, layer scale and a pre-norm: every optional piece
    "qknorm": ("vit_tiny_patch16_224", dict(depth=2, embed_dim=64, num_heads=4, qk_norm=True, scale_attn_norm=True,
                                            init_values=0.1, pre_norm=True,
                                            attn_layer=_GatedAttention)),
}
KEYS = list(MODELS)


def _make(key: str, seed: int = 0) -> torch.nn.Module:
    name, kwargs = MODELS[key]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, img_size=32, patch_size=8, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # random init leaves heads and layer scales near zero: give every parameter some size
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {key: _make(key) for key in KEYS}


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _pixels(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    pixel = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return pixel, torch.full_like(pixel, 127 / 255)


def _normalise64(pixel: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=torch.float64).view(-1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(-1, 1, 1)
    return (pixel.to(torch.float64) - mean) / std


def _random_attention(heads: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(heads, n, n, generator=g, dtype=torch.float64), dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Manual forward pass, attention probabilities and their gradients
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_manual_forward_matches_timm(models, key):
    model = models[key]
    x = _x()
    logits, _, _ = reference_attention_probs(model, x, TARGET)
    with torch.no_grad():
        timm32 = model(x)[0].to(torch.float64)
        timm64 = copy.deepcopy(model).double()(x.double())[0]
    assert logits.dtype == torch.float64 and logits.shape == (10,)
    np.testing.assert_allclose(logits.numpy(), timm32.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), timm64.numpy(), rtol=0, atol=1e-12)  # same float64 model: exact
    # The model passed in is left as it was (float32, parameters still trainable).
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("key", KEYS)
def test_attention_rows_are_probabilities(models, key):
    model = models[key]
    _, attns, grads = reference_attention_probs(model, _x(), TARGET)
    n = model.num_prefix_tokens + 16
    heads = model.blocks[0].attn.num_heads
    assert len(attns) == len(grads) == len(model.blocks)
    for A, G in zip(attns, grads):
        assert A.shape == G.shape == (heads, n, n) and A.dtype == G.dtype == torch.float64
        assert (A >= 0).all()
        np.testing.assert_allclose(A.sum(dim=-1).numpy(), np.ones((heads, n)), rtol=0, atol=1e-12)
        assert not torch.allclose(A, torch.full_like(A, 1 / n), atol=1e-3)  # not trivially uniform


@pytest.mark.parametrize("key", KEYS)
def test_attention_gradient_matches_finite_difference(models, key):
    model = models[key]
    x = _x()
    _, attns, grads = reference_attention_probs(model, x, TARGET)
    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    P = model.num_prefix_tokens
    last = len(model.blocks) - 1
    eps = 1e-6

    def y_with(block, h, row, col, delta):
        offset = torch.zeros((1,) + attns[block].shape, dtype=torch.float64)
        offset[0, h, row, col] = delta
        with torch.no_grad():
            logits, _ = reference_manual_forward(m64, x64, {block: offset})
        return float(logits[0, TARGET])

    # Fixed entries (block 0 entries reach the logit through every later block, their attention probabilities
    # included) and, in every block, the entry with the largest gradient.
    entries = [(0, 1, 0, P + 5), (0, 0, P + 2, 0), (max(last - 1, 0), 2, P + 7, P + 3), (last, 0, 0, P + 9)]
    for b, G in enumerate(grads):
        h, row, col = np.unravel_index(int(G.abs().argmax()), G.shape)
        entries.append((b, int(h), int(row), int(col)))
    for block, h, row, col in entries:
        fd = (y_with(block, h, row, col, eps) - y_with(block, h, row, col, -eps)) / (2 * eps)
        got = float(grads[block][h, row, col])
        assert abs(got - fd) <= 1e-8 + 1e-6 * abs(fd), (key, block, h, row, col, got, fd)
    for block, h, row, col in entries[-len(grads):]:
        assert abs(float(grads[block][h, row, col])) > 1e-6, "the largest entry should be well above the tolerance"


def test_last_block_gradient_reaches_only_the_pooled_rows(models):
    # The head of "vit" reads the class token only, the distilled heads the class and distillation tokens.
    for key, rows in (("vit", 1), ("distilled", 2)):
        _, _, grads = reference_attention_probs(models[key], _x(), TARGET)
        G = grads[-1]
        assert torch.count_nonzero(G[:, rows:, :]) == 0
        assert (G[:, :rows, :].abs().amax(dim=-1) > 0).all()


def test_target_none_is_the_argmax(models):
    model = models["vit"]
    logits, _, grads = reference_attention_probs(model, _x(), None)
    c = int(torch.argmax(logits))
    _, _, grads_c = reference_attention_probs(model, _x(), c)
    _, _, grads_other = reference_attention_probs(model, _x(), (c + 1) % 10)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_c))
    assert not torch.allclose(grads[0], grads_other[0])


# ----------------------------------------------------------------------------------------------------------------------
# Combination rules on given attention lists
# ----------------------------------------------------------------------------------------------------------------------


def test_attention_map_takes_row0_patch_columns_row_major():
    P, grid, heads = 2, (2, 3), 3
    n = P + 6
    A = torch.zeros(heads, n, n, dtype=torch.float64)
    for h in range(heads):
        for i in range(n):
            A[h, 0, i] = 100 * i + h  # mean over heads: 100 i + 1
            A[h, 1, i] = -7.0  # another row, never read
    got = reference_attention_from(A, P, grid)
    want = np.array([[100 * (P + r * 3 + q) + 1 for q in range(3)] for r in range(2)], dtype=np.float64)
    assert got.shape == grid and got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("blocks", [1, 3])
def test_rollout_of_identity_attention_is_the_identity_row(blocks):
    P, grid, heads = 2, (2, 3), 4
    eye = torch.eye(P + 6, dtype=torch.float64).expand(heads, -1, -1)
    got = reference_rollout_from([eye] * blocks, P, grid)
    np.testing.assert_array_equal(got.numpy(), np.zeros(grid))


@pytest.mark.parametrize("blocks", [1, 2, 5])
def test_rollout_of_uniform_attention_has_its_closed_form(blocks):
    # U = 1/N is idempotent, so ((U + I) / 2)^n = 2^-n I + (1 - 2^-n) U: off-diagonal entries are (1 - 2^-n) / N.
    P, grid = 1, (4, 4)
    n = P + 16
    U = torch.full((2, n, n), 1 / n, dtype=torch.float64)
    got = reference_rollout_from([U] * blocks, P, grid)
    np.testing.assert_allclose(got.numpy(), np.full(grid, (1 - 2.0**-blocks) / n), rtol=1e-13)


def test_rollout_multiplies_later_blocks_from_the_left():
    P, grid, heads = 1, (2, 2), 3
    n = P + 4
    attns = [_random_attention(heads, n, seed) for seed in range(3)]
    tilde = [(A.numpy().mean(axis=0) + np.eye(n)) / 2 for A in attns]
    want = np.linalg.multi_dot([tilde[2], tilde[1], tilde[0]])
    wrong = np.linalg.multi_dot([tilde[0], tilde[1], tilde[2]])
    got = reference_rollout_from(attns, P, grid).numpy()
    np.testing.assert_allclose(got, want[0, P:].reshape(grid), rtol=1e-13)
    assert not np.allclose(want[0, P:], wrong[0, P:], atol=1e-4)  # the order is observable with these matrices


def test_chefer_with_zero_or_negative_gradient_is_the_identity_row():
    P, grid, heads = 2, (2, 3), 3
    n = P + 6
    attns = [_random_attention(heads, n, seed) for seed in range(3)]
    zero = [torch.zeros_like(A) for A in attns]
    negative = [-torch.rand(A.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) for A in attns]
    for grads in (zero, negative):  # (grad * A)^+ = 0 for A >= 0, grad <= 0
        np.testing.assert_array_equal(reference_chefer_from(attns, grads, P, grid).numpy(), np.zeros(grid))


def test_chefer_of_one_block_with_unit_gradient_is_the_attention_map():
    P, grid, heads = 1, (4, 4), 2
    A = _random_attention(heads, P + 16, 0)
    got = reference_chefer_from([A], [torch.ones_like(A)], P, grid)
    np.testing.assert_allclose(got.numpy(), reference_attention_from(A, P, grid).numpy(), rtol=1e-14)


def test_chefer_is_a_product_of_one_plus_the_positive_parts():
    # R_b = (I + Ā_b) ... (I + Ā_0), written out with numpy; gradients of both signs exercise the clamp.
    P, grid, heads = 2, (2, 3), 3
    n = P + 6
    g = torch.Generator().manual_seed(4)
    attns = [_random_attention(heads, n, seed) for seed in range(3)]
    grads = [torch.randn(heads, n, n, generator=g, dtype=torch.float64) for _ in range(3)]
    factors = []
    for A, G in zip(attns, grads):
        prod = G.numpy() * A.numpy()
        factors.append(np.eye(n) + np.where(prod > 0, prod, 0.0).mean(axis=0))
    want = np.linalg.multi_dot(factors[::-1])
    got = reference_chefer_from(attns, grads, P, grid).numpy()
    np.testing.assert_allclose(got, want[0, P:].reshape(grid), rtol=1e-13)
    unclamped = np.linalg.multi_dot([np.eye(n) + (G.numpy() * A.numpy()).mean(axis=0)
                                     for A, G in zip(attns[::-1], grads[::-1])])
    assert not np.allclose(want[0, P:], unclamped[0, P:], atol=1e-3)  # the clamp matters here


def test_attn_gradcam_weights_heads_by_their_mean_patch_gradient():
    P, grid, heads = 2, (2, 3), 3
    n = P + 6
    A = _random_attention(heads, n, 1)
    G = torch.randn(heads, n, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    alphas = [float(np.mean(G.numpy()[h, 0, P:])) for h in range(heads)]
    want = np.maximum(0.0, sum(alphas[h] * A.numpy()[h, 0, P:] for h in range(heads)) / heads).reshape(grid)
    got = reference_attn_gradcam_from(A, G, P, grid)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-300)
    # Gradients on the prefix columns and on other rows do not count.
    G2 = G.clone()
    G2[:, 0, :P] = 1e6
    G2[:, 1:, :] = -1e6
    np.testing.assert_array_equal(reference_attn_gradcam_from(A, G2, P, grid).numpy(), got.numpy())
    # A constant gradient g: g times the attention map when g > 0, zero when g < 0.
    ones = torch.ones_like(A)
    np.testing.assert_allclose(reference_attn_gradcam_from(A, 2.5 * ones, P, grid).numpy(),
                               2.5 * reference_attention_from(A, P, grid).numpy(), rtol=1e-14)
    np.testing.assert_array_equal(reference_attn_gradcam_from(A, -ones, P, grid).numpy(), np.zeros(grid))


# ----------------------------------------------------------------------------------------------------------------------
# The maps on models
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["vit", "distilled", "reg4"])
def test_model_maps_combine_the_model_attention(models, key):
    model = models[key]
    x = _x()
    _, attns, grads = reference_attention_probs(model, x, TARGET)
    P = model.num_prefix_tokens
    grid = (4, 4)
    for b in range(len(model.blocks)):
        maps = {
            "attention": (reference_attention_map(model, x, TARGET, b), reference_attention_from(attns[b], P, grid)),
            "rollout": (reference_rollout_map(model, x, TARGET, b), reference_rollout_from(attns[: b + 1], P, grid)),
            "chefer": (reference_chefer_map(model, x, TARGET, b),
                       reference_chefer_from(attns[: b + 1], grads[: b + 1], P, grid)),
            "attn_gradcam": (reference_attn_gradcam_map(model, x, TARGET, b),
                             reference_attn_gradcam_from(attns[b], grads[b], P, grid)),
        }
        for name, (got, want) in maps.items():
            assert got.shape == grid and got.dtype == torch.float64, (name, b)
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=f"{key} {name}@{b}")
        # The attention map skips every prefix column: the patch columns of row 0 do not sum to 1.
        patch_mass = float(maps["attention"][0].sum())
        prefix_mass = float(attns[b].mean(dim=0)[0, :P].sum())
        assert abs(patch_mass + prefix_mass - 1) < 1e-12 and prefix_mass > 1e-3
    assert not torch.equal(reference_chefer_map(model, x, TARGET, 1), reference_chefer_map(model, x, 4, 1))


def test_maps_refuse_a_model_without_class_token():
    model = timm.create_model("vit_betwixt_patch16_reg4_gap_256", pretrained=False, img_size=32, patch_size=8,
                              depth=1, embed_dim=64, num_heads=4, num_classes=10).eval()
    assert model.cls_token is None
    with pytest.raises(ValueError, match="class token"):
        reference_rollout_map(model, _x(), TARGET, 0)
    with pytest.raises(IndexError):
        reference_attention_map(_make("vit"), _x(), TARGET, 3)


# ----------------------------------------------------------------------------------------------------------------------
# Integrated Gradients
# ----------------------------------------------------------------------------------------------------------------------


def test_ig_trapezoid_weights():
    alphas, weights = reference_ig_weights(32)
    assert alphas == [k / 32 for k in range(33)]
    assert weights[0] == weights[-1] == 1 / 64 and all(w == 1 / 32 for w in weights[1:-1])
    assert abs(sum(weights) - 1) < 1e-15


@pytest.mark.parametrize("key", ["vit", "distilled", "reg4"])
def test_ig_completeness(models, key):
    # sum (x - x0) g = y_c(x) - y_c(x0) up to the trapezoid error, O(1 / steps^2): measured 0.03-0.5 % here.
    model = models[key]
    pixel, fill = _pixels()
    attr = reference_ig_attribution(model, pixel, fill, MEAN, STD, TARGET)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        delta = float(m64(_normalise64(pixel)[None])[0, TARGET] - m64(_normalise64(fill)[None])[0, TARGET])
    assert abs(delta) > 1e-2
    assert abs(float(attr.sum()) - delta) <= 0.02 * abs(delta), (float(attr.sum()), delta)


def test_ig_is_zero_when_the_image_is_the_fill(models):
    _, fill = _pixels()
    got = reference_ig_map(models["vit"], fill, fill, MEAN, STD, TARGET, 8)
    np.testing.assert_array_equal(got.numpy(), np.zeros((4, 4)))


@pytest.mark.peer
@pytest.mark.parametrize("key", ["vit", "reg4"])
def test_ig_matches_captum(models, key):
    # captum's riemann_trapezoid with n_steps=33 evaluates at linspace(0, 1, 33) = k / 32, our points, but with
    # step sizes 1/33 (halved at both ends, summing to 32/33) where the trapezoid rule on [0, 1] uses 1/32: captum's
    # attribution is ours times 32/33 (its step sizes are also cast to float32, a relative error ~1e-8).
    from captum.attr import IntegratedGradients

    model = models[key]
    pixel, fill = _pixels()
    m64 = copy.deepcopy(model).double()
    ig = IntegratedGradients(lambda p: m64(_normalise64_batch(p)))
    theirs = ig.attribute(pixel.double()[None], baselines=fill.double()[None], target=TARGET, n_steps=33,
                          method="riemann_trapezoid")[0]
    theirs_map = F.avg_pool2d(theirs.sum(dim=0)[None, None], kernel_size=8, stride=8)[0, 0] * (33 / 32)
    ours = reference_ig_map(model, pixel, fill, MEAN, STD, TARGET, 8)
    assert ours.shape == (4, 4) and ours.dtype == torch.float64
    scale = float(ours.abs().max())
    np.testing.assert_allclose(ours.numpy() / scale, theirs_map.numpy() / scale, rtol=0, atol=1e-5)
    # Without the 32/33 rescaling the two differ by 1/33 of the map, far more than the tolerance.
    assert float((ours - theirs_map * 32 / 33).abs().max()) / scale > 1e-3


def _normalise64_batch(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, -1, 1, 1)
    return (pixels - mean) / std
