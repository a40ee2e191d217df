"""Prepare images exactly as the model's own data config says, keeping the pixel-space picture.

Perturbation (MoRF/LeRF) happens in pixel space, values in [0, 1] after resize and crop and before
normalisation; :func:`normalize` then applies the model's mean/std.

Files are read as image viewers show them: upright as their EXIF Orientation says, and with 16-bit (or 12- and
32-bit TIFF) and float [0, 1] pixels scaled into 8 bits rather than clipped. Anything that goes wrong with one image
becomes a one-line :class:`~audit.errors.ImageError` naming it, so that image fails alone.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImageError

__all__ = ["PreparedImage", "exif_orientation", "find_images", "normalize", "prepare_image", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_ORIENTATION = 0x0112  # the EXIF Orientation tag
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # Pillow's integer modes above 8 bits, and float


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
    """The resize and crop of the data config: a Hugging Face image processor's (``resize`` given) or timm's."""
    if data_config.get("resize") is not None:
        return partial(_processor_resize, size=tuple(data_config["resize"]), interpolation=data_config["interpolation"],
                       crop=tuple(data_config["input_size"][1:]) if data_config.get("crop_mode") == "center" else None,
                       backend=data_config.get("resize_backend", "torchvision"))
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "crop_pct", "crop_mode")
    return create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False,
                            normalize=False)


def _processor_resize(picture: Any, size: tuple[int, int], interpolation: str, crop: tuple[int, int] | None,
                      backend: str) -> torch.Tensor:
    """Resize to ``size`` = (H, W) and center-crop as transformers' ViT/DeiT image processors do; (C, H, W) uint8.

    ``backend='torchvision'`` (transformers' default) resizes the uint8 tensor with antialiasing, nearest being
    torchvision's NEAREST_EXACT; ``'pil'`` (the ``...Pil`` processors) with PIL's own resize. The crop's top-left
    corner is the floor of half the size difference.
    """
    if backend == "pil":
        from PIL import Image

        resized = picture.resize((size[1], size[0]), resample=Image.Resampling[interpolation.upper()])
        tensor = torch.from_numpy(np.array(resized))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    else:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        tensor = torch.from_numpy(np.array(picture))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        mode = InterpolationMode.NEAREST_EXACT if interpolation == "nearest" else InterpolationMode(interpolation)
        tensor = F.resize(tensor, list(size), interpolation=mode, antialias=True)
    if crop is not None:
        top, left = (tensor.shape[1] - crop[0]) // 2, (tensor.shape[2] - crop[1]) // 2
        tensor = tensor[:, top:top + crop[0], left:left + crop[1]]
    return tensor.contiguous()


@contextmanager
def _one_image(source: str, failure: str = "is not a readable image") -> Iterator[None]:
    """Turn any error while reading or preparing one image into a one-line :class:`ImageError` naming it."""
    from PIL import Image

    try:
        yield
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image {source!r} not found: pass an existing image file or folder") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"image {source!r} is too large to open safely ({_reason(err)}); downscale, replace or "
                         "remove it") from None
    except Exception as err:
        raise ImageError(f"image {source!r} {failure} ({_reason(err)}); replace or remove it") from None


def _reason(err: Exception) -> str:
    """The error's text on one line, led by its type where the text alone would not say what went wrong."""
    text = " ".join(str(err).split()).rstrip(".")
    if text and isinstance(err, (OSError, ValueError, SyntaxError)):
        return text
    kind = type(err).__qualname__
    if type(err).__module__ != "builtins":  # struct.error, zlib.error: "error" alone says nothing
        kind = f"{type(err).__module__}.{kind}"
    return f"{kind}: {text}" if text else kind


def _decoded(picture: Any, mode: str, source: str) -> Any:
    """The PIL picture loaded, turned upright as its EXIF Orientation says, in 8 bits and converted to ``mode``."""
    from PIL import ImageOps

    picture.load()
    if 0 in picture.size:
        raise ImageError(f"image {source!r} is empty ({picture.size[0]}x{picture.size[1]} pixels); replace or "
                         "remove it")
    bits = _integer_bits(picture)  # before the transpose, which drops a TIFF's tags
    if exif_orientation(picture) in range(2, 9):  # copy only pictures that are not upright
        picture = ImageOps.exif_transpose(picture)
    return _eight_bit(picture, bits, source).convert(mode)


def exif_orientation(picture: Any) -> Any:
    """The picture's EXIF Orientation: 1 (upright) where it has none or its EXIF block is damaged."""
    try:
        return picture.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block leaves the pixels readable: viewers show them as stored
        return 1


def _integer_bits(picture: Any) -> int:
    """Bits per sample of a deep integer picture: a TIFF's BitsPerSample tag (12, 16 or 32), else 16 (PNG, PGM)."""
    if picture.mode not in _DEEP_MODES:
        return 8
    bits = getattr(picture, "tag_v2", {}).get(258, 16)
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _eight_bit(picture: Any, bits: int, source: str) -> Any:
    """A deep (16-bit, 'I' or float) picture scaled into an 8-bit 'L' one, rounding to nearest; others as they are.

    Integers in [0, 2**bits - 1] and floats in [0, 1] map onto [0, 255]; other values are refused rather than clipped.
    """
    from PIL import Image

    if picture.mode not in _DEEP_MODES:
        return picture
    values = np.asarray(picture)
    if picture.mode == "F":
        if not np.isfinite(values).all():
            raise ImageError(f"image {source!r} is a float image with NaN or infinite values; vit-audit reads float "
                             "images with values in [0, 1]: convert it to 8- or 16-bit")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ImageError(f"image {source!r} is a float image with values in [{low:g}, {high:g}]; vit-audit reads "
                             "float images with values in [0, 1]: convert it to 8- or 16-bit")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8))
    top = 2**bits - 1
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > top:
        raise ImageError(f"image {source!r} is a {bits}-bit image with values in [{low}, {high}], outside [0, {top}]; "
                         "convert it to 8- or 16-bit")
    # round(v * 255 / top) in exact integer arithmetic (no ties, as top is odd), in 32 bits where they suffice
    wide = values.astype(np.int64 if bits > 16 else np.int32)
    return Image.fromarray(((wide * 510 + top) // (2 * top)).astype(np.uint8))


def prepare_image(
    image: str | os.PathLike[str] | bytes | Any,
    data_config: dict[str, Any],
    name: str | None = None,
    source: str | None = None,
) -> PreparedImage:
    """Load (if a path) and resize/crop an image with the model's data config, without normalising.

    Files and PIL images are turned upright as their EXIF Orientation says; 16-bit, 'I' and float pixels are scaled
    into 8 bits (see :func:`_eight_bit`) before the conversion to the model's 'L' or 'RGB' mode.

    Args:
        image: a file path, the bytes of an image file, a PIL image, or an (H, W) / (H, W, C) uint8 array.
        data_config: timm's data config of the model (``LoadedModel.data_config``).
        name: id for results; defaults to the file stem.
        source: for bytes, the file they were read from, named in the results and in messages as that file is.

    Raises:
        ImageError: the file is missing, not a readable image, too large to open safely or holds values out of its
            range, or the array has an unusable shape; any error while reading, resizing or cropping one image
            becomes a one-line ImageError naming it.
    """
    from PIL import Image

    in_chans = int(data_config["input_size"][0])
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ImageError(f"model input has {in_chans} channels; vit-audit reads images for 1- or 3-channel models")
    transform = _transform(data_config)  # outside _one_image: a bad data config is not the image's fault
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        with _one_image(source), Image.open(source) as handle:
            picture = _decoded(handle, mode, source)
        name = name or Path(source).stem
    elif isinstance(image, bytes):
        source = source or name or "<image bytes>"
        with _one_image(source), Image.open(io.BytesIO(image)) as handle:
            picture = _decoded(handle, mode, source)
        name = name or Path(source).stem
    elif isinstance(image, Image.Image):
        source = name or "<PIL image>"
        with _one_image(source):
            picture = _decoded(image, mode, source)
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
    with _one_image(source, "could not be resized and cropped for the model"):
        tensor = transform(picture)
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
