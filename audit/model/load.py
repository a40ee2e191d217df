"""Load a timm ViT from a name and a local checkpoint, safely and offline.

A checkpoint never executes code: ``.safetensors`` files are read with safetensors, and pickled files
(``.pth``, ``.pt``, ``.bin``, ``.ckpt``) only through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..errors import CheckpointError, ModelLoadError
from .layout import TokenLayout, check_supported, layout_of

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["LoadedModel", "check_finite", "fit_report", "load_model", "read_state_dict", "sha256_of"]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
NESTING_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema")
MAX_LISTED = 5
# the preprocessing a results file records: timm's keys, and a Hugging Face image processor's resize
DATA_CONFIG_KEYS = ("mean", "std", "interpolation", "crop_pct", "crop_mode", "resize", "resize_backend")


@dataclass
class LoadedModel:
    """A model ready to audit, with everything needed to reproduce how it was loaded.

    Attributes:
        name: the timm model name as given.
        model: the model, in eval mode.
        checkpoint: the checkpoint path as given, or None (random init or timm's pretrained weights).
        checkpoint_sha256: hex digest of the checkpoint file, or None.
        data_config: timm's resolved data config (input_size, interpolation, mean, std, crop_pct, crop_mode).
        num_classes: classifier outputs.
        class_names: a name per class where known (ImageNet-1k models), else None.
        notes: what was assumed or left out while loading (e.g. a Hugging Face pooler), recorded with the model.
        architecture: what the checkpoint described where that is not the timm name (a Hugging Face class).
    """

    name: str
    model: nn.Module
    checkpoint: str | None
    checkpoint_sha256: str | None
    data_config: dict[str, Any]
    num_classes: int
    class_names: list[str] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    architecture: str | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        _, height, width = self.data_config["input_size"]
        return int(height), int(width)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.data_config["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.data_config["std"])

    @property
    def layout(self) -> TokenLayout:
        return layout_of(self.model, self.input_size)

    def class_name(self, index: int) -> str:
        """A readable name for class ``index`` (the index itself when no names are known)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, without terminal escape codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unwrap(obj: Any, path: str, use_ema: bool) -> dict[str, torch.Tensor]:
    """Find the state dict inside the usual nestings and strip ``module.`` prefixes."""
    order = ("model_ema", "state_dict_ema", "state_dict", "model") if use_ema else NESTING_KEYS
    while isinstance(obj, dict):
        nested = next((key for key in order if isinstance(obj.get(key), dict)), None)
        if nested is None:
            break
        obj = obj[nested]
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            tensors[key[len("module."):] if key.startswith("module.") else key] = value
    if not tensors:
        raise CheckpointError(f"checkpoint {path!r} holds no tensors; pass a model state dict")
    return tensors


def read_state_dict(path: str | os.PathLike[str], use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict without ever executing code from the file.

    Args:
        path: a ``.safetensors`` file, or a pickled ``.pth/.pt/.bin/.ckpt`` read with ``weights_only=True``.
        use_ema: prefer ``model_ema``/``state_dict_ema`` over ``state_dict``/``model`` when a file has both.

    Raises:
        CheckpointError: the file is missing, unreadable, holds anything but plain tensors, or no tensors.
    """
    label = os.fspath(path)
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {label!r} not found: pass the path of a .safetensors or .pth file")
    if file.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(file), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {label!r} is not a readable safetensors file ({err})") from None
        return _unwrap(tensors, label, use_ema)
    if file.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {label!r}: unknown file type {file.suffix!r}; use .safetensors (preferred) or "
            f"{', '.join(PICKLE_SUFFIXES)}"
        )
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise CheckpointError(f"checkpoint {label!r} is not a readable PyTorch file ({_first_line(err)})") from None
        raise CheckpointError(
            f"checkpoint {label!r} refused: it holds objects other than tensors, which could run code when "
            "unpickled; re-save it as a state dict of tensors, preferably with safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"checkpoint {label!r} is not a readable PyTorch file ({_first_line(err)})") from None
    return _unwrap(obj, label, use_ema)


def _infer_num_classes(state_dict: dict[str, torch.Tensor], path: str) -> int:
    head = state_dict.get("head.weight")
    if head is None or head.ndim != 2:
        raise CheckpointError(
            f"checkpoint {path!r} has no classifier ('head.weight'); vit-audit explains a class score, so the "
            "checkpoint must include the classification head"
        )
    return int(head.shape[0])


def fit_report(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """One line listing the first missing/unexpected keys and shape mismatches, or None when it fits.

    Args:
        expected: the state dict the model has (names and shapes).
        state_dict: the checkpoint's.
    """
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f", ... (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:MAX_LISTED])}{more})")
    return "; ".join(parts) or None


def _class_names(num_classes: int) -> list[str] | None:
    """ImageNet class names for heads of an ImageNet label set's size (timm ships them), else None."""
    from timm.data import ImageNetInfo
    from timm.data.imagenet_info import _NUM_CLASSES_TO_SUBSET

    subset = _NUM_CLASSES_TO_SUBSET.get(num_classes)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != num_classes:
        return None
    return [info.index_to_description(i) for i in range(num_classes)]


def _default_class_names(model: nn.Module, num_classes: int) -> list[str] | None:
    """The names of the model's label set, only when the head is the one that label set describes.

    A pretrained config that names its dataset's classes (``label_names``, e.g. Fashion-MNIST's ten) gives them when
    their count is the head's size and no names otherwise: a head of another size (a 1000-class checkpoint on that
    architecture) never borrows ImageNet's. Without such names, a head of an ImageNet label set's size gets that
    set's names; else None (classes are shown by index).
    """
    label_names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if label_names:
        return list(label_names) if len(label_names) == num_classes else None
    return _class_names(num_classes)


def check_finite(model: nn.Module, label: str) -> None:
    """Refuse weights with NaN or infinity: every number the audit computes from them would be meaningless."""
    bad = [key for key, value in model.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        more = f", ... (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise CheckpointError(f"checkpoint {label!r} has non-finite weights (NaN or infinity) in {len(bad)} "
                              f"tensor(s): {', '.join(bad[:MAX_LISTED])}{more}; re-export the model from a "
                              "healthy training state")


def _data_config(model: nn.Module, name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """timm's data config of the model, with the input size the model was built for and the user's overrides."""
    from timm.data import resolve_model_data_config

    config = dict(resolve_model_data_config(model))
    model = cast("VisionTransformer", model)  # load_model checked it
    in_chans = int(model.patch_embed.proj.in_channels)
    size = model.patch_embed.img_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    config["input_size"] = (in_chans, int(size[0]), int(size[1]))
    unknown = set(overrides or {}) - {"mean", "std", "interpolation", "crop_pct", "crop_mode", "input_size"}
    if unknown:
        raise ValueError(f"data_config: unknown keys {sorted(unknown)}; allowed: mean, std, interpolation, "
                         "crop_pct, crop_mode, input_size")
    config.update(overrides or {})
    for key in ("mean", "std"):
        values = tuple(float(v) for v in config[key])
        if len(values) != in_chans and in_chans == 1 and (overrides or {}).get(key) is None:
            values = (sum(values) / len(values),)  # a 1-channel model built from an RGB config
        if len(values) != in_chans:
            raise ValueError(f"data_config: {key} has {len(values)} values for a model with {in_chans} input "
                             f"channels; pass data_config={{'{key}': (...)}} with {in_chans}")
        config[key] = values
    return config


def load_model(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    use_ema: bool = False,
    class_names: list[str] | None = None,
    data_config: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> LoadedModel:
    """Build timm model ``name`` and load its weights, with no network access unless ``pretrained=True``.

    Args:
        name: a timm model name, optionally with a pretrained tag (``vit_tiny_patch16_224.augreg_in21k_ft_in1k``);
            the tag selects the preprocessing (mean, std, crop) timm registers for those weights.
        checkpoint: a local ``.safetensors`` (preferred) or ``.pth/.pt/.bin/.ckpt`` file. ``num_classes`` is
            inferred from its head. Loaded strictly.
        pretrained: use timm's own pretrained weights instead (needs the network).
        num_classes: classifier size when there is no checkpoint.
        use_ema: prefer EMA weights in a checkpoint that has both.
        class_names: readable class names; ImageNet names are filled in for heads of an ImageNet label set's size.
        data_config: overrides of the preprocessing timm resolves for the model (``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ``crop_mode``), e.g. the statistics of your own training set.
        **model_kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``dynamic_img_size``).

    Raises:
        ModelLoadError: unknown model name, or pretrained weights that cannot be fetched.
        CheckpointError: see :func:`read_state_dict`; or a checkpoint that does not fit the architecture.
        UnsupportedModelError: the model is not a plain ViT.
    """
    import timm

    from .. import zoo  # noqa: F401  (registers the embedded default model with timm)

    if checkpoint is not None and pretrained:
        raise ValueError("pretrained: pass either a checkpoint or pretrained=True, not both")
    if not timm.is_model(name.split(".", 1)[0]):
        close = timm.list_models(f"*{name.split('.', 1)[0].split('_')[0]}*")[:MAX_LISTED]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ModelLoadError(f"model {name!r} is not a timm model name{hint}")

    state_dict = None
    label = None if checkpoint is None else os.fspath(checkpoint)
    if label is not None:
        state_dict = read_state_dict(label, use_ema=use_ema)
        if "head.weight" not in state_dict:  # say "unsupported" first when that is the real problem
            with torch.device("meta"):
                check_supported(timm.create_model(name, pretrained=False), name)
        num_classes = _infer_num_classes(state_dict, label)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise ModelLoadError(f"model {name!r} could not be built with {kwargs} ({_first_line(err)})") from None
    except Exception as err:
        if not pretrained:
            raise ModelLoadError(f"model {name!r} could not be built with {kwargs} ({_first_line(err)})") from None
        raise ModelLoadError(
            f"model {name!r}: timm's pretrained weights could not be fetched ({type(err).__name__}); this needs "
            "the network: pass a local checkpoint file instead"
        ) from None
    check_supported(model, name)
    model = cast("VisionTransformer", model)  # what check_supported lets through

    if state_dict is not None:
        problem = fit_report(model.state_dict(), state_dict)
        if problem:
            raise CheckpointError(f"checkpoint {label!r} does not fit model {name!r}: {problem}")
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    check_finite(model, label or f"{name} ({'pretrained' if pretrained else 'random init'})")

    data_config = _data_config(model, name, data_config)
    classes = int(model.num_classes)
    names = class_names if class_names is not None else _default_class_names(model, classes)
    if names is not None and len(names) != classes:
        raise ValueError(f"class_names: {len(names)} names given for a model with {classes} classes")
    return LoadedModel(
        name=name,
        model=model,
        checkpoint=label,
        checkpoint_sha256=sha256_of(label) if label is not None else None,
        data_config=data_config,
        num_classes=classes,
        class_names=names,
    )
