"""MoRF / LeRF curves (Figs. 10-13): the default recipe against an independent one-forward-per-image version."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from audit import PerturbationConfig, auc, faithfulness_curves
from audit.measure.curves import activation_bytes, auto_batch_size, pixel_ranks, removal_counts

from conftest import make_tiny
from reference import ref_auc, ref_curve

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def square():
    """A 32 x 32 model with patch 4 (8 x 8 grid): cheap enough for per-image reference forwards."""
    return make_tiny("square")


def _pixel(seed=0, size=32):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _curves(model, pixel, maps, target, **config):
    return faithfulness_curves(model, pixel, maps, target, MEAN, STD, patch=(4, 4), grid=(8, 8),
                               config=PerturbationConfig(**config))


@pytest.mark.parametrize("unit", ["pixel", "patch"])
def test_curves_match_the_reference(square, unit):
    pixel = _pixel()
    maps = {
        "grid": torch.randn(8, 8, generator=torch.Generator().manual_seed(1)),
        "coarse": torch.randn(3, 5, generator=torch.Generator().manual_seed(2)),  # another shape, resized
        "ties": torch.tensor([[0.0, 1.0] * 4] * 8),  # many ties: stable order decides
    }
    curves, shared = _curves(square, pixel, maps, target=2, unit=unit, batch_size=7)
    for key, values in maps.items():
        for order in ("morf", "lerf"):
            expected = ref_curve(square, pixel, MEAN, STD, values.numpy(), 2, order, unit=unit)
            got = getattr(curves[key], order)
            assert got.shape == (21,)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{key} {order}")
            assert getattr(curves[key], f"{order}_auc") == pytest.approx(ref_auc(expected), abs=1e-6)
    assert curves["grid"].morf[0] == shared["clean"] and curves["grid"].lerf[-1] == shared["removed"]


def test_fill_is_grey_in_pixel_space_then_normalised(square):
    """The fully removed image is grey (127/255 on every channel) after normalisation, not 127/255 normalised."""
    pixel = _pixel()
    _, shared = _curves(square, pixel, {"m": torch.randn(8, 8)}, target=0)
    grey = torch.full((1, 3, 32, 32), 127 / 255)
    with torch.no_grad():
        expected = square((grey - 0.5) / 0.5).softmax(-1)[0, 0].item()
    assert shared["removed"] == pytest.approx(expected, abs=1e-6)


def test_batch_size_does_not_change_the_curves(square):
    pixel = _pixel(3)
    maps = {f"m{i}": torch.randn(8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)}
    small, _ = _curves(square, pixel, maps, target=1, batch_size=5)
    large, _ = _curves(square, pixel, maps, target=1, batch_size=200)
    for key in maps:
        np.testing.assert_allclose(small[key].morf, large[key].morf, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(small[key].lerf, large[key].lerf, rtol=1e-5, atol=1e-7)


def test_identical_maps_share_one_evaluation(square):
    calls = []
    maps = {"a": torch.ones(8, 8).cumsum(0), "b": torch.ones(8, 8).cumsum(0), "c": torch.randn(8, 8)}
    curves, _ = faithfulness_curves(square, _pixel(), maps, 0, MEAN, STD, (4, 4), (8, 8),
                                    PerturbationConfig(batch_size=1000),
                                    progress=lambda done, total: calls.append(total))
    assert calls == [2 + 2 * 2 * 19]  # clean + removed, then 19 interior images per curve of 2 distinct maps
    np.testing.assert_array_equal(curves["a"].morf, curves["b"].morf)


def test_removal_counts_round_half_up_and_cover_everything():
    assert removal_counts(224 * 224, 20)[1] == 2509  # 2508.8
    assert removal_counts(10, 4) == [0, 3, 5, 8, 10]  # 2.5 -> 3, 7.5 -> 8
    assert removal_counts(196, 20)[-1] == 196


# Strictly increasing transforms (with float64 headroom for integer-valued maps in [-50, 50]).
TRANSFORMS = {
    "affine": lambda m: 3.0 * m - 7.0,
    "cube": lambda m: m ** 3 + m,
    "exp": lambda m: torch.exp(m / 10.0),
    "arctan": lambda m: torch.atan(m / 60.0),
}


@given(
    values=st.lists(st.integers(-50, 50), min_size=64, max_size=64),
    transform=st.sampled_from(sorted(TRANSFORMS)),
    order=st.sampled_from(["morf", "lerf"]),
    unit_and_size=st.sampled_from([("pixel", (32, 32)), ("patch", (8, 8))]),
)
def test_strictly_increasing_transform_keeps_the_removal_order(values, transform, order, unit_and_size):
    """Ranks are all the curves depend on; at the resolution that is ranked they survive any increasing map."""
    unit, shape = unit_and_size
    base = torch.tensor(values, dtype=torch.float64).reshape(8, 8)
    if unit == "pixel":  # a map already at input resolution: upsampling is the identity
        base = base.repeat_interleave(4, 0).repeat_interleave(4, 1)
    transformed = TRANSFORMS[transform](base)
    args = (order, (32, 32), (8, 8), (4, 4), unit)
    assert torch.equal(pixel_ranks(base, *args), pixel_ranks(transformed, *args))


@given(scale=st.sampled_from([0.25, 2.0, 1000.0]), shift=st.integers(-5, 5), seed=st.integers(0, 2 ** 16))
def test_positive_affine_transform_of_a_grid_map_keeps_the_pixel_order(scale, shift, seed):
    """Bilinear upsampling commutes with a*m + b (a > 0), so grid maps rank pixels the same after it."""
    grid_map = torch.randint(-20, 20, (8, 8), generator=torch.Generator().manual_seed(seed)).double()
    for order in ("morf", "lerf"):
        args = (order, (32, 32), (8, 8), (4, 4), "pixel")
        assert torch.equal(pixel_ranks(grid_map, *args), pixel_ranks(grid_map * scale + shift, *args))


def test_strictly_increasing_transform_leaves_both_curves_unchanged(square):
    pixel = _pixel(5)
    grid_map = torch.randint(-20, 20, (8, 8), generator=torch.Generator().manual_seed(4)).double()
    maps = {"raw": grid_map, "cube": grid_map ** 3 + grid_map, "exp": torch.exp(grid_map / 5)}
    curves, _ = _curves(square, pixel, maps, target=3, unit="patch")
    for key in ("cube", "exp"):
        np.testing.assert_array_equal(curves[key].morf, curves["raw"].morf)
        np.testing.assert_array_equal(curves[key].lerf, curves["raw"].lerf)


def test_auc_is_the_trapezoid_over_unit_interval():
    assert auc(np.ones(21)) == pytest.approx(1.0)
    assert auc(np.linspace(1, 0, 21)) == pytest.approx(0.5)
    assert auc(np.array([1.0, 0.0])) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps: expected a positive integer"),
    (dict(unit="superpixel"), "unit: expected one of"),
    (dict(fill=2.0), "fill: expected pixel values in \\[0, 1\\]"),
    (dict(batch_size=0), "batch_size: expected a positive integer"),
    (dict(amp="int8"), "amp: expected None"),
])
def test_bad_config_is_refused_with_the_argument_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PerturbationConfig(**kwargs)


class _Recorder(torch.nn.Module):
    """The model, keeping every batch it is given (normalised)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("recipe", ["black", "mean", "blur", "road"])
