"""audit.prepare_image on damaged files: a picture of the model's input size in [0, 1], or one ImageError line naming
the file, and nothing else."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as skimage_data

from audit import ImageError, prepare_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")

CONFIG = {"input_size": (3, 16, 16), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
FILE_NUMBERS = itertools.count()


def _originals() -> dict[str, tuple[str, bytes]]:
    """name -> (suffix, bytes) of small real pictures in every format vit-audit finds, and deep and turned ones."""
    picture = Image.fromarray(skimage_data.chelsea()).resize((32, 24))
    grey = np.asarray(picture.convert("L"), dtype=np.float64)
    exif = Image.Exif()
    exif[0x0112] = 6
    pictures = {
        "png": ("png", picture, {}), "jpeg": ("jpg", picture, {}), "bmp": ("bmp", picture, {}),
        "tiff": ("tif", picture, {}), "gif": ("gif", picture, {}), "webp": ("webp", picture, {}),
        "jpeg-turned": ("jpg", picture, {"exif": exif}),
        "png-16": ("png", Image.fromarray(np.rint(grey * 257).astype(np.uint16)), {}),
        "tiff-float": ("tif", Image.fromarray((grey / 255).astype(np.float32)), {}),
    }
    originals = {}
    for name, (suffix, image, options) in pictures.items():
        buffer = io.BytesIO()
        image.save(buffer, Image.registered_extensions()[f".{suffix}"], **options)
        originals[name] = (suffix, buffer.getvalue())
    return originals


ORIGINALS = _originals()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("damaged")


@pytest.fixture(scope="module", autouse=True)
def small_pixel_limit():
    """Damaged headers claim sizes up to Pillow's limit (179 M pixels): keep what gets decoded small and quick."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 16)
        yield


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """(suffix, bytes): an original with a few bytes changed, most often in its header, and perhaps cut short."""
    suffix, blob = ORIGINALS[draw(st.sampled_from(sorted(ORIGINALS)))]
    blob = bytearray(blob)
    position = st.integers(0, 31) | st.integers(0, len(blob) - 1)  # the first 32 bytes hold the sizes
    byte = st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)
    for index, value in draw(st.lists(st.tuples(position, byte), min_size=1, max_size=4)):
        blob[index] = value
    length = draw(st.none() | st.integers(0, len(blob)))
    return suffix, bytes(blob[:length])


@settings(max_examples=300)  # a few milliseconds each; the damage that matters is rare among random bytes
@given(damaged())
def test_damaged_file_gives_a_picture_or_one_image_error_line_naming_it(folder, file):
    suffix, blob = file
    path = folder / f"damaged-{next(FILE_NUMBERS)}.{suffix}"
    path.write_bytes(blob)
    try:
        pixel = prepare_image(path, CONFIG).pixel
    except ImageError as err:
        message = str(err)
        assert message.startswith(f"image {str(path)!r} ")
        assert len(message.splitlines()) == 1, message
        return
    assert pixel.shape == (3, 16, 16) and pixel.dtype == torch.float32
    assert torch.isfinite(pixel).all() and 0 <= pixel.min() and pixel.max() <= 1
