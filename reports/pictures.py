"""Pictures of the report, drawn from the results file alone: map overlays and MoRF/LeRF removal strips.

Every picture is a small PNG data URI. Maps are drawn from their raw ``grid`` values (not from any picture the run
stored); removal strips follow the recipe of :mod:`audit.measure.curves` exactly (Utkin et al. 2024, Figs. 10 and 12):
the map is upsampled bilinearly to the model input, ranked, the first ``round(k * H * W / steps)`` pixels of the
input picture (brought to the model input's resolution) are replaced by the fill, and only then is each perturbed
picture scaled down to thumbnail size (never enlarged).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from audit.figures import scaled_size
from audit.measure.curves import ORDERS, pixel_ranks, removal_counts
from audit.measure.fills import blur_sigma, fill_image, gaussian_blur

__all__ = ["COLOURMAP", "REGION_COLOURS", "colour_stops", "colourise", "decode_data_uri", "draw_strip", "encode_png",
           "fit", "heat_map", "map_overlay", "region_overlay", "removal_order", "removal_plan", "removal_strip",
           "scaled_size", "upsample_map"]

# Viridis (perceptually uniform, readable in grey and by colour-blind readers), 11 anchors from 0 to 1.
_ANCHORS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151",
            "#bddf26", "#fde725"]
COLOURMAP = "viridis"
_RGB = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in _ANCHORS], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0.0, 1.0, 256), np.linspace(0.0, 1.0, len(_ANCHORS)), _RGB[:, c])
                 for c in range(3)], axis=1)
OVERLAY_ALPHA = 0.55
GAP = 2  # pixels between the frames of a strip
# The regions of an image drawn over its picture (Okabe-Ito): objects bluish green, artefacts vermillion, void grey.
REGION_COLOURS = {"object": (0, 158, 115), "artefact": (213, 94, 0), "void": (128, 128, 128)}
REGION_ALPHA = 0.5  # tint of a token wholly inside a region; a token partly inside is tinted in proportion
REGION_EDGE = 0.5  # a token is inside a region's outline when at least this fraction of it is in the region


def colour_stops() -> list[tuple[float, str]]:
    """The colour map's anchors as (offset in [0, 1], '#rrggbb'), for an SVG colour bar."""
    return [(i / (len(_ANCHORS) - 1), c) for i, c in enumerate(_ANCHORS)]


def decode_data_uri(uri: str | None) -> Image.Image | None:
    """A ``data:image/png;base64,...`` URI as an RGB picture, or None when absent or unreadable."""
    if not isinstance(uri, str) or not uri.startswith("data:image/") or ";base64," not in uri:
        return None
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))
        picture.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        return None
    return picture.convert("RGB")


def encode_png(picture: Image.Image, colours: int | None = None) -> str:
    """Encode as a PNG data URI; ``colours`` (2..256) quantises to a palette first (much smaller files)."""
    if colours is not None:
        if not 2 <= colours <= 256:
            raise ValueError(f"colours: expected 2..256 or None, got {colours!r}")
        picture = picture.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fit(picture: Image.Image, size: int) -> Image.Image:
    """Scale down (box filter) so that the longer side is at most ``size`` pixels; never enlarge.

    A smaller picture keeps its pixels: the report shows it at :func:`scaled_size` and lets the browser enlarge it
    without smoothing, which costs nothing in file size or rendering time.
    """
    if size < 1:
        raise ValueError(f"size: expected a positive number of pixels, got {size!r}")
    if max(picture.size) <= size:
        return picture
    return picture.resize(scaled_size(picture.size, size), Image.Resampling.BOX)


