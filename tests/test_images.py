"""audit.model.images: pictures prepared exactly as the model's data config says, and clear errors for bad inputs."""

from __future__ import annotations

import io
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
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


# A small data config for the file-reading tests: no model needed.
SMALL = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}


# --- prepare_image ----------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_chelsea_becomes_a_3x224x224_float_picture_in_unit_range(vit_tiny, chelsea):
    prepared = prepare_image(chelsea, vit_tiny.data_config)
    pixel = prepared.pixel
    assert pixel.shape == (3, 224, 224)
    assert pixel.dtype == torch.float32 and pixel.is_contiguous()
    assert 0.0 <= pixel.min() and pixel.max() <= 1.0
    assert pixel.max() - pixel.min() > 0.5  # a [0, 1] picture, not a normalised or 0..255 one
    assert prepared.source == "<array (300, 451, 3)>"


@pytest.mark.shared
def test_prepared_picture_after_normalize_equals_timms_own_eval_transform(vit_tiny, chelsea):
    config = vit_tiny.data_config
    expected = create_transform(**config)(Image.fromarray(chelsea))

    pixel = prepare_image(chelsea, config).pixel

    torch.testing.assert_close(normalize(pixel, vit_tiny.mean, vit_tiny.std), expected, rtol=0, atol=1e-6)
    # the model's own statistics matter: ImageNet's defaults give another tensor
    assert not torch.allclose(normalize(pixel, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), expected, atol=1e-2)


@pytest.mark.shared
def test_prepared_chelsea_is_classified_as_an_egyptian_cat(vit_tiny, chelsea):
    pixel = prepare_image(chelsea, vit_tiny.data_config).pixel
    with torch.no_grad():
        probs = vit_tiny.model(normalize(pixel, vit_tiny.mean, vit_tiny.std)[None]).softmax(-1)[0]
    assert vit_tiny.class_name(int(probs.argmax())) == "Egyptian cat"
    assert probs[285] > 0.5


@pytest.mark.shared
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


@pytest.mark.shared
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


@pytest.mark.shared
def test_one_channel_config_accepts_a_2d_uint8_array(vit_tiny, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    assert gray.ndim == 2
    pixel = prepare_image(gray, one_channel(vit_tiny.data_config)).pixel
    assert pixel.shape == (1, 224, 224)


@pytest.mark.shared
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


@pytest.mark.shared
@pytest.mark.parametrize("make", [_random_bytes, _text_as_jpeg, _truncated_jpeg, _empty_file],
                         ids=["random-bytes", "text-as-jpeg", "truncated-jpeg", "empty"])
def test_unreadable_image_file_raises_image_error_naming_it(tmp_path, vit_tiny, make):
    path = make(tmp_path / "placeholder")
    message = rf"^image {quoted(path)} is not a readable image \(.*\); replace or remove it$"
    with pytest.raises(ImageError, match=message):
        prepare_image(path, vit_tiny.data_config)


@pytest.mark.shared
def test_missing_image_file_raises_image_error_naming_it(tmp_path, vit_tiny):
    path = tmp_path / "absent.jpg"
    with pytest.raises(ImageError, match=rf"^image {quoted(path)} not found: pass an existing image file or folder$"):
        prepare_image(path, vit_tiny.data_config)


@pytest.mark.shared
@pytest.mark.parametrize("shape", [(224,), (2, 32, 32, 3), ()], ids=["1d", "4d", "scalar"])
def test_uint8_array_of_the_wrong_ndim_raises_image_error(vit_tiny, shape):
    array = np.zeros(shape, dtype=np.uint8)
    message = (rf"^image '<array {re.escape(str(shape))}>': expected a non-empty \(H, W\) or \(H, W, 1\|3\|4\) "
               r"uint8 array, got ")
    with pytest.raises(ImageError, match=message):
        prepare_image(array, vit_tiny.data_config)


@pytest.mark.shared
def test_float_array_raises_image_error_naming_the_dtype(vit_tiny, chelsea):
    with pytest.raises(ImageError, match=r"uint8 array, got \(300, 451, 3\) float64$"):
        prepare_image(chelsea / 255.0, vit_tiny.data_config)


@pytest.mark.shared
def test_single_channel_hw1_array_is_read_like_its_hw_squeeze(vit_tiny, chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    squeezed = prepare_image(gray, vit_tiny.data_config).pixel
    assert torch.equal(prepare_image(gray[:, :, None], vit_tiny.data_config).pixel, squeezed)


@pytest.mark.shared
@pytest.mark.parametrize("shape", [(32, 32, 5), (0, 0)], ids=["five-channels", "empty"])
def test_uint8_array_of_an_unusable_shape_raises_image_error(vit_tiny, shape):
    with pytest.raises(ImageError, match=rf"^image '<array {re.escape(str(shape))}>'"):
        prepare_image(np.zeros(shape, dtype=np.uint8), vit_tiny.data_config)


# --- prepare_image: EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, orientation, turns", [("jpg", 6, -1), ("jpg", 8, 1), ("png", 3, 2), ("tif", 6, -1)],
                         ids=["jpeg-6-clockwise", "jpeg-8-anticlockwise", "png-3-upside-down", "tiff-6-clockwise"])
def test_exif_orientation_turns_the_picture_as_image_viewers_show_it(tmp_path, chelsea, suffix, orientation, turns):
    path = tmp_path / f"turned.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(chelsea).save(path, exif=exif, tiffinfo={0x0112: orientation})
    with Image.open(path) as stored:
        assert stored.getexif().get(0x0112) == orientation

    pixel = prepare_image(path, SMALL).pixel

    # np.rot90 turns anticlockwise: a viewer turns orientation 6 a quarter clockwise, 8 anticlockwise, 3 a half
    upright = prepare_image(np.ascontiguousarray(np.rot90(chelsea, turns)), SMALL).pixel
    if suffix == "jpg":
        assert (pixel - upright).abs().mean() < 0.01 and (pixel - upright).abs().max() < 0.1  # JPEG's loss
    else:
        assert torch.equal(pixel, upright)  # Pillow turns a TIFF itself: it must not be turned twice
    assert (pixel - prepare_image(chelsea, SMALL).pixel).abs().mean() > 0.05
    with Image.open(path) as opened:  # a PIL image opened from the file is turned alike
        assert torch.equal(prepare_image(opened, SMALL).pixel, pixel)


# --- prepare_image: bit depth -----------------------------------------------------------------------------------


def _ramp(top: float) -> np.ndarray:
    """A smooth diagonal 48x64 ramp over [0, top], as floats."""
    y, x = np.mgrid[0:48, 0:64]
    return (x / 63 + y / 47) / 2 * top


def _eight_bit_ramp() -> np.ndarray:
    return np.rint(_ramp(255)).astype(np.uint8)


def _png_16(tmp_path: Path) -> Path:
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.rint(_ramp(65535)).astype(np.uint16)).save(path)
    return path


