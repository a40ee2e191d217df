"""Probes: what moves the model. A picture is stamped onto a copy of every image, and the run measures whether the
model's prediction moves towards a class and whether its maps look at the stamp.

``--probe FILE[@WHERE]`` stamps FILE (RGB or RGBA, alpha respected) onto the model's input picture, after resize and
crop and before normalisation, at the file's own pixel size. ``WHERE`` is ``top-left`` (the default), ``top-right``,
``bottom-left``, ``bottom-right``, ``center``, ``random`` (a place drawn per image from the run's seed and the image's
id) or ``X,Y``: the stamp's top-left corner at fractions X of the input's width and Y of its height. Built-in stamps
need no file:

- ``square:COLOR:SIZE``: a SIZE x SIZE square of COLOR (``white``, ``black``, ``gray``, ``red``, ``green``, ``blue``,
  ``yellow`` or ``#RRGGBB``), e.g. ``square:white:4``.
- ``text:WORD[:SIZE]``: WORD in white, Pillow's built-in font at SIZE pixels (default 10), on a black box.

A one-channel model gets the stamp's luminance (``L = 0.299 R + 0.587 G + 0.114 B``, Pillow's). The stamp's region
is known exactly: each patch token's fraction of its area under the stamp, weighted by the stamp's alpha
(:func:`stamp_region`).

Per image (:func:`probe_image`): the clean and the stamped top-1 and their probabilities, and, for every gated map,
the relevance mass on the stamp in the stamped image's map of its own top-1
(:func:`audit.measure.localisation.mass_in`).
Over images (:func:`attraction`): the attraction of each class k, A_k = P(top-1 = k | stamped) - P(top-1 = k | clean)
over the images whose clean top-1 is not k (so A_k is the share of them the stamp moves to k), and the flip rate.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..maps import compute_maps, needs_attention
from ..model.capture import capture
from ..model.images import PreparedImage, normalize
from ..model.load import LoadedModel
from .localisation import mass_in

__all__ = ["PLACES", "Probe", "ProbeError", "attraction", "attraction_values", "parse_probe", "place", "probe_image",
           "stamp", "stamp_region", "stamped_picture"]

PLACES = ("top-left", "top-right", "bottom-left", "bottom-right", "center", "random")
DEFAULT_PLACE = "top-left"
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "red": (255, 0, 0),
           "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
TEXT_SIZE = 10
TEXT_PAD = 1
LUMA = (0.299, 0.587, 0.114)  # Pillow's RGB -> L weights
STAMPED_THUMBNAIL = 96  # longer side of the stamped picture kept in a record


class ProbeError(ValueError):
    """A probe that cannot be used: an unreadable file, a bad place, or a stamp that does not fit the input."""


@dataclass(frozen=True)
class Probe:
    """A stamp and where it goes.

    Attributes:
        spec: as given (``square:white:4@top-left``).
        name: the stamp part (``square:white:4`` or the file name).
        where: a name from :data:`PLACES` or ``"X,Y"``.
        rgba: (h, w, 4) float64 in [0, 1]: the stamp's colours and alpha.
    """

    spec: str
    name: str
    where: str
    rgba: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.rgba.shape[0]), int(self.rgba.shape[1])

    def describe(self) -> str:
        h, w = self.size
        return f"{self.name} ({w}x{h} px) at {self.where}"


def _colour(text: str, spec: str) -> tuple[int, int, int]:
    if text in COLOURS:
        return COLOURS[text]
    if len(text) == 7 and text.startswith("#"):
        try:
            return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    raise ProbeError(f"probe {spec!r}: colour {text!r} is not one of {', '.join(COLOURS)} or #RRGGBB")


def _positive(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ProbeError(f"probe {spec!r}: {what} {text!r} is not a positive whole number of pixels")
    return int(text)


def _builtin(stamp: str, spec: str) -> np.ndarray | None:
    """The RGBA of a built-in stamp, or None when ``stamp`` names none."""
    kind, _, rest = stamp.partition(":")
    if kind == "square" and rest:
        parts = rest.split(":")
        if len(parts) != 2:
            raise ProbeError(f"probe {spec!r}: write a square as square:COLOR:SIZE, e.g. square:white:4")
        size = _positive(parts[1], "size", spec)
        rgba = np.ones((size, size, 4))
        rgba[..., :3] = np.asarray(_colour(parts[0], spec)) / 255.0
        return rgba
    if kind == "text" and rest:
        word, _, size_text = rest.partition(":")
        if not word:
            raise ProbeError(f"probe {spec!r}: write a text stamp as text:WORD[:SIZE], e.g. text:ABC")
        return _text_stamp(word, _positive(size_text, "size", spec) if size_text else TEXT_SIZE)
    return None


def _text_stamp(word: str, size: int) -> np.ndarray:
    """``word`` in white on a black box, Pillow's built-in font at ``size`` pixels."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    left, top, right, bottom = cast("tuple[int, int, int, int]",  # whole pixels from the origin (0, 0)
                                    ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), word, font=font))
    width, height = right - left + 2 * TEXT_PAD, bottom - top + 2 * TEXT_PAD
    picture = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(picture).text((TEXT_PAD - left, TEXT_PAD - top), word, fill=(255, 255, 255), font=font)
    rgba = np.ones((height, width, 4))
    rgba[..., :3] = np.asarray(picture, dtype=np.float64) / 255.0
    return rgba


