"""Attention-based maps: the explanations practitioners set beside the paper's (docs/concepts/maps.md).

Notation: A_b (heads x N x N) is block b's attention probabilities (softmax output, eval mode), captured as the model
runs (:func:`audit.model.capture.capture` with ``attention=True``); dA_b = dy_c/dA_b, the gradient of the
explained class's logit; row 0 is the class token, and a map takes row 0's columns of the patch tokens (prefix tokens
dropped), laid out on the patch grid.

- ``attention@b``: m_i = mean_h A_b[h, 0, i].
- ``rollout@b`` (Abnar & Zuidema 2020): Ã_k = (mean_h A_k + I) / 2; R_b = Ã_b Ã_{b-1} ... Ã_0; m_i = R_b[0, i].
- ``chefer@b`` (Chefer et al. 2021, "Generic Attention-model Explainability", rules 5-6): R = I; for k = 0..b:
  Ā_k = mean_h((dA_k ⊙ A_k)^+), R = R + Ā_k R; m_i = R[0, i].
- ``attn_gradcam@b`` (Chefer et al.'s Grad-CAM baseline on attention): α_h = mean_i dA_b[h, 0, i] over the patch
  tokens i; m_i = ReLU(mean_h α_h A_b[h, 0, i]).

The encoder output has no attention of its own: at stage ``'encoder'`` these maps are those of the last block. All
four read row 0, the class token's: for models without a class token they are not applicable. Products are taken in
float64.
"""

from __future__ import annotations

import torch

from ..model.capture import Capture
from ..model.layout import MAP_STAGE_ENCODER
from .registry import MapContext, MapMethod, MapResult, register

__all__ = ["ATTENTION_METHODS", "attention_block", "attention_map", "chefer", "rollout"]

ATTENTION_METHODS = ("attention", "rollout", "chefer", "attn_gradcam")


def attention_block(stage: str, depth: int) -> int:
    """The block whose attention a map at ``stage`` reads: the block itself, or the last block for ``'encoder'``."""
    return depth - 1 if stage == MAP_STAGE_ENCODER else int(stage)


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """R = Ã_b ... Ã_0 with Ã_k = (mean_h A_k + I) / 2, for attentions [A_0 .. A_b] of shape (heads, N, N)."""
    size = attentions[0].shape[-1]
    eye = torch.eye(size, dtype=torch.float64, device=attentions[0].device)
    result = eye
    for attn in attentions:
        result = ((attn.double().mean(0) + eye) / 2) @ result
    return result


def chefer(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """R after rules 5-6 over blocks 0..b: R = I; R = R + mean_h((dA_k ⊙ A_k)^+) R for k = 0..b."""
    size = attentions[0].shape[-1]
    result = torch.eye(size, dtype=torch.float64, device=attentions[0].device)
    for attn, grad in zip(attentions, gradients):
        weighted = (grad.double() * attn.double()).clamp(min=0).mean(0)
        result = result + weighted @ result
    return result


def _accumulated_rows(method: str, cap: Capture) -> list[torch.Tensor]:
    """Row 0 of ``rollout`` or ``chefer``'s R after blocks 0..k, for every block k: one pass over the blocks (each
    stage's R extends the previous one's), kept on the capture for the other stages."""
    key = f"{method}_rows"
    if key not in cap.memo:
        assert cap.attentions is not None  # attention_map's only caller checked it
        size = cap.attentions[0].shape[-1]
        eye = torch.eye(size, dtype=torch.float64, device=cap.attentions[0].device)
        result, rows = eye, []
        for k, attn in enumerate(cap.attentions):
            if method == "rollout":
                result = ((attn.double().mean(0) + eye) / 2) @ result
            else:
                assert cap.attention_grads is not None  # capture_batch sets it with the attentions
                weighted = (cap.attention_grads[k].double() * attn.double()).clamp(min=0).mean(0)
                result = result + weighted @ result
            rows.append(result[0])
        cap.memo[key] = rows
    return cap.memo[key]


def attention_map(method: str, cap: Capture, stage: str) -> tuple[torch.Tensor | None, str | None]:
    """One attention-based map on the patch grid (float32), or (None, why it is not applicable).

    Raises:
        ValueError: an unknown method, or a capture made without attention.
    """
    if method not in ATTENTION_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(ATTENTION_METHODS)}")
    layout = cap.layout
    if not layout.has_class_token:
        return None, "not applicable: the model has no class token, whose attention row these maps read"
    if cap.attentions is None:
        raise ValueError("attention maps need a capture made with attention=True")
    if not cap.attentions:
        return None, f"not applicable: {cap.attention_reason}"
    block = attention_block(stage, layout.depth)
    first = layout.num_prefix_tokens
    if method == "attention":
        row = cap.attentions[block].double().mean(0)[0]
    elif method in ("rollout", "chefer"):  # the same products as rollout() and chefer(), shared across stages
        row = _accumulated_rows(method, cap)[block]
    else:
        assert cap.attention_grads is not None  # capture_batch sets it with the attentions
        attn, grad = cap.attentions[block].double(), cap.attention_grads[block].double()
        alpha = grad[:, 0, first:].mean(-1)  # per head: the mean gradient over the patch tokens of row 0
        row = (alpha[:, None] * attn[:, 0, :]).mean(0).clamp(min=0)
    return layout.to_grid(row[first:].float()), None


def _compute(method: str):
    def compute(ctx: MapContext, stage: str) -> MapResult:
        values, reason = attention_map(method, ctx.cap, stage)
        return MapResult(method, stage, values, reason=reason)
    return compute


_CHEFER = 'Chefer et al. 2021, "Generic Attention-model Explainability"'
for _name, _summary, _citation, _reads in (
    ("attention", "the class token's attention to each patch, averaged over heads", "-", "attention"),
    ("rollout", "attention rollout over blocks 0..b", "Abnar & Zuidema 2020", "attention_up_to"),
    ("chefer", "gradient-weighted attention relevance over blocks 0..b (rules 5-6)", _CHEFER, "attention_up_to"),
    ("attn_gradcam", "Grad-CAM on the attention of block b", f"{_CHEFER} (their Grad-CAM baseline)", "attention"),
):
    register(MapMethod(_name, "attention", _summary, _citation, _compute(_name), reads=_reads, needs_attention=True))
