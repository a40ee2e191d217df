"""Load a Hugging Face ``transformers`` ViT or DeiT classifier folder as the timm VisionTransformer it equals.

A folder as ``save_pretrained`` (or the ``Trainer`` image-classification recipe) writes it holds ``config.json``, the
weights (``model.safetensors``, or ``pytorch_model.bin``; either may be sharded behind an ``*.index.json``) and
usually ``preprocessor_config.json``. From the config a timm ``VisionTransformer`` of the same shape is built (hidden
size, layers, heads, intermediate size, patch size, image size, channels, qkv bias, layer-norm eps, activation), the
weights' keys are mapped onto it (query/key/value rows stacked into ``qkv``, ``layernorm_before/after`` into
``norm1/2``, ``layernorm`` into ``norm``, ``classifier`` into ``head``) and loaded strictly, and the preprocessing is
read from ``preprocessor_config.json`` as the image processor applies it. Nothing here imports ``transformers``.

Supported (``model_type`` in ``config.json``):

- ``vit``: ``ViTForImageClassification``;
- ``deit``: ``DeiTForImageClassification`` (class and distillation tokens, the head reads the class token: a timm
  ViT with one register token) and ``DeiTForImageClassificationWithTeacher`` (timm's distilled ViT: the mean of the
  class-token head and the distillation-token head).

Weights are read as :func:`audit.model.load.read_state_dict` reads them: safetensors, or pickles only through
``torch.load(weights_only=True)``. A pooler (``ViTModel``'s, which the classifier never reads) and a mask token
(masked image modelling only) are left out and the reason is recorded with the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..errors import CheckpointError, ModelLoadError
from .load import MAX_LISTED, LoadedModel, check_finite, fit_report, read_state_dict, sha256_of

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["HF_MODEL", "SUPPORTED_TYPES", "HFArchitecture", "is_hf_folder", "load_hf_model", "read_hf_config",
           "architecture_of", "build_timm_model", "from_hf_state_dict", "to_hf_state_dict", "hf_config_for",
           "processor_data_config"]

HF_MODEL = "hf"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
SUPPORTED_TYPES = {
    "vit": ("ViTForImageClassification",),
    "deit": ("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
}
SUPPORTED_TEXT = "vit (ViTForImageClassification), deit (DeiTForImageClassification[WithTeacher])"
# transformers' activation names -> the torch module that computes the same function
ACTIVATIONS = {
    "gelu": partial(nn.GELU),
    "gelu_python": partial(nn.GELU),
    "gelu_new": partial(nn.GELU, approximate="tanh"),
    "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh"),
    "gelu_fast": partial(nn.GELU, approximate="tanh"),
    "relu": partial(nn.ReLU),
    "silu": partial(nn.SiLU),
    "swish": partial(nn.SiLU),
}
IGNORED = {  # keys of a checkpoint that the classifier never reads, and why they are left out
    "pooler": "the pooler (ViTModel's dense + tanh over the class token) is not read by the classifier",
    "mask_token": "the mask token is used only for masked image modelling, not for classification",
}
# PIL's resample codes as transformers stores them
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
PROCESSOR_TYPES = ("ViTImageProcessor", "ViTFeatureExtractor", "DeiTImageProcessor", "DeiTFeatureExtractor")
DEFAULT_PROCESSOR = {"do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                     "do_normalize": True, "image_mean": 0.5, "image_std": 0.5}


def is_hf_folder(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a folder holding a ``config.json`` (a Hugging Face model folder)."""
    return path is not None and Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