def _read_stamp(path: str, spec: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as handle:
            handle.load()
            picture = handle.convert("RGBA")
    except FileNotFoundError:
        raise ProbeError(f"probe {spec!r}: the stamp file {path!r} does not exist; pass an image file or a built-in "
                         "stamp (square:white:4, text:ABC)") from None
    except Exception as err:  # noqa: BLE001 - any decoding error is the file's
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ProbeError(f"probe {spec!r}: the stamp file {path!r} is not a readable image ({reason}); pass a PNG "
                         "or JPEG") from None
    if 0 in picture.size:
        raise ProbeError(f"probe {spec!r}: the stamp file {path!r} is empty")
    return np.asarray(picture, dtype=np.float64) / 255.0


def _where(text: str, spec: str) -> str:
    if text in PLACES:
        return text
    parts = text.split(",")
    if len(parts) == 2:
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            x = y = math.nan
        if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
            return f"{x:g},{y:g}"
    raise ProbeError(f"probe {spec!r}: place {text!r} is not one of {', '.join(PLACES)} or X,Y (fractions of the "
                     "input's width and height in [0, 1])")


def parse_probe(spec: str, base: str | os.PathLike[str] | None = None) -> Probe:
    """A :class:`Probe` from ``FILE[@WHERE]`` or a built-in stamp; a relative FILE is read from ``base``.

    Raises:
        ProbeError: one line: an unknown place or colour, a bad size, a file that is missing or not an image.
    """
    text = str(spec).strip()
    if not text:
        raise ProbeError("probe: empty; pass FILE[@WHERE] or a built-in stamp such as square:white:4@top-left")
    stamp, at, where = text.rpartition("@")
    if not at:
        stamp, where = text, DEFAULT_PLACE
    if not stamp:
        raise ProbeError(f"probe {text!r}: no stamp before '@'")
    rgba = _builtin(stamp, text)
    name = stamp
    if rgba is None:
        path = Path(stamp)
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        rgba = _read_stamp(os.fspath(path), text)
        name = Path(stamp).name
    return Probe(spec=text, name=name, where=_where(where.strip(), text), rgba=rgba)


def place(probe: Probe, input_size: tuple[int, int], seed: int = 0, image: str = "") -> tuple[int, int]:
    """The (top, left) pixel of the stamp on an input of ``input_size`` (H, W); ``random`` draws it from ``seed``
    and the image's id.

    Raises:
        ProbeError: the stamp is larger than the input, or ``X,Y`` puts part of it outside.
    """
    height, width = input_size
    h, w = probe.size
    if h > height or w > width:
        raise ProbeError(f"probe {probe.spec!r}: the stamp ({w}x{h} px) is larger than the model's input "
                         f"({width}x{height} px); use a smaller stamp")
    where = probe.where
    if where == "random":
        rng = np.random.default_rng([seed, zlib.crc32(image.encode("utf-8"))])
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    if where in PLACES:
        top = {"top": 0, "bottom": height - h, "center": (height - h) // 2}[where.split("-")[0]]
        left = {"left": 0, "right": width - w}.get(where.split("-")[-1], (width - w) // 2)
        return top, left
    x, y = (float(v) for v in where.split(","))
    top, left = math.floor(y * height), math.floor(x * width)
    if top + h > height or left + w > width:
        raise ProbeError(f"probe {probe.spec!r}: at {where} the stamp ({w}x{h} px) reaches outside the model's input "
                         f"({width}x{height} px); move it up or left")
    return top, left


def stamp(pixel: torch.Tensor, probe: Probe, top: int, left: int) -> torch.Tensor:
    """A copy of the input picture (C, H, W) in [0, 1] with the stamp composited over it at (top, left)."""
    h, w = probe.size
    channels = int(pixel.shape[0])
    colour = probe.rgba[..., :3]
    if channels == 1:
        colour = (colour @ np.asarray(LUMA))[..., None]
    elif channels != 3:
        raise ProbeError(f"probe {probe.spec!r}: the model's input has {channels} channels; stamps need 1 or 3")
    alpha = torch.from_numpy(probe.rgba[..., 3]).to(pixel.dtype)
    stamp_t = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1))).to(pixel.dtype)
    out = pixel.clone()
    window = out[:, top:top + h, left:left + w]
    out[:, top:top + h, left:left + w] = alpha * stamp_t.to(window.device) + (1 - alpha) * window
    return out


def stamp_region(probe: Probe, top: int, left: int, input_size: tuple[int, int], grid: tuple[int, int],
                 patch: tuple[int, int]) -> np.ndarray:
    """Each patch token's fraction of its area under the stamp, weighted by the stamp's alpha: (gh, gw) in [0, 1].

    The grid covers the top-left ``grid * patch`` pixels of the input.
    """
    height, width = input_size
    cover = np.zeros((height, width))
    h, w = probe.size
    cover[top:top + h, left:left + w] = probe.rgba[..., 3]
    gh, gw = grid
    ph, pw = patch
    return cover[:gh * ph, :gw * pw].reshape(gh, ph, gw, pw).mean(axis=(1, 3))


