"""Probes (audit.measure.probes): stamps, where they go, what they cover, and what they move."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from audit import load_model, prepare_image
from audit.measure.probes import (
    ProbeError,
    attraction,
    attraction_values,
    parse_probe,
    place,
    probe_image,
    stamp,
    stamp_region,
)
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images


def test_builtin_square_is_an_opaque_square_of_its_colour():
    probe = parse_probe("square:red:3@bottom-right")
    assert probe.size == (3, 3) and probe.where == "bottom-right" and probe.name == "square:red:3"
    assert np.array_equal(probe.rgba[0, 0], [1.0, 0.0, 0.0, 1.0])
    assert parse_probe("square:#00ff80:2").rgba[1, 1, :3].tolist() == [0.0, 1.0, 128 / 255]


def test_text_stamp_is_white_on_black():
    probe = parse_probe("text:AB")
    h, w = probe.size
    assert 3 <= h <= 30 and w > h / 2 and probe.where == "top-left"
    colours = probe.rgba[..., 0]
    assert colours.max() > 0.9 and colours.min() == 0.0 and (probe.rgba[..., 3] == 1).all()


def test_stamp_file_keeps_its_alpha(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :3, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    probe = parse_probe(f"{tmp_path / 'logo.png'}@0.5,0.25")
    assert probe.size == (4, 6) and probe.where == "0.5,0.25" and probe.name == "logo.png"
    pixel = torch.zeros(3, 16, 16)
    top, left = place(probe, (16, 16))
    assert (top, left) == (4, 8)
    out = stamp(pixel, probe, top, left)
    assert out[0, 4:8, 8:11].eq(1).all() and out[0, 4:8, 11:14].eq(0).all() and out[1:].eq(0).all()
    region = stamp_region(probe, top, left, (16, 16), (4, 4), (4, 4))
    # the opaque 4x3 block lies in token (1, 2), which it covers by 12 of 16 pixels
    expected = np.zeros((4, 4))
    expected[1, 2] = 12 / 16
    assert np.allclose(region, expected)


def test_one_channel_models_get_the_luminance():
    probe = parse_probe("square:red:2")
    out = stamp(torch.zeros(1, 4, 4), probe, 0, 0)
    assert out[0, 0, 0].item() == pytest.approx(0.299)


@pytest.mark.parametrize("where, expected", [("top-left", (0, 0)), ("top-right", (0, 26)), ("bottom-left", (20, 0)),
                                             ("bottom-right", (20, 26)), ("center", (10, 13))])
def test_named_places(where, expected):
    assert place(parse_probe(f"square:white:4@{where}"), (24, 30)) == expected


def test_random_place_is_seeded_per_image_and_inside():
    probe = parse_probe("square:white:4@random")
    spots = {place(probe, (28, 28), seed=0, image=f"img{i}") for i in range(20)}
    assert len(spots) > 5 and all(0 <= t <= 24 and 0 <= left <= 24 for t, left in spots)
    assert place(probe, (28, 28), 0, "a") == place(probe, (28, 28), 0, "a")
    assert place(probe, (28, 28), 0, "a") != place(probe, (28, 28), 1, "a") or \
        place(probe, (28, 28), 0, "b") != place(probe, (28, 28), 1, "b")


@pytest.mark.parametrize("spec, words", [
    ("square:white:40", "larger than the model's input"),
    ("square:white:4@0.9,0.1", "reaches outside"),
])
def test_a_stamp_that_does_not_fit_is_one_line(spec, words):
    with pytest.raises(ProbeError, match=words) as err:
        place(parse_probe(spec), (28, 28))
    assert "\n" not in str(err.value) and spec in str(err.value)


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), ("square:pink:4", "colour 'pink'"), ("square:white:0", "not a positive whole number"),
    ("square:white", "square:COLOR:SIZE"), ("square:white:4@middle", "place 'middle'"),
    ("square:white:4@1.5,0", "place '1.5,0'"), ("missing.png", "does not exist"),
])
def test_bad_probes_are_one_line(spec, words):
    with pytest.raises(ProbeError, match=words) as err:
        parse_probe(spec)
    assert "\n" not in str(err.value)


def test_unreadable_stamp_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ProbeError, match="not a readable image"):
        parse_probe(str(bad))


def test_attraction_by_hand():
    # clean top-1: 0 0 1 1 2; stamped: 2 0 2 1 2. Class 2: of the 4 images not clean-2, 2 moved to 2 -> 0.5.
    result = attraction([0, 0, 1, 1, 2], [2, 0, 2, 1, 2], 3)
    assert result["A"] == [0.0, 0.0, 0.5] and result["max"] == 0.5 and result["argmax"] == 2
    assert result["flip_rate"] == pytest.approx(0.4) and result["eligible"] == [3, 3, 4]
    fast = attraction_values(np.array([0, 0, 1, 1, 2]), np.array([2, 0, 2, 1, 2]), 3)
    assert fast.tolist() == result["A"]


def test_attraction_of_a_class_every_image_predicts_is_undefined():
    assert attraction([1, 1], [1, 0], 2)["A"] == [0.5, None]
    assert np.isnan(attraction_values(np.array([1, 1]), np.array([1, 0]), 2)[1])


def test_probe_image_on_the_embedded_model():
    loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())
    path = sorted(embedded_images().glob("*.png"))[0]
    prepared = prepare_image(path, loaded.data_config)
    probe = parse_probe("square:white:4@top-left")
    with torch.no_grad():
        clean = int(loaded.model(((prepared.pixel - 0.286) / 0.353)[None]).argmax())
    record = probe_image(loaded, prepared, probe, [("grad", "0"), ("chefer", "encoder")], clean)
    assert record["at"] == [0, 0] and record["area"] == pytest.approx(1 / 49)
    assert set(record["mass"]) == {"grad@0", "chefer@encoder"}
    assert all(m is None or 0.0 <= m <= 1.0 for m in record["mass"].values())
    assert np.asarray(record["grids"]["grad@0"]).shape == (7, 7)
    assert record["figure"].startswith("data:image/png;base64,")
    assert 0.0 <= record["stamped_prob"] <= 1.0 and record["flipped"] == (record["stamped_class"] != clean)
    # a stamp that covers the whole input puts all of a map's positive relevance on it
    full = probe_image(loaded, prepared, parse_probe("square:gray:28"), [("grad", "0")], clean)
    assert full["area"] == 1.0 and full["mass"]["grad@0"] in (None, pytest.approx(1.0))
