"""Annotated regions mapped onto a model's patch-token grid, through the model's own preprocessing.

:func:`token_regions` measures, for one image and one model, the fraction of each patch token's area inside the
image's object, artefact and void regions (read by :mod:`audit.run.regions`). The model input is sampled at
:data:`SUBSAMPLES` x :data:`SUBSAMPLES` points per pixel; each point is mapped back into the original picture through
the model's own resize and crop (:func:`input_geometry`, which reproduces :func:`audit.model.images.prepare_image`
exactly) and tested against the boxes and polygons analytically (polygons by the even-odd rule) and against masks by
the mask pixel that holds it (nearest-neighbour resizing). Points in the padding of timm's ``border`` crop mode belong
to no region. Annotations are turned upright with the image's EXIF Orientation as :mod:`audit.run.regions` describes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import one_line
from ..model.images import exif_orientation
from .regions import ROLES, VOID, ImageRegions, ImageRegionsError, Shape

__all__ = ["Geometry", "RegionPicture", "SUBSAMPLES", "TokenRegions", "input_geometry", "region_picture",
           "token_regions"]

SUBSAMPLES = 4  # sample points per model-input pixel along each axis
_SLACK = 1e-6  # box edges this far outside the picture are round-off, not worth a note


@dataclass(frozen=True)
class Geometry:
    """Where a picture lands in the model input: ``x_in = x * scale_x - offset_x``, ``y_in = y * scale_y - offset_y``.

    Coordinates are continuous, origin at the top-left corner, pixel centres at ``i + 0.5``; resizing maps
    ``[0, W]`` onto ``[0, W_resized]`` (torchvision's and PIL's convention).

    Attributes:
        scale_x: resized width / original width.
        scale_y: resized height / original height.
        offset_x: the crop's left edge in the resized picture; negative where the picture is padded.
        offset_y: the crop's top edge in the resized picture; negative where the picture is padded.
        width: the model input's width in pixels.
        height: the model input's height in pixels.
        original: (width, height) of the upright original picture.
        resized: (width, height) of the picture after the resize, before the crop.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int
    height: int
    original: tuple[int, int]
    resized: tuple[int, int]

    def to_input(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Original (upright) coordinates -> model-input coordinates; numbers or arrays."""
        return x * self.scale_x - self.offset_x, y * self.scale_y - self.offset_y

    def to_original(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Model-input coordinates -> original (upright) coordinates; numbers or arrays."""
        return (x + self.offset_x) / self.scale_x, (y + self.offset_y) / self.scale_y


@dataclass
class TokenRegions:
    """One image's regions on one model's patch-token grid.

    Attributes:
        object: (gh, gw) float64, the fraction of each token's area inside the union of the object regions.
        artefact: (gh, gw) float64, the same for the artefact regions.
        void: (gh, gw) float64, the fraction inside void mask pixels.
        labels: the image's label names, sorted (a mask's in the order of their values).
        notes: one-line remarks (boxes clipped to the picture, no object region).
    """

    object: np.ndarray
    artefact: np.ndarray
    void: np.ndarray
    labels: list[str]
    notes: list[str]

    @property
    def has_object(self) -> bool:
        """Whether any token holds part of an object region (else the object metrics do not apply)."""
        return bool(self.object.any())


@dataclass
class RegionPicture:
    """One image's regions at model-input pixel resolution, each pixel by the majority of its sample points.

    Attributes:
        object: (H, W) bool.
        artefact: (H, W) bool.
        void: (H, W) bool.
        labels: as :attr:`TokenRegions.labels`.
        notes: as :attr:`TokenRegions.notes`.
    """

    object: np.ndarray
    artefact: np.ndarray
    void: np.ndarray
    labels: list[str]
    notes: list[str]


# --- loading -------------------------------------------------------------------------------------------------------


def input_geometry(original_size: tuple[int, int], data_config: Mapping[str, Any]) -> Geometry:
    """Where a picture of ``original_size`` = (width, height) (upright) lands in the model's input.

    Reproduces :func:`audit.model.images.prepare_image`: a Hugging Face processor's resize to ``data_config["resize"]``
    = (H, W) and center crop (top-left corner at the floor of half the size difference) where ``resize`` is set, else
    timm's eval transform: the resize size ``floor(input / crop_pct)``; ``squash`` resizes both sides to it, ``border``
    the longer side keeping the ratio (then crops or pads), and ``center`` (any other mode) the shorter side
    (torchvision's ``Resize(int)``: the longer side ``int(size * long / short)``, or timm's ``ResizeKeepRatio`` for
    non-square inputs); then torchvision's center crop, its corner at ``int(round((h - th) / 2.0))``, padding ``(th - h)
    // 2`` before where the picture is smaller.

    Raises:
        ValueError: the size is not positive.
    """
    width, height = (int(v) for v in original_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"input_geometry: picture size {width}x{height} is not positive; pass (width, height)")
    out_h, out_w = (int(v) for v in data_config["input_size"][1:])
    if data_config.get("resize") is not None:
        res_h, res_w = (int(v) for v in data_config["resize"])
        if data_config.get("crop_mode") == "center":
            top, left = (res_h - out_h) // 2, (res_w - out_w) // 2
        else:
            top, left, out_h, out_w = 0, 0, res_h, res_w
    else:
        from timm.data.constants import DEFAULT_CROP_PCT

        crop_pct = data_config.get("crop_pct") or DEFAULT_CROP_PCT
        scale_size = (math.floor(out_h / crop_pct), math.floor(out_w / crop_pct))
        mode = data_config.get("crop_mode")
        if mode == "squash":
            res_h, res_w = scale_size
        elif mode == "border":
            res_h, res_w = _keep_ratio(height, width, scale_size, longest=1.0)
        elif scale_size[0] == scale_size[1]:
            res_h, res_w = _shorter_side(height, width, scale_size[0])
        else:
            res_h, res_w = _keep_ratio(height, width, scale_size, longest=0.0)
        top, left = _crop_corner(res_h, out_h), _crop_corner(res_w, out_w)
    return Geometry(scale_x=res_w / width, scale_y=res_h / height, offset_x=float(left), offset_y=float(top),
                    width=out_w, height=out_h, original=(width, height), resized=(res_w, res_h))


def _shorter_side(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)``: the shorter side to ``size``, the longer ``int(size * long / short)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _keep_ratio(height: int, width: int, target: tuple[int, int], longest: float) -> tuple[int, int]:
    """timm's ``ResizeKeepRatio(target, longest)`` (no random scale): both sides divided by one ratio, rounded."""
    ratio_h, ratio_w = height / target[0], width / target[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(height * 1.0 / ratio), round(width * 1.0 / ratio)


def _crop_corner(size: int, crop: int) -> int:
    """The crop's first index along one side: torchvision's center crop, less the padding where it pads."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


# --- measuring -----------------------------------------------------------------------------------------------------


def token_regions(regions: ImageRegions, image_path: str | os.PathLike[str], data_config: Mapping[str, Any],
                  grid: tuple[int, int], patch: tuple[int, int]) -> TokenRegions:
    """The fraction of each patch token's area inside the image's object, artefact and void regions.

    Args:
        regions: the image's regions (:meth:`Regions.for_image`).
        image_path: the image file, read for its size and EXIF Orientation.
        data_config: the model's data config, as :func:`audit.model.images.prepare_image` takes it.
        grid: the token grid (gh, gw).
        patch: the patch size (ph, pw); ``gh * ph`` x ``gw * pw`` is the model input's size.

    Raises:
        ValueError: the grid and patch do not cover the data config's input.
        ImageRegionsError: the image cannot be read, the recorded size fits neither its stored nor its upright size,
            a box or polygon is empty or wholly outside the picture, or a mask cannot be read (that image alone).
    """
    (gh, gw), (ph, pw) = (int(v) for v in grid), (int(v) for v in patch)
    sampled = _sample(regions, image_path, data_config, (gh * ph, gw * pw))
    block = (ph * SUBSAMPLES, pw * SUBSAMPLES)
    return TokenRegions(object=_block_mean(sampled.object, block), artefact=_block_mean(sampled.artefact, block),
                        void=_block_mean(sampled.void, block), labels=sampled.labels, notes=sampled.notes)


def region_picture(regions: ImageRegions, image_path: str | os.PathLike[str],
                   data_config: Mapping[str, Any]) -> RegionPicture:
    """The image's regions at model-input pixel resolution, each pixel in a region where most of its samples are.

    Raises:
        ImageRegionsError: as :func:`token_regions`.
    """
    sampled = _sample(regions, image_path, data_config, None)
    block = (SUBSAMPLES, SUBSAMPLES)
    return RegionPicture(object=_block_mean(sampled.object, block) > 0.5,
                         artefact=_block_mean(sampled.artefact, block) > 0.5,
                         void=_block_mean(sampled.void, block) > 0.5, labels=sampled.labels, notes=sampled.notes)


@dataclass
class _Sampled:
    """Region membership of every sample point of the model input: (H * s, W * s) bool each."""

    object: np.ndarray
    artefact: np.ndarray
    void: np.ndarray
    labels: list[str]
    notes: list[str]


def _block_mean(samples: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The mean of each (bh, bw) block of a bool array, as float64."""
    rows, cols = samples.shape[0] // block[0], samples.shape[1] // block[1]
    return samples.reshape(rows, block[0], cols, block[1]).mean(axis=(1, 3), dtype=np.float64)


def _sample(regions: ImageRegions, image_path: str | os.PathLike[str], data_config: Mapping[str, Any],
            size: tuple[int, int] | None) -> _Sampled:
    """Which sample points of the model input lie in which regions; see the module's docstring.

    ``size`` = (H, W), where given, is checked to be the model input's.
    """
    image = os.fspath(image_path)
    stored, orientation = _image_header(image)
    upright = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    geometry = input_geometry(upright, data_config)
    if size is None:
        size = (geometry.height, geometry.width)
    elif size != (geometry.height, geometry.width):
        raise ValueError(f"token grid covers {size[0]}x{size[1]} pixels, but the data config's input is "
                         f"{geometry.height}x{geometry.width}; pass the model's own grid and patch size")
    notes: list[str] = []
    if regions.size is None or regions.size == stored:
        frame, turn = stored, orientation
        if orientation in range(2, 9):
            notes.append(f"annotations in stored pixels turned upright with EXIF orientation {orientation}")
    elif regions.size == upright:
        frame, turn = upright, 1
    else:
        decoded = f"{stored[0]}x{stored[1]}" + (f" ({upright[0]}x{upright[1]} upright)" if upright != stored else "")
        raise ImageRegionsError(f"regions for image {image!r}: {regions.source!r} records it as "
                                f"{regions.size[0]}x{regions.size[1]} pixels, but it decodes to {decoded}; annotate "
                                "this image or fix the recorded size")
    s = SUBSAMPLES
    up_x, up_y = geometry.to_original((np.arange(size[1] * s) + 0.5) / s, (np.arange(size[0] * s) + 0.5) / s)
    in_x, in_y = (up_x >= 0) & (up_x < upright[0]), (up_y >= 0) & (up_y < upright[1])  # not padding
    xs, ys, swap = _unturn(up_x, up_y, turn, frame)
    valid = (in_x[:, None] & in_y[None, :]) if swap else (in_y[:, None] & in_x[None, :])
    shape = (ys.size, xs.size)
    members = {role: np.zeros(shape, bool) for role in ROLES}
    void = np.zeros(shape, bool)
    labels = regions.labels
    clipped = {"box": 0, "polygon": 0, "mask": 0}
    for item in regions.shapes:
        inside, kind, was_clipped = _shape_samples(item, regions, image, frame, ys, xs)
        members[item.role] |= inside
        clipped[kind] += was_clipped
    notes += [f"{clipped['box']} box(es) partly outside the image were clipped"] if clipped["box"] else []
    notes += [f"{clipped['polygon']} polygon(s) partly outside the image were clipped"] if clipped["polygon"] else []
    if regions.mask is not None:
        values = _mask_values(regions, image, frame)
        found = [int(v) for v in np.unique(values) if v not in (0, VOID)]
        labels = [str(v) for v in found]
        sampled = values[np.ix_(_index(ys, frame[1]), _index(xs, frame[0]))]
        for role in ROLES:
            chosen = [v for v in found if regions.roles.get(str(v), "object") == role]
            if chosen:
                members[role] |= np.isin(sampled, chosen)
        void |= sampled == VOID
        annotated = any(regions.roles.get(label, "object") == "object" for label in labels)
        if not annotated:
            notes.append(f"mask {regions.mask!r} has no object label (only background, void or artefacts): no "
                         "object region")
    else:
        annotated = any(item.role == "object" for item in regions.shapes)
        if not annotated:
            notes.append("no object region annotated")
    results = [members["object"] & valid, members["artefact"] & valid, void & valid]
    if swap:
        results = [np.ascontiguousarray(r.T) for r in results]
    if annotated and not results[0].any():
        notes.append("the object regions lie outside the model's input crop: no object region")
    return _Sampled(object=results[0], artefact=results[1], void=results[2], labels=labels, notes=notes)


def _image_header(image: str) -> tuple[tuple[int, int], int]:
    """The image file's stored (width, height) and its EXIF Orientation (1 where none applies)."""
    from PIL import Image

    try:
        with Image.open(image) as handle:
            size = handle.size
            orientation = exif_orientation(handle)
    except FileNotFoundError:
        raise ImageRegionsError(f"regions for image {image!r}: the image does not exist; pass an existing "
                                "image") from None
    except Exception as err:
        raise ImageRegionsError(f"regions for image {image!r}: the image cannot be read ({one_line(err)}); replace "
                                "or remove it") from None
    if 0 in size:
        raise ImageRegionsError(f"regions for image {image!r}: the image is empty ({size[0]}x{size[1]} pixels); "
                                "replace or remove it")
    return size, orientation if orientation in range(2, 9) else 1


def _unturn(up_x: np.ndarray, up_y: np.ndarray, orientation: int,
            frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Upright sample coordinates -> the stored frame of ``frame`` = (width, height), before ``exif_transpose``.

    Returns ``(xs, ys, swap)``: without swap the frame's x follows the input's columns and y its rows; with swap
    (orientations 5 to 8 exchange the axes) x follows the input's rows and y its columns.
    """
    width, height = frame
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return width - up_x, up_y, False
    if orientation == 3:  # ROTATE_180
        return width - up_x, height - up_y, False
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return up_x, height - up_y, False
    if orientation == 5:  # TRANSPOSE
        return up_y, up_x, True
    if orientation == 6:  # ROTATE_270: stored (x, y) -> upright (height - y, x)
        return up_y, height - up_x, True
    if orientation == 7:  # TRANSVERSE: stored (x, y) -> upright (height - y, width - x)
        return width - up_y, height - up_x, True
    if orientation == 8:  # ROTATE_90: stored (x, y) -> upright (y, width - x)
        return width - up_y, up_x, True
    return up_x, up_y, False


def _index(coords: np.ndarray, size: int) -> np.ndarray:
    """The pixel index holding each coordinate, clamped into the picture (points outside are masked afterwards)."""
    return np.clip(np.floor(coords), 0, size - 1).astype(np.intp)


def _shape_samples(item: Shape, regions: ImageRegions, image: str, frame: tuple[int, int], ys: np.ndarray,
                   xs: np.ndarray) -> tuple[np.ndarray, str, bool]:
    """Which samples lie in one shape, its kind for notes, and whether it reached outside the picture."""
    width, height = frame
    problem = f"regions for image {image!r}: {item.where} in {regions.source!r}"
    if item.rle is not None:
        mask = _decode_rle(item, regions, image, frame)
        return mask[np.ix_(_index(ys, height), _index(xs, width))], "mask", False
    if item.box is not None:
        x0, y0, x1, y1 = item.box
        if not (x1 > x0 and y1 > y0):
            raise ImageRegionsError(f"{problem} is an empty box (x {x0:g}..{x1:g}, y {y0:g}..{y1:g}); fix or remove "
                                    "it")
        _check_inside(problem, "box", (x0, y0, x1, y1), frame)
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        return inside, "box", _reaches_out((x0, y0, x1, y1), frame)
    parts = [np.asarray(part, dtype=np.float64).reshape(-1, 2) for part in item.polygons]
    if any(len(part) < 3 for part in parts):
        raise ImageRegionsError(f"{problem} has a polygon of fewer than 3 points; fix or remove it")
    if not any(_area(part) > 0 for part in parts):
        raise ImageRegionsError(f"{problem} is a polygon with no area; fix or remove it")
    points = np.concatenate(parts)
    bounds = (*points.min(axis=0), *points.max(axis=0))
    _check_inside(problem, "polygon", bounds, frame)
    inside = np.zeros((ys.size, xs.size), bool)
    for part in parts:
        inside |= _polygon_samples(part, ys, xs)
    return inside, "polygon", _reaches_out(bounds, frame)


def _check_inside(problem: str, kind: str, bounds: Sequence[float], frame: tuple[int, int]) -> None:
    x0, y0, x1, y1 = bounds
    if x1 <= 0 or y1 <= 0 or x0 >= frame[0] or y0 >= frame[1]:
        raise ImageRegionsError(f"{problem} is a {kind} wholly outside the {frame[0]}x{frame[1]} picture (x "
                                f"{x0:g}..{x1:g}, y {y0:g}..{y1:g}); fix or remove it")


def _reaches_out(bounds: Sequence[float], frame: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = bounds
    return x0 < -_SLACK or y0 < -_SLACK or x1 > frame[0] + _SLACK or y1 > frame[1] + _SLACK


def _area(vertices: np.ndarray) -> float:
    """The polygon's absolute shoelace area."""
    x, y = vertices[:, 0], vertices[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _polygon_samples(vertices: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Which grid points (ys x xs) lie inside the polygon by the even-odd rule, one row of samples at a time."""
    inside = np.zeros((ys.size, xs.size), bool)
    px, py = vertices[:, 0], vertices[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    rows = np.nonzero((ys >= py.min()) & (ys < py.max()))[0]
    cols = np.nonzero((xs >= px.min()) & (xs < px.max()))[0]
    if not rows.size or not cols.size:
        return inside
    y = ys[rows][:, None]
    straddles = (py <= y) != (qy <= y)  # each edge once, horizontal ones never: the half-open crossing rule
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = np.where(straddles, px + (y - py) * (qx - px) / (qy - py), np.inf)
    crossings.sort(axis=1)
    x = xs[cols]
    for row, line in zip(rows, crossings):
        inside[row, cols] = np.searchsorted(line, x, side="right") % 2 == 1
    return inside


def _decode_rle(item: Shape, regions: ImageRegions, image: str, frame: tuple[int, int]) -> np.ndarray:
    """A COCO RLE mask as an (H, W) bool array the size of the picture it annotates."""
    from pycocotools import mask as coco_mask

    assert item.rle is not None  # only an RLE shape is decoded (_shape_samples)
    height, width = item.rle["size"]
    problem = f"regions for image {image!r}: {item.where} in {regions.source!r}"
    if (width, height) != frame:
        raise ImageRegionsError(f"{problem} has an RLE mask of {width}x{height} pixels for a {frame[0]}x{frame[1]} "
                                "picture; fix the mask's size")
    rle = dict(item.rle)
    try:
        if isinstance(rle["counts"], list):
            rle = coco_mask.frPyObjects(rle, height, width)
        else:
            rle["counts"] = rle["counts"].encode("ascii")
        decoded = np.asarray(coco_mask.decode(rle))
    except Exception as err:
        raise ImageRegionsError(f"{problem} has an RLE mask that cannot be decoded ({one_line(err)}); fix or remove "
                                "it") from None
    if decoded.shape[:2] != (height, width):
        raise ImageRegionsError(f"{problem} has an RLE mask that decodes to {decoded.shape[1]}x{decoded.shape[0]} "
                                f"pixels, not {width}x{height}; fix the mask")
    return decoded.reshape(height, width).astype(bool)


def _mask_values(regions: ImageRegions, image: str, frame: tuple[int, int]) -> np.ndarray:
    """A PNG label mask's values, (H, W)."""
    from PIL import Image

    assert regions.mask is not None  # read only for regions with a mask (_sample)
    try:
        with Image.open(regions.mask) as handle:
            handle.load()
            values = np.asarray(handle)
    except Exception as err:
        raise ImageRegionsError(f"regions for image {image!r}: mask {regions.mask!r} cannot be read "
                                f"({one_line(err)}); replace or remove it") from None
    values = values.astype(np.uint8) if values.dtype == bool else values
    if values.ndim != 2 or values.shape != (frame[1], frame[0]):
        raise ImageRegionsError(f"regions for image {image!r}: mask {regions.mask!r} is not a {frame[0]}x{frame[1]} "
                                "single-channel label image; replace it")
    return values
