"""The results file (schema ``vit-audit/1``): plain JSON records of models, per-image runs and gates.

The schema is documented in ``docs/results-schema.md``. Non-finite numbers are written as ``null`` so that the
file is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..figures import png_data_uri
from ..measure.image_audit import ImageAudit, finite_stages
from ..model.capture import STAGE_EMBED, STAGE_PATCH_EMBED
from ..model.load import DATA_CONFIG_KEYS, LoadedModel

__all__ = ["SCHEMA", "environment_record", "model_record", "run_record", "error_run_record", "stopped_results",
           "write_json", "write_text_atomically", "clean"]

SCHEMA = "vit-audit/1"


def clean(value: Any) -> Any:
    """Make a value strict-JSON-able: numpy/torch scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, torch.Tensor):
        return clean(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def environment_record(device: str, seed: int | None, **extra: Any) -> dict[str, Any]:
    import timm

    return clean({"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
                  "platform": platform.platform(), "device": device, "seed": seed, **extra})


def model_record(loaded: LoadedModel, model_id: str) -> dict[str, Any]:
    layout = loaded.layout
    config = loaded.data_config
    return clean({
        "name": loaded.name,
        "id": model_id,
        "checkpoint": loaded.checkpoint,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "num_prefix_tokens": layout.num_prefix_tokens,
        "has_class_token": layout.has_class_token,
        "grid": list(layout.grid),
        "patch_size": list(layout.patch_size),
        "embed_dim": layout.embed_dim,
        "depth": layout.depth,
        "in_chans": layout.in_chans,
        "num_classes": loaded.num_classes,
        "input_size": list(config["input_size"]),
        "data_config": {k: config.get(k) for k in DATA_CONFIG_KEYS if k in config},
        **({"architecture": loaded.architecture} if loaded.architecture else {}),
        **({"notes": list(loaded.notes)} if loaded.notes else {}),
    })


def run_record(
    loaded: LoadedModel,
    result: ImageAudit,
    thumbnail: int = 64,
    input_size: int = 160,
) -> dict[str, Any]:
    """One image's record: class, every map (raw grid, degenerate flag, curves where measured), restorations.

    Args:
        loaded: the model.
        result: the image's audit (with ``keep_capture=True`` for token shapes and finiteness).
        thumbnail: largest longer side of the restoration pictures, in pixels (smaller ones are kept as they are).
        input_size: largest longer side of the input picture, in pixels (a smaller model input is kept as it is).
    """
    maps = {}
    for key, m in result.maps.items():
        curve = result.curves.get(key)
        maps[key] = {
            "method": m.method, "stage": m.stage, "applicable": m.applicable,
            "grid": _float32_list(m.values), "degenerate": m.degenerate, "reason": m.reason,
            "morf": curve.morf if curve else None, "lerf": curve.lerf if curve else None,
            "morf_auc": curve.morf_auc if curve else None, "lerf_auc": curve.lerf_auc if curve else None,
            "abpc": curve.abpc if curve else None,
        }
    restorations: dict[str, dict[str, Any]] = {}
    for reading, stages in result.restorations.items():
        restorations[reading] = {}
        for stage, r in stages.items():
            entry: dict[str, Any] = {"shape": list(r.image.shape) if r.image is not None else None, "reason": r.reason,
                     "finite": bool(torch.isfinite(r.image).all()) if r.image is not None else None}
            if reading == "inverse":
                entry.update(psnr=r.psnr, exact=r.psnr == math.inf, max_abs_error=r.max_abs_error)
            if r.image is not None:
                entry["png"] = png_data_uri(r.image, thumbnail, mode="minmax" if reading == "paper" else "clip")
            restorations[reading][stage] = entry
    record: dict[str, Any] = {
        "model": loaded.name,
        "image": result.source,
        "image_name": result.image.name if result.image else None,
        "class": result.target,
        "class_name": loaded.class_name(result.target),
        **({"label": result.label} if result.label is not None else {}),
        "prob": result.prob,
        "removed_prob": result.removed_prob,
        "batch_size": result.batch_size,
        "error": None,
        "maps": maps,
        "restorations": restorations,
        "figures": {"input": png_data_uri(result.image.pixel, input_size) if result.image else None},
    }
    cap = result.capture
    if cap is not None:
        assert result.image is not None  # an image that was captured was prepared
        record["input_shape"] = [1, *result.image.pixel.shape]
        record["token_shapes"] = {stage: [1, *cap.tokens[stage].shape] for stage in cap.stages}
        finite = finite_stages(cap)
        record["finite"] = {stage: all(finite[stage]) for stage in cap.stages}
        record["stages"] = cap.stages
        record["embedding_stages"] = [STAGE_PATCH_EMBED, STAGE_EMBED]
    return clean(record)


def _float32_list(values: torch.Tensor | None) -> list | None:
    """A float32 map as nested lists, each value with the 9 significant digits that round-trip float32."""
    if values is None:
        return None
    return [[float(f"{v:.9g}") for v in row] for row in values.float().tolist()]


def error_run_record(model: str, source: str, error: str) -> dict[str, Any]:
    return {"model": model, "image": source, "image_name": Path(source).stem, "class": None, "prob": None,
            "error": error, "maps": {}, "restorations": {}, "figures": {}}


def stopped_results(error: str, device: str | None = None) -> dict[str, Any]:
    """The results file of a run that stopped before any check ran (invalid settings, no model, no image).

    Its top-level ``error`` holds the one-line message; every list is empty.
    """
    return clean({
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "error": error,
        "environment": environment_record(device or "not chosen", None),
        "models": [], "images": [], "runs": [], "gates": [], "summaries": [], "randomisation": [], "checks": [],
    })


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write strict JSON atomically (a temporary file in the same folder, then rename), without the optional spaces
    after separators (a grid value costs a byte less)."""
    return write_text_atomically(path, json.dumps(clean(payload), allow_nan=False, separators=(",", ":")))


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text through a temporary file in the same folder and a rename: readers never see half a file.

    Raises:
        OSError: the file cannot be written, or ``path`` exists and is not a regular file (a device, a FIFO).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; results and reports are for everyone
        if target.exists() and not target.is_file():  # never replace a device, a FIFO or a folder by a file
            raise OSError(f"{str(target)!r} is not a regular file; nothing was written there")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
