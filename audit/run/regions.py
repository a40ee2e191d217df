"""Annotated image regions (objects, and artefacts such as watermarks), read from a file or a folder.

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

Where the regions land on a model's patch tokens is :mod:`audit.run.region_geometry`.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, cast

from ..errors import AuditError, one_line

__all__ = ["ImageRegions", "ImageRegionsError", "Regions", "RegionsError", "ROLES", "Shape", "VOID",
           "load_regions"]

ROLES = ("object", "artefact")
VOID = 255  # the mask value of void (ignored) pixels; 0 is background

_FORMATS = ("pass a COCO instances .json file, a .csv file of boxes (file,x0,y0,x1,y1[,label]), or a folder of "
            "Pascal VOC .xml files or of .png masks")
_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")  # single-channel integer label images


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
        raise RegionsError(f"regions {source!r} is not valid JSON ({one_line(err)}); pass a COCO instances "
                           "JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RegionsError(f"regions {source!r} cannot be read ({one_line(err)}); pass a readable COCO JSON "
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
        raise RegionsError(f"regions {source!r} is not valid XML ({one_line(err)}); fix or remove it") from None
    except OSError as err:
        raise RegionsError(f"regions {source!r} cannot be read ({one_line(err)}); fix or remove it") from None
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
        raise RegionsError(f"regions {source!r} is not a readable PNG mask ({one_line(err)}); replace or remove "
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
        raise RegionsError(f"regions {source!r} cannot be read ({one_line(err)}); pass a UTF-8 CSV file") from None
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
