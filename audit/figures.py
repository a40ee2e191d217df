"""Pictures as small PNG data URIs, for results files and self-contained reports."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch

__all__ = ["png_data_uri", "scaled_size", "to_display"]


def to_display(image: torch.Tensor | np.ndarray, mode: str = "clip") -> np.ndarray:
    """A (C, H, W) or (H, W) float picture as (H, W) or (H, W, 3) uint8.

    Args:
        image: the picture.
        mode: ``'clip'`` for pixel-space pictures in [0, 1]; ``'minmax'`` to stretch any range (token pictures).
    """
    array = image.detach().cpu().double().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.transpose(array[:3], (1, 2, 0))
    if mode == "minmax":
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    elif mode != "clip":
        raise ValueError(f"mode: expected 'clip' or 'minmax', got {mode!r}")
    return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scaled_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) scaled, up or down, so that the longer side is ``longest`` pixels (each side at least 1)."""
    width, height = size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def png_data_uri(image: torch.Tensor | np.ndarray, size: int | None = None, mode: str = "clip") -> str:
    """Encode a picture as ``data:image/png;base64,...``, its longer side scaled down to at most ``size`` pixels.

    A picture never gets larger than it is (None: as is): the report enlarges small pictures when it shows them.
    """
    from PIL import Image

    picture = Image.fromarray(to_display(image, mode))
    if size is not None and max(picture.size) > size:
        picture = picture.resize(scaled_size(picture.size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # optimize=True costs 2-3x the time for the same bytes at this size
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
