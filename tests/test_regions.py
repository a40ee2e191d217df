"""audit.run.regions: annotated regions read in every format and mapped onto the token grid exactly as the model sees
them.

The geometry is checked against the real preprocessing: a shape is drawn into a picture, the picture goes through
:func:`audit.model.images.prepare_image`, and the tokens the drawn shape lands on must be the tokens
:func:`audit.run.region_geometry.token_regions` finds for the annotation alone.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from timm.data import create_transform

from audit.errors import AuditError
from audit.model.images import prepare_image
from audit.run.region_geometry import input_geometry, region_picture, token_regions
from audit.run.regions import ImageRegions, ImageRegionsError, RegionsError, Shape, load_regions

# Data configs of every resize and crop prepare_image knows: timm's eval transform in its three crop modes (a
# non-square input among them) and Hugging Face processors (resize only; resize then center crop, both backends).
CONFIGS = {
    "center_0.875": {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"},
    "center_0.9": {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.9, "crop_mode": "center"},
    "center_160x224": {"input_size": (3, 160, 224), "interpolation": "bilinear", "crop_pct": 0.9,
                       "crop_mode": "center"},
    "squash": {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.95, "crop_mode": "squash"},
    "border": {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "border"},
    "hf_resize": {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "none",
                  "resize": (224, 224), "resize_backend": "torchvision"},
    "hf_resize_crop": {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 224 / 256,
                       "crop_mode": "center", "resize": (256, 256), "resize_backend": "torchvision"},
    "hf_resize_crop_pil": {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 224 / 256,
                           "crop_mode": "center", "resize": (256, 256), "resize_backend": "pil"},
}
TIMM = [name for name, config in CONFIGS.items() if "resize" not in config]
PATCH = (16, 16)
WIDTH, HEIGHT = 333, 250  # the stored picture of the geometry tests
BOX = (39, 31, 171, 141)  # x0, y0, x1, y1: no token of any config holds close to half of it
BRIGHT = 0.7  # the noise stays below 100 / 255, the drawn shapes are 255


def identity(width: int, height: int) -> dict:
    """A data config that leaves a width x height picture as it is: with patch (1, 1), tokens are pixels."""
    return {"input_size": (3, height, width), "interpolation": "bilinear", "crop_mode": "none",
            "resize": (height, width)}


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 picture: dark noise, below 100."""
    return np.random.default_rng(seed).integers(0, 100, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, orientation: int | None = None) -> Path:
    """Write a PNG, with an EXIF Orientation where given."""
    picture = Image.fromarray(array)
    if orientation is None:
        picture.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture.save(path, exif=exif)
    return path


def grid_of(config: dict) -> tuple[int, int]:
    return config["input_size"][1] // PATCH[0], config["input_size"][2] // PATCH[1]


def background_of(path: Path) -> Path:
    return path.with_name(f"{path.stem}.background.png")


def save_drawn(path: Path, background: np.ndarray, drawn: np.ndarray, orientation: int | None = None) -> Path:
    """Write a picture with shapes drawn white and, beside it, its background alone (same EXIF Orientation)."""
    save(background_of(path), background, orientation)
    return save(path, drawn, orientation)


def drawn_fractions(path: Path, config: dict) -> np.ndarray:
    """How much of each token the white shapes cover in the picture the model gets.

    Resizing mixes pixels linearly, so each pixel of the model's picture is its background's value (the background
    prepared alike) mixed with white: its share of white, ``(v - n) / (1 - n)``, is how much of it the shapes cover.
    """
    drawn = prepare_image(path, config).pixel.numpy()
    under = prepare_image(background_of(path), config).pixel.numpy()
    share = np.clip((drawn - under) / (1 - under), 0, 1).min(axis=0)  # a coloured pixel is not white
    gh, gw = grid_of(config)
    return share.reshape(gh, PATCH[0], gw, PATCH[1]).mean(axis=(1, 3))