@dataclass(frozen=True)
class HFArchitecture:
    """The shape of a Hugging Face ViT/DeiT classifier, read from its ``config.json``.

    Attributes:
        model_type: ``vit`` or ``deit``.
        architecture: the transformers class, e.g. ``ViTForImageClassification``.
        image_size: (H, W) of the model input.
        patch_size: (ph, pw).
        in_chans: image channels.
        embed_dim: hidden size D.
        depth: transformer layers.
        num_heads: attention heads.
        mlp_dim: intermediate size of the MLP.
        qkv_bias: whether query, key and value have biases.
        eps: layer-norm epsilon.
        act: transformers' activation name.
        id2label: class index -> name, as the config gives it.
    """

    model_type: str
    architecture: str
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    qkv_bias: bool
    eps: float
    act: str
    id2label: dict[int, str] = field(default_factory=dict, compare=False)

    @property
    def prefix(self) -> str:
        return self.model_type  # "vit." or "deit." before the backbone's keys

    @property
    def teacher(self) -> bool:
        return self.architecture == "DeiTForImageClassificationWithTeacher"

    @property
    def distillation_token(self) -> bool:
        return self.model_type == "deit"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line CheckpointError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{what} {str(path)!r} is not UTF-8 text; pass the file save_pretrained wrote") from None
    except OSError as err:
        raise CheckpointError(f"{what} {str(path)!r} cannot be read ({err.strerror or err}); pass the folder "
                              "save_pretrained wrote") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{what} {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}); pass the "
                              "file save_pretrained wrote") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} {str(path)!r} holds a JSON {type(value).__name__}, not an object; pass the "
                              "file save_pretrained wrote")
    return value