def _as_grid(grid: Sequence[Sequence[float | None]] | np.ndarray | None) -> np.ndarray | None:
    if isinstance(grid, np.ndarray):
        return grid.astype(np.float64, copy=False) if grid.ndim == 2 and grid.size else None
    if not grid or not isinstance(grid, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in grid):
        return None
    widths = {len(row) for row in grid}
    if len(widths) != 1 or 0 in widths:
        return None
    array = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=np.float64)
    return array


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (NaN: grey) as (..., 3) float RGB in [0, 1] through the colour map."""
    index = np.clip(np.nan_to_num(values, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.int64)
    rgb = _LUT[index] / 255.0
    rgb[np.isnan(values)] = 0.5
    return rgb


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Min-max scale the finite values to [0, 1]; a flat map becomes 0.5 everywhere."""
    finite = np.isfinite(array)
    out = np.full(array.shape, np.nan)
    if finite.any():
        low, high = float(array[finite].min()), float(array[finite].max())
        out[finite] = (array[finite] - low) / (high - low) if high > low else 0.5
    return out


def map_overlay(base: Image.Image, grid: Sequence[Sequence[float | None]] | None, alpha: float = OVERLAY_ALPHA,
                ) -> Image.Image | None:
    """A map drawn over a picture (Utkin et al. 2024, Figs. 6-9): min-max scaled, bilinear, colour-mapped, blended.

    Args:
        base: the input thumbnail; the overlay has its size.
        grid: the raw map (rows of values), any h x w.
        alpha: weight of the colour map in the blend.

    Returns:
        The blended picture, or None when the grid is missing or malformed.
    """
    array = _as_grid(grid)
    if array is None:
        return None
    scaled = _unit_range(array)
    width, height = base.size
    upsampled: Image.Image | np.ndarray
    upsampled = Image.fromarray(np.nan_to_num(scaled, nan=0.5).astype(np.float32), mode="F")
    upsampled = np.asarray(upsampled.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    colours = colourise(np.clip(upsampled, 0.0, 1.0))
    picture = np.asarray(base, dtype=np.float64) / 255.0
    blended = (1.0 - alpha) * picture + alpha * colours
    return Image.fromarray((np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def removal_strip(
    full: Image.Image,
    grid: Sequence[Sequence[float | None]] | None,
    order: str,
    model_grid: tuple[int, int],
    patch: tuple[int, int],
    steps: int,
    fill: float | Sequence[float],
    size: int,
    unit: str = "pixel",
    frames: int = 10,
) -> Image.Image | None:
    """Perturbed images k = 1..``frames`` of a MoRF or LeRF curve side by side (Utkin et al. 2024, Figs. 10, 12).

    The recipe of :mod:`audit.measure.curves`, at the model input's resolution: the map is upsampled bilinearly to the
    input, ranked (MoRF descending, LeRF ascending, ties in row-major order), the first ``round(k * H * W /
    steps)`` pixels are set to the fill in pixel space; only then is each image scaled down to at most ``size``
    pixels (never enlarged: see :func:`fit`).

    Args:
        full: the input picture at the model input's resolution (H x W), in pixel space.
        grid: the raw map.
        order: ``'morf'`` or ``'lerf'``.
        model_grid, patch: the model's token grid and patch size (for ``unit='patch'``).
        steps, fill, unit: the perturbation recipe of the run.
        size: largest longer side of each frame in pixels.
        frames: how many steps to show.

    Returns:
        The strip, frames separated by white gaps; None when the map is missing or not finite.
    """
    width, height = full.size
    plan = removal_plan(grid, order, (height, width), model_grid, patch, steps, unit, frames)
    return None if plan is None else draw_strip(full, *plan, fill=fill, size=size)


def removal_plan(
    grid: Sequence[Sequence[float | None]] | np.ndarray | None,
    order: str,
    input_size: tuple[int, int],
    model_grid: tuple[int, int],
    patch: tuple[int, int],
    steps: int,
    unit: str = "pixel",
    frames: int = 10,
) -> tuple[np.ndarray, list[int]] | None:
    """Which pixels go at which step: (flat pixel indices in removal order, pixels removed at steps 1..frames).

    Step k removes the first ``counts[k - 1]`` pixels of the order. ``grid`` may already be upsampled to the input
    (:func:`upsample_map`). None when the map is missing or not finite, or there is no step to show.
    """
    array = _as_grid(grid)
    shown = min(frames, steps)
    if array is None or not np.isfinite(array).all() or shown < 1:
        return None
    height, width = input_size
    if unit == "pixel":
        counts = removal_counts(height * width, steps)[1:shown + 1]
        return removal_order(array, order, (height, width), counts[-1]), counts
    cells = removal_counts(model_grid[0] * model_grid[1], steps)[1:shown + 1]
    ranks = pixel_ranks(torch.from_numpy(array), order, (height, width), model_grid, patch, unit).numpy()
    ordered = np.argsort(ranks, kind="stable")
    return ordered, [int((ranks < c).sum()) for c in cells]


def draw_strip(full: Image.Image, ordered: np.ndarray, counts: Sequence[int], fill: float | Sequence[float] | str,
               size: int) -> Image.Image:
    """Draw the frames of a :func:`removal_plan` on the input picture (H x W), each scaled down to <= ``size`` px.

    ``fill`` is a pixel value (one, or one per channel) or a recipe of :mod:`audit.measure.fills`: ``'blur'`` takes the
    removed pixels from the blurred picture; ``'road'`` imputes them at the frame's own size, without the noise (an
    illustration: at the input's size it would cost a sparse solve per frame).
    """
    pixels = np.array(full.convert("RGB"), dtype=np.uint8)
    thumb_w, thumb_h = full.size if max(full.size) <= size else scaled_size(full.size, size)
    strip = Image.new("RGB", (len(counts) * (thumb_w + GAP) - GAP, thumb_h), (255, 255, 255))
    flat = pixels.reshape(-1, 3)
    if fill == "blur":
        picture = torch.from_numpy(pixels).permute(2, 0, 1).double() / 255
        blurred = gaussian_blur(picture, blur_sigma(*picture.shape[1:])).permute(1, 2, 0).reshape(-1, 3)
        source = (blurred.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    elif not isinstance(fill, str):
        fill_rgb = np.broadcast_to(np.asarray(fill, dtype=np.float64).reshape(-1)[:3], (3,))
        source = np.broadcast_to((np.clip(fill_rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), flat.shape)
    removed = np.zeros(flat.shape[0], dtype=bool)
    done = 0
    for slot, count in enumerate(counts):  # removals accumulate: fill only what step k adds
        removed[ordered[done:count]] = True
        if fill != "road":
            flat[ordered[done:count]] = source[ordered[done:count]]
        done = max(done, count)
        if fill == "road":
            frame = _road_frame(full, removed, (thumb_w, thumb_h))
        else:
            frame = Image.fromarray(pixels)
            if frame.size != (thumb_w, thumb_h):
                frame = frame.resize((thumb_w, thumb_h), Image.Resampling.BOX)
        strip.paste(frame, (slot * (thumb_w + GAP), 0))
    return strip


def _road_frame(full: Image.Image, removed: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The picture at ``size`` with the pixels that are mostly removed imputed by ROAD (no noise)."""
    small = full.convert("RGB") if full.size == size else full.convert("RGB").resize(size, Image.Resampling.BOX)
    mask = Image.fromarray((removed.reshape(full.size[1], full.size[0]) * 255).astype(np.uint8))
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.BOX)
    picture = torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 255
    filled = fill_image(picture, torch.from_numpy(np.array(mask) >= 128), "road", noise=0.0)
    return Image.fromarray((filled.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())


def upsample_map(grid: Sequence[Sequence[float | None]] | np.ndarray | None, size: tuple[int, int],
                 ) -> np.ndarray | None:
    """The map upsampled to the model input (H, W) exactly as the audit ranks it (bilinear, float64)."""
    array = _as_grid(grid)
    if array is None:
        return None
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if tuple(values.shape) != tuple(size):
        values = F.interpolate(values[None, None], size=size, mode="bilinear", align_corners=False)
    return values.reshape(size).numpy()


def removal_order(array: np.ndarray, order: str, size: tuple[int, int], count: int) -> np.ndarray:
    """The first ``count`` pixels (flat indices) of a map's removal order, as :func:`audit.measure.curves.pixel_ranks`.

    The map is upsampled exactly as the audit does (bilinear, ``align_corners=False``, float64) and ranked
    descending for MoRF, ascending for LeRF, ties in row-major order; only the prefix a strip needs is sorted.

    Args:
        array: the raw map (h, w).
        order: ``'morf'`` or ``'lerf'``.
        size: the model input (H, W).
        count: how many pixels of the order are needed.
    """
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    key = cast(np.ndarray, upsample_map(array, size)).reshape(-1)
    key = -key if order == "morf" else key  # ascending key; ties keep their index order below
    count = int(min(max(count, 0), key.size))
    if count == 0:
        return np.empty(0, dtype=np.int64)
    threshold = np.partition(key, count - 1)[count - 1]
    candidates = np.flatnonzero(key <= threshold)  # every pixel that can be among the first ``count``, in order
    return candidates[np.argsort(key[candidates], kind="stable")][:count]


def heat_map(grid: Sequence[Sequence[float | None]] | np.ndarray | None, size: int) -> Image.Image | None:
    """A map on its own, without a picture under it: min-max scaled, colour-mapped, one block per token, the longer
    side ``size`` pixels (at least one pixel per token). None when the grid is missing or malformed."""
    array = _as_grid(grid)
    if array is None:
        return None
    rows, cols = array.shape
    picture = Image.fromarray((colourise(_unit_range(array)) * 255.0 + 0.5).astype(np.uint8))
    width, height = scaled_size((cols, rows), max(size, rows, cols))
    return picture.resize((width, height), Image.Resampling.NEAREST)


def _token_blocks(fractions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Token fractions (gh, gw) spread over a picture of ``size`` (width, height): each pixel takes its token's."""
    width, height = size
    rows = np.minimum((np.arange(height) * fractions.shape[0]) // height, fractions.shape[0] - 1)
    cols = np.minimum((np.arange(width) * fractions.shape[1]) // width, fractions.shape[1] - 1)
    return fractions[rows[:, None], cols[None, :]]


def region_overlay(base: Image.Image, regions: dict[str, Sequence[Sequence[float | None]] | None],
                   alpha: float = REGION_ALPHA) -> Image.Image | None:
    """An image's regions drawn over its picture, token by token: each token tinted in its region's colour
    (:data:`REGION_COLOURS`) in proportion to the fraction of its area inside the region, and the outline of the
    tokens at least half inside drawn in that colour.

    Args:
        base: the input picture; the grids span it (the model's patch-token grid over the model input).
        regions: role (``object``, ``artefact``, ``void``) -> (gh, gw) fractions in [0, 1], or None.
        alpha: the tint of a token wholly inside a region.

    Returns:
        The picture, or None when no region grid can be read.
    """
    picture = np.asarray(base.convert("RGB"), dtype=np.float64) / 255.0
    drawn = False
    for role in ("void", "artefact", "object"):  # objects last: on top
        array = _as_grid(regions.get(role))
        if array is None:
            continue
        drawn = True
        fractions = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)
        colour = np.asarray(REGION_COLOURS[role], dtype=np.float64) / 255.0
        weight = alpha * _token_blocks(fractions, base.size)[..., None]
        picture = (1.0 - weight) * picture + weight * colour
        inside = _token_blocks(fractions >= REGION_EDGE, base.size)
        edge = np.zeros_like(inside)
        edge[1:, :] |= inside[1:, :] != inside[:-1, :]
        edge[:-1, :] |= inside[1:, :] != inside[:-1, :]
        edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
        edge[:, :-1] |= inside[:, 1:] != inside[:, :-1]
        edge &= inside  # the outline runs along the inside of the region's tokens
        edge[0, :] |= inside[0, :]
        edge[-1, :] |= inside[-1, :]
        edge[:, 0] |= inside[:, 0]
        edge[:, -1] |= inside[:, -1]
        picture[edge] = colour
    if not drawn:
        return None
    return Image.fromarray((np.clip(picture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