def test_every_perturbed_image_is_the_fill_recipe_of_its_mask(square, recipe):
    """Each image the model sees is fills.fill_image of the removal mask (road: noise seeded by the run's seed and
    the mask), normalised; kept pixels are the image's own."""
    from audit.measure.curves import road_seed
    from audit.measure.fills import fill_image

    pixel, values = _pixel(5), torch.randn(8, 8, generator=torch.Generator().manual_seed(6))
    recorder = _Recorder(square)
    curves, _ = faithfulness_curves(recorder, pixel, {"m": values}, 0, MEAN, STD, (4, 4), (8, 8),
                                    PerturbationConfig(steps=4, fill=recipe, batch_size=3), seed=11)
    seen = torch.cat(recorder.seen) * 0.5 + 0.5  # back to pixel space
    counts = removal_counts(32 * 32, 4)
    masks = [torch.zeros(32 * 32, dtype=torch.bool), torch.ones(32 * 32, dtype=torch.bool)]
    for order in ("morf", "lerf"):
        ranks = pixel_ranks(values, order, (32, 32), (8, 8), (4, 4))
        masks += [ranks < counts[k] for k in range(1, 4)]
    assert seen.shape[0] == len(masks) == 8
    for image, mask in zip(seen, masks):
        mask = mask.reshape(32, 32)
        generator = torch.Generator().manual_seed(road_seed(11, mask))
        expected = fill_image(pixel, mask, recipe, mean=MEAN, generator=generator, noise=0.01)
        torch.testing.assert_close(image, expected, atol=2e-6, rtol=0)  # to the rounding of (x - 0.5) / 0.5 and back
    if recipe == "road":  # the noise makes the removed pixels differ from a plain imputation
        plain = fill_image(pixel, masks[3].reshape(32, 32), "road", noise=0.0)
        assert float((seen[3] - plain).abs().max()) > 0.005


