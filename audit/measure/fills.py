"""Fills for removed pixels: what a MoRF / LeRF (or ROAD) curve writes where a pixel is "removed".

Every recipe works in PIXEL space, on a (C, H, W) float image in [0, 1] before normalisation, with a (H, W) bool
removal mask (True = removed, all channels). Pixels the mask keeps are copied bit for bit; removed pixels get:

* ``grey``: 127 / 255 in every channel (the default fill of :mod:`audit.measure.curves`).
* ``black``: 0 in every channel.
* ``mean``: the model's normalisation mean, one value per channel, i.e. 0 after normalising.
* ``blur``: the original image under a Gaussian blur (the substrate of RISE, Petsiuk et al. 2018), with
  sigma = 5 px at a 224 px input, scaled with the input: ``sigma = 5 * min(H, W) / 224``.
* ``road``: noisy linear imputation (Rong et al., ICML 2022, "ROAD"): every removed pixel is the weighted mean of its
  8 neighbours (1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones; neighbours outside the image dropped
  and the rest renormalised), solved jointly for all removed pixels as one sparse linear system, plus seeded
  Gaussian noise on the removed pixels.

``road`` agrees with ``pytorch_grad_cam.metrics.road.NoisyLinearImputer`` (the ROAD authors' code) to float32
rounding wherever that system is regular; see :func:`fill_image` for the one case where it is not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FILLS", "fill_baseline", "fill_image", "blur_sigma", "gaussian_blur"]

FILLS = ("grey", "black", "mean", "blur", "road")
GREY = 127 / 255
# RISE's blur: sigma 5 px at a 224 px input; the kernel reaches ceil(3 sigma) px either side.
BLUR_SIGMA_AT_224 = 5.0
BLUR_TRUNCATE = 3.0
# ROAD's neighbour weights in twelfths (edges 2/12 = 1/6, diagonals 1/12), as (dy, dx, weight): integers, so the
# system matrix is exact; the solution is the same as with the weights 1/6, 1/12.
_ROAD_NEIGHBOURS = ((-1, -1, 1), (-1, 0, 2), (-1, 1, 1), (0, -1, 2), (0, 1, 2), (1, -1, 1), (1, 0, 2), (1, 1, 1))


def blur_sigma(height: int, width: int) -> float:
    """The ``blur`` recipe's sigma in px for a ``height`` x ``width`` input: 5 px at 224, ``5 * min(H, W) / 224``."""
    return BLUR_SIGMA_AT_224 * min(height, width) / 224


def _mirror_indices(size: int, radius: int) -> torch.Tensor:
    """Source index of every position of a 1-D axis of ``size`` padded by ``radius`` on both sides, reflecting about
    the edge pixels without repeating them (``d c b | a b c d | c b a``), repeatedly where ``radius >= size``."""
    positions = torch.arange(-radius, size + radius)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    positions = positions.remainder(period)
    return torch.where(positions < size, positions, period - positions)


