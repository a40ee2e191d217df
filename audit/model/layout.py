"""Token layout of a plain ViT: prefix tokens, patch grid, and the token <-> grid <-> image mappings.

Every fact comes from the model itself (``model.num_prefix_tokens``, ``model.patch_embed.dynamic_feat_size``),
never from constants, so class-token, pooled, distilled and register layouts and non-square inputs all work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["TokenLayout", "check_supported", "layout_of", "stage_names", "stage_order", "MAP_STAGE_ENCODER",
           "MAP_STAGE_INPUT"]

MAP_STAGE_ENCODER = "encoder"
MAP_STAGE_INPUT = "input"  # the model input: the one stage of maps made from it (Integrated Gradients)


def check_supported(model: nn.Module, name: str | None = None) -> None:
    """Refuse a model that is not a plain ViT token sequence.

    Args:
        model: the model to inspect.
        name: the name the user gave for it, for the message.

    Raises:
        UnsupportedModelError: the model is not a timm ``VisionTransformer`` with a convolutional patch embedding.
    """
    from timm.models.vision_transformer import VisionTransformer

    label = name or type(model).__name__
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            f"unsupported architecture: {label!r} ({type(model).__name__}) is not a plain ViT token sequence; "
            "vit-audit audits timm VisionTransformer models (vit_*, deit_*, test_vit*, dinov2 / register variants)"
        )
    proj = getattr(model.patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d) or not hasattr(model.patch_embed, "dynamic_feat_size"):
        raise UnsupportedModelError(
            f"unsupported architecture: {label!r} has a patch embedding without a Conv2d projection "
            f"({type(model.patch_embed).__name__}); vit-audit needs timm's PatchEmbed"
        )


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of one input sit.

    Attributes:
        num_prefix_tokens: class, distillation and register tokens before the patch tokens.
        has_class_token: whether token 0 is a class token.
        grid: patch grid (gh, gw) for this input size.
        patch_size: (ph, pw) in input pixels.
        embed_dim: token width D.
        in_chans: image channels C.
        depth: number of transformer blocks L.
        input_size: (H, W) of the model input.
    """

    num_prefix_tokens: int
    has_class_token: bool
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    embed_dim: int
    in_chans: int
    depth: int
    input_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def hidden_patch(self) -> int | None:
        """Side p of the (C, p, p) picture a token's D values make in the paper's reading, or None."""
        if self.embed_dim % self.in_chans:
            return None
        side = math.isqrt(self.embed_dim // self.in_chans)
        return side if side * side * self.in_chans == self.embed_dim else None

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The patch tokens (gh*gw, D) of a stage's (N, D) tokens, prefix tokens dropped wherever they are."""
        if tokens.shape[0] == self.num_patches:  # the patch embedding, before prefix tokens are added
            return tokens
        if tokens.shape[0] != self.num_tokens:
            raise ValueError(f"tokens: expected {self.num_tokens} or {self.num_patches} rows, got {tokens.shape[0]}")
        return tokens[self.num_prefix_tokens:]

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Lay per-patch values (gh*gw, ...) out on the grid: (gh, gw, ...), row-major as the patch embedding."""
        return values.reshape(*self.grid, *values.shape[1:])

    def from_grid(self, grid_values: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_grid`."""
        return grid_values.reshape(self.num_patches, *grid_values.shape[2:])


def layout_of(model: nn.Module, input_size: tuple[int, int]) -> TokenLayout:
    """Read the token layout of ``model`` for an input of ``input_size`` = (H, W)."""
    check_supported(model)
    model = cast("VisionTransformer", model)  # what check_supported lets through
    grid = tuple(int(g) for g in model.patch_embed.dynamic_feat_size(tuple(input_size)))
    patch = model.patch_embed.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(int(p) for p in patch)
    return TokenLayout(
        num_prefix_tokens=int(model.num_prefix_tokens),
        has_class_token=getattr(model, "cls_token", None) is not None,
        grid=grid,  # type: ignore[arg-type]
        patch_size=patch,
        embed_dim=int(model.embed_dim),
        in_chans=int(model.patch_embed.proj.in_channels),
        depth=len(model.blocks),
        input_size=(int(input_size[0]), int(input_size[1])),
    )


def stage_names(depth: int) -> list[str]:
    """The stages maps are computed at: blocks ``'0'..'L-1'`` and ``'encoder'`` (after the final norm)."""
    return [str(k) for k in range(depth)] + [MAP_STAGE_ENCODER]


def normalize_stage(stage: int | str, depth: int) -> str:
    """Turn a user's stage (an int, ``'3'``, ``'-1'``, ``'encoder'``, or ``'input'``: the model input, Integrated
    Gradients' one stage) into its canonical name."""
    if isinstance(stage, str) and stage in (MAP_STAGE_ENCODER, MAP_STAGE_INPUT):
        return stage
    try:
        index = int(stage)
    except (TypeError, ValueError):
        raise ValueError(f"stage: {stage!r} is neither a block index nor 'encoder' (nor 'input', for ig)") from None
    if index < 0:
        index += depth
    if not 0 <= index < depth:
        raise ValueError(f"stage: block {stage!r} does not exist; this model has blocks 0..{depth - 1} and 'encoder'")
    return str(index)


def stage_order(stage: str) -> tuple[int, int]:
    """Sort key of a stage name in model order: the input, the patch embedding (before and after the position
    embedding), blocks ``'0'..'L-1'``, ``'encoder'``; any other name after them."""
    order = {MAP_STAGE_INPUT: -3, "patch_embed": -2, "embed": -1, MAP_STAGE_ENCODER: 10**6}
    if stage in order:
        return (0, order[stage])
    try:
        return (0, int(stage))
    except ValueError:
        return (1, 0)
