"""Restore a stage's tokens into pictures (Utkin et al. 2024, Figs. 2-4), two readings.

- ``paper``: each patch token's D values reshaped to (C, p, p), p = sqrt(D / C), tiled by the grid. This is
  the paper's picture, with the prefix tokens dropped where the model puts them (its code dropped the last
  token instead: REFERENCE-NOTES item 1). Not applicable when D / C is not a square.
- ``inverse``: undo the patch embedding: subtract the position embedding of the patch tokens, solve the patch
  projection (C*ph*pw -> D, with bias) in the least-squares sense, fold back to C x H x W. Exact at the
  embedding when D >= C*ph*pw; otherwise the best least-squares view, with its error reported as PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .capture import STAGE_EMBED, STAGE_PATCH_EMBED, Capture

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["Restoration", "restore", "restore_paper", "restore_inverse", "psnr", "READINGS", "PatchInverse"]

READINGS = ("paper", "inverse")


@dataclass
class Restoration:
    """A restored picture of one stage.

    Attributes:
        reading: ``'paper'`` or ``'inverse'``.
        stage: ``'patch_embed'``, ``'embed'``, ``'0'..'L-1'`` or ``'encoder'``.
        image: (C, h, w) float32; ``paper`` in token units, ``inverse`` in pixel space (the model's mean/std
            undone, not clipped). None when not applicable.
        psnr: for ``inverse``, PSNR in dB against the input pixels (peak 1.0); inf for an exact round trip.
        max_abs_error: for ``inverse``, the largest absolute pixel error against the input.
        reason: why the reading is not applicable.
    """

    reading: str
    stage: str
    image: torch.Tensor | None
    psnr: float | None = None
    max_abs_error: float | None = None
    reason: str | None = None


def psnr(image: torch.Tensor, reference: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when the images are equal."""
    mse = float(((image.double() - reference.double()) ** 2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _tile(patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(gh*gw, C, ph, pw) patches in row-major grid order -> (C, gh*ph, gw*pw)."""
    count, chans, ph, pw = patches.shape
    gh, gw = grid
    return patches.reshape(gh, gw, chans, ph, pw).permute(2, 0, 3, 1, 4).reshape(chans, gh * ph, gw * pw)


def restore_paper(cap: Capture, stage: str) -> Restoration:
    """The paper's reading: each token's D values as a (C, p, p) picture, tiled by the grid."""
    layout = cap.layout
    side = layout.hidden_patch
    if side is None:
        return Restoration("paper", stage, None, reason=(
            f"not applicable: D / C = {layout.embed_dim} / {layout.in_chans} is not a square"))
    patches = layout.patch_tokens(cap.tokens[stage]).reshape(layout.num_patches, layout.in_chans, side, side)
    return Restoration("paper", stage, _tile(patches.float(), layout.grid))


class PatchInverse:
    """Least-squares inverse of a model's patch projection, computed once (float64 pseudo-inverse)."""

    def __init__(self, model: nn.Module):
        model = cast("VisionTransformer", model)  # a loaded model: check_supported let it through
        proj: nn.Conv2d = model.patch_embed.proj
        weight = proj.weight.detach().double()
        self.kernel = tuple(int(k) for k in weight.shape[1:])  # (C, ph, pw)
        self.matrix = weight.reshape(weight.shape[0], -1)  # (D, C*ph*pw)
        self.bias = proj.bias.detach().double() if proj.bias is not None else torch.zeros(weight.shape[0],
                                                                                          dtype=torch.float64)
        self.pinv = torch.linalg.pinv(self.matrix)  # (C*ph*pw, D)
        norm = getattr(model.patch_embed, "norm", None)
        self.reason = None
        if norm is not None and not isinstance(norm, nn.Identity):
            self.reason = (f"not applicable: the patch embedding ends in {type(norm).__name__}, which has no "
                           "linear inverse")
        self.exact = self.matrix.shape[0] >= self.matrix.shape[1] and bool(
            torch.linalg.matrix_rank(self.matrix) == self.matrix.shape[1])

    def __call__(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """(gh*gw, D) projected tokens -> (gh*gw, C, ph, pw) patches in the model's normalised input space."""
        pixels = (patch_tokens.double().to(self.pinv.device) - self.bias) @ self.pinv.T
        return pixels.reshape(-1, *self.kernel)


def restore_inverse(
    cap: Capture,
    stage: str,
    inverse: PatchInverse,
    pixel: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Restoration:
    """Undo the patch embedding of a stage's tokens and report the error against the input pixels.

    The position embedding of the patch tokens is read from the capture itself (embedding output minus patch
    embedding output), so learned, resampled and class-free position embeddings are all handled.
    """
    if inverse.reason is not None:
        return Restoration("inverse", stage, None, reason=inverse.reason)
    layout = cap.layout
    patches = layout.patch_tokens(cap.tokens[stage]).double()
    if stage != STAGE_PATCH_EMBED:
        position = layout.patch_tokens(cap.tokens[STAGE_EMBED]).double() - cap.tokens[STAGE_PATCH_EMBED].double()
        patches = patches - position
    normalised = _tile(inverse(patches), layout.grid)
    mean_t = torch.tensor(mean, dtype=torch.float64).reshape(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).reshape(-1, 1, 1)
    image = normalised.cpu() * std_t + mean_t
    height, width = image.shape[-2:]
    reference = pixel[..., :height, :width].double().cpu()
    return Restoration(
        "inverse",
        stage,
        image.float(),
        psnr=psnr(image, reference),
        max_abs_error=float((image - reference).abs().max()),
    )


def restore(
    cap: Capture,
    model: nn.Module,
    pixel: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    stages: list[str] | None = None,
    inverse: PatchInverse | None = None,
) -> dict[str, dict[str, Restoration]]:
    """Both readings for every captured stage: ``{reading: {stage: Restoration}}``."""
    inverse = inverse or PatchInverse(model)
    stages = stages or cap.stages
    return {
        "paper": {stage: restore_paper(cap, stage) for stage in stages},
        "inverse": {stage: restore_inverse(cap, stage, inverse, pixel, mean, std) for stage in stages},
    }