def test_the_road_fill_does_not_depend_on_batching_or_on_the_map(square):
    pixel = _pixel(7)
    first = torch.randn(8, 8, generator=torch.Generator().manual_seed(8))
    maps = {"a": first, "b": torch.randn(8, 8, generator=torch.Generator().manual_seed(9))}
    one, shared_one = faithfulness_curves(square, pixel, maps, 1, MEAN, STD, (4, 4), (8, 8),
                                          PerturbationConfig(steps=5, fill="road", batch_size=1), seed=3)
    many, shared_many = faithfulness_curves(square, pixel, {"a": first}, 1, MEAN, STD, (4, 4), (8, 8),
                                            PerturbationConfig(steps=5, fill="road", batch_size=64), seed=3)
    np.testing.assert_allclose(one["a"].morf, many["a"].morf, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one["a"].lerf, many["a"].lerf, rtol=1e-5, atol=1e-7)
    other, _ = faithfulness_curves(square, pixel, {"a": first}, 1, MEAN, STD, (4, 4), (8, 8),
                                   PerturbationConfig(steps=5, fill="road"), seed=4)
    assert not np.allclose(other["a"].morf[1:-1], one["a"].morf[1:-1], rtol=0, atol=1e-9)  # another seed


def test_fill_names_and_values():
    assert PerturbationConfig(fill="grey").fill == 127 / 255 and PerturbationConfig(fill="black").fill == 0.0
    assert PerturbationConfig(fill="road").describe()["fill"] == "road"
    with pytest.raises(ValueError, match="'purple' is not a pixel value in \\[0, 1\\] nor a recipe"):
        PerturbationConfig(fill="purple")


def test_the_top1_score_is_whether_the_top1_class_is_the_label(square):
    pixel, values = _pixel(2), torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    probs, _ = _curves(square, pixel, {"m": values}, target=1, steps=5)
    with torch.no_grad():
        top1 = int(square(((pixel - 0.5) / 0.5)[None]).argmax())
    right, shared = faithfulness_curves(square, pixel, {"m": values}, 1, MEAN, STD, (4, 4), (8, 8),
                                       PerturbationConfig(steps=5, score="top1"), label=top1)
    wrong, _ = faithfulness_curves(square, pixel, {"m": values}, 1, MEAN, STD, (4, 4), (8, 8),
                                   PerturbationConfig(steps=5, score="top1"), label=(top1 + 1) % 10)
    assert shared["clean"] == 1.0 and right["m"].morf[0] == 1.0 and wrong["m"].morf[0] == 0.0
    for curve in (right["m"].morf, right["m"].lerf, wrong["m"].lerf):
        assert set(np.unique(curve)) <= {0.0, 1.0}
    assert np.all(right["m"].morf + wrong["m"].morf <= 1.0)  # one label at most can be the top-1
    assert not np.array_equal(probs["m"].morf, right["m"].morf)
    with pytest.raises(ValueError, match="score: expected one of"):
        PerturbationConfig(score="accuracy")


def test_auto_batch_size_is_resolved_recorded_and_changes_no_curve(square):
    pixel = _pixel(5)
    maps = {f"m{i}": torch.randn(8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)}
    auto, shared = _curves(square, pixel, maps, target=3)  # the default: batch_size='auto'
    fixed, fixed_shared = _curves(square, pixel, maps, target=3, batch_size=3)
    assert PerturbationConfig().batch_size == "auto"
    assert shared["batch_size"] == auto_batch_size(square, (32, 32), torch.device("cpu")) == 64  # the CPU cap
    assert fixed_shared["batch_size"] == 3
    for key in maps:
        np.testing.assert_allclose(auto[key].morf, fixed[key].morf, rtol=1e-5, atol=1e-7)


def test_auto_batch_size_shrinks_with_the_input_and_the_memory_not_below_one():
    import timm

    base = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    gib = 1 << 30
    # ViT-B/16 at 224 px: about 13 MB per image, so a CPU's 1 GiB budget is capped at 64; at 384 px (577 tokens,
    # 58 MB per image) it holds 18: a larger input gets a smaller batch, not an out-of-memory error.
    assert activation_bytes(base, (384, 384)) > 4 * activation_bytes(base, (224, 224))
    assert auto_batch_size(base, (224, 224), cpu, free=64 * gib) == 64
    assert auto_batch_size(base, (384, 384), cpu, free=64 * gib) == gib // activation_bytes(base, (384, 384)) == 18
    assert auto_batch_size(base, (224, 224), cpu, free=gib) == (gib // 4) // activation_bytes(base, (224, 224))
    assert auto_batch_size(base, (384, 384), cpu, free=1000) == 1
    # CUDA: half of the free memory, up to 1024; bfloat16 halves the activations but not the attention scores
    per_image = activation_bytes(base, (224, 224))
    assert auto_batch_size(base, (224, 224), cuda, free=2 * gib) == gib // per_image
    assert auto_batch_size(base, (224, 224), cuda, free=200 * gib) == 1024
    assert activation_bytes(base, (224, 224), "bfloat16") < per_image
    # a forward and backward pass (Integrated Gradients) keeps every block: depth 1 here, 12 for timm's default
    assert auto_batch_size(base, (224, 224), cuda, free=2 * gib, backward=True) == gib // per_image


def test_a_batch_size_is_a_positive_integer_or_auto():
    for bad in (0, -1, 2.5, True, "64", "Auto"):
        with pytest.raises(ValueError, match="batch_size: expected a positive integer or 'auto'"):
            PerturbationConfig(batch_size=bad)
