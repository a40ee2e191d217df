"""Fills for removed pixels (audit.measure.fills): exact constant fills, RISE's blur against scipy, and ROAD's noisy
linear imputation against the ROAD authors' code as shipped in pytorch-grad-cam (``NoisyLinearImputer``).

The reference's conventions, read from its source: it takes a (C, H, W) tensor and an (H, W) float mask where 0 =
removed (imputed) and 1 = kept, the opposite of ours; its ``noise`` is an absolute standard deviation, drawn with
``torch.randn_like`` from torch's global generator as one (C, N) tensor; it does not clip.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.transform import resize

from audit.measure.fills import FILLS, blur_sigma, fill_image, gaussian_blur
from audit.model.images import normalize

GREY = 127 / 255
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = 224
# The reference runs numpy code that numpy 2 deprecates (``__array_wrap__``); not ours to fix.
reference_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@cache
def _photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo resized to 3 x 224 x 224, float32 in [0, 1]."""
    image = resize(getattr(data, name)(), (SIZE, SIZE), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float().contiguous()


def _rand(*shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _random_mask(fraction: float, size=(SIZE, SIZE), seed=1) -> torch.Tensor:
    return _rand(*size, seed=seed) < fraction


def _reference(pixel: torch.Tensor, removed: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
    """pytorch-grad-cam's ROAD imputation; its mask says 1 = kept, 0 = removed."""
    return NoisyLinearImputer(noise=noise)(pixel, (~removed).float())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# ROAD against the reference


@pytest.mark.peer
@reference_warnings
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_road_matches_reference_on_photos(name, fraction):
    pixel = _photo(name)
    mask = _random_mask(fraction, seed=int(fraction * 10))
    ours = fill_image(pixel, mask, "road", noise=0)
    assert _max_diff(ours, _reference(pixel, mask)) < 1e-5
    assert not torch.equal(ours[:, mask], pixel[:, mask])  # something was imputed


def _isolated_lattice():
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[2::4, 3::5] = True  # no two removed pixels touch, none on the border
    return mask


def _isolated_random():
    # Random interior pixels with no removed pixel among their 8 neighbours.
    candidates = _random_mask(0.05, seed=7)
    candidates[0, :] = candidates[-1, :] = candidates[:, 0] = candidates[:, -1] = False
    keep = torch.zeros_like(candidates)
    taken = torch.zeros(SIZE + 2, SIZE + 2, dtype=torch.bool)
    for y, x in candidates.nonzero().tolist():
        if not taken[y:y + 3, x:x + 3].any():
            keep[y, x] = True
            taken[y + 1, x + 1] = True
    return keep


def _corners():
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[0, 0] = mask[0, -1] = mask[-1, 0] = mask[-1, -1] = True
    return mask


def _frame(width):
    mask = torch.ones(SIZE, SIZE, dtype=torch.bool)
    mask[width:-width, width:-width] = False
    return mask


def _corner_blocks():
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for rows in (slice(0, 5), slice(-5, None)):
        for cols in (slice(0, 7), slice(-7, None)):
            mask[rows, cols] = True
    return mask


def _random_border():
    return _frame(1) & _random_mask(0.5, seed=3)


def _square():
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[80:140, 100:160] = True
    return mask


def _band(vertical):
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    if vertical:
        mask[:, 92:132] = True  # 224 x 40, touches the top and bottom borders
    else:
        mask[0:40, :] = True  # 40 x 224 at the top: touches the top, left and right borders
    return mask


MASKS = {
    "isolated-lattice": _isolated_lattice,
    "isolated-random": _isolated_random,
    "corners": _corners,
    "frame-1px": lambda: _frame(1),
    "frame-3px": lambda: _frame(3),
    "corner-blocks": _corner_blocks,
    "random-border": _random_border,
    "square-60": _square,
    "band-224x40": lambda: _band(True),
    "band-40x224": lambda: _band(False),
}


@pytest.mark.peer
@reference_warnings
@pytest.mark.parametrize("kind", list(MASKS))
def test_road_matches_reference_on_special_masks(kind):
    pixel = _photo("astronaut")
    mask = MASKS[kind]()
    assert mask.any() and not mask.all()
    ours = fill_image(pixel, mask, "road", noise=0)
    assert _max_diff(ours, _reference(pixel, mask)) < 1e-5


@pytest.mark.peer
@reference_warnings
def test_road_noise_matches_reference_with_the_same_seed():
    """Same noise convention: std ``noise``, one (C, N) standard-normal draw, removed pixels in row-major order."""
    pixel = _photo("chelsea")
    mask = _random_mask(0.3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        reference = _reference(pixel, mask, noise=0.01)
    ours = fill_image(pixel, mask, "road", noise=0.01, generator=torch.Generator().manual_seed(123))
    assert _max_diff(ours, reference) < 1e-5
    assert _max_diff(ours, fill_image(pixel, mask, "road", noise=0)) > 0.02  # the noise is there


@pytest.mark.peer
@reference_warnings
def test_nothing_removed_returns_the_image_like_the_reference():
    pixel = _photo("astronaut")
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    assert torch.equal(_reference(pixel, mask), pixel)
    for recipe in FILLS:
        out = fill_image(pixel, mask, recipe, mean=MEAN)
        assert torch.equal(out, pixel) and out.data_ptr() != pixel.data_ptr()


# ---------------------------------------------------------------------------------------------------------------
# Every recipe


@pytest.mark.parametrize("recipe", FILLS)
def test_kept_pixels_are_bit_identical(recipe):
    pixel = _photo("chelsea")
    before = pixel.clone()
    for seed, fraction in [(4, 0.1), (5, 0.6), (6, 0.97)]:
        mask = _random_mask(fraction, seed=seed)
        out = fill_image(pixel, mask, recipe, mean=MEAN, generator=torch.Generator().manual_seed(seed))
        assert out.shape == pixel.shape and out.dtype == pixel.dtype
        assert torch.equal(out[:, ~mask], pixel[:, ~mask])
        assert not torch.equal(out[:, mask], pixel[:, mask])
    assert torch.equal(pixel, before)  # the input is not written to


def test_constant_fills_are_exact():
    pixel = _rand(3, 40, 56)
    mask = _random_mask(0.4, size=(40, 56))
    expected = {"grey": (GREY,) * 3, "black": (0.0,) * 3, "mean": MEAN}
    for recipe, values in expected.items():
        out = fill_image(pixel, mask, recipe, mean=MEAN)
        for channel, value in enumerate(values):
            assert torch.equal(out[channel][mask], torch.full((int(mask.sum()),), value, dtype=torch.float32))
    # The mean fill is 0 after normalising.
    normalised = normalize(fill_image(pixel, mask, "mean", mean=MEAN), MEAN, STD)
    assert torch.equal(normalised[:, mask], torch.zeros(3, int(mask.sum())))


def test_mean_fill_needs_the_mean():
    pixel, mask = _rand(3, 8, 8), _random_mask(0.5, size=(8, 8))
    with pytest.raises(ValueError, match="'mean'"):
        fill_image(pixel, mask, "mean")
    with pytest.raises(ValueError, match="'mean'"):
        fill_image(pixel, mask, "mean", mean=(0.5, 0.5))


def test_bad_arguments_raise():
    pixel, mask = _rand(3, 8, 8), _random_mask(0.5, size=(8, 8))
    with pytest.raises(ValueError) as error:
        fill_image(pixel, mask, "gray")
    message = str(error.value)
    assert "'gray'" in message and all(repr(recipe) in message for recipe in FILLS) and "\n" not in message
    for bad_mask in (mask[:, :7], mask[None], mask.flatten()):
        with pytest.raises(ValueError, match="mask"):
            fill_image(pixel, bad_mask, "grey")
    with pytest.raises(ValueError, match="mask"):
        fill_image(pixel, mask.float(), "grey")  # a 0/1 mask is ambiguous (the reference's 0 means removed)
    for bad_pixel in (pixel[0], pixel[None]):
        with pytest.raises(ValueError, match="pixel"):
            fill_image(bad_pixel, mask, "grey")
    with pytest.raises(ValueError, match="noise"):
        fill_image(pixel, mask, "road", noise=-0.1)


# ---------------------------------------------------------------------------------------------------------------
# blur


def _scipy_blur(pixel: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-channel scipy Gaussian with the module's choices: radius ceil(3 sigma), reflect without the edge pixel."""
    channels = [gaussian_filter(c.double().numpy(), sigma, mode="mirror", radius=math.ceil(3 * sigma)) for c in pixel]
    return torch.from_numpy(np.stack(channels))


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (96, 160)])
def test_blur_matches_scipy(size):
    pixel = _rand(3, *size)
    mask = _random_mask(0.5, size=size)
    out = fill_image(pixel, mask, "blur")
    sigma = 5 * min(size) / 224
    assert _max_diff(out[:, mask], _scipy_blur(pixel, sigma)[:, mask]) < 1e-5
    if size != (224, 224):  # sigma scales with the input: the 224 px sigma would be visibly different
        assert _max_diff(out[:, mask], _scipy_blur(pixel, 5.0)[:, mask]) > 1e-3


def test_blur_sigma_scales_with_input_size():
    assert blur_sigma(224, 224) == 5.0
    assert blur_sigma(448, 448) == 10.0
    assert blur_sigma(112, 300) == pytest.approx(2.5)
    assert blur_sigma(384, 384) == pytest.approx(5 * 384 / 224)


@pytest.mark.parametrize("shape, sigma", [((3, 5, 6), 3.0), ((2, 1, 9), 2.0), ((1, 7, 1), 0.7)])
def test_gaussian_blur_pads_wider_than_the_image_like_scipy(shape, sigma):
    pixel = _rand(*shape)
    assert _max_diff(gaussian_blur(pixel, sigma), _scipy_blur(pixel, sigma)) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# road without the reference


def _neighbour_mean(pixel: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """By hand: 1/6 for edge neighbours, 1/12 for diagonals, those outside the image dropped, renormalised."""
    _, height, width = pixel.shape
    total, weights = torch.zeros(pixel.shape[0], dtype=torch.float64), 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0) or not (0 <= y + dy < height and 0 <= x + dx < width):
                continue
            weight = 1 / 12 if dy and dx else 1 / 6
            total += weight * pixel[:, y + dy, x + dx].double()
            weights += weight
    return total / weights


@pytest.mark.parametrize("position", [(100, 57), (0, 0), (0, 50), (223, 223), (120, 223)])
def test_road_single_pixel_is_the_weighted_neighbour_mean(position):
    pixel = _photo("astronaut")
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[position] = True
    out = fill_image(pixel, mask, "road", noise=0)
    assert _max_diff(out[:, position[0], position[1]], _neighbour_mean(pixel, *position)) < 1e-6


def test_road_solves_neighbouring_pixels_jointly():
    """Two removed edge neighbours a, b: a = S_a + b / 6 and b = S_b + a / 6, solved by hand."""
    pixel = _photo("chelsea")
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[50, 50] = mask[50, 51] = True
    known = pixel.clone()
    known[:, 50, 50] = known[:, 50, 51] = 0  # S_a, S_b: the kept neighbours' part of the weighted means
    s_a, s_b = _neighbour_mean(known, 50, 50), _neighbour_mean(known, 50, 51)
    a = (s_a + s_b / 6) / (1 - 1 / 36)
    b = s_b + a / 6
    out = fill_image(pixel, mask, "road", noise=0)
    assert _max_diff(out[:, 50, 50], a) < 1e-6 and _max_diff(out[:, 50, 51], b) < 1e-6


@pytest.mark.parametrize("mask", [_random_mask(0.7), _square(), _frame(3)], ids=["random-70", "square", "frame"])
def test_road_reproduces_a_constant_image(mask):
    values = torch.tensor([0.2, 0.5, 0.9])
    pixel = values.reshape(3, 1, 1).expand(3, SIZE, SIZE).contiguous()
    out = fill_image(pixel, mask, "road", noise=0)
    assert _max_diff(out[:, mask], values[:, None].expand(3, int(mask.sum()))) < 1e-6


def test_road_noise_is_seeded_and_only_on_removed_pixels():
    pixel = _photo("astronaut")
    mask = _random_mask(0.5)
    noise = 0.05
    clean = fill_image(pixel, mask, "road", noise=0)

    def noisy(seed):
        return fill_image(pixel, mask, "road", noise=noise, generator=torch.Generator().manual_seed(seed))

    first = noisy(7)
    assert torch.equal(first, noisy(7))
    assert not torch.equal(first[:, mask], noisy(8)[:, mask])
    # No generator: a fresh one seeded 0, so two calls agree.
    default = fill_image(pixel, mask, "road", noise=noise)
    assert torch.equal(default, noisy(0)) and torch.equal(default, fill_image(pixel, mask, "road", noise=noise))

    difference = (first - clean).double()
    assert torch.equal(difference[:, ~mask], torch.zeros_like(difference[:, ~mask]))
    removed = difference[:, mask]
    assert (removed != 0).double().mean() > 0.99
    assert abs(removed.std().item() / noise - 1) < 0.03
    assert abs(removed.mean().item()) < 0.02 * noise


def test_road_is_not_clipped():
    pixel = torch.zeros(3, 16, 16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    out = fill_image(pixel, mask, "road", noise=0.01, generator=torch.Generator().manual_seed(0))
    assert out[:, mask].min() < -0.01  # the noise around a black imputation goes below 0, and stays there


def test_road_everything_removed_falls_back_to_grey():
    for shape in [(3, 32, 32), (3, 1, 1)]:
        pixel = _rand(*shape)
        mask = torch.ones(shape[1:], dtype=torch.bool)
        out = fill_image(pixel, mask, "road", noise=0)
        assert torch.equal(out, torch.full(shape, GREY))
    pixel, mask = _rand(3, 64, 64), torch.ones(64, 64, dtype=torch.bool)
    out = fill_image(pixel, mask, "road", noise=0.02, generator=torch.Generator().manual_seed(3))
    assert out.isfinite().all()
    assert abs((out - GREY).std().item() / 0.02 - 1) < 0.05
