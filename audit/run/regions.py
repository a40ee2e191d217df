"""Annotated image regions (objects, and artefacts such as watermarks) mapped onto a model's patch-token grid.

``--regions PATH`` says where the objects are in the images, in one of four formats told apart by PATH:

* a COCO instances JSON file: an annotation's polygons where it has them, else its bbox ``[x, y, w, h]``; RLE masks
  are decoded with ``pycocotools`` (an optional extra: without it a file holding RLE masks is refused when loaded);
* a folder of Pascal VOC XML files: boxes in 1-based inclusive pixel indices, ``xmin..xmax`` covering the continuous
  interval ``[xmin - 1, xmax]``;
* a folder of PNG label masks matched to images by file stem: 0 is background, 255 void (ignored), any other value a
  label named by its value (``"1"``);
* a CSV file of boxes with the header ``file,x0,y0,x1,y1[,label]``, continuous edges (``x0 <= x < x1``), label
  ``"object"`` where the column is missing or empty.

Coordinates are continuous pixel coordinates with the origin at the picture's top-left corner, pixel ``(i, j)``
covering ``[j, j + 1) x [i, i + 1)``. Annotations refer to the pixels as the image file stores them, as COCO and VOC
tools read them: where the size an annotation records (COCO width/height, VOC size, the mask's own size) is the
stored size, the annotation is turned upright with the image's EXIF Orientation, as the picture itself is; where it
is the upright size instead (and differs from the stored one) it is taken as already upright; a size that is neither
fails that image alone (:class:`ImageRegionsError`). CSV boxes record no size: they are in stored pixels.

:func:`token_regions` measures, for one image and one model, the fraction of each patch token's area inside the
image's object, artefact and void regions. The model input is sampled at :data:`SUBSAMPLES` x :data:`SUBSAMPLES`
points per pixel; each point is mapped back into the original picture through the model's own resize and crop
(:func:`input_geometry`, which reproduces :func:`audit.model.images.prepare_image` exactly) and tested against the boxes
and polygons analytically (polygons by the even-odd rule) and against masks by the mask pixel that holds it
(nearest-neighbour resizing). Points in the padding of timm's ``border`` crop mode belong to no region.

A file that cannot be read or is malformed is a one-line :class:`RegionsError`, a usage error of the whole run; a
problem with the regions of one image (a recorded size that does not fit the image, an empty box, a box wholly
outside the picture) is a one-line :class:`ImageRegionsError`, and that image fails alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, cast

import numpy as np

from ..errors import AuditError
from ..model.images import _orientation

__all__ = ["Geometry", "ImageRegions", "ImageRegionsError", "RegionPicture", "Regions", "RegionsError", "ROLES",
           "SUBSAMPLES", "Shape", "TokenRegions", "VOID", "input_geometry", "load_regions", "region_picture",
           "token_regions"]

SUBSAMPLES = 4  # sample points per model-input pixel along each axis
ROLES = ("object", "artefact")
VOID = 255  # the mask value of void (ignored) pixels; 0 is background

_FORMATS = ("pass a COCO instances .json file, a .csv file of boxes (file,x0,y0,x1,y1[,label]), or a folder of "
            "Pascal VOC .xml files or of .png masks")
_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")  # single-channel integer label images
_SLACK = 1e-6  # box edges this far outside the picture are round-off, not worth a note


class RegionsError(AuditError, ValueError):
    """A regions file or folder that is missing, unreadable or malformed: a usage error of the whole run."""


class ImageRegionsError(AuditError, ValueError):
    """Regions of one image that cannot be used (a size that does not fit the image, an empty box): it fails alone."""


@dataclass
class Shape:
    """One annotated region, in continuous pixel coordinates of its annotation.

    Attributes:
        label: the label's name.
        role: ``"object"`` or ``"artefact"``.
        where: where it was annotated, for messages (``"annotation 7"``, ``"row 4"``, ``"object 2"``).
        box: ``(x0, y0, x1, y1)`` with continuous edges (``x0 <= x < x1``), for a box.
        polygons: for a polygon, its parts as flat ``(x0, y0, x1, y1, ...)`` tuples; the region is the union of the
            parts, each filled by the even-odd rule.
        rle: for a COCO RLE mask, its ``counts`` and ``size`` ``[height, width]``.
    """

    label: str
    role: str
    where: str
    box: tuple[float, float, float, float] | None = None
    polygons: tuple[tuple[float, ...], ...] = ()
    rle: Mapping[str, Any] | None = None


@dataclass
class ImageRegions:
    """The annotated regions of one image.

    Attributes:
        name: the image as annotated: COCO ``file_name``, VOC ``filename``, the mask's path in its folder, the CSV's
            ``file``.
        source: the file the annotation was read from, for messages.
        size: the (width, height) the annotation records for the image, or None (CSV: stored pixels).
        shapes: boxes, polygons and RLE masks; empty for a mask image or an image annotated with nothing.
        mask: a PNG label mask, read when the image's regions are measured.
        roles: label name -> role for labels that are not objects (a mask's labels are known once it is read).
    """

    name: str
    source: str
    size: tuple[int, int] | None
    shapes: tuple[Shape, ...] = ()
    mask: str | None = None
    roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The sorted label names of the shapes (a mask's labels are known once it is read)."""
        return sorted({shape.label for shape in self.shapes})


@dataclass
class Regions:
    """Every image's regions from one ``--regions`` path, looked up by image path.

    Attributes:
        source: the path given.
        format: ``"coco"``, ``"voc"``, ``"masks"`` or ``"csv"``.
        images: one entry per annotated image.
        notes: one-line remarks about the whole file (roles naming labels no annotation uses).
    """

    source: str
    format: str
    images: tuple[ImageRegions, ...]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name: dict[str, list[int]] = {}
        self._by_stem: dict[str, list[int]] = {}
        for index, entry in enumerate(self.images):
            name = _parts(entry.name)[-1]
            self._by_name.setdefault(name, []).append(index)
            self._by_stem.setdefault(PurePath(name).stem, []).append(index)

    def __len__(self) -> int:
        return len(self.images)

    def for_image(self, image: str | os.PathLike[str]) -> ImageRegions | None:
        """The regions annotated for an image, matched by file name or, failing that, by stem; None if none.

        Where several annotations share the name, those whose folders end the image's path are kept.

        Raises:
            ImageRegionsError: several annotations match the image and its folders do not tell them apart.
        """
        path = PurePath(os.fspath(image))
        for key, index, by_stem in ((path.name, self._by_name, False), (path.stem, self._by_stem, True)):
            found = index.get(key, [])
            if len(found) > 1:
                found = [i for i in found if _tail_matches(self.images[i].name, path, by_stem)] or found
            if len(found) == 1:
                return self.images[found[0]]
            if found:
                names = ", ".join(repr(self.images[i].name) for i in found[:3]) + (", ..." if len(found) > 3 else "")
                raise ImageRegionsError(f"regions for image {str(image)!r}: {len(found)} annotations in "
                                        f"{self.source!r} match it ({names}); give the images distinct names or "
                                        "annotate each image once")
        return None


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


def load_regions(path: str | os.PathLike[str], roles: Mapping[str, str] | None = None) -> Regions:
    """Read a ``--regions`` path: a COCO JSON file, a CSV file, or a folder of VOC XML files or PNG masks.

    Args:
        path: the file or folder.
        roles: label name -> ``"object"`` or ``"artefact"``; labels not named are objects.

    Raises:
        ValueError: a role other than ``"object"`` or ``"artefact"``.
        RegionsError: the path is missing, of no known format, unreadable or malformed (a one-line message naming
            the file, and the row or annotation where that helps).
    """
    roles = _checked_roles(roles)
    path = Path(path)
    source = str(path)
    if path.is_dir():
        xml = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
        png = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
        if xml and png:
            raise RegionsError(f"regions {source!r} holds both .xml ({len(xml)}) and .png ({len(png)}) files; pass a "
                               "folder of Pascal VOC .xml files or one of .png masks, not both")
        if xml:
            regions = Regions(source, "voc", tuple(_read_voc(file, roles) for file in xml))
        elif png:
            regions = Regions(source, "masks", tuple(_read_mask_header(file, path, roles) for file in png))
        else:
            raise RegionsError(f"regions {source!r} holds no .xml or .png files; {_FORMATS}")
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            regions = Regions(source, "coco", _read_coco(path, roles))
        elif suffix == ".csv":
            regions = Regions(source, "csv", _read_csv(path, roles))
        elif suffix == ".xml":
            regions = Regions(source, "voc", (_read_voc(path, roles),))
        else:
            raise RegionsError(f"regions {source!r}: unknown format (suffix {suffix or 'none'!r}); {_FORMATS}")
    else:
        raise RegionsError(f"regions {source!r} does not exist; {_FORMATS}")
    if regions.format != "masks":
        used = {shape.label for entry in regions.images for shape in entry.shapes}
        unused = sorted(set(roles) - used)
        if unused:
            regions.notes.append(f"roles name label(s) {', '.join(map(repr, unused))} that no annotation in "
                                 f"{source!r} uses")
    return regions


def _checked_roles(roles: Mapping[str, str] | None) -> dict[str, str]:
    """The roles as a dict of strings, each checked to be a known role."""
    checked: dict[str, str] = {}
    for label, role in (roles or {}).items():
        if role not in ROLES:
            raise ValueError(f"regions roles: label {label!r} has role {role!r}; use 'object' or 'artefact'")
        checked[str(label)] = role
    return checked


def _read_coco(path: Path, roles: Mapping[str, str]) -> tuple[ImageRegions, ...]:
    """The images of a COCO instances file, each with its annotations."""
    source = str(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise RegionsError(f"regions {source!r} is not valid JSON ({_reason(err)}); pass a COCO instances "
                           "JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RegionsError(f"regions {source!r} cannot be read ({_reason(err)}); pass a readable COCO JSON "
                           "file") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise RegionsError(f"regions {source!r} is not a COCO instances file (no list {', '.join(map(repr, missing))})"
                           "; pass a file with 'images', 'annotations' and 'categories'")
    categories: dict[Any, str] = {}
    for i, category in enumerate(data["categories"]):
        if not (isinstance(category, dict) and _is_id(category.get("id")) and isinstance(category.get("name"), str)
                and category["name"]):
            raise RegionsError(f"regions {source!r}: categories[{i}] lacks an 'id' or a 'name'; fix the file")
        categories[category["id"]] = category["name"]
    images: dict[Any, tuple[str, tuple[int, int]]] = {}
    for i, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and _is_id(image.get("id")) and isinstance(image.get("file_name"), str)
                and image["file_name"] and all(_is_size(image.get(k)) for k in ("width", "height"))):
            raise RegionsError(f"regions {source!r}: images[{i}] lacks an 'id', a 'file_name' or a positive integer "
                               "'width' and 'height'; fix the file")
        if image["id"] in images:
            raise RegionsError(f"regions {source!r}: images[{i}] repeats image id {image['id']!r}; give each image "
                               "its own id")
        images[image["id"]] = (image["file_name"], (int(image["width"]), int(image["height"])))
    shapes: dict[Any, list[Shape]] = {key: [] for key in images}
    rle_support: bool | None = None
    for i, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            raise RegionsError(f"regions {source!r}: annotations[{i}] is not an object; fix the file")
        where = f"annotation {annotation['id']}" if _is_id(annotation.get("id")) else f"annotations[{i}]"
        if annotation.get("image_id") not in images:
            raise RegionsError(f"regions {source!r}: {where} names image_id {_short(annotation.get('image_id'))}, "
                               "which 'images' does not list; fix the file")
        if annotation.get("category_id") not in categories:
            raise RegionsError(f"regions {source!r}: {where} names category_id "
                               f"{_short(annotation.get('category_id'))}, which 'categories' does not list; fix the "
                               "file")
        label = categories[annotation["category_id"]]
        shape = Shape(label=label, role=roles.get(label, "object"), where=where)
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, dict):
            counts, size = segmentation.get("counts"), segmentation.get("size")
            if not (isinstance(counts, (str, list)) and isinstance(size, list) and len(size) == 2
                    and all(_is_size(v) for v in size)):
                raise RegionsError(f"regions {source!r}: {where} has an RLE segmentation without 'counts' or a "
                                   "'size' [height, width]; fix the file")
            if rle_support is None:
                rle_support = _rle_support()
            if not rle_support:
                raise RegionsError(f"regions {source!r}: {where} has an RLE mask, which needs pycocotools; "
                                   "pip install pycocotools, or annotate with polygons or boxes")
            shape.rle = {"counts": counts, "size": [int(size[0]), int(size[1])]}
        elif isinstance(segmentation, list) and segmentation:
            parts = []
            for part in segmentation:
                if not (isinstance(part, list) and len(part) % 2 == 0 and part):
                    raise RegionsError(f"regions {source!r}: {where} has a polygon that is not a flat list of x, y "
                                       "pairs; fix the file")
                parts.append(tuple(_number(v, source, where, "a polygon coordinate") for v in part))
            shape.polygons = tuple(parts)
        elif segmentation not in (None, []):
            raise RegionsError(f"regions {source!r}: {where} has a segmentation that is neither polygons nor RLE; "
                               "fix the file")
        else:
            bbox = annotation.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise RegionsError(f"regions {source!r}: {where} has neither a segmentation nor a bbox [x, y, w, h]; "
                                   "fix the file")
            x, y, w, h = (_number(v, source, where, "a bbox value") for v in bbox)
            shape.box = (x, y, x + w, y + h)
        shapes[annotation["image_id"]].append(shape)
    return tuple(ImageRegions(name=name, source=source, size=size, shapes=tuple(shapes[key]), roles=roles)
                 for key, (name, size) in images.items())


