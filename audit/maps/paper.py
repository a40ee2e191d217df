"""The paper's maps, both readings, and two baselines (Utkin et al. 2024, eqs. 1-4).

Notation: T is a stage's output (N tokens x D), i runs over patch tokens, c is the explained class, maps are at
grid resolution (gh, gw) unless stated. Stages are blocks ``'0'..'L-1'`` and ``'encoder'`` (after the final norm).

- ``cam`` (eqs. 1/2, read per token): m_i = w_c . head_pre(T_i), w_c the classifier row of c (no bias) and
  head_pre what the head applies to a token before its linear layer (``fc_norm``; an attention-pooling head
  applied to the token alone). A distilled model's logit is the mean of two heads: w_c is their mean.
- ``cam_hidden`` (the paper's code, REFERENCE-NOTES item 3): s_i = head(T_encoder_i)[c] for ALL N tokens;
  v = sum_i s_i T_i; v reshaped to (C, p, p), summed over C: a p x p map over hidden dimensions.
- ``grad`` (eqs. 3/4 as written): m_i = act(sum_j T_ij dy_c/dT_ij).
- ``grad_cls`` (the paper's code, item 4): m_i = act(sum_j T_ij dy_c/dT_0j), the gradient at the class token.
- ``random``: seeded uniform noise on the grid; ``center``: a centred Gaussian on the grid.

The attention-based maps (``attention``, ``rollout``, ``chefer``, ``attn_gradcam``) are defined in
:mod:`audit.maps.attention`; they need a capture made with ``attention=True``. ``ig`` (Integrated Gradients) has one
stage, ``input``, and is made by :mod:`audit.maps.integrated_gradients` from the image, not from a capture.
"""

from __future__ import annotations

import zlib
from typing import cast

import numpy as np
import torch
from torch import nn

from ..model.capture import Capture
from ..model.layout import MAP_STAGE_ENCODER
from .registry import MapContext, MapMethod, MapResult, register

__all__ = ["map_seed"]

# A gradient map whose sums are all below this fraction of the size of their terms is float32 rounding noise.
CANCEL_RTOL = 1e-4
PAPER = "Utkin et al. 2024"


def map_seed(seed: int, image: str, stage: str) -> int:
    """The seed of an image's ``random`` map at a stage: stable across runs, platforms and processes."""
    return zlib.crc32(f"{seed}:{image}:{stage}".encode())


def _head_weight(model: nn.Module, target: int) -> torch.Tensor:
    """w_c: the classifier row of the class; the mean of both heads for a distilled model."""
    weight = cast(nn.Linear, model.head).weight[target]
    if getattr(model, "head_dist", None) is not None:
        weight = 0.5 * (weight + cast(nn.Linear, model.head_dist).weight[target])
    return weight


