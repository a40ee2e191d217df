"""MoRF / LeRF faithfulness curves (Samek et al. 2017; Utkin et al. 2024, Figs. 10-13).

The recipe, by default: upsample the map bilinearly (``align_corners=False``) to the model input H x W; rank
pixels by value (MoRF: descending, LeRF: ascending; ties keep row-major order in both); image k = 0..steps has
the first ``round(k * H * W / steps)`` ranked pixels (half rounds up) replaced by grey (127, 127, 127) / 255 in
PIXEL space, all channels, and is then normalised with the model's mean/std; y_k is the softmax probability of
the explained class; AUC is the trapezoid over x = k / steps on [0, 1]; ABPC = AUC_LeRF - AUC_MoRF.

With ``unit='patch'`` whole grid cells are ranked and removed instead of pixels.

The fill may instead be a recipe of :mod:`audit.measure.fills` (``--fill``): ``black`` (0, Chefer et al.'s protocol),
``mean`` (the model's normalisation mean, 0 after normalising), ``blur`` (the image under a Gaussian blur, RISE's
substrate) or ``road`` (ROAD's noisy linear imputation of the removed pixels from the kept ones, recomputed for every
perturbed image, its noise seeded by the run's seed and the removal mask).

Perturbed images of many maps go through the model together in batches under ``torch.inference_mode``; the
clean image (k = 0) and the fully removed image (k = steps) are the same for every map and are evaluated once.
Several images' perturbed copies may share a batch (:func:`evaluate_curve_work`), so that a GPU's large batch is full.
Identical maps (e.g. a Gaussian baseline at every stage) are scored once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.images import normalize
from .fills import blur_sigma, fill_image, gaussian_blur

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["PerturbationConfig", "Curves", "faithfulness_curves", "auc", "removal_counts", "pixel_ranks",
           "max_steps", "road_seed", "ORDERS", "SCORE_DIRECTION", "SCORES", "FILL_CONSTANTS", "FILL_RECIPES",
           "ROAD_NOISE", "amp_context", "CurveWork", "curve_work", "evaluate_curve_work", "AUTO_BATCH",
           "activation_bytes", "auto_batch_size", "batch_size_for", "perturbed_copies"]

ORDERS = ("morf", "lerf")
UNITS = ("pixel", "patch")
GREY = 127 / 255
# Named fills (audit/measure/fills.py): grey and black are the constants 127/255 and 0; the others are not one value.
FILL_CONSTANTS = {"grey": GREY, "black": 0.0}
FILL_RECIPES = ("mean", "blur", "road")
ROAD_NOISE = 0.01  # sigma of ROAD's Gaussian noise on the imputed pixels, in pixel units
# batch_size='auto': as many perturbed images per forward as a share of the memory holds (auto_batch_size)
AUTO_BATCH = "auto"
CPU_BATCH_MAX = 64  # on a CPU larger batches are no faster (docs/evidence/benchmarks.md: the best batch is 16-32)
GPU_BATCH_MAX = 1024
CPU_ACTIVATION_BUDGET = 1 << 30  # bytes of activations a CPU batch may hold, at most a quarter of what is free
GPU_MEMORY_SHARE = 0.5  # of the device's free memory
# y_k: the softmax probability of the explained class, or whether the top-1 class is the image's label (Chefer et
# al.'s perturbation test; without a label, the explained class)
SCORES = ("prob", "top1")
# Which way is better for each score (Quantus' convention of declaring it on every metric).
SCORE_DIRECTION = {"morf_auc": "lower", "lerf_auc": "higher", "abpc": "higher"}


@dataclass(frozen=True)
class PerturbationConfig:
    """How curves are made; recorded beside every curve.

    Attributes:
        steps: removal steps; a curve has ``steps + 1`` points.
        fill: pixel-space value written into removed pixels, one per channel or one for all; or a recipe of
            :mod:`audit.measure.fills`: ``'grey'`` (127/255) and ``'black'`` (0) are stored as those values, ``'mean'``
            (the
            model's normalisation mean), ``'blur'`` (the image under RISE's Gaussian blur) and ``'road'`` (ROAD's
            noisy linear imputation, recomputed at every step, noise sigma :data:`ROAD_NOISE`) by name.
        unit: ``'pixel'`` or ``'patch'`` (whole grid cells).
        batch_size: perturbed images per forward pass, or ``'auto'`` (:func:`auto_batch_size`: from the memory
            a forward of the model needs per image and what is free; the size used is returned with the curves).
        amp: ``None`` for float32, or ``'bfloat16'`` / ``'float16'`` autocast (faster, slightly different
            numbers; recorded).
        score: y_k, ``'prob'`` (the explained class's softmax probability) or ``'top1'`` (1 when the top-1 class
            is the image's label, else 0).
    """

    steps: int = 20
    fill: float | tuple[float, ...] | str = GREY
    unit: str = "pixel"
    batch_size: int | str = AUTO_BATCH
    amp: str | None = None
    score: str = "prob"
    auc_rule: str = field(default="trapezoid over x = k/steps on [0, 1]", init=False)
    interpolation: str = field(default="bilinear, align_corners=False", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {self.steps!r}")
        if self.unit not in UNITS:
            raise ValueError(f"unit: expected one of {UNITS}, got {self.unit!r}")
        if self.batch_size != AUTO_BATCH and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                              or self.batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer or 'auto', got {self.batch_size!r}")
        if self.amp not in (None, "bfloat16", "float16"):
            raise ValueError(f"amp: expected None, 'bfloat16' or 'float16', got {self.amp!r}")
        if self.score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {self.score!r}")
        if isinstance(self.fill, str):
            if self.fill in FILL_CONSTANTS:
                object.__setattr__(self, "fill", FILL_CONSTANTS[self.fill])
            elif self.fill not in FILL_RECIPES:
                raise ValueError(f"fill: {self.fill!r} is not a pixel value in [0, 1] nor a recipe "
                                 f"({', '.join([*FILL_CONSTANTS, *FILL_RECIPES])})")
            return
        fills = self.fill if isinstance(self.fill, tuple) else (self.fill,)
        if not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in fills):
            raise ValueError(f"fill: expected pixel values in [0, 1], got {self.fill!r}")

    def describe(self) -> dict:
        """Everything that defines the curves, for results files and captions."""
        return asdict(self)


@dataclass
class Curves:
    """MoRF and LeRF curves of one map.

    Attributes:
        morf: ``steps + 1`` probabilities, most relevant removed first.
        lerf: ``steps + 1`` probabilities, least relevant removed first.
    """

    morf: np.ndarray
    lerf: np.ndarray

    @property
    def morf_auc(self) -> float:
        return auc(self.morf)

    @property
    def lerf_auc(self) -> float:
        return auc(self.lerf)

    @property
    def abpc(self) -> float:
        """Area between the perturbation curves: LeRF AUC - MoRF AUC (higher is more faithful)."""
        return self.lerf_auc - self.morf_auc


def auc(curve: np.ndarray) -> float:
    """Trapezoid area under ``curve`` over x = k / steps on [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    steps = len(y) - 1
    return float((y[:-1] + y[1:]).sum() / (2 * steps))


def removal_counts(total: int, steps: int) -> list[int]:
    """How many units image k removes: round(k * total / steps), halves rounded up, exact in integers."""
    return [(2 * k * total + steps) // (2 * steps) for k in range(steps + 1)]


def perturbed_copies(curves: int, steps: int) -> int:
    """Perturbed images one image's curves evaluate: the clean and the fully removed image, shared by every curve,
    and ``steps - 1`` interior images per curve of each of ``curves`` distinct maps, in both orders."""
    return 2 + 2 * (steps - 1) * curves


def _stable_ranks(values: torch.Tensor, descending: bool) -> torch.Tensor:
    """rank[i] = position of element i in a stable sort (ties keep their index order)."""
    flat = values.flatten()
    order = torch.sort(flat, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(flat.numel(), device=flat.device)
    return ranks


def pixel_ranks(
    values: torch.Tensor, order: str, size: tuple[int, int], grid: tuple[int, int], patch: tuple[int, int],
    unit: str = "pixel",
) -> torch.Tensor:
    """Removal rank of every pixel (H*W,) for a map; removed at step k iff rank < count_k.

    For ``unit='patch'``, all pixels of a cell share the cell's rank and the count is in cells; pixels that no
    cell covers get a rank no count reaches.
    """
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    descending = order == "morf"
    height, width = size
    values = values.double()
    if unit == "pixel":
        if tuple(values.shape) != (height, width):
            values = F.interpolate(values[None, None], size=(height, width), mode="bilinear", align_corners=False)
        return _stable_ranks(values, descending)
    if tuple(values.shape) != tuple(grid):
        values = F.interpolate(values[None, None], size=grid, mode="bilinear", align_corners=False)
    cell = _stable_ranks(values, descending).reshape(grid)
    ph, pw = patch
    full = cell.repeat_interleave(ph, 0).repeat_interleave(pw, 1)[:height, :width]
    ranks = torch.full((height, width), grid[0] * grid[1], dtype=cell.dtype)
    ranks[: full.shape[0], : full.shape[1]] = full
    return ranks.flatten()


def max_steps(unit: str, input_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """The most removal steps an input supports: one unit (a pixel, or a patch) removed per step at least."""
    return int(input_size[0] * input_size[1]) if unit == "pixel" else int(grid[0] * grid[1])


def road_seed(seed: int, mask: torch.Tensor) -> int:
    """The seed of the ``road`` noise for one removal mask: crc32 of the packed mask, started from ``seed``."""
    packed = np.packbits(mask.detach().cpu().numpy().astype(bool).reshape(-1)).tobytes()
    return zlib.crc32(packed, seed & 0xFFFFFFFF)


def _road_batch(pixel: torch.Tensor, masks: torch.Tensor, seed: int, mean: tuple[float, ...],
                std: tuple[float, ...]) -> torch.Tensor:
    """Normalised images of ``masks`` (B, H*W) with the removed pixels imputed by ROAD (on the CPU), (B, C, H, W)."""
    chans, height, width = pixel.shape
    source = pixel.float().cpu()
    filled = []
    for mask in masks.cpu():
        generator = torch.Generator().manual_seed(road_seed(seed, mask))
        filled.append(fill_image(source, mask.reshape(height, width), "road", generator=generator, noise=ROAD_NOISE))
    return normalize(torch.stack(filled), mean, std)


def activation_bytes(model: nn.Module, size: tuple[int, int], amp: str | None = None) -> int:
    """An upper estimate of the memory one image's forward through ``model`` holds at once, in bytes.

    From the token count N (the patch grid of ``size`` and up to 8 prefix tokens), the width D of the patch
    embedding, a 4 D wide MLP and heads of 64 channels: a block keeps about 6 N x D values and 2 N x 4D of its MLP
    (2 bytes each under ``amp``, else 4), and 2 N x N float32 attention scores per head.
    """
    model = cast("VisionTransformer", model)  # a loaded model: check_supported let it through
    proj: nn.Conv2d = model.patch_embed.proj
    patch = proj.kernel_size if isinstance(proj.kernel_size, tuple) else (proj.kernel_size,) * 2
    width = int(proj.out_channels)
    tokens = (size[0] // patch[0]) * (size[1] // patch[1]) + 8
    heads = max(1, width // 64)
    element = 2 if amp else 4
    return element * tokens * (6 * width + 8 * width) + 4 * 2 * heads * tokens * tokens


def _free_bytes(device: torch.device) -> int:
    """Memory free for a batch: the CUDA device's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * CPU_ACTIVATION_BUDGET  # not Linux: assume the budget fits


def auto_batch_size(model: nn.Module, size: tuple[int, int], device: torch.device, amp: str | None = None,
                    free: int | None = None, backward: bool = False) -> int:
    """The ``'auto'`` batch size: as many images as :func:`activation_bytes` fit into the memory share.

    With ``backward`` the batch is for a forward and backward pass, which keeps the activations of every block.

    On CUDA the share is half of the device's free memory, up to :data:`GPU_BATCH_MAX` images; on a CPU it is at
    most :data:`CPU_ACTIVATION_BUDGET` and a quarter of the available memory, up to :data:`CPU_BATCH_MAX`. Large
    inputs get smaller batches, not an out-of-memory error; at least 1.
    """
    free = _free_bytes(device) if free is None else free
    if device.type == "cuda":
        budget, most = int(GPU_MEMORY_SHARE * free), GPU_BATCH_MAX
    else:
        budget, most = min(CPU_ACTIVATION_BUDGET, free // 4), CPU_BATCH_MAX
    depth = (len(getattr(model, "blocks", ())) or 12) if backward else 1
    per_image = activation_bytes(model, size, amp) * depth
    return max(1, min(most, budget // per_image))


def batch_size_for(config: PerturbationConfig, model: nn.Module, size: tuple[int, int], backward: bool = False
                   ) -> int:
    """The batch size ``config`` asks for, with ``'auto'`` resolved for ``model`` on its device."""
    if config.batch_size != AUTO_BATCH:
        return int(config.batch_size)
    return auto_batch_size(model, size, next(model.parameters()).device, config.amp, backward=backward)


def amp_context(device: torch.device, amp: str | None):
    """Autocast to ``amp`` (e.g. ``'bfloat16'``) on ``device``'s type, or nothing when ``amp`` is None."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, amp))


class CurveWork:
    """One image's perturbed images, waiting for the model: built on the device, evaluated in shared batches.

    Made by :func:`curve_work`; :func:`evaluate_curve_work` fills in the scores of many images' works together (a
    batch may hold several images' perturbed copies), and :meth:`curves` reads the curves off them.
    """

    def __init__(self, pixel: torch.Tensor, flat_pixel: torch.Tensor, fill: torch.Tensor, rank_table: torch.Tensor,
                 jobs: list[tuple[int, int]], owner: dict[str, int], n_rows: int, target: int, label: int | None,
                 seed: int, config: PerturbationConfig, mean: tuple[float, ...], std: tuple[float, ...]):
        device = rank_table.device
        self.pixel, self.flat_pixel, self.fill, self.rank_table = pixel, flat_pixel, fill, rank_table
        self.owner, self.n_rows, self.target, self.label, self.seed = owner, n_rows, target, label, seed
        self.config, self.mean, self.std = config, mean, std
        self.job_rows = torch.tensor([row for row, _ in jobs], device=device)
        self.job_counts = torch.tensor([count for _, count in jobs], device=device, dtype=torch.int32)
        self.probs = np.full(len(jobs), np.nan, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.probs)

    def images(self, start: int, stop: int) -> torch.Tensor:
        """The normalised perturbed images of jobs ``start:stop``, (stop - start, C, H, W), on the device."""
        chans, height, width = self.pixel.shape
        masks = self.rank_table[self.job_rows[start:stop]] < self.job_counts[start:stop, None]
        if self.config.fill == "road":
            return _road_batch(self.pixel, masks, self.seed, self.mean, self.std).to(self.rank_table.device)
        return torch.where(masks[:, None, :], self.fill, self.flat_pixel).reshape(stop - start, chans, height, width)

    def score(self, start: int, stop: int, logits: torch.Tensor) -> None:
        """Keep y_k of jobs ``start:stop`` from their logits."""
        if self.config.score == "top1":
            correct = logits.float().argmax(-1) == (self.target if self.label is None else self.label)
            self.probs[start:stop] = correct.double().cpu().numpy()
        else:
            self.probs[start:stop] = logits.float().softmax(-1)[:, self.target].double().cpu().numpy()

    def curves(self) -> tuple[dict[str, Curves], dict[str, float]]:
        """``({key: Curves}, {"clean": p, "removed": p})`` once every job was evaluated.

        Raises:
            ValueError: the clean image's probability is not finite.
        """
        steps = self.config.steps
        clean, removed = self.probs[0], self.probs[1]
        interior = self.probs[2:].reshape(self.n_rows, steps - 1) if self.n_rows else np.empty((0, steps - 1))
        curves: dict[str, Curves] = {}
        for key, index in self.owner.items():
            morf = np.concatenate([[clean], interior[2 * index], [removed]])
            lerf = np.concatenate([[clean], interior[2 * index + 1], [removed]])
            curves[key] = Curves(morf=morf, lerf=lerf)
        if not math.isfinite(clean):
            raise ValueError("the model gave a non-finite probability for the clean image")
        return curves, {"clean": float(clean), "removed": float(removed)}


def curve_work(
    pixel: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    target: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    patch: tuple[int, int],
    grid: tuple[int, int],
    config: PerturbationConfig | None = None,
    seed: int = 0,
    label: int | None = None,
    device: str | torch.device = "cpu",
) -> CurveWork:
    """The perturbed images of many maps of one image, as ranks and jobs on ``device`` (arguments as for
    :func:`faithfulness_curves`)."""
    config = config or PerturbationConfig()
    device = torch.device(device)
    chans, height, width = pixel.shape
    steps = config.steps
    recipe = config.fill if isinstance(config.fill, str) else None
    if recipe == "blur":
        fill = gaussian_blur(pixel.float().cpu(), blur_sigma(height, width)).reshape(chans, -1)
    else:
        value = mean if recipe == "mean" else GREY if recipe == "road" else config.fill  # road: filled per image
        fill = torch.as_tensor(value, dtype=torch.float32).expand(chans).reshape(chans, 1)
    flat_pixel = pixel.reshape(chans, -1).float()
    units = max_steps(config.unit, (height, width), grid)
    if steps > units:
        raise ValueError(f"steps: {steps} removal steps, but the input has only {units} {config.unit}s to remove")
    counts = removal_counts(units, steps)

    # One rank vector per distinct (map, order); identical maps share their curves.
    distinct: dict[tuple, int] = {}
    owner: dict[str, int] = {}
    ranks: list[torch.Tensor] = []
    for key, values in maps.items():
        values = values.detach().cpu()
        signature = (tuple(values.shape), values.double().numpy().tobytes())
        if signature not in distinct:
            distinct[signature] = len(ranks) // 2
            for order in ORDERS:
                ranks.append(pixel_ranks(values, order, (height, width), grid, patch, config.unit))
        owner[key] = distinct[signature]
    # Two shared rows first: the clean image (nothing ever removed) and the fully removed image.
    never = torch.full((height * width,), height * width + 1, dtype=torch.int64)
    if config.unit == "patch":
        everything = pixel_ranks(torch.zeros(grid), "morf", (height, width), grid, patch, "patch")
        everything = torch.where(everything < units, 0, never)
    else:
        everything = torch.zeros(height * width, dtype=torch.int64)
    rank_table = torch.stack([never, everything, *ranks]).to(device=device, dtype=torch.int32)
    # Jobs: (row in rank_table, units removed); interior steps only for the maps' own rows.
    jobs = [(0, 0), (1, 1)] + [(2 + row, counts[k]) for row in range(len(ranks)) for k in range(1, steps)]
    # Normalising is per element, so the fill and the clean pixels are normalised once and each perturbed image is
    # picked from them: the same numbers as normalising every perturbed image, one pass over the batch fewer.
    flat_pixel = normalize(flat_pixel.to(device).reshape(chans, 1, -1), mean, std).reshape(chans, -1)
    fill = normalize(fill.to(device).reshape(chans, 1, -1), mean, std).reshape(chans, -1)
    return CurveWork(pixel, flat_pixel, fill, rank_table, jobs, owner, len(ranks), target, label, seed, config,
                     mean, std)


def evaluate_curve_work(model: nn.Module, works: Sequence[CurveWork], batch_size: int,
                        progress: Callable[[int, int], None] | None = None) -> None:
    """Score every job of ``works`` with ``model``, ``batch_size`` perturbed images per forward.

    The works' jobs are queued one image after the other, so a batch may hold the end of one image's jobs and the
    start of the next one's; a single work is batched exactly as on its own. ``progress(done, total)`` is called
    after each batch.
    """
    if not works:
        return
    device = next(model.parameters()).device
    offsets = np.cumsum([0, *(len(work) for work in works)])
    total = int(offsets[-1])
    with torch.inference_mode(), amp_context(device, works[0].config.amp):
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            parts = []  # (work, its first job, its last job + 1) in this batch
            for index, work in enumerate(works):
                first, last = max(start, offsets[index]), min(stop, offsets[index + 1])
                if first < last:
                    parts.append((work, int(first - offsets[index]), int(last - offsets[index])))
            images = [work.images(a, b) for work, a, b in parts]
            logits = model(images[0] if len(images) == 1 else torch.cat(images))
            at = 0
            for work, a, b in parts:
                work.score(a, b, logits[at:at + b - a])
                at += b - a
            if progress is not None:
                progress(stop, total)


def faithfulness_curves(
    model: nn.Module,
    pixel: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    target: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    patch: tuple[int, int],
    grid: tuple[int, int],
    config: PerturbationConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    label: int | None = None,
) -> tuple[dict[str, Curves], dict[str, float]]:
    """MoRF and LeRF curves of many maps of one image, batched.

    Args:
        model: the classifier (eval mode), on the device the work runs on.
        pixel: (C, H, W) image in [0, 1] before normalisation.
        maps: ``{key: (h, w) map}``; any h, w (upsampled to H x W, or resized to the grid for ``unit='patch'``).
        target: the class whose probability is tracked.
        mean: the model's normalisation mean.
        std: the model's normalisation standard deviation.
        patch: the model's patch size (``unit='patch'``).
        grid: the model's patch grid for this input (``unit='patch'``).
        config: the recipe; defaults to :class:`PerturbationConfig()`.
        progress: called with (images done, images total) after each batch.
        seed: seeds the ``road`` fill's noise, together with the removal mask (:func:`road_seed`), so an image's
            perturbed copy does not depend on batching or on which map it belongs to.
        label: the image's true class, for ``score='top1'`` (default: ``target``).

    Returns:
        ``({key: Curves}, {"clean": p, "removed": p, "batch_size": b})``: the curves, the probabilities of the
        clean image and of the fully removed image, shared by every curve, and the batch size used.
    """
    config = config or PerturbationConfig()
    device = next(model.parameters()).device
    work = curve_work(pixel, maps, target, mean, std, patch, grid, config, seed, label, device)
    batch_size = batch_size_for(config, model, cast("tuple[int, int]", tuple(pixel.shape[1:])))
    evaluate_curve_work(model, [work], batch_size, progress)
    curves, shared = work.curves()
    return curves, {**shared, "batch_size": batch_size}