def stamped_picture(prepared: PreparedImage, probe: Probe, seed: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image's input picture with the probe stamped on, and where (top, left)."""
    size = (int(prepared.pixel.shape[-2]), int(prepared.pixel.shape[-1]))
    top, left = place(probe, size, seed, prepared.name)
    return stamp(prepared.pixel, probe, top, left), (top, left)


def probe_image(loaded: LoadedModel, prepared: PreparedImage, probe: Probe, keys: list[tuple[str, str]],
                clean_class: int, *, act: str = "gelu", seed: int = 0, device: torch.device | str = "cpu",
                thumbnail: int = STAMPED_THUMBNAIL) -> dict[str, Any]:
    """One image under one probe: its stamped top-1 and probabilities, and the mass of each map in ``keys``
    ((method, stage)) on the stamp, in the stamped image's map of its own top-1.

    Args:
        loaded: the model.
        prepared: the image, prepared for the model.
        probe: the stamp and its place.
        keys: the maps whose mass on the stamp is measured (the gated maps).
        clean_class: the clean image's top-1 (the record's class).
        act, seed: as for the maps.
        device: where the model runs.
        thumbnail: longer side of the stamped picture kept (a PNG data URI); 0 keeps none.
    """
    from ..figures import png_data_uri

    model = loaded.model.to(device)
    stamped, (top, left) = stamped_picture(prepared, probe, seed)
    methods = list(dict.fromkeys(method for method, _ in keys))
    cap = capture(model, normalize(stamped.to(device), loaded.mean, loaded.std), target=None,
                  attention=needs_attention(methods))
    probs = torch.softmax(cap.logits.detach().double().reshape(-1), 0)
    stages = list(dict.fromkeys(stage for _, stage in keys))
    maps = compute_maps(model, cap, methods=methods, stages=stages, act=act, seed=seed, image=prepared.name) \
        if keys else {}
    layout = cap.layout
    size = (int(stamped.shape[-2]), int(stamped.shape[-1]))
    region = stamp_region(probe, top, left, size, layout.grid, layout.patch_size)
    mass, grids = {}, {}
    for method, stage in keys:
        key = f"{method}@{stage}"
        result = maps.get(key)
        values = result.values if result is not None else None
        mass[key] = mass_in(values.double().cpu().numpy(), region) if values is not None else None
        grids[key] = values.float().tolist() if values is not None else None
    stamped_class = int(cap.target)
    return {
        "probe": probe.spec, "at": [top, left], "area": float(region.mean()),
        "clean_class": int(clean_class), "stamped_class": stamped_class,
        "stamped_class_name": loaded.class_name(stamped_class),
        "stamped_prob": float(probs[stamped_class]), "clean_class_prob_stamped": float(probs[int(clean_class)]),
        "flipped": stamped_class != int(clean_class),
        "mass": mass, "grids": grids,
        "figure": png_data_uri(stamped.cpu(), thumbnail) if thumbnail else None,
    }


def attraction_values(clean: np.ndarray, stamped: np.ndarray, num_classes: int) -> np.ndarray:
    """A_k for every class k (nan where every image's clean top-1 is k): the share of the images whose clean top-1
    is not k that the stamp moves to k. ``clean`` and ``stamped`` are int arrays of top-1 classes."""
    eligible = len(clean) - np.bincount(clean, minlength=num_classes)
    moved = np.bincount(stamped[(stamped != clean)], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(eligible > 0, moved / np.maximum(eligible, 1), np.nan)


def attraction(clean: list[int], stamped: list[int], num_classes: int) -> dict[str, Any]:
    """A_k = P(top-1 = k | stamped) - P(top-1 = k | clean) over the images whose clean top-1 is not k, for every
    class k (:func:`attraction_values`), and the flip rate (the share of images whose top-1 the stamp changed).

    Returns:
        ``{"A": [A_k ...], "eligible": [images whose clean top-1 is not k ...], "max": max_k A_k, "argmax": k,
        "flip_rate": ..., "n": images}``; A_k is None for a class every image predicts.
    """
    clean_a, stamped_a = np.asarray(clean, dtype=np.int64), np.asarray(stamped, dtype=np.int64)
    values = attraction_values(clean_a, stamped_a, num_classes)
    known = np.isfinite(values)
    n = len(clean_a)
    return {"A": [float(v) if ok else None for v, ok in zip(values, known)],
            "eligible": (n - np.bincount(clean_a, minlength=num_classes)).tolist(),
            "max": float(np.nanmax(values)) if known.any() else float("nan"),
            "argmax": int(np.nanargmax(values)) if known.any() else None,  # the first class of the largest
            "flip_rate": float((clean_a != stamped_a).mean()) if n else float("nan"), "n": n}