def _tiff_16(tmp_path: Path) -> Path:
    path = tmp_path / "ramp16.tif"
    Image.fromarray(np.rint(_ramp(65535)).astype(np.uint16)).save(path)
    return path


def _tiff_16_big_endian(tmp_path: Path) -> Path:
    import tifffile

    path = tmp_path / "ramp16be.tif"
    tifffile.imwrite(path, np.rint(_ramp(65535)).astype(np.uint16), byteorder=">")
    return path


def _tiff_12(tmp_path: Path) -> Path:
    """A 12-bit grey TIFF (Pillow reads it as 'I;16' holding 0..4095), written by hand: Pillow cannot."""
    values = np.rint(_ramp(4095)).astype(np.uint32).ravel()
    first, second = values[0::2], values[1::2]  # two pixels in three bytes, high bits first; the width is even
    packed = np.stack([first >> 4, (first & 15) << 4 | second >> 8, second & 255], 1).astype(np.uint8).tobytes()
    tags = [(256, 64), (257, 48), (258, 12), (259, 1), (262, 1), (273, 8 + 2 + 9 * 12 + 4), (277, 1), (278, 48),
            (279, len(packed))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)
    path = tmp_path / "ramp12.tif"
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + packed)
    return path


def _tiff_float(tmp_path: Path) -> Path:
    path = tmp_path / "ramp-float.tif"
    Image.fromarray((_ramp(65535) / 65535).astype(np.float32)).save(path)
    return path


def _pil_16(tmp_path: Path) -> Image.Image:
    return Image.fromarray(np.rint(_ramp(65535)).astype(np.uint16))


@pytest.mark.parametrize("make", [_png_16, _tiff_16, _tiff_16_big_endian, _tiff_12, _tiff_float, _pil_16],
                         ids=["png-16", "tiff-16", "tiff-16-big-endian", "tiff-12", "tiff-float", "pil-16"])
def test_deep_image_is_scaled_into_8_bits_like_its_8_bit_version(tmp_path, make):
    image = make(tmp_path)
    for config in (SMALL, one_channel(SMALL)):
        expected = prepare_image(_eight_bit_ramp(), config).pixel
        torch.testing.assert_close(prepare_image(image, config).pixel, expected, rtol=0, atol=1 / 255)


_NAN_RAMP = (_ramp(1) * np.where(np.eye(48, 64) > 0, np.nan, 1)).astype(np.float32)


@pytest.mark.parametrize("values, message", [
    (_ramp(1000).astype(np.float32), r"is a float image with values in \[0, 1000\]; vit-audit reads float images "
                                     r"with values in \[0, 1\]: convert it to 8- or 16-bit"),
    (_NAN_RAMP, r"is a float image with NaN or infinite values; vit-audit reads float images with values in \[0, 1\]: "
                r"convert it to 8- or 16-bit"),
    (np.rint(_ramp(1000) - 5).astype(np.int32), r"is a 32-bit image with values in \[-5, 995\], outside "
                                                r"\[0, 4294967295\]; convert it to 8- or 16-bit"),
], ids=["float-0-1000", "float-nan", "int-negative"])
def test_deep_image_with_values_outside_its_range_is_refused_in_one_line(tmp_path, values, message):
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(ImageError, match=rf"^image {quoted(path)} {message}$"):
        prepare_image(path, SMALL)


