"""The embedded default model: a small ViT trained on Fashion-MNIST, shipped inside the package.

Importing this module registers :data:`EMBEDDED_MODEL` with timm, so the default audit needs only a name, a
checkpoint and an image folder, all local::

    from audit import load_model
    from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

    loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())

The registered pretrained config carries the preprocessing the weights were trained with (28x28 grayscale, the
training set's mean and std) and the class names. ``python -m audit.zoo.fashion_mnist`` rebuilds the shipped
files; see ``fashion_mnist/MODEL_CARD.md``. Training code is never imported from here.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

if TYPE_CHECKING:
    from importlib.abc import Traversable

__all__ = [
    "CLASS_NAMES", "EMBEDDED_MODEL", "MEAN", "STD", "embedded_card", "embedded_checkpoint", "embedded_images",
    "embedded_masks", "object_mask", "vit_fmnist_patch4_28",
]

EMBEDDED_MODEL = "vit_fmnist_patch4_28"
WEIGHTS_FILE = "vit_fmnist.safetensors"
CARD_FILE = "MODEL_CARD.md"
IMAGES_DIR = "images"
MASKS_DIR = "masks"  # one PNG mask per sample image, by file stem: 1 on the garment (pixels above 0), 0 elsewhere
DATA_DIR = "fashion_mnist"


class _Resources(Protocol):
    """What :func:`importlib.resources.files` gives for this package: Python 3.10's ``Traversable`` stub takes one
    part in ``joinpath``, the paths it returns (``pathlib.Path``, ``zipfile.Path``) take several, as 3.11's does."""

    def joinpath(self, *parts: str) -> Traversable: ...


#: Fashion-MNIST's classes, in label order.
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: Pixel statistics of the 60,000 training images, values in [0, 1] (as written in the model card).
MEAN = 0.2860
STD = 0.3530

#: The architecture: 28x28 grayscale input, 4x4 patches (a 7x7 grid) and a class token.
ARCHITECTURE: dict[str, Any] = {
    "img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 64, "depth": 6, "num_heads": 4, "mlp_ratio": 4.0,
    "num_classes": 10,
}


def _resource(*parts: str) -> Path:
    """A file or folder shipped in this package, as a filesystem path.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    resource = files(__name__).joinpath(DATA_DIR, *parts)
    path = Path(os.fspath(resource)) if isinstance(resource, os.PathLike) else None
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"the embedded model's {'/'.join(parts)} is missing from the installed package; reinstall vit-audit, "
            f"or rebuild the files with: python -m audit.zoo.{DATA_DIR} --out {Path(__file__).parent / DATA_DIR}"
        )
    return path


def embedded_checkpoint() -> Path:
    """The shipped weights of :data:`EMBEDDED_MODEL` (safetensors, fp32).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    return _resource(WEIGHTS_FILE)


def embedded_images() -> Path:
    """The folder of shipped sample images: two Fashion-MNIST test images per class, named by class.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    return _resource(IMAGES_DIR)


def embedded_masks() -> Path:
    """The folder of the sample images' exact object masks (PNG, by file stem; ``--regions`` reads it): Fashion-MNIST's
    background is 0, so the object is every pixel above 0 (:func:`object_mask`).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    return _resource(MASKS_DIR)


def object_mask(image: Any) -> Any:
    """The object mask of a Fashion-MNIST image (a uint8 array): 1 where a pixel is above 0, else 0."""
    import numpy as np

    return (np.asarray(image) > 0).astype(np.uint8)


def embedded_card() -> Path:
    """The model card of the shipped weights (data, architecture, accuracy, the command that rebuilds them).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    return _resource(CARD_FILE)


default_cfgs = generate_default_cfgs({
    EMBEDDED_MODEL: {
        "num_classes": ARCHITECTURE["num_classes"],
        "input_size": (ARCHITECTURE["in_chans"], ARCHITECTURE["img_size"], ARCHITECTURE["img_size"]),
        "fixed_input_size": True,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": (MEAN,),
        "std": (STD,),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "label_names": CLASS_NAMES,
        "file": str(cast(_Resources, files(__name__)).joinpath(DATA_DIR, WEIGHTS_FILE)),
        "license": "apache-2.0",
        "origin_url": "https://github.com/zalandoresearch/fashion-mnist",
        "paper_ids": "arXiv:1708.07747",
    },
})


@register_model
def vit_fmnist_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for 28x28 grayscale images: 4x4 patches, width 64, depth 6, 4 heads, class token.

    Args:
        pretrained: load the shipped weights (:func:`embedded_checkpoint`), offline.
        **kwargs: overrides of the architecture, passed to timm's ``VisionTransformer``.
    """
    return build_model_with_cfg(
        VisionTransformer,
        EMBEDDED_MODEL,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"out_indices": 3, "feature_cls": "getter"},
        **{**ARCHITECTURE, **kwargs},
    )