def read_hf_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict.

    Raises:
        CheckpointError: the folder or its config.json is missing, unreadable or not a JSON object.
    """
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {os.fspath(folder)!r} is not a folder; with --model hf pass a Hugging Face "
                              "model folder (config.json and model.safetensors)")
    config = path / CONFIG_FILE
    if not config.is_file():
        raise CheckpointError(f"checkpoint {os.fspath(folder)!r} has no config.json; pass the folder "
                              "save_pretrained wrote (config.json and model.safetensors)")
    return _read_json(config, "config")


def _pair(value: Any, key: str, where: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        items = tuple(value)
    else:
        items = (value, value)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise CheckpointError(f"config {where!r}: {key} {value!r} is not a positive integer or a pair of them")
    return int(items[0]), int(items[1])


def _positive_int(config: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CheckpointError(f"config {where!r}: {key} {value!r} is not a positive integer; pass the config.json "
                              "save_pretrained wrote")
    return value


def architecture_of(config: Mapping[str, Any], where: str, weight_keys: set[str] | None = None) -> HFArchitecture:
    """Read and check the architecture a ``config.json`` describes.

    Args:
        config: the parsed config.json.
        where: the file, for messages.
        weight_keys: the checkpoint's keys, to tell a DeiT with teacher from one without when ``architectures`` is
            not in the config.

    Raises:
        ModelLoadError: a model_type or architecture vit-audit does not audit.
        CheckpointError: a value that does not describe a buildable ViT.
    """
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        shown = "no model_type" if model_type is None else f"model_type {model_type!r}"
        raise ModelLoadError(f"config {where!r} has {shown}; vit-audit audits Hugging Face {SUPPORTED_TEXT}")
    names = config.get("architectures") or []
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    if name is None:
        teacher = weight_keys is not None and "cls_classifier.weight" in weight_keys
        name = SUPPORTED_TYPES[model_type][-1 if teacher else 0]
    if name not in SUPPORTED_TYPES[model_type]:
        raise ModelLoadError(f"config {where!r}: architecture {name!r} is not an image classifier vit-audit audits; "
                             f"supported: {SUPPORTED_TEXT}")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ModelLoadError(f"config {where!r}: hidden_act {act!r} is not supported; supported: "
                             f"{', '.join(ACTIVATIONS)}")
    embed_dim = _positive_int(config, "hidden_size", where)
    heads = _positive_int(config, "num_attention_heads", where)
    if embed_dim % heads:
        raise CheckpointError(f"config {where!r}: hidden_size {embed_dim} is not a multiple of num_attention_heads "
                              f"{heads}")
    image_size = _pair(config.get("image_size", 224), "image_size", where)
    patch_size = _pair(config.get("patch_size", 16), "patch_size", where)
    if image_size[0] % patch_size[0] or image_size[1] % patch_size[1]:
        raise CheckpointError(f"config {where!r}: image_size {list(image_size)} is not a multiple of patch_size "
                              f"{list(patch_size)}; vit-audit audits models whose patches tile the input")
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and eps > 0):
        raise CheckpointError(f"config {where!r}: layer_norm_eps {eps!r} is not a positive number")
    qkv_bias = config.get("qkv_bias", True)
    if not isinstance(qkv_bias, bool):
        raise CheckpointError(f"config {where!r}: qkv_bias {qkv_bias!r} is not true or false")
    in_chans = _positive_int(config, "num_channels", where, 3)
    if in_chans not in (1, 3):
        raise ModelLoadError(f"config {where!r}: num_channels {in_chans}; vit-audit reads images for 1- or "
                             "3-channel models")
    return HFArchitecture(
        model_type=model_type, architecture=name, image_size=image_size, patch_size=patch_size, in_chans=in_chans,
        embed_dim=embed_dim, depth=_positive_int(config, "num_hidden_layers", where), num_heads=heads,
        mlp_dim=_positive_int(config, "intermediate_size", where), qkv_bias=qkv_bias, eps=float(eps), act=act,
        id2label=_id2label(config.get("id2label")),
    )


def _id2label(value: Any) -> dict[int, str]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for key, name in value.items():
        try:
            out[int(key)] = str(name)
        except (TypeError, ValueError):
            return {}
    return out


def build_timm_model(arch: HFArchitecture, num_classes: int) -> nn.Module:
    """The timm VisionTransformer that computes what the Hugging Face model computes (random init, eval mode)."""
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    ratio = arch.mlp_dim / arch.embed_dim
    if int(arch.embed_dim * ratio) != arch.mlp_dim:  # timm sizes the MLP as int(D * ratio): keep it exact
        ratio = (arch.mlp_dim + 0.5) / arch.embed_dim
    kwargs: dict[str, Any] = dict(
        img_size=arch.image_size, patch_size=arch.patch_size, in_chans=arch.in_chans, num_classes=num_classes,
        global_pool="token", embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=ratio,
        qkv_bias=arch.qkv_bias, class_token=True, norm_layer=partial(nn.LayerNorm, eps=arch.eps),
        act_layer=ACTIVATIONS[arch.act],
    )
    if arch.teacher:
        return VisionTransformerDistilled(**kwargs).eval()
    # DeiT without teacher: the distillation token sits where timm puts one register token, after the class token
    return VisionTransformer(**kwargs, reg_tokens=1 if arch.distillation_token else 0).eval()


# timm key -> Hugging Face key (after the "vit." / "deit." prefix), outside the blocks
_EMBEDDING_KEYS = {
    "cls_token": "embeddings.cls_token",
    "dist_token": "embeddings.distillation_token",
    "reg_token": "embeddings.distillation_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
# inside block i: timm's module -> the Hugging Face layer's module
_BLOCK_MODULES = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_QKV = ("query", "key", "value")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)")


def _head_keys(arch: HFArchitecture) -> dict[str, str]:
    if arch.teacher:
        return {"head": "cls_classifier", "head_dist": "distillation_classifier"}
    return {"head": "classifier"}


def to_hf_state_dict(state: Mapping[str, torch.Tensor], arch: HFArchitecture) -> dict[str, torch.Tensor]:
    """A timm state dict under the Hugging Face names of ``arch`` (``qkv`` split into query, key and value rows).

    Raises:
        ValueError: a timm key that has no Hugging Face counterpart (the model is not one ``arch`` describes).
    """
    prefix = f"{arch.prefix}."
    heads = _head_keys(arch)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".")
        if key in _EMBEDDING_KEYS:
            out[prefix + _EMBEDDING_KEYS[key]] = value
        elif module in heads:
            out[f"{heads[module]}.{kind}"] = value
        elif (match := _BLOCK_KEY.fullmatch(key)) is not None:
            index, inner, kind = match.groups()
            layer = f"{prefix}encoder.layer.{index}."
            if inner == "attn.qkv":
                for name, rows in zip(_QKV, value.chunk(3, dim=0)):
                    out[f"{layer}attention.attention.{name}.{kind}"] = rows
            elif inner in _BLOCK_MODULES:
                out[f"{layer}{_BLOCK_MODULES[inner]}.{kind}"] = value
            else:
                raise ValueError(f"timm key {key!r} has no Hugging Face {arch.architecture} counterpart")
        else:
            raise ValueError(f"timm key {key!r} has no Hugging Face {arch.architecture} counterpart")
    return out


def from_hf_state_dict(state: Mapping[str, torch.Tensor], arch: HFArchitecture) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_hf_state_dict`: Hugging Face keys of ``arch`` to timm's (query/key/value stacked)."""
    prefix = f"{arch.prefix}."
    outside = {prefix + hf: timm for timm, hf in _EMBEDDING_KEYS.items()
               if timm != ("reg_token" if arch.teacher else "dist_token")}
    heads = {hf: timm for timm, hf in _head_keys(arch).items()}
    inside = {hf: timm for timm, hf in _BLOCK_MODULES.items()}
    layer_key = re.compile(re.escape(prefix) + r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".")
        if key in outside:
            out[outside[key]] = value
        elif module in heads:
            out[f"{heads[module]}.{kind}"] = value
        elif (match := layer_key.fullmatch(key)) is not None:
            index, inner, kind = match.groups()
            if inner.startswith("attention.attention.") and inner.rsplit(".", 1)[1] in _QKV:
                qkv.setdefault((index, kind), {})[inner.rsplit(".", 1)[1]] = value
            elif inner in inside:
                out[f"blocks.{index}.{inside[inner]}.{kind}"] = value
            else:
                raise ValueError(f"Hugging Face key {key!r} has no timm counterpart")
        else:
            raise ValueError(f"Hugging Face key {key!r} has no timm counterpart")
    for (index, kind), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts[name] for name in _QKV], dim=0)
    return out


