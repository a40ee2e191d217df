"""audit.images: pictures prepared exactly as the model's data config says, and clear errors for bad inputs."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from audit import ImageError, find_images, normalize, prepare_image


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skimage_data.chelsea()


def quoted(path: Path) -> str:
    """The path as the messages quote it, escaped for a regex."""
    return re.escape(repr(str(path)))


def one_channel(config: dict) -> dict:
    return {**config, "input_size": (1, *config["input_size"][1:]), "mean": (0.5,), "std": (0.5,)}


# --- prepare_image ----------------------------------------------------------------------------------------------


def test_chelsea_becomes_a_3x224x224_float_picture_in_unit_range(vit_tiny, chelsea):
    prepared = prepare_image(chelsea, vit_tiny.data_config)
    pixel = prepared.pixel
    assert pixel.shape == (3, 224, 224)
    assert pixel.dtype == torch.float32 and pixel.is_contiguous()
    assert 0.0 <= pixel.min() and pixel.max() <= 1.0
    assert pixel.max() - pixel.min() > 0.5  # a [0, 1] picture, not a normalised or 0..255 one
    assert prepared.source == "<array (300, 451, 3)>"


def test_prepared_picture_after_normalize_equals_timms_own_eval_transform(vit_tiny, chelsea):
    config = vit_tiny.data_config
    expected = create_transform(**config)(Image.fromarray(chelsea))

    pixel = prepare_image(chelsea, config).pixel

    torch.testing.assert_close(normalize(pixel, vit_tiny.mean, vit_tiny.std), expected, rtol=0, atol=1e-6)
    # the model's own statistics matter: ImageNet's defaults give another tensor
    assert not torch.allclose(normalize(pixel, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), expected, atol=1e-2)


def test_prepared_chelsea_is_classified_as_an_egyptian_cat(vit_tiny, chelsea):
    pixel = prepare_image(chelsea, vit_tiny.data_config).pixel
    with torch.no_grad():
        probs = vit_tiny.model(normalize(pixel, vit_tiny.mean, vit_tiny.std)[None]).softmax(-1)[0]
    assert vit_tiny.class_name(int(probs.argmax())) == "Egyptian cat"
    assert probs[285] > 0.5


def test_path_pil_image_and_array_give_the_same_picture(tmp_path, vit_tiny, chelsea):
    path = tmp_path / "chelsea.png"
    Image.fromarray(chelsea).save(path)

    from_path = prepare_image(path, vit_tiny.data_config)
    from_pil = prepare_image(Image.fromarray(chelsea), vit_tiny.data_config, name="cat")
    from_array = prepare_image(chelsea, vit_tiny.data_config)

    assert (from_path.name, from_path.source) == ("chelsea", str(path))
    assert (from_pil.name, from_pil.source) == ("cat", "cat")
    assert torch.equal(from_path.pixel, from_array.pixel)
    assert torch.equal(from_pil.pixel, from_array.pixel)


def test_one_channel_config_reads_the_image_in_L_mode(vit_tiny, chelsea):
    gray = prepare_image(chelsea, one_channel(vit_tiny.data_config)).pixel
    rgb = prepare_image(chelsea, vit_tiny.data_config).pixel

    assert gray.shape == (1, 224, 224) and gray.dtype == torch.float32
    # PIL's 'L' is the ITU-R 601 luma: equal up to rounding, unlike any single channel or the plain channel mean
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert (luma - gray[0]).abs().max() <= 2 / 255
    assert (rgb.mean(0) - gray[0]).abs().max() > 8 / 255
    assert min((channel - gray[0]).abs().max() for channel in rgb) > 8 / 255
    expected = prepare_image(Image.fromarray(chelsea).convert("L"), one_channel(vit_tiny.data_config)).pixel
    assert torch.equal(gray, expected)


def test_one_channel_config_accepts_a_2d_uint8_array(vit_tiny, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    assert gray.ndim == 2
    pixel = prepare_image(gray, one_channel(vit_tiny.data_config)).pixel
    assert pixel.shape == (1, 224, 224)


def test_four_channel_model_input_is_refused(vit_tiny, chelsea):
    config = {**vit_tiny.data_config, "input_size": (4, 224, 224)}
    with pytest.raises(ImageError, match=r"^model input has 4 channels; vit-audit reads images for 1- or 3-channel"):
        prepare_image(chelsea, config)


def _random_bytes(path: Path) -> Path:
    path = path.with_name("noise.png")
    path.write_bytes(random.Random(0).randbytes(2048))
    return path


def _text_as_jpeg(path: Path) -> Path:
    path = path.with_name("notes.jpg")
    path.write_text("not a picture\n")
    return path


def _truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="JPEG")
    path = path.with_name("truncated.jpg")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _empty_file(path: Path) -> Path:
    path = path.with_name("empty.png")
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make", [_random_bytes, _text_as_jpeg, _truncated_jpeg, _empty_file],
                         ids=["random-bytes", "text-as-jpeg", "truncated-jpeg", "empty"])
def test_unreadable_image_file_raises_image_error_naming_it(tmp_path, vit_tiny, make):
    path = make(tmp_path / "placeholder")
    message = rf"^image {quoted(path)} is not a readable image \(.*\); replace or remove it$"
    with pytest.raises(ImageError, match=message):
        prepare_image(path, vit_tiny.data_config)


def test_missing_image_file_raises_image_error_naming_it(tmp_path, vit_tiny):
    path = tmp_path / "absent.jpg"
    with pytest.raises(ImageError, match=rf"^image {quoted(path)} not found: pass an existing image file or folder$"):
        prepare_image(path, vit_tiny.data_config)


@pytest.mark.parametrize("shape", [(224,), (2, 32, 32, 3), ()], ids=["1d", "4d", "scalar"])
def test_uint8_array_of_the_wrong_ndim_raises_image_error(vit_tiny, shape):
    array = np.zeros(shape, dtype=np.uint8)
    message = (rf"^image '<array {re.escape(str(shape))}>': expected a non-empty \(H, W\) or \(H, W, 1\|3\|4\) "
               r"uint8 array, got ")
    with pytest.raises(ImageError, match=message):
        prepare_image(array, vit_tiny.data_config)


def test_float_array_raises_image_error_naming_the_dtype(vit_tiny, chelsea):
    with pytest.raises(ImageError, match=r"uint8 array, got \(300, 451, 3\) float64$"):
        prepare_image(chelsea / 255.0, vit_tiny.data_config)


def test_single_channel_hw1_array_is_read_like_its_hw_squeeze(vit_tiny, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    squeezed = prepare_image(gray, vit_tiny.data_config).pixel
    assert torch.equal(prepare_image(gray[:, :, None], vit_tiny.data_config).pixel, squeezed)


@pytest.mark.parametrize("shape", [(32, 32, 5), (0, 0)], ids=["five-channels", "empty"])
def test_uint8_array_of_an_unusable_shape_raises_image_error(vit_tiny, shape):
    with pytest.raises(ImageError, match=rf"^image '<array {re.escape(str(shape))}>'"):
        prepare_image(np.zeros(shape, dtype=np.uint8), vit_tiny.data_config)


# --- normalize --------------------------------------------------------------------------------------------------


def test_normalize_uses_per_channel_mean_and_std_for_single_images_and_batches():
    pixel = torch.stack([torch.full((2, 3), 0.5), torch.full((2, 3), 0.25), torch.full((2, 3), 1.0)])
    expected = torch.stack([torch.full((2, 3), 0.0), torch.full((2, 3), -1.0), torch.full((2, 3), 2.0)])
    mean, std = (0.5, 0.5, 0.0), (0.5, 0.25, 0.5)
    torch.testing.assert_close(normalize(pixel, mean, std), expected)
    torch.testing.assert_close(normalize(pixel.expand(4, -1, -1, -1), mean, std), expected.expand(4, -1, -1, -1))


# --- find_images ------------------------------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for relative in ["b.png", "a.JPG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.webp", "sub/deeper/e.tiff",
                     "album.png/inside.bmp", "sub/readme.md"]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    return root


def test_find_images_searches_folders_recursively_sorted_and_keeps_image_suffixes_only(image_tree):
    found = find_images([image_tree])
    relative = [path.relative_to(image_tree).as_posix() for path in found]
    assert relative == ["a.JPG", "album.png/inside.bmp", "b.png", "sub/c.jpeg", "sub/deeper/d.webp",
                        "sub/deeper/e.tiff"]
    assert all(isinstance(path, Path) for path in found)


def test_find_images_expands_each_argument_in_the_order_given(image_tree):
    found = find_images([str(image_tree / "sub"), image_tree / "b.png"])
    assert found == [image_tree / "sub" / "c.jpeg", image_tree / "sub/deeper/d.webp",
                     image_tree / "sub/deeper/e.tiff", image_tree / "b.png"]


def test_find_images_raises_for_a_missing_path(image_tree):
    missing = image_tree / "nowhere"
    with pytest.raises(ImageError, match=rf"^images: {quoted(missing)} does not exist; pass image files or folders$"):
        find_images([image_tree, missing])


@pytest.mark.parametrize("paths", [pytest.param(["only-text"], id="folder-without-images"),
                                   pytest.param([], id="no-paths")])
def test_find_images_raises_when_nothing_is_found(tmp_path, paths):
    folder = tmp_path / "only-text"
    folder.mkdir()
    (folder / "notes.txt").write_text("no pictures here")
    with pytest.raises(ImageError, match=r"^images: no image files \(\.png, \.jpg, .*\) found in the paths given$"):
        find_images([tmp_path / path for path in paths])