def _read_voc(path: Path, roles: Mapping[str, str]) -> ImageRegions:
    """One Pascal VOC annotation file; its 1-based inclusive boxes as continuous ``[xmin - 1, xmax]`` intervals."""
    source = str(path)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise RegionsError(f"regions {source!r} is not valid XML ({_reason(err)}); fix or remove it") from None
    except OSError as err:
        raise RegionsError(f"regions {source!r} cannot be read ({_reason(err)}); fix or remove it") from None
    if root.tag != "annotation":
        raise RegionsError(f"regions {source!r} is not a Pascal VOC annotation (root <{root.tag}>, not "
                           "<annotation>); fix or remove it")
    name = (root.findtext("filename") or "").strip() or path.stem
    size: tuple[int, int] | None = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    if width is not None and height is not None:
        w = _parse_number(width, source, "<size>", "width")
        h = _parse_number(height, source, "<size>", "height")
        if w != int(w) or h != int(h) or w < 0 or h < 0:
            raise RegionsError(f"regions {source!r}: <size> {width.strip()}x{height.strip()} is not a size in whole "
                               "pixels; fix the file")
        size = (int(w), int(h)) if w and h else None  # 0x0: a size the tool did not know
    shapes = []
    for k, element in enumerate(root.findall("object"), 1):
        where = f"object {k}"
        label = (element.findtext("name") or "").strip()
        if not label:
            raise RegionsError(f"regions {source!r}: {where} has no <name>; fix the file")
        texts = [element.findtext(f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
        if any(text is None for text in texts):
            raise RegionsError(f"regions {source!r}: {where} lacks a <bndbox> with xmin, ymin, xmax and ymax; fix "
                               "the file")
        xmin, ymin, xmax, ymax = (_parse_number(cast(str, t), source, where, tag)  # none is None (above)
                                  for t, tag in zip(texts, ("xmin", "ymin", "xmax", "ymax")))
        shapes.append(Shape(label=label, role=roles.get(label, "object"), where=where,
                            box=(xmin - 1, ymin - 1, xmax, ymax)))
    return ImageRegions(name=name, source=source, size=size, shapes=tuple(shapes), roles=roles)


def _read_mask_header(path: Path, folder: Path, roles: Mapping[str, str]) -> ImageRegions:
    """A PNG label mask's size and mode, checked; its pixels are read when the image's regions are measured."""
    from PIL import Image

    source = str(path)
    try:
        with Image.open(path) as handle:
            size, mode = handle.size, handle.mode
    except Exception as err:
        raise RegionsError(f"regions {source!r} is not a readable PNG mask ({_reason(err)}); replace or remove "
                           "it") from None
    if mode not in _MASK_MODES:
        raise RegionsError(f"regions {source!r} is a {mode} image, not a label mask; save masks as single-channel "
                           f"images (0 background, {VOID} void, other values label ids)")
    return ImageRegions(name=path.relative_to(folder).as_posix(), source=source, size=size, mask=source, roles=roles)


def _read_csv(path: Path, roles: Mapping[str, str]) -> tuple[ImageRegions, ...]:
    """The boxes of a CSV file, grouped by the ``file`` they are on (in order of first appearance)."""
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RegionsError(f"regions {source!r} cannot be read ({_reason(err)}); pass a UTF-8 CSV file") from None
    if not rows:
        raise RegionsError(f"regions {source!r} is empty; pass a CSV file with the header file,x0,y0,x1,y1[,label]")
    header = [cell.strip().lower() for cell in rows[0][1]]
    missing = [column for column in ("file", "x0", "y0", "x1", "y1") if column not in header]
    if missing:
        raise RegionsError(f"regions {source!r}: the header lacks {', '.join(missing)}; start the file with "
                           "file,x0,y0,x1,y1[,label]")
    columns = {column: header.index(column) for column in ("file", "x0", "y0", "x1", "y1", "label") if column in header}
    shapes: dict[str, list[Shape]] = {}
    for number, row in rows[1:]:
        where = f"row {number}"
        if len(row) != len(header):
            raise RegionsError(f"regions {source!r}: {where} has {len(row)} fields, the header {len(header)}; fix "
                               "the row")
        file = row[columns["file"]].strip()
        if not file:
            raise RegionsError(f"regions {source!r}: {where} names no file; fix the row")
        x0, y0, x1, y1 = (_parse_number(row[columns[c]], source, where, c) for c in ("x0", "y0", "x1", "y1"))
        label = row[columns["label"]].strip() if "label" in columns else ""
        label = label or "object"
        shapes.setdefault(file, []).append(Shape(label=label, role=roles.get(label, "object"), where=where,
                                                 box=(x0, y0, x1, y1)))
    return tuple(ImageRegions(name=file, source=source, size=None, shapes=tuple(found), roles=roles)
                 for file, found in shapes.items())


def _rle_support() -> bool:
    """Whether pycocotools' mask module imports."""
    try:
        from pycocotools import mask  # noqa: F401
    except ImportError:
        return False
    return True


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value) and value > 0


def _number(value: Any, source: str, where: str, what: str) -> float:
    """A finite JSON number, or a one-line RegionsError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegionsError(f"regions {source!r}: {where} has {what} {_short(value)}, not a finite number; fix the "
                           "file")
    return float(value)


def _parse_number(text: str, source: str, where: str, what: str) -> float:
    """A finite number written as text, or a one-line RegionsError."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RegionsError(f"regions {source!r}: {where} has {what} {text.strip()!r}, not a finite number; fix the "
                           "file")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reason(err: Exception) -> str:
    """The error's text on one line, or its type where it has none."""
    return " ".join(str(err).split()).rstrip(".") or type(err).__name__