def assert_lands_as_drawn(path: Path, regions: ImageRegions, config: dict) -> None:
    """The tokens the drawn shape lands on are those token_regions finds for its annotation."""
    drawn = drawn_fractions(path, config)
    found = token_regions(regions, path, config, grid_of(config), PATCH)
    assert found.object.shape == drawn.shape and found.object.dtype == np.float64
    np.testing.assert_allclose(found.object, drawn, atol=0.03, rtol=0)
    np.testing.assert_array_equal(found.object > 0.5, drawn > 0.5)
    assert drawn.max() == 1.0 and (drawn == 0).any()  # the shape is in the crop, and not everywhere


def write_coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    categories = categories if categories is not None else [{"id": 1, "name": "cat"}, {"id": 2, "name": "logo"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def one_box_coco(path: Path, file_name: str, size: tuple[int, int], box: tuple[float, ...]) -> Path:
    x0, y0, x1, y1 = box
    return write_coco(path, [{"id": 1, "file_name": file_name, "width": size[0], "height": size[1]}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}])


def pixels(regions: ImageRegions, path: Path, width: int, height: int):
    """token_regions with one token per pixel of an unchanged picture."""
    return token_regions(regions, path, identity(width, height), (height, width), (1, 1))


def quoted(path: Path) -> str:
    return re.escape(repr(str(path)))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def boxed_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The stored 333x250 background, and the picture with BOX drawn white on it."""
    background = noise(WIDTH, HEIGHT)
    drawn = background.copy()
    x0, y0, x1, y1 = BOX
    drawn[y0:y1, x0:x1] = 255
    return background, drawn


@pytest.fixture
def boxed(tmp_path) -> Path:
    return save_drawn(tmp_path / "boxed.png", *boxed_arrays())


# --- geometry --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIMM)
@pytest.mark.parametrize("size", [(333, 250), (250, 333), (97, 61), (61, 97), (1001, 13), (255, 257)])
def test_geometry_is_timms_resize_and_crop_to_the_pixel(name, size):
    config = CONFIGS[name]
    picture = Image.fromarray(noise(*size, seed=size[0]))
    geometry = input_geometry(size, config)
    resized = create_transform(**config, is_training=False, normalize=False).transforms[0](picture)

    assert geometry.resized == resized.size
    assert (geometry.scale_x, geometry.scale_y) == (resized.size[0] / size[0], resized.size[1] / size[1])
    # the model input is the resized picture shifted by the offsets (padding where they are negative)
    out = prepare_image(np.asarray(picture), config).pixel.numpy()
    before = np.asarray(resized).transpose(2, 0, 1).astype(np.float32) / 255
    rows, cols = np.arange(geometry.height) + int(geometry.offset_y), np.arange(geometry.width) + int(geometry.offset_x)
    keep_r, keep_c = (rows >= 0) & (rows < before.shape[1]), (cols >= 0) & (cols < before.shape[2])
    np.testing.assert_array_equal(out[:, keep_r][:, :, keep_c], before[:, rows[keep_r]][:, :, cols[keep_c]])
    assert (keep_r.all() and keep_c.all()) or name == "border"


@pytest.mark.parametrize("name", ["hf_resize_crop", "hf_resize_crop_pil"])
def test_geometry_of_a_processor_crop_is_the_floor_of_half_the_difference(name):
    config = {**CONFIGS[name], "resize": (257, 259)}
    picture = noise(97, 61)
    geometry = input_geometry((97, 61), config)
    whole = prepare_image(picture, {**config, "input_size": (3, 257, 259), "crop_mode": "none"}).pixel
    cropped = prepare_image(picture, config).pixel

    assert (geometry.offset_x, geometry.offset_y, geometry.resized) == (17, 16, (259, 257))
    np.testing.assert_array_equal(cropped.numpy(), whole[:, 16:240, 17:241].numpy())


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("size, spot", [((333, 251), (150, 137)), ((97, 61), (51, 28)), ((61, 97), (27, 53))])
def test_a_bright_pixel_lands_where_the_geometry_says(name, size, spot):
    config = {**CONFIGS[name], "interpolation": "bilinear"}
    array = np.zeros((size[1], size[0], 3), np.uint8)
    background = prepare_image(array, config).pixel.numpy().mean(axis=0)  # border pads with the mean colour
    array[spot[1], spot[0]] = 255
    gray = prepare_image(array, config).pixel.numpy().mean(axis=0) - background
    rows, cols = np.indices(gray.shape)
    centroid = ((gray * (cols + 0.5)).sum() / gray.sum(), (gray * (rows + 0.5)).sum() / gray.sum())

    expected = input_geometry(size, config).to_input(spot[0] + 0.5, spot[1] + 0.5)

    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_geometry_maps_back_and_forth():
    geometry = input_geometry((333, 250), CONFIGS["center_0.875"])
    x, y = geometry.to_original(*geometry.to_input(np.array([0.0, 100.5, 333.0]), np.array([0.0, 7.25, 250.0])))
    np.testing.assert_allclose(x, [0.0, 100.5, 333.0])
    np.testing.assert_allclose(y, [0.0, 7.25, 250.0])
    # shorter side 250 -> floor(224 / 0.875) = 256, longer int(256 * 333 / 250) = 340, crop corner round(58 / 2)
    assert (geometry.resized, geometry.offset_x, geometry.offset_y) == ((340, 256), 58, 16)


# --- the drawn picture and the annotation agree, token by token ----------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_drawn_box_lands_on_the_tokens_its_annotation_gives(tmp_path, boxed, name):
    path = tmp_path / "boxes.csv"
    path.write_text("file,x0,y0,x1,y1\nboxed.png,{},{},{},{}\n".format(*BOX))
    regions = load_regions(path).for_image(boxed)

    assert_lands_as_drawn(boxed, regions, CONFIGS[name])


POLYGON = [(60, 32), (239, 39), (251, 197), (166, 131), (63, 195)]  # concave


@pytest.mark.parametrize("name", ["center_0.875", "border", "hf_resize_crop"])
def test_a_drawn_polygon_lands_on_the_tokens_its_annotation_gives(tmp_path, name):
    fine = 8  # drawn 8x larger and averaged down: each pixel holds its share of the polygon
    canvas = Image.new("L", (WIDTH * fine, HEIGHT * fine))
    ImageDraw.Draw(canvas).polygon([(x * fine, y * fine) for x, y in POLYGON], fill=255)
    cover = np.asarray(canvas, np.float64).reshape(HEIGHT, fine, WIDTH, fine).mean(axis=(1, 3))[..., None] / 255
    background = noise(WIDTH, HEIGHT)
    path = save_drawn(tmp_path / "polygon.png", background,
                      np.rint(background * (1 - cover) + 255 * cover).astype(np.uint8))
    coco = write_coco(tmp_path / "instances.json", [{"id": 7, "file_name": "polygon.png", "width": WIDTH,
                                                     "height": HEIGHT}],
                      [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0,
                        "segmentation": [[v for point in POLYGON for v in point]]}])

    assert_lands_as_drawn(path, load_regions(coco).for_image(path), CONFIGS[name])


@pytest.mark.parametrize("name", ["center_0.9", "squash", "hf_resize"])
def test_a_mask_lands_on_the_tokens_the_masked_pixels_do(tmp_path, name):
    rows, cols = np.indices((HEIGHT, WIDTH))
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[((cols - 141) / 90) ** 2 + ((rows - 125) / 51) ** 2 < 1] = 3
    mask[200:, :150] = 255  # void, drawn red
    background = noise(WIDTH, HEIGHT)
    array = background.copy()
    array[mask == 3] = 255
    array[mask == 255] = (255, 0, 0)
    (tmp_path / "masks").mkdir()
    save(tmp_path / "masks" / "scene.png", mask)
    image = save_drawn(tmp_path / "scene.png", background, array)
    config = CONFIGS[name]
    regions = load_regions(tmp_path / "masks").for_image(image)

    assert_lands_as_drawn(image, regions, config)
    pixel = prepare_image(image, config).pixel.numpy()
    red = (pixel[0] > BRIGHT) & (pixel[1] < 0.3)
    gh, gw = grid_of(config)
    found = token_regions(regions, image, config, (gh, gw), PATCH)
    np.testing.assert_allclose(found.void, red.reshape(gh, 16, gw, 16).mean(axis=(1, 3)), atol=0.08, rtol=0)
    assert found.labels == ["3"] and not found.artefact.any()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_annotations_in_stored_pixels_turn_upright_with_the_picture(tmp_path, orientation):
    image = save_drawn(tmp_path / "turned.png", *boxed_arrays(), orientation)
    coco = one_box_coco(tmp_path / "instances.json", "turned.png", (WIDTH, HEIGHT), BOX)
    regions = load_regions(coco).for_image(image)

    assert_lands_as_drawn(image, regions, CONFIGS["center_0.9"])
    notes = token_regions(regions, image, CONFIGS["center_0.9"], (14, 14), PATCH).notes
    assert any("EXIF orientation 6" in note for note in notes) == (orientation == 6)


def test_annotations_recorded_at_the_upright_size_are_already_upright(tmp_path, boxed):
    image = save_drawn(tmp_path / "turned.png", *boxed_arrays(), 6)
    upright = np.asarray(Image.open(boxed).transpose(Image.Transpose.ROTATE_270))  # what exif_transpose makes of it
    rows, cols = np.nonzero(upright.min(axis=2) == 255)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    coco = one_box_coco(tmp_path / "instances.json", "turned.png", (HEIGHT, WIDTH), box)

    assert_lands_as_drawn(image, load_regions(coco).for_image(image), CONFIGS["hf_resize_crop"])


def test_a_recorded_size_that_fits_neither_way_fails_that_image_alone(tmp_path, boxed):
    coco = one_box_coco(tmp_path / "instances.json", "boxed.png", (300, 200), BOX)
    regions = load_regions(coco).for_image(boxed)

    with pytest.raises(ImageRegionsError, match=quoted(boxed)) as err:
        token_regions(regions, boxed, CONFIGS["squash"], (14, 14), PATCH)
    assert isinstance(err.value, AuditError) and isinstance(err.value, ValueError)
    assert "300x200" in one_line(err) and "333x250" in str(err.value)


def test_border_padding_belongs_to_no_region(tmp_path, boxed):
    regions = ImageRegions("boxed.png", "test", None, (Shape("whole", "object", "row 2", box=(0, 0, WIDTH, HEIGHT)),))
    found = token_regions(regions, boxed, CONFIGS["border"], (14, 14), PATCH)

    # 333x250 -> 224x168 and 28 rows of padding above and below: 1.75 token rows each
    np.testing.assert_array_equal(found.object[:, 0], [0, 0.25] + [1] * 10 + [0.25, 0])
    assert (found.object == found.object[:, :1]).all()


def test_region_picture_is_the_majority_of_each_pixels_samples(tmp_path, boxed):
    regions = ImageRegions("boxed.png", "test", None, (Shape("cat", "object", "row 2", box=BOX),
                                                        Shape("logo", "artefact", "row 3", box=(0, 0, 20, 20))))
    config = CONFIGS["center_0.875"]
    picture = region_picture(regions, boxed, config)
    bright = prepare_image(boxed, config).pixel.numpy().min(axis=0) > BRIGHT

    assert picture.object.shape == picture.artefact.shape == picture.void.shape == (224, 224)
    assert picture.object.dtype == bool and not picture.void.any()
    assert (picture.object != bright).mean() < 0.01
    assert not picture.artefact.any()  # the corner is cropped away
    tokens = token_regions(regions, boxed, config, (14, 14), PATCH)
    np.testing.assert_allclose(picture.object.reshape(14, 16, 14, 16).mean(axis=(1, 3)), tokens.object, atol=0.07)


def test_the_grid_must_cover_the_models_input(boxed):
    regions = ImageRegions("boxed.png", "test", None, (Shape("cat", "object", "row 2", box=BOX),))
    with pytest.raises(ValueError, match="224x224"):
        token_regions(regions, boxed, CONFIGS["squash"], (14, 14), (14, 14))


# --- formats ---------------------------------------------------------------------------------------------------


def test_coco_boxes_and_polygons_are_read_and_matched_by_name_or_stem(tmp_path):
    images = [{"id": 1, "file_name": "train/a.jpg", "width": 12, "height": 10},
              {"id": 2, "file_name": "b.png", "width": 12, "height": 10},
              {"id": 3, "file_name": "bare.png", "width": 12, "height": 10}]
    annotations = [{"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 3, 4, 5]},
                   {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 0, 12, 10], "segmentation": [],
                    "iscrowd": 0},
                   {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 12, 10],
                    "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4], [8, 6, 11, 6, 11, 9]]}]
    coco = write_coco(tmp_path / "instances.json", images, annotations)
    regions = load_regions(coco, roles={"logo": "artefact"})

    assert regions.format == "coco" and len(regions) == 3 and regions.notes == []
    a = regions.for_image("/data/train/a.jpg")
    assert a is regions.for_image("elsewhere/a.png")  # by stem
    assert [(s.label, s.role, s.box) for s in a.shapes] == [("cat", "object", (2, 3, 6, 8)),
                                                            ("logo", "artefact", (0, 0, 12, 10))]
    assert a.size == (12, 10) and a.labels == ["cat", "logo"]
    assert regions.for_image("c.png") is None
    assert regions.for_image("bare.png").shapes == ()

    image = save(tmp_path / "b.png", noise(12, 10))
    found = pixels(regions.for_image(image), image, 12, 10)
    square = np.zeros((10, 12))
    square[1:4, 1:5] = 1
    np.testing.assert_array_equal(found.object[:6], square[:6])
    triangle = found.object[6:9, 8:11]  # (8, 6) (11, 6) (11, 9): above the diagonal, the diagonal pixels cut
    np.testing.assert_array_equal(np.triu(triangle, 1), np.triu(np.ones((3, 3)), 1))
    assert not np.tril(triangle, -1).any() and (0.3 < np.diag(triangle)).all() and (np.diag(triangle) < 0.7).all()
    assert found.object[6:, :8].sum() == 0 and found.object[9].sum() == 0
    assert found.labels == ["cat"] and not found.artefact.any() and not found.void.any()
    bare = save(tmp_path / "bare.png", noise(12, 10))
    assert "no object region annotated" in pixels(regions.for_image(bare), bare, 12, 10).notes


def test_polygons_fill_by_the_even_odd_rule(tmp_path):
    star = [(10, 0), (16, 19), (0, 7), (20, 7), (4, 19)]  # a pentagram: its centre is outside, even-odd
    regions = ImageRegions("star.png", "test", (20, 20), (Shape("star", "object", "annotation 1",
                                                                 polygons=(tuple(v for p in star for v in p),)),))
    image = save(tmp_path / "star.png", noise(20, 20))
    found = pixels(regions, image, 20, 20)

    assert found.object[11, 10] == 0  # the centre: inside two of the star's triangles
    assert found.object[3, 10] == found.object[7, 4] == found.object[7, 15] == 1  # the arms
    assert found.object[0, 0] == found.object[18, 10] == 0


@pytest.mark.peer
def test_coco_rle_masks_are_decoded_with_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    mask[3, 0] = True
    flat = mask.flatten(order="F")  # COCO RLE runs go down the columns, starting with a run of zeros
    edges = np.flatnonzero(np.diff(np.r_[False, flat, False].astype(int))) if flat.any() else []
    counts = np.diff(np.r_[0, edges, flat.size]).tolist()
    coco = write_coco(tmp_path / "instances.json", [{"id": 1, "file_name": "m.png", "width": 6, "height": 4}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 1, 5, 3],
                        "segmentation": {"counts": counts, "size": [4, 6]}}])
    image = save(tmp_path / "m.png", noise(6, 4))

    np.testing.assert_array_equal(pixels(load_regions(coco).for_image(image), image, 6, 4).object, mask)


def test_coco_rle_without_pycocotools_is_one_line_asking_for_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools fails, as where it is missing
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    coco = write_coco(tmp_path / "instances.json", [{"id": 1, "file_name": "m.png", "width": 6, "height": 4}],
                      [{"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 6, 4],
                        "segmentation": {"counts": "04", "size": [4, 6]}}])

    with pytest.raises(RegionsError, match=quoted(coco)) as err:
        load_regions(coco)
    assert "pip install pycocotools" in one_line(err) and "annotation 5" in str(err.value)


def test_voc_boxes_are_one_based_and_inclusive(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "scene.xml").write_text(
        "<annotation><folder>VOC</folder><filename>scene.jpg</filename>"
        "<size><width>12</width><height>10</height><depth>3</depth></size>"
        "<object><name>dog</name><difficult>0</difficult>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>4</xmax><ymax>2</ymax></bndbox></object>"
        "<object><name>watermark</name><bndbox><xmin>10</xmin><ymin>8</ymin><xmax>12</xmax><ymax>10</ymax></bndbox>"
        "</object></annotation>")
    regions = load_regions(tmp_path / "Annotations", roles={"watermark": "artefact"})
    image = save(tmp_path / "scene.png", noise(12, 10))
    entry = regions.for_image(image)

    assert regions.format == "voc" and entry.size == (12, 10) and entry.name == "scene.jpg"
    assert [s.box for s in entry.shapes] == [(0, 1, 4, 2), (9, 7, 12, 10)]  # pixels 1..4 are [0, 4)
    found = pixels(entry, image, 12, 10)
    assert found.object.sum() == 4 and found.object[1, :4].all()
    assert found.artefact.sum() == 9 and found.artefact[7:, 9:].all()
    assert found.labels == ["dog", "watermark"] and found.notes == []


def test_png_masks_give_labels_void_and_background(tmp_path):
    (tmp_path / "masks").mkdir()
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 3
    mask[7:, :4] = 255
    mask[8:, 8:] = 7
    save(tmp_path / "masks" / "scene.png", mask)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "masks" / "empty.png")
    void_only = np.full((10, 12), 255, np.uint8)
    void_only[0, 0] = 0
    save(tmp_path / "masks" / "void.png", void_only)
    regions = load_regions(tmp_path / "masks", roles={"7": "artefact"})
    image = save(tmp_path / "scene.jpg", noise(12, 10))

    assert regions.format == "masks" and len(regions) == 3
    found = pixels(regions.for_image(image), image, 12, 10)  # matched by stem
    np.testing.assert_array_equal(found.object, mask == 3)
    np.testing.assert_array_equal(found.artefact, mask == 7)
    np.testing.assert_array_equal(found.void, mask == 255)
    assert found.labels == ["3", "7"] and found.has_object
    for name in ("empty", "void"):
        blank = save(tmp_path / f"{name}.png", noise(12, 10))
        found = pixels(regions.for_image(blank), blank, 12, 10)
        assert not found.has_object and not found.object.any()
        assert any("no object region" in note for note in found.notes)
    assert found.void.sum() == 119


def test_csv_boxes_with_and_without_labels(tmp_path):
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("file,x0,y0,x1,y1,label\nphotos/a.png,1,1,3.5,2,cat\nphotos/a.png,0,8,12,10,logo\n"
                        "b.png,0,0,2,2,\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("\ufefffile, x0 ,y0,x1,y1\n\na.png,1,1,3.5,2\n")
    image = save(tmp_path / "a.png", noise(12, 10))

    regions = load_regions(labelled, roles={"logo": "artefact"})
    assert regions.format == "csv" and len(regions) == 2
    assert [(s.label, s.role, s.where) for s in regions.for_image(image).shapes] == [
        ("cat", "object", "row 2"), ("logo", "artefact", "row 3")]
    assert regions.for_image("b.png").shapes[0].label == "object"
    found = pixels(regions.for_image(image), image, 12, 10)
    np.testing.assert_array_equal(found.object[1], [0, 1, 1, 0.5] + [0] * 8)
    assert found.object.sum() == 2.5 and found.artefact.sum() == 24

    found = pixels(load_regions(plain).for_image(image), image, 12, 10)
    assert found.labels == ["object"] and found.object.sum() == 2.5


def test_boxes_partly_outside_are_clipped_and_noted(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,x0,y0,x1,y1\na.png,-5,-5,2,2\na.png,10,8,15,20\na.png,4,4,6,6\n")
    image = save(tmp_path / "a.png", noise(12, 10))
    found = pixels(load_regions(path).for_image(image), image, 12, 10)

    assert found.object.sum() == 4 + 4 + 4
    assert found.notes == ["2 box(es) partly outside the image were clipped"]


@pytest.mark.parametrize("row, problem", [("3,3,3,5", "row 2 .* is an empty box"),
                                          ("5,1,2,4", "row 2 .* is an empty box"),
                                          ("12,0,20,5", "row 2 .* wholly outside the 12x10 picture")])
def test_a_degenerate_or_outside_box_fails_that_image_alone(tmp_path, row, problem):
    path = tmp_path / "boxes.csv"
    path.write_text(f"file,x0,y0,x1,y1\na.png,{row}\n")
    image = save(tmp_path / "a.png", noise(12, 10))
    regions = load_regions(path).for_image(image)

    with pytest.raises(ImageRegionsError, match=problem) as err:
        pixels(regions, image, 12, 10)
    assert repr(str(image)) in one_line(err) and repr(str(path)) in str(err.value)


def test_a_polygon_of_two_points_fails_that_image_alone(tmp_path):
    coco = write_coco(tmp_path / "instances.json", [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
                      [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                        "segmentation": [[1, 1, 3, 3]]}])
    image = save(tmp_path / "a.png", noise(12, 10))

    with pytest.raises(ImageRegionsError, match="annotation 4 .* fewer than 3 points") as err:
        pixels(load_regions(coco).for_image(image), image, 12, 10)
    one_line(err)


def test_an_object_cropped_away_is_no_object_region(tmp_path, boxed):
    regions = ImageRegions("boxed.png", "test", None, (Shape("cat", "object", "row 2", box=(0, 0, 20, 20)),))
    found = token_regions(regions, boxed, CONFIGS["center_0.875"], (14, 14), PATCH)
    assert not found.has_object and any("outside the model's input crop" in note for note in found.notes)


def test_same_names_in_different_folders_are_told_apart_by_the_folders(tmp_path):
    images = [{"id": i, "file_name": f"{folder}/x.jpg", "width": 12, "height": 10}
              for i, folder in enumerate(("a", "b"), 1)]
    regions = load_regions(write_coco(tmp_path / "instances.json", images, []))

    assert regions.for_image("/data/b/x.jpg").name == "b/x.jpg"
    assert regions.for_image("/data/a/x.png").name == "a/x.jpg"
    with pytest.raises(ImageRegionsError, match="2 annotations") as err:
        regions.for_image("/data/c/x.jpg")
    one_line(err)


def test_roles_are_object_or_artefact():
    with pytest.raises(ValueError, match="'logo'.*'watermark'"):
        load_regions("anything.csv", roles={"cat": "object", "logo": "watermark"})


def test_roles_naming_unused_labels_are_noted(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,x0,y0,x1,y1,label\na.png,0,0,2,2,cat\n")
    assert load_regions(path, roles={"logo": "artefact"}).notes == [
        f"roles name label(s) 'logo' that no annotation in {str(path)!r} uses"]


def _mixed_folder(root: Path) -> Path:
    folder = root / "mixed"
    folder.mkdir()
    (folder / "a.xml").write_text("<annotation/>")
    save(folder / "a.png", np.zeros((2, 2), np.uint8))
    return folder


def _rgb_mask(root: Path) -> Path:
    folder = root / "masks"
    folder.mkdir()
    save(folder / "a.png", np.zeros((2, 2, 3), np.uint8))
    return folder / "a.png"


MALFORMED = {
    "bad_json": (lambda d: d / "r.json", "{not json", "is not valid JSON"),
    "no_coco_keys": (lambda d: d / "r.json", '{"images": []}', "not a COCO instances file"),
    "unknown_image_id": (lambda d: d / "r.json", json.dumps({"images": [], "categories": [{"id": 1, "name": "c"}],
                                                             "annotations": [{"id": 5, "image_id": 9, "category_id": 1,
                                                                              "bbox": [0, 0, 1, 1]}]}),
                         "annotation 5 names image_id 9"),
    "bad_bbox": (lambda d: d / "r.json", json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 2,
                                                                 "height": 2}], "categories": [{"id": 1, "name": "c"}],
                                                     "annotations": [{"image_id": 1, "category_id": 1,
                                                                      "bbox": [0, "x", 1, 1]}]}),
                 r"annotations\[0\] has a bbox value 'x'"),
    "csv_not_a_number": (lambda d: d / "r.csv", "file,x0,y0,x1,y1\na.png,0,0,1,1\n\nb.png,0,0,abc,1\n",
                         "row 4 has x1 'abc', not a finite number"),
    "csv_no_header": (lambda d: d / "r.csv", "a.png,0,0,1,1\n", "the header lacks file, x0, y0, x1, y1"),
    "csv_short_row": (lambda d: d / "r.csv", "file,x0,y0,x1,y1\na.png,0,0,1\n", "row 2 has 4 fields"),
    "csv_empty": (lambda d: d / "r.csv", "", "is empty"),
    "unknown_suffix": (lambda d: d / "r.txt", "file,x0,y0,x1,y1\n", "unknown format"),
    "missing": (lambda d: d / "nowhere.json", None, "does not exist"),
    "bad_xml": (lambda d: d / "r.xml", "<annotation><object>", "is not valid XML"),
    "not_voc": (lambda d: d / "r.xml", "<svg/>", "not a Pascal VOC annotation"),
    "voc_no_box": (lambda d: d / "r.xml", "<annotation><object><name>dog</name></object></annotation>",
                   "object 1 lacks a <bndbox>"),
    "voc_bad_number": (lambda d: d / "r.xml", "<annotation><object><name>dog</name><bndbox><xmin>1</xmin>"
                                              "<ymin>1</ymin><xmax>nan</xmax><ymax>3</ymax></bndbox></object>"
                                              "</annotation>", "object 1 has xmax 'nan'"),
    "mixed_folder": (_mixed_folder, None, r"both \.xml \(1\) and \.png \(1\) files"),
    "empty_folder": (lambda d: (d / "none").mkdir() or d / "none", None, r"holds no \.xml or \.png files"),
    "rgb_mask": (_rgb_mask, None, "is a RGB image, not a label mask"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_regions_are_one_line_errors_naming_the_file(tmp_path, case):
    make, content, problem = MALFORMED[case]
    named = make(tmp_path)
    if content is not None:
        named.write_text(content)
    given = named.parent if case == "rgb_mask" else named

    with pytest.raises(RegionsError, match=problem) as err:
        load_regions(given)
    assert isinstance(err.value, AuditError) and isinstance(err.value, ValueError)
    assert repr(str(named)) in one_line(err)



def test_an_image_that_cannot_be_read_fails_alone(tmp_path):
    regions = ImageRegions("gone.png", "test", None, (Shape("cat", "object", "row 2", box=(0, 0, 2, 2)),))
    (tmp_path / "broken.png").write_bytes(b"not a picture")

    with pytest.raises(ImageRegionsError, match="does not exist") as err:
        pixels(regions, tmp_path / "gone.png", 12, 10)
    assert repr(str(tmp_path / "gone.png")) in one_line(err)
    with pytest.raises(ImageRegionsError, match="cannot be read") as err:
        pixels(regions, tmp_path / "broken.png", 12, 10)
    one_line(err)
