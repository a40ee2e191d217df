"""Finished (model, image) records kept on disk between runs: a killed run resumes, a rerun recomputes only what is new.

A record is stored under ``<cache>/runs/<digest>.json`` as soon as it is computed, with the exact key it was made
for: the model's name, checkpoint sha256 and preprocessing, the image's sha256 and label, and every setting that can
change a number or a picture of the record (maps, measured stages and maps with curves, the removal recipe, seed,
activation, precision, batch size, device, thumbnail size) with the versions of vit-audit, torch and timm. The file
name is the sha256 of that key, and a record is served only when the key stored in it equals the key asked for, so
a record made with another recipe or checkpoint is never served. Files are written to a temporary name and renamed,
so a run killed mid-write leaves no half record; a file that cannot be read back is ignored with a warning and
recomputed. Models without a checkpoint digest (timm's own downloaded weights) are not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = ["CacheWarning", "RunCache", "check_cache_dir", "run_key"]



class CacheWarning(UserWarning):
    """A cache entry that could not be used (it is recomputed)."""


def check_cache_dir(path: str | os.PathLike[str], create: bool = True) -> Path:
    """The cache folder, created when missing; a usage error (``ValueError``, one line) when it cannot be one."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cache: {os.fspath(path)!r} is not a folder; give --cache a folder (or --no-cache)")
    if create:
        try:
            (folder / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cache: cannot create {os.fspath(path)!r} ({err.strerror or err}); give --cache a "
                             "writable folder (or --no-cache)") from None
    probe = folder if folder.is_dir() else next((p for p in folder.parents if p.is_dir()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cache: {os.fspath(path)!r} cannot be written; give --cache a writable folder "
                         "(or --no-cache)")
    return folder


def run_key(settings, loaded, plan, device: str, image_sha256: str | None, label: int | None
            ) -> dict[str, Any] | None:
    """Everything a (model, image) record depends on, or None when it cannot be keyed (no checkpoint or image
    digest): such a record is computed every time.

    ``--results-detail`` is not part of it: records are kept whole and trimmed only when the results file is written
    (:mod:`audit.results.detail`), so one entry serves every level."""
    if not image_sha256 or not loaded.checkpoint_sha256:
        return None
    import timm
    import torch

    from .. import __version__
    from ..results.schema import SCHEMA, clean

    s = settings
    return clean({
        "vit_audit": __version__, "schema": SCHEMA, "torch": torch.__version__, "timm": timm.__version__,
        "model": loaded.name, "checkpoint_sha256": loaded.checkpoint_sha256,
        "data_config": {k: v for k, v in sorted(loaded.data_config.items())},
        "image_sha256": image_sha256, "label": label,
        "methods": list(s.methods), "measured": list(plan.measured), "curves_for": plan.curves_for,
        "steps": s.steps, "unit": s.unit, "fill": s.fill, "score": s.score, "act": s.act, "seed": s.seed,
        "amp": s.amp, "batch_size": s.batch_size, "image_batch": s.image_batch, "device": device,
        "thumbnail": max(s.report_thumbnail, 64),
    })


class RunCache:
    """Run records kept in ``folder`` between runs, shared by every process of a run."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = check_cache_dir(folder)
        self.hits = 0
        self.misses = 0
        self.ignored: list[str] = []  # one line per entry that could not be used

    @staticmethod
    def digest(key: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()

    def path(self, key: dict[str, Any]) -> Path:
        return self.folder / "runs" / f"{self.digest(key)}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The record stored for exactly ``key``, or None (missing, or unreadable: warned about and left to be
        recomputed)."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.misses += 1
            return None
        except UnicodeDecodeError:
            return self._ignore(path, "is not valid JSON (a corrupt or truncated entry)")
        except OSError as err:
            return self._ignore(path, f"cannot be read ({err.strerror or err})")
        try:
            entry = json.loads(text)
        except ValueError:
            return self._ignore(path, "is not valid JSON (a corrupt or truncated entry)")
        if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
            return self._ignore(path, "is not a vit-audit cache entry")
        if entry.get("key") != json.loads(json.dumps(key)):
            return self._ignore(path, "was made for another key")
        self.hits += 1
        return entry["record"]

    def put(self, key: dict[str, Any], record: dict[str, Any]) -> None:
        """Store ``record`` for ``key`` (atomically: a temporary file renamed into place)."""
        path = self.path(key)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"key": key, "record": record}, out, allow_nan=False, separators=(",", ":"))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _ignore(self, path: Path, problem: str) -> dict[str, Any] | None:  # None: what get returns for it
        message = f"cache: entry {os.fspath(path)!r} {problem}; ignored and recomputed"
        warnings.warn(message, CacheWarning, stacklevel=3)
        self.ignored.append(message)
        self.misses += 1
        return None