def _parts(name: str) -> list[str]:
    """An annotated name's path parts, whichever separator it uses."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")] or [name]


def _tail_matches(name: str, image: PurePath, by_stem: bool) -> bool:
    """Whether the folders an annotated name holds end the image's path."""
    parts = _parts(name)
    folders = list(image.parts[:-1])
    if len(parts) - 1 > len(folders):
        return False
    last = PurePath(parts[-1]).stem if by_stem else parts[-1]
    return last == (image.stem if by_stem else image.name) and folders[len(folders) - len(parts) + 1:] == parts[:-1]


# --- geometry ------------------------------------------------------------------------------------------------------


def input_geometry(original_size: tuple[int, int], data_config: Mapping[str, Any]) -> Geometry:
    """Where a picture of ``original_size`` = (width, height) (upright) lands in the model's input.

    Reproduces :func:`audit.model.images.prepare_image`: a Hugging Face processor's resize to ``data_config["resize"]``
    =
    (H, W) and center crop (top-left corner at the floor of half the size difference) where ``resize`` is set, else
    timm's eval transform: the resize size ``floor(input / crop_pct)``; ``squash`` resizes both sides to it,
    ``border`` the longer side keeping the ratio (then crops or pads), and ``center`` (any other mode) the shorter
    side (torchvision's ``Resize(int)``: the longer side ``int(size * long / short)``, or timm's ``ResizeKeepRatio``
    for non-square inputs); then torchvision's center crop, its corner at ``int(round((h - th) / 2.0))``, padding
    ``(th - h) // 2`` before where the picture is smaller.

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
            orientation = _orientation(handle)
    except FileNotFoundError:
        raise ImageRegionsError(f"regions for image {image!r}: the image does not exist; pass an existing "
                                "image") from None
    except Exception as err:
        raise ImageRegionsError(f"regions for image {image!r}: the image cannot be read ({_reason(err)}); replace "
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
        raise ImageRegionsError(f"{problem} has an RLE mask that cannot be decoded ({_reason(err)}); fix or remove "
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
                                f"({_reason(err)}); replace or remove it") from None
    values = values.astype(np.uint8) if values.dtype == bool else values
    if values.ndim != 2 or values.shape != (frame[1], frame[0]):
        raise ImageRegionsError(f"regions for image {image!r}: mask {regions.mask!r} is not a {frame[0]}x{frame[1]} "
                                "single-channel label image; replace it")
    return values
