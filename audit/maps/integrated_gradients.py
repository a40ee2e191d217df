"""Integrated Gradients (Sundararajan et al. 2017) as a map: ``ig@input``, the one map read at the model input.

From the fill image x0 (what a removal writes: the run's ``--fill``, every pixel removed, without ROAD's noise) to the
image x in 32 steps: m = (x - x0) * sum_k w_k dy_c/dx (x0 + k/32 (x - x0)), k = 0..32, with the trapezoid weights
w_k = 1/64 at both ends and 1/32 inside; summed over channels and average-pooled to the patch grid. y_c is the
explained class's logit.

The gradient is taken with respect to the normalised input z = (x - mean) / std: per channel, (x - x0) dy/dx =
(z - z0) dy/dz, so the map is the same as in pixel space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layout import TokenLayout
from .registry import InputContext, MapMethod, register

__all__ = ["IG_STEPS", "integrated_gradients"]

IG_STEPS = 32


def integrated_gradients(model: nn.Module, z: torch.Tensor, z0: torch.Tensor, target: int, layout: TokenLayout,
                         steps: int = IG_STEPS, batch_size: int = 64) -> torch.Tensor:
    """The ``ig@input`` map (gh, gw), float32, of a normalised image ``z`` from the normalised baseline ``z0``."""
    alphas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    weights = torch.full((steps + 1,), 1.0 / steps, dtype=torch.float64)
    weights[0] = weights[-1] = 0.5 / steps
    total = torch.zeros_like(z, dtype=torch.float64)
    with torch.enable_grad():
        for start in range(0, steps + 1, batch_size):
            alpha = alphas[start:start + batch_size].to(z.device)
            path = (z0[None].double() + alpha[:, None, None, None] * (z - z0)[None].double()).float()
            path.requires_grad_(True)
            logits = model(path)
            (grads,) = torch.autograd.grad(logits[:, target].sum(), path)
            total += (grads.double() * weights[start:start + batch_size, None, None, None].to(z.device)).sum(0)
    attribution = ((z - z0).double() * total).sum(0)
    ph, pw = layout.patch_size
    gh, gw = layout.grid
    pooled = F.avg_pool2d(attribution[None, None, :gh * ph, :gw * pw], kernel_size=(ph, pw), stride=(ph, pw))
    return pooled[0, 0].float()


def _compute(ctx: InputContext) -> torch.Tensor:
    return integrated_gradients(ctx.model, ctx.z, ctx.z0, ctx.target, ctx.layout, batch_size=ctx.batch_size)


register(MapMethod("ig", "gradient", f"Integrated Gradients from the run's fill image, {IG_STEPS} steps, pooled to "
                   "the patch grid", "Sundararajan et al. 2017", _compute, stages="input", reads="model",
                   extra_forwards=3 * (IG_STEPS + 1)))