def gaussian_blur(pixel: torch.Tensor, sigma: float, truncate: float = BLUR_TRUNCATE) -> torch.Tensor:
    """Separable Gaussian blur of a (C, H, W) image, every channel on its own.

    The 1-D kernel is ``exp(-x**2 / (2 sigma**2))`` for the integers ``x`` in ``[-r, r]``, ``r = ceil(truncate *
    sigma)``, normalised to sum 1; it is applied along H, then along W, in float64, on the image padded by ``r`` px
    with *reflect* padding in PyTorch's sense (``F.pad(mode='reflect')``, ``np.pad(mode='reflect')``, scipy.ndimage's
    ``mode='mirror'``: the edge pixel is not repeated), reflected again where ``r`` exceeds the image. This equals
    ``scipy.ndimage.gaussian_filter(..., sigma, mode='mirror', radius=r)`` per channel.

    Args:
        pixel: (C, H, W) float image.
        sigma: standard deviation in px, > 0.
        truncate: the kernel radius in sigmas (rounded up to whole px).

    Returns:
        The blurred (C, H, W) image, in ``pixel``'s dtype and on its device.
    """
    if pixel.dim() != 3:
        raise ValueError(f"pixel: expected a (C, H, W) image, got shape {tuple(pixel.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")
    chans, height, width = pixel.shape
    radius = math.ceil(truncate * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=pixel.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    image = pixel.detach().to(torch.float64).reshape(chans, 1, height, width)
    rows = _mirror_indices(height, radius).to(pixel.device)
    image = F.conv2d(image.index_select(2, rows), kernel.reshape(1, 1, -1, 1))
    cols = _mirror_indices(width, radius).to(pixel.device)
    image = F.conv2d(image.index_select(3, cols), kernel.reshape(1, 1, 1, -1))
    return image.reshape(chans, height, width).to(pixel.dtype)


def _road_solve(values: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear imputation of the removed pixels: a (C, N) float64 array, N removed pixels in row-major order.

    For removed pixel i with in-image neighbours n (weights w_n), ``(sum_n w_n) x_i - sum_{n removed} w_n x_n =
    sum_{n kept} w_n v_n``: one sparse N x N system, all C channels as right-hand sides of one factorisation. The
    caller makes sure some pixel is kept, so the system is regular (see :func:`fill_image`).
    """
    from scipy import sparse  # imported here: only the road fill needs it
    from scipy.sparse.linalg import spsolve

    chans = values.shape[0]
    height, width = removed.shape
    flat = removed.reshape(-1)
    index = np.flatnonzero(flat)
    count = index.size
    variable = np.full(flat.size, -1, dtype=np.int64)
    variable[index] = np.arange(count)
    ys, xs = np.divmod(index, width)
    known = values.reshape(chans, -1)
    diagonal = np.zeros(count)
    rhs = np.zeros((count, chans))
    rows, cols, weights = [np.arange(count)], [np.arange(count)], []
    for dy, dx, weight in _ROAD_NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        equation = np.flatnonzero(inside)
        neighbour = ny[inside] * width + nx[inside]
        diagonal[equation] += weight
        unknown = flat[neighbour]
        rows.append(equation[unknown])
        cols.append(variable[neighbour[unknown]])
        weights.append(np.full(int(unknown.sum()), -float(weight)))
        # One equation appears at most once per offset, so the fancy-indexed += adds every term.
        rhs[equation[~unknown]] += weight * known[:, neighbour[~unknown]].T
    matrix = sparse.csc_matrix(
        (np.concatenate([diagonal, *weights]), (np.concatenate(rows), np.concatenate(cols))), shape=(count, count))
    solution = spsolve(matrix, rhs)
    return np.asarray(solution, dtype=np.float64).reshape(count, chans).T


def fill_image(
    pixel: torch.Tensor,
    mask: torch.Tensor,
    recipe: str,
    *,
    mean: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    noise: float = 0.01,
) -> torch.Tensor:
    """A copy of ``pixel`` with the pixels ``mask`` removes filled in by ``recipe``.

    Pixels where ``mask`` is False are bit-identical to ``pixel``; pixels where it is True (all channels) get:

    * ``grey``: 127 / 255; ``black``: 0; ``mean``: ``mean[c]`` in channel c.
    * ``blur``: :func:`gaussian_blur` of the original (unperturbed) ``pixel`` with sigma :func:`blur_sigma` (5 px at
      224 px, ``5 * min(H, W) / 224``), kernel radius ``ceil(3 sigma)``, reflect padding (edge not repeated;
      scipy's ``mode='mirror'``).
    * ``road``: ROAD's noisy linear imputation. Every removed pixel is the weighted mean of its in-image 8
      neighbours (1/6 edge, 1/12 diagonal, renormalised to sum 1 where neighbours fall outside the image); kept
      neighbours contribute their values, removed ones are unknowns, and all removed pixels are solved jointly, one
      sparse system (``scipy.sparse.linalg.spsolve``, float64) with the C channels as right-hand sides. Then
      ``noise * N(0, 1)`` is added to every removed pixel, drawn as one (C, N) float tensor from ``generator``
      (N removed pixels in row-major order; a fresh generator seeded 0 if None; nothing drawn if ``noise == 0``).
      The result is NOT clipped to [0, 1] (neither is the reference's). The system is singular only when no pixel
      is kept at all (a removed 8-connected region with no kept neighbour would have to be the whole image); then
      every pixel is filled with grey 127 / 255 before the noise (the reference's singular solve happens to give 0).

    An empty mask returns a copy of ``pixel`` for every recipe.

    Args:
        pixel: (C, H, W) float image in [0, 1], before normalisation.
        mask: (H, W) bool tensor, True = removed.
        recipe: one of :data:`FILLS`.
        mean: the model's normalisation mean, C floats; required by ``mean``, ignored by the rest.
        generator: the source of ``road``'s noise; ignored by the rest.
        noise: standard deviation of ``road``'s noise in pixel units (0.01 = 2.55 / 255), >= 0; ignored by the rest.

    Returns:
        The filled (C, H, W) image: a new tensor in ``pixel``'s dtype and on its device.

    Raises:
        ValueError: for an unknown recipe, a ``pixel`` that is not a 3-D float tensor, a ``mask`` that is not an
            (H, W) bool tensor, a missing or wrong-length ``mean`` for ``mean``, or a negative ``noise``.
    """
    if recipe not in FILLS:
        raise ValueError(f"recipe: expected one of {FILLS}, got {recipe!r}")
    if not isinstance(pixel, torch.Tensor) or pixel.dim() != 3:
        raise ValueError(f"pixel: expected a (C, H, W) tensor, got shape {tuple(getattr(pixel, 'shape', ()))}")
    if not pixel.is_floating_point():
        raise ValueError(f"pixel: expected a floating-point tensor, got {pixel.dtype}")
    chans, height, width = pixel.shape
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (height, width):
        got = tuple(getattr(mask, "shape", ()))
        raise ValueError(f"mask: expected shape {(height, width)} to match pixel, got {got}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = removed), got {mask.dtype}")
    if recipe == "mean":
        if mean is None:
            raise ValueError("recipe 'mean': needs the model's normalisation mean (mean=...), got None")
        if len(mean) != chans:
            raise ValueError(f"recipe 'mean': expected {chans} mean values, one per channel, got {len(mean)}")
    if recipe == "road" and not noise >= 0:
        raise ValueError(f"noise: expected a standard deviation >= 0, got {noise!r}")

    mask = mask.to(pixel.device)
    if not bool(mask.any()):
        return pixel.clone()
    if recipe in ("grey", "black", "mean"):
        value = {"grey": [GREY] * chans, "black": [0.0] * chans, "mean": list(mean or ())}[recipe]
        fill = torch.tensor(value, dtype=pixel.dtype, device=pixel.device).reshape(chans, 1, 1)
        return torch.where(mask, fill, pixel)
    if recipe == "blur":
        return torch.where(mask, gaussian_blur(pixel, blur_sigma(height, width)), pixel)

    removed = mask.cpu().numpy()
    if removed.all():
        imputed = torch.full((chans, removed.size), GREY, dtype=pixel.dtype)
    else:
        solution = _road_solve(pixel.detach().cpu().to(torch.float64).numpy(), removed)
        imputed = torch.from_numpy(solution).to(pixel.dtype)
    if noise > 0:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        draws = torch.randn(imputed.shape, generator=generator, dtype=pixel.dtype, device=generator.device)
        imputed = imputed + noise * draws.cpu()
    out = pixel.detach().clone().reshape(chans, -1)
    out[:, torch.from_numpy(np.flatnonzero(removed.reshape(-1))).to(pixel.device)] = imputed.to(pixel.device)
    return out.reshape(chans, height, width)


def fill_baseline(pixel: torch.Tensor, fill: str | float | tuple[float, ...], mean: tuple[float, ...]) -> torch.Tensor:
    """The image with every pixel removed by the run's fill, in pixel space (``road`` without noise: grey, as
    :func:`fill_image` fills an image with nothing kept to impute from): the baseline of ``ig@input``."""
    if isinstance(fill, str):
        everything = torch.ones(pixel.shape[1:], dtype=torch.bool)
        return fill_image(pixel.cpu(), everything, fill, mean=mean, noise=0.0).to(pixel.device)
    return torch.as_tensor(fill, dtype=pixel.dtype, device=pixel.device).reshape(-1, 1, 1).expand_as(pixel).clone()
