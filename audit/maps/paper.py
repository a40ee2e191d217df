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
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.capture import Capture
from ..model.layout import MAP_STAGE_ENCODER, normalize_stage
from .attention import ATTENTION_METHODS, attention_map

__all__ = ["MapResult", "compute_maps", "finish_map", "METHODS", "DEFAULT_METHODS", "PAPER_METHODS", "INPUT_METHODS",
           "ACTIVATIONS", "is_constant", "map_seed"]

PAPER_METHODS = ("cam", "cam_hidden", "grad", "grad_cls", "random", "center")
INPUT_METHODS = ("ig",)  # maps of the model input, one stage 'input': audit/maps/integrated_gradients.py
METHODS = PAPER_METHODS + ATTENTION_METHODS + INPUT_METHODS  # the attention-based maps: audit/maps/attention.py
DEFAULT_METHODS = PAPER_METHODS
BASELINES = ("random", "center")
ACTIVATIONS = {
    "gelu": lambda t: F.gelu(t),  # exact (erf) GELU, as in the paper's eqs. 3-4
    "relu": F.relu,
    "identity": lambda t: t,
}
CONSTANT_RTOL = 1e-6
# A gradient map whose sums are all below this fraction of the size of their terms is float32 rounding noise.
CANCEL_RTOL = 1e-4


@dataclass
class MapResult:
    """One map of one image.

    Attributes:
        method: a name from :data:`METHODS`.
        stage: ``'0'..'L-1'`` or ``'encoder'``.
        values: (h, w) float32 map, raw (before any upsampling or rescaling); None when not applicable.
        degenerate: the map is constant, so it ranks nothing; ``reason`` says why.
        reason: why the map is degenerate or not applicable; None otherwise.
    """

    method: str
    stage: str
    values: torch.Tensor | None
    degenerate: bool = False
    reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.method}@{self.stage}"

    @property
    def applicable(self) -> bool:
        return self.values is not None

    @property
    def rankable(self) -> bool:
        """Whether the map can be scored by MoRF/LeRF (applicable and not constant)."""
        return self.values is not None and not self.degenerate


def is_constant(values: torch.Tensor) -> bool:
    """True when every value equals the others up to float32 rounding (relative 1e-6 of the largest magnitude)."""
    finite = values[torch.isfinite(values)]
    if finite.numel() < values.numel():
        return False
    spread = float(values.max() - values.min())
    return spread <= CONSTANT_RTOL * float(values.abs().max()) or spread == 0.0


def map_seed(seed: int, image: str, stage: str) -> int:
    """The seed of an image's ``random`` map at a stage: stable across runs, platforms and processes."""
    return zlib.crc32(f"{seed}:{image}:{stage}".encode())


def _head_weight(model: nn.Module, target: int) -> torch.Tensor:
    """w_c: the classifier row of the class; the mean of both heads for a distilled model."""
    weight = model.head.weight[target]
    if getattr(model, "head_dist", None) is not None:
        weight = 0.5 * (weight + model.head_dist.weight[target])
    return weight


def _head_pre(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """What the head applies to each token taken alone before its linear layer: (N, D) -> (N, D')."""
    if getattr(model, "attn_pool", None) is not None:
        tokens = model.attn_pool(tokens.unsqueeze(1))  # pooling over a single token
    return model.fc_norm(tokens)


def _token_scores(model: nn.Module, tokens: torch.Tensor, target: int) -> torch.Tensor:
    """Per-token class score head(T_i)[c] with bias, for every token (cam_hidden's s)."""
    pre = _head_pre(model, tokens)
    score = model.head(pre)[:, target]
    if getattr(model, "head_dist", None) is not None:
        score = 0.5 * (score + model.head_dist(pre)[:, target])
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


def finish_map(result: MapResult) -> MapResult:
    """Flag a map with non-finite values or constant values as degenerate (it ranks nothing)."""
    if result.values is not None and not result.degenerate:
        if not bool(torch.isfinite(result.values).all()):
            result.degenerate, result.reason = True, "map has non-finite values"
        elif is_constant(result.values):
            result.degenerate = True
            result.reason = f"map is constant ({float(result.values.flatten()[0]):.3g} everywhere)"
    return result


@torch.no_grad()
def compute_maps(
    model: nn.Module,
    cap: Capture,
    methods: Iterable[str] = DEFAULT_METHODS,
    stages: Iterable[int | str] | None = None,
    act: str = "gelu",
    seed: int = 0,
    image: str = "",
) -> dict[str, MapResult]:
    """Compute maps for a captured image.

    Args:
        model: the model the capture came from (its head gives w_c).
        cap: the image's :class:`~audit.model.capture.Capture`.
        methods: names from :data:`METHODS` (attention-based ones need ``cap`` made with ``attention=True``).
        stages: block indices and/or ``'encoder'``; default all of them.
        act: ``'gelu'`` (the paper), ``'relu'`` or ``'identity'``, for ``grad`` and ``grad_cls``.
        seed: seed of the ``random`` baseline (mixed with ``image`` and the stage by :func:`map_seed`).
        image: the image's id, so that every image gets its own random map.

    Returns:
        ``{"<method>@<stage>": MapResult}`` in stage-major order.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act: unknown {act!r}; choose from {', '.join(ACTIVATIONS)}")
    activation = ACTIVATIONS[act]
    layout = cap.layout
    depth = layout.depth
    stage_list = cap.map_stages if stages is None else [normalize_stage(s, depth) for s in stages]
    stage_list = [stage for stage in stage_list if stage in cap.tokens]  # not 'input': no block map is made there
    target = cap.target
    side = layout.hidden_patch
    needs_scores = "cam_hidden" in methods and side is not None and getattr(model, "attn_pool", None) is None
    scores = _token_scores(model, cap.tokens[MAP_STAGE_ENCODER], target).double() if needs_scores else None
    weight = _head_weight(model, target)

    results: dict[str, MapResult] = {}
    for stage in stage_list:
        tokens = cap.tokens[stage]
        for method in methods:
            if method in INPUT_METHODS:  # not a map of a block: made from the input (audit.measure.image_audit)
                continue
            if method == "cam":
                values = _head_pre(model, layout.patch_tokens(tokens)) @ weight
                result = MapResult(method, stage, layout.to_grid(values.float()))
            elif method == "cam_hidden":
                if side is None:
                    result = MapResult(method, stage, None, reason=(
                        f"not applicable: D / C = {layout.embed_dim} / {layout.in_chans} is not a square"))
                elif scores is None:
                    result = MapResult(method, stage, None,
                                       reason="not applicable: an attention-pooling head has no per-token score")
                else:
                    hidden = scores @ tokens.double()
                    result = MapResult(method, stage, hidden.reshape(layout.in_chans, side, side).sum(0).float())
            elif method == "grad":
                result = _grad_map(cap, stage, activation, model)
            elif method == "grad_cls":
                result = _grad_cls_map(cap, stage, activation)
            elif method in ATTENTION_METHODS:
                values, reason = attention_map(method, cap, stage)
                result = MapResult(method, stage, values, reason=reason)
            elif method == "random":
                rng = np.random.default_rng(map_seed(seed, image, stage))
                result = MapResult(method, stage, torch.from_numpy(rng.random(layout.grid, dtype=np.float64)).float())
            else:
                result = MapResult(method, stage, _center(layout.grid))
            results[result.key] = finish_map(result)
    return results
