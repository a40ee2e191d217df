"""Shared fixtures: timm's tiny ViTs of every token layout, and the real ViT-Ti from ``../shared``."""

from __future__ import annotations

import os
from html.parser import HTMLParser

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before timm imports huggingface_hub, which reads it once

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from audit import load_model  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=40, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=20)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# The tiny random-weight models produce float32 denormals, which make CPU kernels up to 20x slower; flushing them
# to zero changes no result these tests check (the real ViT-Ti and the reference run under the same setting).
torch.set_flush_denormal(True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIT_AUDIT_SHARED", ROOT.parent / "shared"))
VIT_TINY_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
VIT_TINY_FILE = SHARED / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
IMAGENET_DIR = SHARED / "images" / "imagenet-persian-cat"
DIVERSE_DIR = SHARED / "images" / "imagenet-diverse-200"

# Tiny models of every plain-ViT token layout timm has (name -> create_model kwargs).
TINY_MODELS = {
    # class token, 'token' pooling, dynamic image size
    "test_vit": dict(model_name="test_vit", num_classes=10),
    # no class token, one register token, average pooling
    "test_vit2": dict(model_name="test_vit2", num_classes=10),
    # no class token, one register token, attention-pooling head
    "test_vit3": dict(model_name="test_vit3", num_classes=10),
    # class + distillation token, two heads
    "deit_distilled": dict(model_name="deit_tiny_distilled_patch16_224", num_classes=10, img_size=64, depth=2),
    # class token + 4 registers (DINOv2 with registers), patch 14
    "dinov2_reg4": dict(model_name="vit_small_patch14_reg4_dinov2", num_classes=10, img_size=56, depth=2,
                        embed_dim=48, num_heads=2),
    # D / C = 16 is a square and D = C * P * P: both restorations apply, the inverse is exact
    "square": dict(model_name="vit_tiny_patch16_224", num_classes=7, img_size=32, patch_size=4, embed_dim=48,
                   depth=2, num_heads=2),
}


def make_tiny(key: str, seed: int = 0) -> torch.nn.Module:
    """Build a tiny model with seeded random weights, in eval mode."""
    kwargs = dict(TINY_MODELS[key])
    name = kwargs.pop("model_name")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    # Random init leaves heads and layer scales near zero; give every parameter some size so maps are not flat.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model


def save_tiny(key: str, path: Path) -> Path:
    """Write :func:`make_tiny`'s model ``key`` as a safetensors checkpoint at ``path``."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in make_tiny(key).state_dict().items()}, str(path))
    return path


def audit_files(root: Path, photos: tuple[str, ...], size: tuple[int, int] = (120, 100)) -> dict[str, Path]:
    """test_vit's weights and a folder of scikit-image photos (RGB, resized to ``size``) under ``root``."""
    import skimage.data
    from PIL import Image

    save_tiny("test_vit", root / "test_vit.safetensors")
    folder = root / "photos"
    folder.mkdir()
    for name in photos:
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size).save(folder / f"{name}.png")
    return {"checkpoint": root / "test_vit.safetensors", "photos": folder}


def nested_audit() -> list[str]:
    """The start of a nested audit run: the packaged checks with the plugin, no cache, rooted in the current folder.

    The randomisation check runs on 2 images and 1 seed here: its default (10 images x 3 seeds) is about 15 times
    the work, which the nested runs of tests not about it do not need; a test about it passes its own values after
    these (the last value of an option wins), and tests/test_sanity.py tests it. The gates decide from 5 images: the
    nested runs audit a handful of images to test the gates' logic, not a release's n (the default minimum, 20, is
    tested in tests/test_gates.py and tests/test_settings.py).
    """
    from audit.plugin import _checks_dir

    return [str(_checks_dir()), "-p", "audit.plugin", "-p", "no:cacheprovider", "--rootdir", ".",
            "--randomisation-images", "2", "--randomisation-seeds", "1", "--min-images", "5"]


def input_size_of(model: torch.nn.Module) -> tuple[int, int]:
    size = model.patch_embed.img_size
    return (size, size) if isinstance(size, int) else tuple(size)


@pytest.fixture(scope="session", params=list(TINY_MODELS))
def tiny(request) -> tuple[str, torch.nn.Module]:
    """(key, model) for every tiny layout."""
    return request.param, make_tiny(request.param)


def require_shared(path: Path) -> Path:
    """The shared test data (set VIT_AUDIT_SHARED to point at it elsewhere).

    Missing, the test is skipped with one reason on a developer's machine, and fails where VIT_AUDIT_REQUIRE_SHARED is
    set (CI sets it: there its absence is a failure, never a silent skip).
    """
    if not path.exists():
        message = (f"needs the shared test data: set VIT_AUDIT_SHARED or put shared/ beside the checkout ({path} is "
                   "missing)")
        if os.environ.get("VIT_AUDIT_REQUIRE_SHARED"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def vit_tiny():
    """The real pretrained ImageNet ViT-Ti/16 from ../shared/models."""
    return load_model(VIT_TINY_NAME, require_shared(VIT_TINY_FILE))


@pytest.fixture(scope="session")
def imagenet_photos() -> list[Path]:
    photos = sorted(require_shared(IMAGENET_DIR).glob("*.JPEG"))
    assert len(photos) == 41, f"expected the 41 shared ImageNet photos, found {len(photos)}"
    return photos


class HtmlTags(HTMLParser):
    """An HTML page's start tags with their attributes, in document order (the report tests read pages with it)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split())]
