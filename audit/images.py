"""Prepare images exactly as the model's own data config says, keeping the pixel-space picture.

Perturbation (MoRF/LeRF) happens in pixel space, values in [0, 1] after resize and crop and before
normalisation; :func:`normalize` then applies the model's mean/std.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ImageError

__all__ = ["PreparedImage", "find_images", "normalize", "prepare_image", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class PreparedImage:
    """An image resized and cropped for one model.

    Attributes:
        name: a short readable id (the file stem, or the name given).
        source: the path as given, or a description for in-memory images.
        pixel: (C, H, W) float32 in [0, 1], before normalisation.
    """

    name: str
    source: str
    pixel: torch.Tensor


def normalize(pixel: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(pixel - mean) / std`` per channel, for (C, H, W) or (B, C, H, W) tensors."""
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=pixel.dtype, device=pixel.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=pixel.dtype, device=pixel.device).reshape(shape)
    return (pixel - mean_t) / std_t


def _transform(data_config: dict[str, Any]):
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "crop_pct", "crop_mode")
    return create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False,
                            normalize=False)


def prepare_image(
    image: str | os.PathLike[str] | Any,
    data_config: dict[str, Any],
    name: str | None = None,
) -> PreparedImage:
    """Load (if a path) and resize/crop an image with the model's data config, without normalising.

    Args:
        image: a file path, a PIL image, or an (H, W) / (H, W, C) uint8 array.
        data_config: timm's data config of the model (``LoadedModel.data_config``).
        name: id for results; defaults to the file stem.

    Raises:
        ImageError: the file is missing or not a readable image, or the array has an unusable shape.
    """
    from PIL import Image, UnidentifiedImageError

    in_chans = int(data_config["input_size"][0])
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ImageError(f"model input has {in_chans} channels; vit-audit reads images for 1- or 3-channel models")
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        try:
            with Image.open(source) as handle:
                handle.load()
                picture = handle.convert(mode)
        except FileNotFoundError:
            raise ImageError(f"image {source!r} not found: pass an existing image file or folder") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise ImageError(f"image {source!r} is not a readable image ({err}); replace or remove it") from None
        name = name or Path(source).stem
    elif isinstance(image, Image.Image):
        source = name or "<PIL image>"
        picture = image.convert(mode)
    else:
        array = np.asarray(image)
        source = name or f"<array {array.shape}>"
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if (array.ndim not in (2, 3) or array.dtype != np.uint8 or (array.ndim == 3 and array.shape[2] not in (3, 4))
                or 0 in array.shape):
            raise ImageError(f"image {source!r}: expected a non-empty (H, W) or (H, W, 1|3|4) uint8 array, got "
                             f"{array.shape} {array.dtype}")
        picture = Image.fromarray(array).convert(mode)
    if 0 in picture.size:
        raise ImageError(f"image {source!r} is empty ({picture.size[0]}x{picture.size[1]} pixels)")
    tensor = _transform(data_config)(picture)
    pixel = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    return PreparedImage(name=name or "image", source=source, pixel=pixel.contiguous())


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (searched recursively, sorted) into image files.

    Raises:
        ImageError: a path does not exist, or nothing was found.
    """
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise ImageError(f"images: {str(path)!r} does not exist; pass image files or folders")
    if not found:
        raise ImageError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) found in the paths given")
    return found
