"""What a run audits: its models and its images, found and checked before any check runs.

Images are identified so that no two can share a record and no image is counted twice:

- a file listed twice (``--images D --images D``, or a file and its folder) is audited once: duplicates are the
  same resolved path;
- files with identical bytes under different names are audited once by default (``keep_duplicates`` keeps them);
  every image's sha256 is recorded;
- ids are unique and readable: the file stem, or as much of the path as tells clashing stems apart
  (``x.png`` / ``x.jpg``, ``a/x.png`` / ``b/x.png``).

Each image left out is kept as a note that the results file, the terminal and the report show.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AuditError, ImageError, ModelLoadError
from ..model.hf import HF_MODEL, is_hf_folder, load_hf_model
from ..model.images import find_images
from ..model.load import LoadedModel, load_model, sha256_of

__all__ = ["PRETRAINED", "ImageEntry", "ImageSet", "Labels", "LoadedModels", "checkpoint_for_workers",
           "collect_images", "image_ids", "load_models", "load_named", "model_id_for", "read_labels"]

PRETRAINED = "pretrained"  # the --checkpoint of timm's own weights


@dataclass(frozen=True)
class ImageEntry:
    """One image of the run: its unique id, its path as found, and the sha256 of its bytes (None if unreadable)."""

    id: str
    path: str
    sha256: str | None


@dataclass
class ImageSet:
    """The images of a run, and the files left out with the reason (``{"path", "reason", "same_as"}``)."""

    entries: list[ImageEntry]
    left_out: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_id = {entry.id: entry for entry in self.entries}

    def entry(self, image_id: str) -> ImageEntry | None:
        return self._by_id.get(image_id)

    def record(self) -> list[dict[str, str | None]]:
        return [{"id": e.id, "path": e.path, "sha256": e.sha256} for e in self.entries]


def _sha256(path: Path) -> str | None:
    try:
        return sha256_of(path)
    except OSError:
        return None  # the image fails its own checks when it is read


def image_ids(paths: list[Path]) -> list[str]:
    """Unique readable ids: the stem, else the shortest tail of the path that tells clashing images apart.

    ``[a/x.png, a/x.jpg, b/y.png]`` -> ``[x.png, x.jpg, y]``; ``[a/x.png, b/x.png]`` -> ``[a/x.png, b/x.png]``.
    """
    def candidate(path: Path, level: int) -> str:
        if level == 0:
            return path.stem
        parts = path.parts
        return "/".join(parts[-min(level, len(parts)):])

    levels = [0] * len(paths)
    while True:
        ids = [candidate(p, level) for p, level in zip(paths, levels)]
        counts = Counter(ids)
        clashing = [i for i, image_id in enumerate(ids) if counts[image_id] > 1]
        if not clashing:
            return ids
        grown = False
        for i in clashing:
            if levels[i] < len(paths[i].parts):
                levels[i] += 1
                grown = True
        if not grown:  # identical paths cannot reach here (they are removed first); number what is left
            seen: Counter[str] = Counter()
            for i in clashing:
                seen[ids[i]] += 1
                ids[i] = f"{ids[i]}#{seen[ids[i]]}"
            return ids


def collect_images(paths: Iterable[str | os.PathLike[str]], keep_duplicates: bool = False) -> ImageSet:
    """Find the images of the run: every file once, with a unique id and its sha256.

    Raises:
        ImageError: a path does not exist, or no image was found (see :func:`audit.model.images.find_images`).
    """
    found, left_out = [], []
    first_of: dict[Path, Path] = {}
    for path in find_images(paths):
        resolved = path.resolve()
        if resolved in first_of:
            left_out.append({"path": str(path), "reason": "listed more than once (the same file)",
                             "same_as": str(first_of[resolved])})
            continue
        first_of[resolved] = path
        found.append(path)
    digests = [_sha256(path) for path in found]
    kept, kept_digests = [], []
    first_with: dict[str, Path] = {}
    for path, digest in zip(found, digests):
        if digest is not None and digest in first_with and not keep_duplicates:
            left_out.append({"path": str(path), "reason": "identical bytes to another image (counted once)",
                             "same_as": str(first_with[digest])})
            continue
        if digest is not None:
            first_with.setdefault(digest, path)
        kept.append(path)
        kept_digests.append(digest)
    entries = [ImageEntry(image_id, str(path), digest)
               for image_id, path, digest in zip(image_ids(kept), kept, kept_digests)]
    return ImageSet(entries, left_out)


def model_id_for(name: str, checkpoint: str | None = None) -> str:
    """A short readable id: ``vit_tiny_patch16_224.augreg_in21k_ft_in1k`` -> ``vit_tiny``; a Hugging Face folder's
    name for ``hf`` (``runs/vit-base-patch16-224`` -> ``vit-base-patch16-224``)."""
    if name == HF_MODEL and checkpoint:
        folder = Path(checkpoint).resolve().name
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in folder) or HF_MODEL
    base = name.split(".", 1)[0]
    return base.split("_patch", 1)[0] if "_patch" in base else base


@dataclass
class LoadedModels:
    """The models of a run: ``ids`` in the order given, ``models`` those loaded, ``errors`` those that were not."""

    ids: list[str] = field(default_factory=list)
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)


def load_named(name: str, checkpoint: str) -> LoadedModel:
    """Load a model as the command line names it: a timm name with a checkpoint path (``pretrained`` for timm's own
    weights), or ``hf`` with a Hugging Face model folder.

    Raises:
        AuditError: the model does not load; a timm name given with a Hugging Face folder (whose config.json names
            the architecture itself).
    """
    if name == HF_MODEL:
        return load_hf_model(checkpoint)
    if is_hf_folder(checkpoint):
        raise ModelLoadError(f"checkpoint {checkpoint!r} is a Hugging Face model folder, whose config.json names its "
                             f"architecture; pass --model hf (or leave --model out) instead of --model {name}")
    pretrained = checkpoint == PRETRAINED
    return load_model(name, None if pretrained else checkpoint, pretrained=pretrained)


def checkpoint_for_workers(checkpoint: str) -> str:
    """The checkpoint as another process or machine reads it: an absolute path (timm's own weights as they are
    named)."""
    return checkpoint if checkpoint == PRETRAINED else str(Path(checkpoint).resolve())


def load_models(names: list[str], checkpoints: list[str]) -> LoadedModels:
    """Load every model; one that cannot be loaded keeps its one-line error and does not stop the others.

    Raises:
        AuditError: no model could be loaded (the first model's error).
    """
    out = LoadedModels()
    first_error: AuditError | None = None
    for index, (name, checkpoint) in enumerate(zip(names, checkpoints)):
        model_id = model_id_for(name, checkpoint)
        if model_id in out.ids:
            model_id = f"{model_id}{index}"
        out.ids.append(model_id)
        try:
            out.models[model_id] = load_named(name, checkpoint)
        except AuditError as err:
            out.errors[model_id] = {"name": name, "checkpoint": checkpoint, "error": str(err)}
            first_error = first_error or err
    if not out.models and first_error is not None:
        raise first_error
    return out


@dataclass
class Labels:
    """The images' true classes from a ``--labels`` CSV: file name -> class index, and the file's sha256."""

    path: str
    sha256: str
    classes: dict[str, int]

    def of(self, image_path: str) -> int | None:
        """The class of an image file (matched by its file name), or None when the CSV has no row for it."""
        return self.classes.get(Path(image_path).name)

    def class_of(self, image_path: str, num_classes: int) -> int:
        """The class of an image for a model with ``num_classes`` classes.

        Raises:
            ImageError: the CSV has no row for the image, or gives a class the model does not have (the image fails
                alone).
        """
        label = self.of(image_path)
        if label is None:
            raise ImageError(f"image {image_path!r} has no row in labels {self.path!r}; add its file name and "
                             "class_index")
        if label >= num_classes:
            raise ImageError(f"image {image_path!r}: labels {self.path!r} gives class {label}, but the model has "
                             f"{num_classes} classes")
        return label


def read_labels(path: str | os.PathLike[str]) -> Labels:
    """Read a labels CSV: a header with ``file`` and ``class_index`` (other columns ignored), one row per image.

    Raises:
        ValueError: one line naming the file: missing, not UTF-8 CSV, without those columns, a class that is not
            a non-negative integer, or one file name given two classes.
    """
    import csv

    label = os.fspath(path)
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"labels: {label!r} is not a file; pass a CSV with columns file and class_index")
    try:
        with open(file, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []  # the header even when no row follows it
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise ValueError(f"labels: {label!r} is not a readable UTF-8 CSV ({err}); pass a CSV with columns file and "
                         "class_index") from None
    if not rows or not {"file", "class_index"} <= set(header):
        raise ValueError(f"labels: {label!r} has no rows with columns file and class_index (its header: "
                         f"{', '.join(str(h) for h in header) or 'none'}); pass a CSV with those columns")
    classes: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        name, value = (row.get("file") or "").strip(), (row.get("class_index") or "").strip()
        if not value.isdigit() or not name:
            raise ValueError(f"labels: {label!r} line {line}: file {name!r} with class_index {value!r}; expected a "
                             "file name and a non-negative integer")
        name = Path(name).name
        if classes.get(name, int(value)) != int(value):
            raise ValueError(f"labels: {label!r} line {line}: {name!r} is given classes {classes[name]} and "
                             f"{int(value)}; keep one row per image")
        classes[name] = int(value)
    return Labels(label, sha256_of(file), classes)