def _head_pre(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """What the head applies to each token taken alone before its linear layer: (N, D) -> (N, D')."""
    if getattr(model, "attn_pool", None) is not None:
        tokens = cast(nn.Module, model.attn_pool)(tokens.unsqueeze(1))  # pooling over a single token
    return cast(nn.Module, model.fc_norm)(tokens)


def _token_scores(model: nn.Module, tokens: torch.Tensor, target: int) -> torch.Tensor:
    """Per-token class score head(T_i)[c] with bias, for every token (cam_hidden's s)."""
    pre = _head_pre(model, tokens)
    score = cast(nn.Linear, model.head)(pre)[:, target]
    if getattr(model, "head_dist", None) is not None:
        score = 0.5 * (score + cast(nn.Linear, model.head_dist)(pre)[:, target])
    return score


def _where(stage: str) -> str:
    return "the encoder output" if stage == MAP_STAGE_ENCODER else f"block {stage}"


def _gradient_map(
    method: str, stage: str, tokens: torch.Tensor, grads: torch.Tensor, act, cap: Capture, zero_reason: str
) -> MapResult:
    """m_i = act(sum_j tokens_ij grads_ij), flagged degenerate when the sums are zero or cancel to rounding error.

    ``grads`` is either each token's own gradient (``grad``) or the class token's, broadcast (``grad_cls``).
    """
    terms = tokens.double() * grads.double()
    sums = terms.sum(-1)
    values = act(sums).float()
    result = MapResult(method, stage, cap.layout.to_grid(values))
    magnitude = float(terms.abs().sum(-1).max())
    if magnitude == 0.0:
        result.degenerate, result.reason = True, zero_reason
    elif float(sums.abs().max()) <= CANCEL_RTOL * magnitude:
        result.degenerate = True
        result.reason = (
            f"gradient x token cancels to float rounding at {_where(stage)} (every |sum| is below {CANCEL_RTOL:g} of "
            "the size of its terms): the class score does not change when these "
            "tokens are rescaled (e.g. they reach the head only through a LayerNorm)"
        )
    return result


def _grad_map(cap: Capture, stage: str, act, model: nn.Module) -> MapResult:
    layout = cap.layout
    tokens, grads = layout.patch_tokens(cap.tokens[stage]), layout.patch_tokens(cap.grads[stage])
    reason = f"gradient does not reach patch tokens at {_where(stage)}"
    if getattr(model, "global_pool", None) == "token" and getattr(model, "attn_pool", None) is None:
        reason += ": the head reads only the class token"
    return _gradient_map("grad", stage, tokens, grads, act, cap, reason)


def _grad_cls_map(cap: Capture, stage: str, act) -> MapResult:
    layout = cap.layout
    if not layout.has_class_token:
        return MapResult("grad_cls", stage, None, reason="not applicable: the model has no class token")
    tokens = layout.patch_tokens(cap.tokens[stage])
    cls_grad = cap.grads[stage][0].expand_as(tokens)
    reason = f"gradient does not reach the class token at {_where(stage)}"
    return _gradient_map("grad_cls", stage, tokens, cls_grad, act, cap, reason)


def _center(grid: tuple[int, int]) -> torch.Tensor:
    """A Gaussian centred on the grid, sigma = a quarter of each side (in cells)."""
    rows = torch.arange(grid[0], dtype=torch.float64) - (grid[0] - 1) / 2
    cols = torch.arange(grid[1], dtype=torch.float64) - (grid[1] - 1) / 2
    sy, sx = max(grid[0] / 4, 1e-6), max(grid[1] / 4, 1e-6)
    return torch.exp(-0.5 * ((rows[:, None] / sy) ** 2 + (cols[None, :] / sx) ** 2)).float()


def _cam(ctx: MapContext, stage: str) -> MapResult:
    layout, model = ctx.cap.layout, ctx.model
    weight = ctx.once("head_weight", lambda: _head_weight(model, ctx.cap.target))
    values = _head_pre(model, layout.patch_tokens(ctx.cap.tokens[stage])) @ weight
    return MapResult("cam", stage, layout.to_grid(values.float()))


def _cam_hidden(ctx: MapContext, stage: str) -> MapResult:
    layout, model = ctx.cap.layout, ctx.model
    side = layout.hidden_patch
    if side is None:
        return MapResult("cam_hidden", stage, None, reason=(
            f"not applicable: D / C = {layout.embed_dim} / {layout.in_chans} is not a square"))
    if getattr(model, "attn_pool", None) is not None:
        return MapResult("cam_hidden", stage, None,
                         reason="not applicable: an attention-pooling head has no per-token score")
    scores = ctx.once("token_scores", lambda: _token_scores(
        model, ctx.cap.tokens[MAP_STAGE_ENCODER], ctx.cap.target).double())
    hidden = scores @ ctx.cap.tokens[stage].double()
    return MapResult("cam_hidden", stage, hidden.reshape(layout.in_chans, side, side).sum(0).float())


def _grad(ctx: MapContext, stage: str) -> MapResult:
    return _grad_map(ctx.cap, stage, ctx.activation, ctx.model)


def _grad_cls(ctx: MapContext, stage: str) -> MapResult:
    return _grad_cls_map(ctx.cap, stage, ctx.activation)


def _random(ctx: MapContext, stage: str) -> MapResult:
    rng = np.random.default_rng(map_seed(ctx.seed, ctx.image, stage))
    return MapResult("random", stage, torch.from_numpy(rng.random(ctx.cap.layout.grid, dtype=np.float64)).float())


def _centre(ctx: MapContext, stage: str) -> MapResult:
    return MapResult("center", stage, _center(ctx.cap.layout.grid))


register(MapMethod("cam", "paper", "class activation map read per token: w_c . head_pre(T_i)", f"{PAPER}, eqs. 1-2",
                   _cam, default=True))
register(MapMethod("cam_hidden", "paper", "class activation map over the hidden dimensions, as the paper's code "
                   "computes it", f"{PAPER}, eqs. 1-2 (the authors' code)", _cam_hidden, default=True))
register(MapMethod("grad", "paper", "gradient x token at each patch token: act(sum_j T_ij dy_c/dT_ij)",
                   f"{PAPER}, eqs. 3-4", _grad, default=True))
register(MapMethod("grad_cls", "paper", "gradient at the class token x each patch token, as the paper's code "
                   "computes it", f"{PAPER}, eqs. 3-4 (the authors' code)", _grad_cls, default=True))
register(MapMethod("random", "baseline", "seeded uniform noise on the patch grid (expected ABPC 0)", "-", _random,
                   reads="nothing", baseline=True, default=True))
register(MapMethod("center", "baseline", "a Gaussian centred on the patch grid (a centre-bias baseline)", "-",
                   _centre, reads="nothing", baseline=True, default=True))