# transformers 5 names the layers' modules differently in memory (``model.state_dict()``) than in the files
# ``save_pretrained`` writes; a state dict saved straight from memory is read under the file names
_MEMORY_LAYER = re.compile(r"(vit|deit)\.layers\.(\d+)\.(.+)\.(weight|bias)")
_MEMORY_MODULES = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
}


def _file_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict under the names ``save_pretrained`` writes (transformers 5's in-memory layer names renamed)."""
    out = {}
    for key, value in state.items():
        match = _MEMORY_LAYER.fullmatch(key)
        if match is not None and match.group(3) in _MEMORY_MODULES:
            prefix, index, module, kind = match.groups()
            key = f"{prefix}.encoder.layer.{index}.{_MEMORY_MODULES[module]}.{kind}"
        out[key] = value
    return out


def _ignored(key: str, arch: HFArchitecture) -> str | None:
    """Why a checkpoint key is left out, or None for a key the classifier reads."""
    prefix = f"{arch.prefix}."
    if key.startswith(f"{prefix}pooler."):
        return IGNORED["pooler"]
    if key == f"{prefix}embeddings.mask_token":
        return IGNORED["mask_token"]
    return None


def read_hf_weights(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """The folder's weights (``model.safetensors`` preferred, else ``pytorch_model.bin``; sharded ones shard by shard).

    Returns:
        (state dict under the Hugging Face names, the files read: an index first, then its shards).

    Raises:
        CheckpointError: no weights file, an unreadable or unsafe one, or an index naming shards that are missing.
    """
    base = Path(folder)
    for name in WEIGHT_FILES:
        single = base / name
        if single.is_file():
            return read_state_dict(single), [single]
        index = base / f"{name}.index.json"
        if index.is_file():
            return _read_shards(base, index)
    raise CheckpointError(f"checkpoint {os.fspath(folder)!r} has no weights: expected model.safetensors or "
                          "pytorch_model.bin (or a sharded *.index.json beside its shards); pass the folder "
                          "save_pretrained wrote")


def _read_shards(base: Path, index: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    weight_map = _read_json(index, "weights index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"weights index {str(index)!r} has no weight_map of key -> shard file; pass the folder "
                              "save_pretrained wrote")
    state: dict[str, torch.Tensor] = {}
    files = [index]
    for shard in sorted(set(weight_map.values())):
        path = base / shard
        if Path(shard).name != shard or not path.is_file():
            raise CheckpointError(f"weights index {str(index)!r} names shard {shard!r}, which is not a file in "
                                  f"{str(base)!r}; copy every shard beside the index")
        tensors = read_state_dict(path)
        wanted = [key for key, file in weight_map.items() if file == shard]
        absent = [key for key in wanted if key not in tensors]
        if absent:
            raise CheckpointError(f"weights shard {str(path)!r} lacks {len(absent)} key(s) its index puts there "
                                  f"({', '.join(absent[:MAX_LISTED])}); re-copy the shard")
        state.update({key: tensors[key] for key in wanted})
        files.append(path)
    return state, files


def _folder_digest(files: list[Path]) -> str:
    """sha256 over the lines ``<sha256>  <file name>`` (as sha256sum prints them) of every file read, sorted by name."""
    lines = "".join(f"{sha256_of(path)}  {path.name}\n" for path in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def _size(value: Any, key: str, where: str) -> tuple[int, int]:
    """A processor's ``size`` / ``crop_size``: an int or {height, width}."""
    if isinstance(value, dict) and set(value) >= {"height", "width"}:
        pair = (value["height"], value["width"])
    elif isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    else:
        shown = sorted(value) if isinstance(value, dict) else repr(value)
        raise CheckpointError(f"preprocessor config {where!r}: {key} {shown} is not supported; ViT and DeiT image "
                              "processors resize to {\"height\": H, \"width\": W}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise CheckpointError(f"preprocessor config {where!r}: {key} {value!r} is not a positive height and width")
    return pair


def _channel_values(value: Any, key: str, where: str, in_chans: int, positive: bool) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value] * in_chans
    ok = len(values) == in_chans and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in values)
    if not ok:
        need = "positive numbers" if positive else "numbers"
        raise CheckpointError(f"preprocessor config {where!r}: {key} {value!r} is not {in_chans} finite {need} (one "
                              "per input channel)")
    return tuple(float(v) for v in values)


def _flag(config: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"preprocessor config {where!r}: {key} {value!r} is not true or false")
    return value


def processor_data_config(folder: str | os.PathLike[str], arch: HFArchitecture) -> tuple[dict[str, Any], list[str]]:
    """The preprocessing of the folder's ``preprocessor_config.json``, as a data config vit-audit applies exactly.

    The image processor resizes to ``size`` (no aspect ratio kept) with its ``resample`` filter, center-crops to
    ``crop_size`` where ``do_center_crop`` is set (top-left corner at the floor of half the difference), rescales by
    ``rescale_factor`` and normalises with ``image_mean`` / ``image_std``. Rescale and normalisation are folded into
    the mean and std vit-audit applies to pixels in [0, 1]. The resize follows the processor's backend:
    transformers' default (torchvision, antialiased, on uint8) unless the type ends in ``Pil`` (PIL's resize).
    Without the file, ViTImageProcessor's defaults at the model's image size are used, and a note says so.

    Returns:
        (data config, notes on what was assumed).

    Raises:
        CheckpointError: a processor type vit-audit does not reproduce, or values that are odd (a resize it does not
            reproduce, a crop larger than the resize, a non-positive std, an output size that is not the model's).
    """
    path = Path(folder) / PROCESSOR_FILE
    height, width = arch.image_size
    notes: list[str] = []
    if path.is_file():
        where = str(path)
        processor = _read_json(path, "preprocessor config")
    else:
        where = "defaults"
        processor = dict(DEFAULT_PROCESSOR, size={"height": height, "width": width})
        notes.append(f"no preprocessor_config.json: ViTImageProcessor's defaults at the model's size were used "
                     f"(resize to {height}x{width}, bilinear, no crop, rescale 1/255, mean 0.5, std 0.5)")
    kind = processor.get("image_processor_type") or processor.get("feature_extractor_type") or "ViTImageProcessor"
    base = str(kind).removesuffix("Fast").removesuffix("Pil")
    if base not in PROCESSOR_TYPES:
        raise CheckpointError(f"preprocessor config {where!r}: image processor {kind!r} is not one vit-audit "
                              "reproduces; supported: ViT and DeiT image processors (ViTImageProcessor, "
                              "DeiTImageProcessor, their Fast and Pil variants)")
    deit = base.startswith("DeiT")
    backend = "pil" if str(kind).endswith("Pil") else "torchvision"
    if not _flag(processor, "do_resize", True, where):
        raise CheckpointError(f"preprocessor config {where!r}: do_resize is false; vit-audit resizes every image to "
                              "the model's input: set do_resize to true")
    resize = _size(processor.get("size", 256 if deit else 224), "size", where)
    resample = processor.get("resample", 3 if deit else 2)
    if resample not in RESAMPLE or isinstance(resample, bool):
        raise CheckpointError(f"preprocessor config {where!r}: resample {resample!r} is not one of PIL's filters "
                              f"{dict(sorted(RESAMPLE.items()))}")
    if backend == "torchvision" and RESAMPLE[resample] in ("box", "hamming"):
        raise CheckpointError(f"preprocessor config {where!r}: resample {resample} ({RESAMPLE[resample]}) does not "
                              f"run in transformers' default (torchvision) {base}; use {base}Pil as "
                              "image_processor_type, or another filter")
    crop = None
    if _flag(processor, "do_center_crop", deit, where):
        crop = _size(processor.get("crop_size", 224), "crop_size", where)
        if crop[0] > resize[0] or crop[1] > resize[1]:
            raise CheckpointError(f"preprocessor config {where!r}: crop_size {list(crop)} is larger than size "
                                  f"{list(resize)}; crop at most the resized image")
    output = crop or resize
    if output != (height, width):
        raise CheckpointError(f"preprocessor config {where!r} makes {output[0]}x{output[1]} inputs, but config.json's "
                              f"image_size is {height}x{width}; pass the processor saved with this model")
    scale = 1.0  # model input = (255 * pixel * rescale_factor - mean) / std, pixel in [0, 1]
    if _flag(processor, "do_rescale", True, where):
        factor = processor.get("rescale_factor", 1 / 255)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not (math.isfinite(factor)
                                                                                    and factor > 0):
            raise CheckpointError(f"preprocessor config {where!r}: rescale_factor {factor!r} is not a positive "
                                  "number")
        scale = 255 * float(factor)
    else:
        scale = 255.0
    scale = 1.0 if abs(scale - 1.0) < 1e-9 else scale
    if _flag(processor, "do_normalize", True, where):
        mean = _channel_values(processor.get("image_mean", 0.5), "image_mean", where, arch.in_chans, False)
        std = _channel_values(processor.get("image_std", 0.5), "image_std", where, arch.in_chans, True)
    else:
        mean, std = (0.0,) * arch.in_chans, (1.0,) * arch.in_chans
    config = {
        "input_size": (arch.in_chans, height, width),
        "interpolation": RESAMPLE[resample],
        "mean": tuple(m / scale for m in mean),
        "std": tuple(s / scale for s in std),
        "crop_pct": crop[0] / resize[0] if crop else 1.0,
        "crop_mode": "center" if crop else "none",
        "resize": resize,
        "resize_backend": backend,
    }
    return config, notes


def load_hf_model(folder: str | os.PathLike[str], class_names: list[str] | None = None) -> LoadedModel:
    """Load a Hugging Face ViT/DeiT classifier folder as the equivalent timm model.

    Args:
        folder: the folder ``save_pretrained`` wrote.
        class_names: readable class names; by default the config's ``id2label``.

    Raises:
        CheckpointError: a missing or unreadable config, weights or processor config, odd values in them, or
            weights that do not fit the config (the first differences named).
        ModelLoadError: a model type or architecture vit-audit does not audit.
    """
    label = os.fspath(folder)
    config = read_hf_config(folder)
    config_path = str(Path(folder) / CONFIG_FILE)
    state, files = read_hf_weights(folder)
    state = _file_names(state)
    arch = architecture_of(config, config_path, set(state))
    head = state.get(f"{_head_keys(arch)['head']}.weight")
    if head is None or head.ndim != 2:
        raise CheckpointError(f"checkpoint {label!r} has no classifier ({_head_keys(arch)['head']}.weight); "
                              f"vit-audit explains a class score: save the {arch.architecture} model with its head")
    data_config, notes = processor_data_config(folder, arch)
    kept: dict[str, torch.Tensor] = {}
    left_out: dict[str, list[str]] = {}
    for key, value in state.items():
        reason = _ignored(key, arch)
        if reason is None:
            kept[key] = value
        else:
            left_out.setdefault(reason, []).append(key)
    notes += [f"left out {', '.join(keys)}: {reason}" for reason, keys in left_out.items()]
    num_classes = int(head.shape[0])
    model = build_timm_model(arch, num_classes)
    problem = fit_report(to_hf_state_dict(model.state_dict(), arch), kept)
    if problem:
        raise CheckpointError(f"checkpoint {label!r} does not fit its config.json ({arch.architecture}): {problem}; "
                              "pass a folder whose weights and config.json were saved together")
    model.load_state_dict(from_hf_state_dict(kept, arch), strict=True)
    check_finite(model, label)
    names = class_names
    if names is None and arch.id2label:
        if sorted(arch.id2label) == list(range(num_classes)):
            names = [arch.id2label[i] for i in range(num_classes)]
        else:
            notes.append(f"config.json's id2label has {len(arch.id2label)} labels for a head of {num_classes} "
                         "classes: classes are shown by index")
    if names is not None and len(names) != num_classes:
        raise ValueError(f"class_names: {len(names)} names given for a model with {num_classes} classes")
    if (Path(folder) / PROCESSOR_FILE).is_file():
        files.append(Path(folder) / PROCESSOR_FILE)
    return LoadedModel(
        name=HF_MODEL, model=model, checkpoint=label, checkpoint_sha256=_folder_digest([Path(config_path), *files]),
        data_config=data_config, num_classes=num_classes, class_names=names, notes=notes,
        architecture=f"{arch.architecture} ({arch.model_type})",
    )


def hf_config_for(model: nn.Module, class_names: list[str] | None = None) -> tuple[dict[str, Any], HFArchitecture]:
    """A ``config.json`` for a timm ViT with a class token (DeiT-style when it has a distillation token), with the
    architecture it describes; :func:`to_hf_state_dict` gives the weights to save beside it.

    Raises:
        ValueError: a timm model no Hugging Face ViT/DeiT class describes (pooling without a class token, registers,
            layer scale, ...).
    """
    from timm.models.deit import VisionTransformerDistilled

    teacher = isinstance(model, VisionTransformerDistilled)
    model = cast("VisionTransformer", model)  # a timm ViT (its global_pool and tokens are read below)
    prefix_tokens = int(model.num_prefix_tokens)
    if getattr(model, "cls_token", None) is None or model.global_pool != "token" or prefix_tokens > 2:
        raise ValueError(f"{type(model).__name__} with these tokens has no Hugging Face ViT/DeiT counterpart")
    model_type = "deit" if prefix_tokens == 2 else "vit"
    architecture = ("DeiTForImageClassificationWithTeacher" if teacher else SUPPORTED_TYPES[model_type][0])
    block: Any = model.blocks[0]  # a timm Block: its submodules are typed Tensor | Module
    act = {"GELU": "gelu_pytorch_tanh" if getattr(block.mlp.act, "approximate", "none") == "tanh" else "gelu",
           "ReLU": "relu", "SiLU": "silu"}.get(type(block.mlp.act).__name__)
    if act is None:
        raise ValueError(f"activation {type(block.mlp.act).__name__} has no Hugging Face name")
    img = model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    num_classes = int(model.num_classes)
    names = class_names or [str(i) for i in range(num_classes)]
    config = {
        "architectures": [architecture], "model_type": model_type, "hidden_size": int(model.embed_dim),
        "num_hidden_layers": len(model.blocks), "num_attention_heads": int(block.attn.num_heads),
        "intermediate_size": int(block.mlp.fc1.out_features), "hidden_act": act,
        "image_size": list(img) if img[0] != img[1] else int(img[0]),
        "patch_size": list(patch) if patch[0] != patch[1] else int(patch[0]),
        "num_channels": int(model.patch_embed.proj.in_channels), "qkv_bias": block.attn.qkv.bias is not None,
        "layer_norm_eps": float(block.norm1.eps), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }
    return config, architecture_of(config, "<timm model>")