# --- prepare_image: damaged files and unexpected errors -----------------------------------------------------------


def test_decompression_bomb_raises_image_error_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (32, 24)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 768 pixels: more than twice the limit, as a bomb has
    message = rf"^image {quoted(path)} is too large to open safely \(.*768 pixels.*\); downscale, replace or remove it$"
    with pytest.raises(ImageError, match=message) as raised:
        prepare_image(path, SMALL)
    assert "\n" not in str(raised.value)


def _tiff_entry(blob: bytes, tag: int) -> int:
    """The offset of a tag's 12-byte entry in a little-endian TIFF's first IFD."""
    ifd = struct.unpack_from("<I", blob, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", blob, ifd)[0], 12):
        if struct.unpack_from("<H", blob, entry)[0] == tag:
            return entry
    raise AssertionError(f"no tag {tag}")


# (id, format, mode, offset in the file, struct format, new value)
_DAMAGED_HEADERS = [
    ("bmp-huge-width", "BMP", "RGB", lambda blob: 18, "<i", 2**31 - 1),
    ("bmp-negative-width", "BMP", "RGB", lambda blob: 18, "<i", -32),
    ("bmp-huge-height", "BMP", "RGB", lambda blob: 22, "<i", 2**31 - 1),
    ("bmp-zero-width", "BMP", "RGB", lambda blob: 18, "<i", 0),
    ("bmp-7-bits-per-pixel", "BMP", "RGB", lambda blob: 28, "<H", 7),
    ("tiff-bogus-ifd-offset", "TIFF", "RGB", lambda blob: 4, "<I", 2**32 - 1),
    ("tiff-huge-width", "TIFF", "RGB", lambda blob: _tiff_entry(blob, 256) + 8, "<I", 2**32 - 1),
    ("tiff-strip-offsets-past-the-end", "TIFF", "RGB", lambda blob: _tiff_entry(blob, 273) + 8, "<I", 2**32 - 1),
    ("tiff-strip-offsets-as-double", "TIFF", "RGB", lambda blob: _tiff_entry(blob, 273) + 2, "<H", 12),
    ("tiff-strip-offsets-as-text", "TIFF", "RGB", lambda blob: _tiff_entry(blob, 273) + 2, "<H", 2),
    ("tiff-colormap-as-signed", "TIFF", "P", lambda blob: _tiff_entry(blob, 320) + 2, "<H", 8),
]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize("fmt, mode, offset, packing, value", [case[1:] for case in _DAMAGED_HEADERS],
                         ids=[case[0] for case in _DAMAGED_HEADERS])
def test_damaged_header_raises_image_error_naming_the_file(tmp_path, chelsea, fmt, mode, offset, packing, value):
    buffer = io.BytesIO()
    Image.fromarray(chelsea[:24, :32]).convert(mode).save(buffer, fmt)
    blob = bytearray(buffer.getvalue())
    struct.pack_into(packing, blob, offset(blob), value)
    path = tmp_path / f"damaged.{fmt.lower()}"
    path.write_bytes(blob)

    message = rf"^image {quoted(path)} (is not a readable image|is too large to open safely) \(.+\); .*remove it$"
    with pytest.raises(ImageError, match=message) as raised:
        prepare_image(path, SMALL)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("error, reason", [
    (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"),
    (struct.error("unpack requires a buffer of 4 bytes"), "struct.error: unpack requires a buffer of 4 bytes"),
    (IndexError("tuple index\nout of range"), "IndexError: tuple index out of range"),
    (MemoryError(), "MemoryError"),
    (OSError("broken data stream when reading image file"), "broken data stream when reading image file"),
], ids=["zero-division", "struct", "index-two-lines", "memory", "os"])
def test_any_error_while_decoding_becomes_one_image_error_line(tmp_path, monkeypatch, error, reason):
    path = tmp_path / "odd.png"
    Image.new("RGB", (32, 24)).save(path)

    def load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    message = rf"^image {quoted(path)} is not a readable image \({re.escape(reason)}\); replace or remove it$"
    with pytest.raises(ImageError, match=message):
        prepare_image(path, SMALL)
    with pytest.raises(ImageError, match=r"^image 'odd' is not a readable image"):  # a PIL image not loaded yet
        prepare_image(Image.open(path), SMALL, name="odd")


def test_interrupt_while_decoding_is_not_caught(tmp_path, monkeypatch):
    path = tmp_path / "slow.png"
    Image.new("RGB", (32, 24)).save(path)

    def load(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(KeyboardInterrupt):
        prepare_image(path, SMALL)


def test_error_while_resizing_becomes_one_image_error_line(tmp_path, monkeypatch, chelsea):
    import audit.model.images

    def transform(config):
        def fail(picture):
            raise RuntimeError("cannot allocate\nthe resized picture")
        return fail

    monkeypatch.setattr(audit.model.images, "_transform", transform)
    message = (r"^image '<array \(300, 451, 3\)>' could not be resized and cropped for the model \(RuntimeError: "
               r"cannot allocate the resized picture\); replace or remove it$")
    with pytest.raises(ImageError, match=message):
        prepare_image(chelsea, SMALL)


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
